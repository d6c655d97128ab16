"""The whole pipeline on a built-in corpus of synthetic voices: one command, nothing to download.

    python demo.py
    python demo.py --epochs 5 --train-speakers 20      # smaller and faster
    python demo.py --from-audio yes                    # train on the wavs themselves, as on VoxCeleb (docs/voxceleb.md)

Writes the corpus under demo/wavs (dvector/demo_corpus.py; reused when already there), then runs the real
stages on it, each command printed as you would type it and run in this process (cli.run_command),
exactly as on real data, with every output under demo/:

    feature_extraction.py    demo/wavs/{train,test} -> demo/feat/{train,test}
    train.py                 demo/feat/train -> demo/model_saved (a finished run is reused); with --from-audio yes,
                             demo/wavs/train -> demo/model_saved_from_audio, and no training features are written
    enroll.py                demo/feat/test -> demo/enroll_embeddings
    make_trials.py, verification.py --trials --calibrate
                             EER and minDCF of every enrollment against every test voice, demo/results/
    verification.py          one trial of the same voice and one of another voice
    identification.py --all  top-1 accuracy over the test voices, demo/results/confusion_matrix.png
    plot_dvectors.py         the test voices' d-vectors drawn in 2-D, demo/results/dvector_map.png

The test voices are not among the training voices. The voices are synthetic: the figures show the
system at work, not how well it recognises people (README.md has the results on real speech).
"""
from pathlib import Path

import configure as c
from dvector import cli
from dvector.checkpoint import load_checkpoint
from dvector.cli import run_command
from dvector.demo_corpus import write_corpus


def parse_args(argv=None):
    p = cli.parser(__doc__)
    cli.setting(p, 'DEMO_DIR', '--root')
    cli.setting(p, 'DEMO_TRAIN_SPEAKERS', '--train-speakers', type=cli.positive_int)
    cli.setting(p, 'DEMO_TRAIN_UTTS', '--train-utts', type=cli.positive_int)
    cli.setting(p, 'DEMO_TEST_SPEAKERS', '--test-speakers', type=cli.positive_int)
    cli.setting(p, 'DEMO_EPOCHS', '--epochs', type=cli.positive_int)
    cli.setting(p, 'DEMO_FROM_AUDIO', '--from-audio', choices=['yes', 'no'])
    cli.setting(p, 'SEED')
    cli.add_device_arg(p)
    args = p.parse_args(argv)
    if args.test_speakers < 2:
        p.error('--test-speakers: at least 2, to try a voice against another')
    return args


def stage(title):
    print(f"\n{'=' * 20} {title} {'=' * (70 - len(title))}")


def train_model(train_dir, log_dir, args):
    """Train on the demo voices of train_dir (features or wavs), or finish the run already in log_dir; returns the
    epoch history."""
    flags = ['--train-feat-dir', str(train_dir), '--log-dir', str(log_dir), '--epochs', str(args.epochs),
             '--device', args.device]
    if (log_dir / 'checkpoint_best.pth').is_file():
        return run_command('train.py', flags + ['--resume'])
    return run_command('train.py', flags + ['--base-channels', str(c.DEMO_BASE_CHANNELS), '--batch-size',
                                            str(c.DEMO_BATCH_SIZE), '--optimizer', c.DEMO_OPTIMIZER,
                                            '--lr', str(c.DEMO_LR), '--seed', str(args.seed)])


def main(argv=None):
    args = parse_args(argv)
    root = Path(args.root)
    from_audio = args.from_audio == 'yes'
    wavs, feat = root / 'wavs', root / 'feat'
    log_dir = root / ('model_saved_from_audio' if from_audio else 'model_saved')
    checkpoint = ['--checkpoint', str(log_dir / 'checkpoint_best.pth'), '--test-feat-dir', str(feat / 'test'),
                  '--device', args.device, '--backend', c.DEMO_BACKEND]
    model = checkpoint + ['--embedding-dir', str(root / 'enroll_embeddings')]
    results = ['--results-dir', str(root / 'results')]
    dvector_map = root / 'results' / 'dvector_map.png'

    stage('Synthetic voices')
    corpus = write_corpus(wavs, args.train_speakers, args.train_utts, args.test_speakers, args.seed)
    stage('0. Features' + (' of the test voices (training reads the wavs)' if from_audio else ''))
    for part in ('test',) if from_audio else ('train', 'test'):
        run_command('feature_extraction.py', ['--wav-dir', str(wavs / part), '--feat-dir', str(feat / part)])
    stage('1. Training')
    history = train_model((wavs if from_audio else feat) / 'train', log_dir, args)
    stage('2. Enrollment')
    run_command('enroll.py', model)
    stage('Evaluation: every enrollment against every test voice')
    trials = root / 'trials.txt'
    run_command('make_trials.py', ['--test-dir', str(feat / 'test'), '--out', str(trials)])
    scores = run_command('verification.py', model + results + ['--trials', str(trials), '--calibrate'])
    stage('3. Verification')
    speakers = sorted(p.name for p in (feat / 'test').iterdir() if p.is_dir())
    same = run_command('verification.py', model + ['--enroll-speaker', speakers[0], '--test-speaker', speakers[0]])
    other = run_command('verification.py', model + ['--enroll-speaker', speakers[0], '--test-speaker', speakers[1]])
    stage('4. Identification')
    accuracy = run_command('identification.py', model + results + ['--all'])
    stage('5. The d-vector map')
    dvectors = run_command('plot_dvectors.py',
                           checkpoint + ['--segments', str(c.DEMO_MAP_SEGMENTS), '--out', str(dvector_map)])

    best = load_checkpoint(log_dir / 'checkpoint_best.pth')['history'][-1]  # the epoch of the model enrolled with
    stage('Summary')
    print(f"Voices:          {corpus['train_speakers']} training x {args.train_utts} utterances, "
          f"{corpus['test_speakers']} test voices never seen in training (synthetic, {root / 'wavs'})")
    print(f"Training:        {len(history)} epochs; the best, epoch {best['epoch']} (lowest validation loss): "
          f"validation accuracy {best['valid_acc']:.1f} %")
    print(f"Identification:  top-1 {accuracy[1]:.1f} % of the {len(speakers)} test voices "
          f"(chance {100 / len(speakers):.1f} %)")
    print(f"Verification:    EER {scores['eer_percent']:.2f} %, minDCF(0.01) {scores['min_dcf_p0.01']:.3f} over "
          f"{scores['trials']} trials; threshold {scores['eer_threshold']:.3f} (calibrated on these trials)")
    print(f"                 {speakers[0]} claims {speakers[0]}'s test: score {same[0]:.3f} -> {same[1]}")
    print(f"                 {speakers[0]} claims {speakers[1]}'s test: score {other[0]:.3f} -> {other[1]}")
    print(f"Plots:           {log_dir / 'loss_plot.png'}, {root / 'results'}/")
    silhouette = dvectors['silhouette']
    separation = '' if silhouette is None else f" (silhouette {silhouette:.2f}; 1: apart, 0: mixed)"
    print(f"d-vector map:    {dvector_map}: the test voices' {c.DEMO_MAP_SEGMENTS * c.WIN_STEP:g}-s pieces, one colour "
          f"per voice, a star per enrollment{separation}")
    return {'history': history, 'identification': accuracy, 'verification': scores, 'examples': (same, other)}


if __name__ == '__main__':
    cli.run(main)
