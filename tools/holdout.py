"""Hold speakers out of a training feature tree, to test the d-vectors on speakers training never saw.

    python -m tools.holdout                 # 20 of the speakers of TRAIN_FEAT_DIR, 5 enrollment utterances each
    python -m tools.holdout --train-feat-dir my_feats/train --out my_holdout --speakers 50 --enroll-utts 3

Writes <out>/train/<speaker>/ with the speakers kept for training and <out>/test/<speaker>/ with
the held-out ones, laid out for enroll.py: the first --enroll-utts files of a held-out speaker (by
name) become enroll_<name>.p, the others are test utterances. The held-out speakers are spread
evenly over the sorted speaker list, so the choice is the same on every machine. Files are hard
links to the originals where the filesystem allows (no extra disk space), copies otherwise.
"""
import os
import shutil
from pathlib import Path

from DB_wav_reader import read_feats_structure
from dvector import cli


def parse_args(argv=None):
    p = cli.parser(__doc__)
    cli.setting(p, 'TRAIN_FEAT_DIR')
    cli.setting(p, 'HOLDOUT_DIR', '--out')
    cli.setting(p, 'HOLDOUT_SPEAKERS', '--speakers', type=cli.positive_int)
    cli.setting(p, 'HOLDOUT_ENROLL_UTTS', '--enroll-utts', type=cli.positive_int)
    return p.parse_args(argv)


def pick_held_out(speakers, n):
    """n speakers spread evenly over the sorted list."""
    speakers = sorted(speakers)
    if n >= len(speakers):
        raise ValueError(f"cannot hold out {n} of {len(speakers)} speakers: training needs at least one")
    return [speakers[i * len(speakers) // n] for i in range(n)]


def link_or_copy(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or no hard links there
        shutil.copy2(src, dst)


def split_files(DB, held_out, enroll_utts):
    """[(source, destination relative to out)] of every file of the feature tree DB."""
    plan = []
    for speaker, files in DB.groupby('speaker_id')['filename']:
        files = sorted(files)
        if speaker in held_out and len(files) <= enroll_utts:
            raise ValueError(f"speaker {speaker} has {len(files)} files: too few to enroll with {enroll_utts} "
                             "and test with the rest")
        for i, f in enumerate(files):
            name = Path(f).name
            if speaker not in held_out:
                plan.append((f, Path('train', speaker, name)))
            elif i < enroll_utts:
                plan.append((f, Path('test', speaker, 'enroll_' + name)))
            else:
                plan.append((f, Path('test', speaker, name.replace('enroll', 'enrol'))))  # stays a test file
    return plan


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; remove it or choose another --out")
    DB = read_feats_structure(args.train_feat_dir)
    held_out = pick_held_out(DB['speaker_id'].unique(), args.speakers)
    for src, dst in split_files(DB, set(held_out), args.enroll_utts):
        link_or_copy(src, out / dst)
    n_kept = DB['speaker_id'].nunique() - len(held_out)
    print(f"{out / 'train'}: {n_kept} training speakers")
    print(f"{out / 'test'}: {len(held_out)} held-out speakers, {args.enroll_utts} enrollment utterances each: "
          f"{', '.join(held_out)}")


if __name__ == '__main__':
    cli.run(main)
