"""Stage 4: speaker identification: which enrolled speaker said this? The one with the highest cosine score.

    python identification.py                          # the test utterance of TEST_SPEAKER
    python identification.py --test-speaker 103F3021
    python identification.py --all                    # top-1 accuracy over every test file of --test-feat-dir
"""
from tqdm import tqdm

import cli
from DB_wav_reader import speaker_test_file, split_enroll_and_test
from dvector import embed_file, rank_speakers, require_enrolled
from storage import load_enrollment, load_model


def parse_args(argv=None):
    p = cli.add_test_args(cli.add_model_args(cli.parser(__doc__)))
    p.add_argument('--all', action='store_true', help='identify every test file and report top-1 accuracy')
    return p.parse_args(argv)


def rank_file(model, ckpt, enrolled, test_file, test_frames, device):
    """[(speaker, cosine score)] of every enrolled speaker against a test file, best first."""
    return rank_speakers(enrolled, embed_file(model, ckpt, test_file, test_frames, device))


def identify_one(model, ckpt, enrolled, test_file, speaker, test_frames, device):
    """Identify one test file of an enrolled speaker; print the best-scoring speakers."""
    ranking = rank_file(model, ckpt, enrolled, test_file, test_frames, device)
    predicted = ranking[0][0]
    print("\n=== Speaker identification ===")
    print(f"Test utterance:    {test_file}")
    print(f"True speaker:      {speaker}\nPredicted speaker: {predicted}\nResult:            {predicted == speaker}")
    print("Best scores: " + ", ".join(f"{spk} {score:.4f}" for spk, score in ranking[:5]) + "\n")
    return predicted


def identify_all(model, ckpt, enrolled, test_feat_dir, test_frames, device):
    """Identify every test file under test_feat_dir; print each result and the top-1 accuracy."""
    _, test_DB = split_enroll_and_test(test_feat_dir)
    if test_DB.empty:
        raise FileNotFoundError(f"no test files (names without 'enroll') under {test_feat_dir}")
    unknown = sorted(set(test_DB['speaker_id']) - set(enrolled))
    if unknown:
        raise ValueError(f"test speakers not enrolled: {', '.join(unknown)}; enroll them first (enroll.py)")
    n_correct = 0
    for test_file, speaker in tqdm(zip(test_DB['filename'], test_DB['speaker_id']), total=len(test_DB),
                                   desc='identifying', disable=None):
        predicted = rank_file(model, ckpt, enrolled, test_file, test_frames, device)[0][0]
        n_correct += predicted == speaker
        tqdm.write(f"{test_file}: true {speaker}, predicted {predicted} {'ok' if predicted == speaker else 'WRONG'}")
    accuracy = 100 * n_correct / len(test_DB)
    print(f"\nTop-1 identification accuracy: {accuracy:.2f}% ({n_correct}/{len(test_DB)} test files, "
          f"{len(enrolled)} enrolled speakers)")
    return accuracy


def main(argv=None):
    args = parse_args(argv)
    device = cli.select_device(args.device)
    model, ckpt = load_model(args.checkpoint, device)
    enrolled = load_enrollment(args.embedding_dir, ckpt, device)
    if args.all:
        return identify_all(model, ckpt, enrolled, args.test_feat_dir, args.test_frames, device)
    require_enrolled(enrolled, args.test_speaker)
    test_file = speaker_test_file(args.test_feat_dir, args.test_speaker)
    return identify_one(model, ckpt, enrolled, test_file, args.test_speaker, args.test_frames, device)


if __name__ == '__main__':
    cli.run(main)
