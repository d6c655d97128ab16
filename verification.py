"""Stage 3: speaker verification: one trial as in the tutorial, or a whole trial list scored with EER and minDCF.

Single trial (the default): is the test utterance of --test-speaker (its first test file, .p or
audio), or the file --test-file (.p or audio), spoken by the enrolled speaker whose identity is
claimed (--enroll-speaker)? Accept when the cosine score of their d-vectors is above the
threshold: --threshold when given, else the checkpoint's calibrated threshold when one is stored
(--calibrate below), else THRESHOLD of configure.py. The trial is scored as the speaker was
enrolled: its --enroll-frames, and its --vad/--level for the test side too (audio is made into
features with the checkpoint's feature settings and these); a flag giving other values is refused,
since the stored d-vector cannot change (enroll again with it).

    python verification.py
    python verification.py --enroll-speaker 230M4087 --test-speaker 103F3021 --threshold 0.9
    python verification.py --enroll-speaker me --test-file clip.flac

Trial list (--trials, the VoxCeleb1 format `<label> <enroll> <test>`, see trials.py and
make_trials.py): prints EER, minDCF (p_target 0.01 and 0.05), the EER threshold and top-1
identification, saves a DET curve and a score histogram in --results-dir, and with --calibrate
stores the EER threshold beside the checkpoint for the single-trial mode.

    python make_trials.py && python verification.py --trials trials/trials.txt --calibrate
    python verification.py --trials my_list.txt --root my_data --scores results/scores.txt --json
"""
import json
import sys
from pathlib import Path

from DB_wav_reader import speaker_test_file
from dvector import cli
from dvector.atomic import check_writable, refuse_overwriting
from dvector.audio import collect_notes, require_utterance_file
from dvector.cohort import scoring_cohort
from dvector.embedding import embed_file
from dvector.feature_files import require_finite
from dvector.frontend import front_end
from dvector.metrics import P_TARGETS, summarize
from dvector.plots import plot_det, plot_score_histogram
from dvector.records import ENROLLMENT_SETTINGS, save_threshold, threshold_path
from dvector.scoring import ONE_PAIR, score
from dvector.stage import (
    add_model_args,
    add_scoring_args,
    embedding_description,
    open_stage,
    scoring_settings,
    verification_threshold,
)
from dvector.trials import TrialEmbedder, missing_paths, read_trial_list, score_trials, write_scores


def parse_args(argv=None):
    p = add_scoring_args(cli.add_test_args(add_model_args(cli.parser(__doc__))))
    cli.setting(p, 'ENROLL_SPEAKER')
    p.add_argument('--threshold', type=cli.finite_float, help='accept above this score (default: the calibrated '
                   'threshold of the checkpoint for these scoring settings when one is stored, else THRESHOLD of '
                   'configure.py)')
    p.add_argument('--trials', help='score this trial list instead of one trial')
    p.add_argument('--root', help="folder the trial list's paths are relative to (default: the list's folder)")
    p.add_argument('--scores', help='write `<score> <label> <enroll> <test>` per trial to this file')
    cli.setting(p, 'RESULTS_DIR')
    p.add_argument('--json', action='store_true', help='print the results as one JSON object')
    p.add_argument('--calibrate', action='store_true',
                   help="store the trial list's EER threshold beside the checkpoint for the single-trial mode")
    args = p.parse_args(argv)
    if args.trials and args.test_file:
        p.error('--test-file is a single trial: it does not go with --trials')
    list_only = [flag for flag, value in (('--root', args.root), ('--scores', args.scores), ('--json', args.json),
                                          ('--calibrate', args.calibrate)) if value]
    if list_only and not args.trials:
        p.error(f"{', '.join(list_only)}: for a trial list only; add --trials LIST, or leave them out")
    return args


def verify_one(args, stage):
    """The tutorial's single trial: print the score, the threshold and Accept or Reject."""
    model, ckpt, device, settings, enrollment = stage
    threshold, source = verification_threshold(args, ckpt)
    if args.test_file:
        test_file, described = require_utterance_file(args.test_file), args.test_file
    else:
        test_file = speaker_test_file(args.test_feat_dir, args.test_speaker)
        described = f"{test_file} (speaker {args.test_speaker})"
    claimed, tested = enrollment['embedding'], embed_file(model, settings, test_file, args.test_frames, device)
    cohort = scoring_cohort(args, ckpt, model, device)
    trial_score = score(claimed[None], tested[None], ONE_PAIR, cohort, args.cohort_top).item()
    require_finite(trial_score, f"the score of {described} against {args.enroll_speaker}")
    result = 'Accept' if trial_score > threshold else 'Reject'
    print("\n=== Speaker verification ===")
    enrolled_with = cli.flags_text({k: enrollment[k] for k in ENROLLMENT_SETTINGS})
    print(f"Claimed speaker (enrolled): {args.enroll_speaker} (enrolled with {enrolled_with})")
    print(f"Test utterance:             {described}")
    print(f"Score: {trial_score:.4f}   Threshold: {threshold:.4f} ({source})")
    print(f"Result: {result}\n")
    return trial_score, result


def segments(frames):
    """How a side is embedded, in words: `frames`-frame segments, or whole utterances (0)."""
    return 'whole utterances' if frames == 0 else f'{frames}-frame segments'


def print_summary(s, trials_file):
    print(f"\n=== Verification: {trials_file} ===")
    print(f"Trials:            {s['trials']} ({s['target_trials']} target, {s['nontarget_trials']} non-target)"
          + (f"; {len(s['repeated_lines'])} repeated line(s) scored once" if s['repeated_lines'] else ""))
    if s['audio_notes']:
        print("Audio notes:       " + ", ".join(f"{n} file(s) {kind}" for kind, n in s['audio_notes'].items())
              + " (named above)")
    print(f"EER:               {s['eer_percent']:.2f} %   (threshold {s['eer_threshold']:.4f})")
    for p in P_TARGETS:
        print(f"minDCF (p={p}):    {s[f'min_dcf_p{p}']:.4f}")
    print(f"Backbone in:       {s['embedding_dtype']} (--embed-precision, --backend)")
    print(f"Scoring:           enroll {segments(s['enroll_frames'])}, test {segments(s['test_frames'])}, "
          + ('cosine' if s['score_norm'] == 'none' else
             f"{s['score_norm']} (top {s['cohort_top']} of a cohort of {s['cohort']}, {s['cohort_utts']} utterances a "
             "speaker)"))
    if s['top1_percent'] is not None:
        print(f"Top-1 identification: {s['top1_percent']:.2f} % of {s['top1_test_items']} test utterances "
              "(the best-scoring enrollment of each is its own speaker's)")
    for name in ('det_curve', 'score_histogram', 'scores', 'calibrated'):
        if s.get(name):
            print(f"{name.replace('_', ' ').capitalize() + ':':18} {s[name]}")


def outputs(args):
    """{summary key: path} of the files a trial list's scoring writes: plots, --scores, --calibrate's threshold."""
    name, results = Path(args.trials).stem, Path(args.results_dir)
    written = {'det_curve': results / f'{name}_det.png', 'score_histogram': results / f'{name}_scores.png'}
    if args.scores:
        written['scores'] = Path(args.scores)
    if args.calibrate:
        written['calibrated'] = threshold_path(args.checkpoint, args.score_norm)
    return written


def note_repeated(trials_file, repeated):
    """Say so when lines of a trial list repeat a trial: each pair is scored once."""
    if repeated:
        print(f"Note: {trials_file}: {len(repeated)} line(s) repeat an earlier trial (line "
              f"{', '.join(map(str, repeated[:10]))}{' ...' if len(repeated) > 10 else ''}); each pair is scored once",
              file=sys.stderr)


def verify_trials(args, stage):
    """Score a trial list; print and return its summary."""
    model, ckpt, device, reading, _ = stage
    trials, repeated = read_trial_list(args.trials)
    root = Path(args.root) if args.root is not None else Path(args.trials).parent
    missing = missing_paths(trials, root)
    if missing:
        raise FileNotFoundError(f"{len(missing)} path(s) of {args.trials} not found under {root}, or not .p or "
                                "audio:\n  " + "\n  ".join(missing))
    written = outputs(args)
    for path in written.values():  # before the work: an output that cannot be written would lose it
        refuse_overwriting(path, (args.trials, args.checkpoint))
        check_writable(path)
    note_repeated(args.trials, repeated)
    embedder = TrialEmbedder(model, reading, root, args.enroll_frames, args.test_frames, device)
    cohort = scoring_cohort(args, ckpt, model, device)
    with collect_notes() as notes:
        scores = score_trials(embedder, trials, cohort, args.cohort_top)
    for message in (m for messages in notes.values() for m in messages):
        print(f"Note: {message}", file=sys.stderr)
    labels = [t.label for t in trials]
    summary = {**summarize(trials, scores), **front_end(vars(args)), **scoring_settings(args),
               'repeated_lines': repeated, 'audio_notes': {kind: len(messages) for kind, messages in notes.items()}}
    summary['embedding_dtype'] = embedding_description(args.embed_precision, device, args.backend)
    name = Path(args.trials).stem
    summary['det_curve'], summary['score_histogram'] = str(written['det_curve']), str(written['score_histogram'])
    plot_det({'d-vector': (scores, labels)}, summary['det_curve'], f'DET curve: {name}')
    plot_score_histogram(scores, labels, summary['eer_threshold'], summary['score_histogram'], f'Scores: {name}')
    if args.scores:
        write_scores(args.scores, trials, scores)
        summary['scores'] = args.scores
    if args.calibrate:
        save_threshold(args.checkpoint, ckpt, {'threshold': summary['eer_threshold'], 'eer_percent':
                                               summary['eer_percent'], 'trials': str(args.trials)},
                       scoring_settings(args), front_end(vars(args)))
        summary['calibrated'] = str(written['calibrated'])
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary, args.trials)
    return summary


def main(argv=None):
    args = parse_args(argv)
    if args.trials:
        return verify_trials(args, open_stage(args))
    return verify_one(args, open_stage(args, claimed=args.enroll_speaker))


if __name__ == '__main__':
    cli.run(main)
