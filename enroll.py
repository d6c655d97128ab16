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
are embedded (files that cannot be used are all listed, and nothing is written), all or nothing:
a run cut off midway leaves the folder as it was, or as the run made it. Enrolling adds: a
speaker enrolled before is replaced (also when another model made it), the other speakers stay.
With --replace the other enrollment files there are removed, and the folder enrolls exactly the
speakers of --test-feat-dir. One enroll.py at a time writes to a folder: a second one is refused.
"""
from pathlib import Path

from DB_wav_reader import split_enroll_and_test
from dvector import cli
from dvector.embedding import enroll_speakers
from dvector.records import ENROLLMENT_SETTINGS, enrollment_lock, load_enrollment, save_enrollment
from dvector.stage import add_model_args, add_scoring_args, open_stage


def parse_args(argv=None):
    p = add_scoring_args(add_model_args(cli.parser(__doc__)), sides=('enroll',), score_norm=False)
    p.add_argument('--replace', action='store_true',
                   help='remove every other enrolled speaker: the folder then enrolls exactly these speakers')
    return p.parse_args(argv)


def note_unenrolled(test_feat_dir, speakers):
    """Say which speaker folders of test_feat_dir hold no enrollment files (they are not enrolled)."""
    folders = sorted(p.name for p in Path(test_feat_dir).iterdir() if p.is_dir() and not p.name.startswith('.'))
    missing = [f for f in folders if f not in speakers]
    if missing:
        print(f"Note: not enrolled, no enrollment files (.p or audio named like 'enroll*') in: "
              f"{', '.join(str(Path(test_feat_dir) / f) for f in missing)}")


def main(argv=None):
    args = parse_args(argv)
    model, ckpt, device, reading, _ = open_stage(args)
    enroll_DB, _ = split_enroll_and_test(args.test_feat_dir)
    if enroll_DB.empty:
        raise FileNotFoundError(f"no enrollment files (names containing 'enroll') under {args.test_feat_dir}")
    files = {speaker: list(fs) for speaker, fs in enroll_DB.groupby('speaker_id')['filename']}
    note_unenrolled(args.test_feat_dir, files)
    with enrollment_lock(args.embedding_dir):  # taken first: a second writer is refused before any work
        vectors = enroll_speakers(model, reading, files, args.enroll_frames, device, 'enrolling')
        enrolled = {speaker: (vectors[speaker], fs) for speaker, fs in files.items()}
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
