"""Stage 3: speaker verification of one trial, as in the tutorial.

Is the test utterance of --test-speaker (its test*.p file) spoken by the enrolled speaker whose
identity is claimed (--enroll-speaker)? Accept when the cosine score of their d-vectors is above
--threshold.

    python verification.py
    python verification.py --enroll-speaker 230M4087 --test-speaker 103F3021 --threshold 0.9
"""
import cli
import configure as c
from DB_wav_reader import speaker_test_file
from dvector import cosine_score, embed_file, require_enrolled
from storage import load_enrollment, load_model


def parse_args(argv=None):
    p = cli.add_test_args(cli.add_model_args(cli.parser(__doc__)))
    p.add_argument('--enroll-speaker', default=c.ENROLL_SPEAKER, help='the enrolled speaker whose identity is claimed')
    p.add_argument('--threshold', type=float, default=c.THRESHOLD, help='accept above this cosine score')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = cli.select_device(args.device)
    model, ckpt = load_model(args.checkpoint, device)
    enrolled = load_enrollment(args.embedding_dir, ckpt, device)
    claimed = require_enrolled(enrolled, args.enroll_speaker)
    test_file = speaker_test_file(args.test_feat_dir, args.test_speaker)
    score = cosine_score(claimed, embed_file(model, ckpt, test_file, args.test_frames, device)).item()
    result = 'Accept' if score > args.threshold else 'Reject'
    print("\n=== Speaker verification ===")
    print(f"Claimed speaker (enrolled): {args.enroll_speaker}")
    print(f"Test utterance:             {test_file} (speaker {args.test_speaker})")
    print(f"Score: {score:.4f}   Threshold: {args.threshold:.4f}")
    print(f"Result: {result}\n")
    return score, result


if __name__ == '__main__':
    cli.run(main)
