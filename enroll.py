"""Stage 2: enrollment: one d-vector per speaker of the test set, from its files named *enroll*.

Each enrollment file is cut into segments of --enroll-frames frames; the file's d-vector is the
L2-normalised sum of the segments' d-vectors, and a speaker's is the (normalised) mean of its files'.

    python enroll.py
    python enroll.py --test-feat-dir my_feats/test --checkpoint model_saved/checkpoint_30.pth

Writes <embedding-dir>/<speaker>.pth for every speaker with enrollment files, once all of them
are embedded, and removes the other enrollment files there (of other speakers, or made by another
model): afterwards the folder enrolls exactly the speakers of --test-feat-dir.
"""
from tqdm import tqdm

import cli
import configure as c
from DB_wav_reader import split_enroll_and_test
from dvector import enroll_speaker
from storage import load_model, save_enrollment


def parse_args(argv=None):
    p = cli.add_model_args(cli.parser(__doc__))
    p.add_argument('--enroll-frames', type=cli.positive_int, default=c.ENROLL_FRAMES, help='frames per segment')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = cli.select_device(args.device)
    model, ckpt = load_model(args.checkpoint, device, args.precision, args.backend)
    enroll_DB, _ = split_enroll_and_test(args.test_feat_dir)
    if enroll_DB.empty:
        raise FileNotFoundError(f"no enrollment files (names containing 'enroll') under {args.test_feat_dir}")
    enrolled = {}
    for speaker, files in tqdm(enroll_DB.groupby('speaker_id')['filename'], desc='enrolling', disable=None):
        enrolled[speaker] = enroll_speaker(model, ckpt, list(files), args.enroll_frames, device), list(files)
    removed = save_enrollment(args.embedding_dir, enrolled, ckpt)
    print(f"Enrolled {len(enrolled)} speakers from {len(enroll_DB)} files of {args.test_feat_dir} "
          f"into {args.embedding_dir}/")
    if removed:
        print(f"Removed the earlier enrollment of: {', '.join(removed)}")


if __name__ == '__main__':
    cli.run(main)
