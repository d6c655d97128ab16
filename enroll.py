"""Stage 2: enrollment: one d-vector per speaker of the test set, from its files named *enroll*.

The files are .p features or audio (.wav, .flac, ...), made into features in memory with the
checkpoint's feature settings and --vad/--level. Each enrollment file is cut into segments of
--enroll-frames frames; the file's d-vector is the L2-normalised sum of the segments' d-vectors,
and a speaker's is the (normalised) mean of its files'. Each enrollment records --enroll-frames,
--vad and --level: verification.py scores a single trial with them.

    python enroll.py
    python enroll.py --test-feat-dir my_feats/test --checkpoint model_saved/checkpoint_30.pth
    python enroll.py --test-feat-dir my_wavs/test --vad energy      # <speaker>/enroll*.wav (or .flac, ...)
    python enroll.py --test-feat-dir my_feats/test --replace       # enroll these speakers and no others

Writes <embedding-dir>/<speaker>.pth for every speaker with enrollment files, once all of them
are embedded. Enrolling adds: a speaker enrolled before is replaced (also when another model
made it), the other speakers stay. With --replace the other enrollment files there are removed,
and the folder enrolls exactly the speakers of --test-feat-dir.
"""
from tqdm import tqdm

import cli
from DB_wav_reader import split_enroll_and_test
from dvector import enroll_speaker
from features import recipe
from speed import select_device
from storage import ENROLLMENT_SETTINGS, load_enrollment, load_model, save_enrollment


def parse_args(argv=None):
    p = cli.add_scoring_args(cli.add_model_args(cli.parser(__doc__)), sides=('enroll',), score_norm=False)
    p.add_argument('--replace', action='store_true',
                   help='remove every other enrolled speaker: the folder then enrolls exactly these speakers')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = select_device(args.device)
    model, ckpt = load_model(args.checkpoint, device, args.embed_precision, args.backend)
    cli.recommended_scoring(args, argv, ckpt)
    enroll_DB, _ = split_enroll_and_test(args.test_feat_dir)
    if enroll_DB.empty:
        raise FileNotFoundError(f"no enrollment files (names containing 'enroll') under {args.test_feat_dir}")
    settings = recipe(ckpt['feature'], args.vad, args.level)
    enrolled = {}
    for speaker, files in tqdm(enroll_DB.groupby('speaker_id')['filename'], desc='enrolling', disable=None):
        enrolled[speaker] = enroll_speaker(model, settings, list(files), args.enroll_frames, device), list(files)
    removed = save_enrollment(args.embedding_dir, enrolled, ckpt, args.test_feat_dir,
                              {k: getattr(args, k) for k in ENROLLMENT_SETTINGS}, args.replace)
    print(f"Enrolled {len(enrolled)} speakers from {len(enroll_DB)} files of {args.test_feat_dir} "
          f"into {args.embedding_dir}/")
    if removed:
        print(f"Removed the earlier enrollment of: {', '.join(removed)}")
    try:  # say now what scoring would refuse: speakers enrolled there by another model, foreign files
        load_enrollment(args.embedding_dir, ckpt, checkpoint=args.checkpoint)
    except ValueError as e:
        print(f"Note: verification and identification will refuse {args.embedding_dir}/ until this is fixed: {e}")


if __name__ == '__main__':
    cli.run(main)
