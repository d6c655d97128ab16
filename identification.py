"""Stage 4: speaker identification: which enrolled speaker said this? The one with the highest score
(cosine, or AS-normalised with --score-norm asnorm).

    python identification.py                          # the test utterance of TEST_SPEAKER
    python identification.py --test-speaker 103F3021
    python identification.py --test-file clip.flac    # who said it? (a .p or audio file): the enrolled speakers ranked
    python identification.py --all                    # top-1 and top-5 accuracy over every test file of --test-feat-dir

Test files are .p features or audio (.wav, .flac, ...), made into features with the checkpoint's
feature settings and --vad/--level (a note says so when the speakers were enrolled with others).
"""
import sys
from functools import partial
from pathlib import Path

from DB_wav_reader import speaker_test_file, split_enroll_and_test
from dvector import cli
from dvector.atomic import check_writable
from dvector.audio import require_utterance_file
from dvector.cohort import scoring_cohort
from dvector.embedding import embed_file, embed_files, require_enrolled
from dvector.frontend import front_end
from dvector.metrics import top_k_accuracy
from dvector.plots import plot_confusion
from dvector.records import enrolled_otherwise, load_enrollment
from dvector.scoring import rank_speakers
from dvector.stage import add_model_args, add_scoring_args, open_stage


def parse_args(argv=None):
    p = add_scoring_args(cli.add_test_args(add_model_args(cli.parser(__doc__))), sides=('test',))
    p.add_argument('--all', action='store_true',
                   help='identify every test file; report top-1 and top-5 accuracy and plot the confusion matrix')
    cli.setting(p, 'RESULTS_DIR')
    args = p.parse_args(argv)
    if args.all and args.test_file:
        p.error('--test-file identifies one file: it does not go with --all')
    return args


def identify_one(model, settings, rank, test_file, speaker, test_frames, device):
    """Identify one test file (of an enrolled speaker, or of speaker None: unknown); print the best-scoring speakers.

    settings: feature settings, a frontend.reading_settings(); rank(d-vector): [(speaker, score)], best first.
    """
    ranking = rank(embed_file(model, settings, test_file, test_frames, device))
    predicted = ranking[0][0]
    print("\n=== Speaker identification ===")
    print(f"Test utterance:    {test_file}")
    if speaker is not None:
        print(f"True speaker:      {speaker}")
    print(f"Predicted speaker: {predicted}")
    if speaker is not None:
        print(f"Result:            {predicted == speaker}")
    print("Best scores: " + ", ".join(f"{spk} {score:.4f}" for spk, score in ranking[:5]) + "\n")
    return predicted


def identify_all(model, settings, enrolled, rank, test_feat_dir, test_frames, device, results_dir):
    """Identify every test file under test_feat_dir; print each result, top-1 and top-5 accuracy.

    Saves the confusion matrix as <results_dir>/confusion_matrix.png.
    """
    _, test_DB = split_enroll_and_test(test_feat_dir)
    if test_DB.empty:
        raise FileNotFoundError(f"no test files (names without 'enroll') under {test_feat_dir}")
    unknown = sorted(set(test_DB['speaker_id']) - set(enrolled))
    if unknown:
        raise ValueError(f"test speakers not enrolled: {', '.join(unknown)}; enroll them first (enroll.py)")
    files, truth = list(test_DB['filename']), list(test_DB['speaker_id'])
    plot_path = Path(results_dir) / 'confusion_matrix.png'
    check_writable(plot_path)  # before the work
    embedded = embed_files(model, settings, files, test_frames, device, 'identifying')
    ranked = [[spk for spk, _ in rank(embedded[f])] for f in files]
    if len(files) <= 50:
        for test_file, speaker, ranking in zip(files, truth, ranked):
            print(f"{test_file}: true {speaker}, predicted {ranking[0]} {'ok' if ranking[0] == speaker else 'WRONG'}")
    accuracy = {k: 100 * top_k_accuracy(ranked, truth, k) for k in (1, 5)}
    n_correct = sum(r[0] == t for r, t in zip(ranked, truth))
    plot_confusion(truth, [r[0] for r in ranked], sorted(enrolled), plot_path,
                   f'Identification of {len(truth)} test utterances: top-1 {accuracy[1]:.1f} %')
    print(f"\nTop-1 identification accuracy: {accuracy[1]:.2f}% ({n_correct}/{len(truth)} test files, "
          f"{len(enrolled)} enrolled speakers)")
    print(f"Top-5 identification accuracy: {accuracy[5]:.2f}%" + (f" (every one: only {len(enrolled)} enrolled)"
                                                                 if len(enrolled) <= 5 else ""))
    print(f"Confusion matrix: {plot_path}")
    return accuracy


def main(argv=None):
    args = parse_args(argv)
    model, ckpt, device, settings, _ = open_stage(args)
    records = load_enrollment(args.embedding_dir, ckpt, device, args.checkpoint)
    enrolled = {speaker: record['embedding'] for speaker, record in records.items()}
    note = enrolled_otherwise(records, front_end(settings))
    if note:
        print(f"Note: {note}", file=sys.stderr)
    # AS-norm can change the ranking: each enrolled speaker's scores are normalised by its own cohort statistics
    cohort = scoring_cohort(args, ckpt, model, device)
    rank = partial(rank_speakers, enrolled, cohort=cohort, cohort_top=args.cohort_top)
    if args.all:
        return identify_all(model, settings, enrolled, rank, args.test_feat_dir, args.test_frames, device,
                            args.results_dir)
    if args.test_file:
        return identify_one(model, settings, rank, require_utterance_file(args.test_file), None,
                            args.test_frames, device)
    require_enrolled(enrolled, args.test_speaker)
    test_file = speaker_test_file(args.test_feat_dir, args.test_speaker)
    return identify_one(model, settings, rank, test_file, args.test_speaker, args.test_frames, device)


if __name__ == '__main__':
    cli.run(main)
