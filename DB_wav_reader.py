"""Find wav and feature files in a <root>/<speaker>/... tree and list them in DataFrames.

Each DataFrame has one row per file, sorted by path: filename, speaker_id (the first folder
under the root, so <speaker>/<session>/<file> trees work too) and dataset_id (the root's name).
"""
import glob
from pathlib import Path

import pandas as pd


def find_files(directory, suffix):
    """DataFrame (filename, speaker_id, dataset_id) of every `*suffix` file under `directory`."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"folder not found: {root}")
    # glob, unlike Path.rglob, follows symlinked speaker folders and skips hidden ones (.ipynb_checkpoints)
    files = sorted(Path(f) for f in glob.glob(str(root / '**' / f'*{suffix}'), recursive=True) if Path(f).is_file())
    if not files:
        raise FileNotFoundError(f"no {suffix} files under {root} (expected {root}/<speaker>/<name>{suffix})")
    loose = [str(p) for p in files if p.parent == root]
    if loose:
        raise ValueError(f"files must be in speaker folders, {root}/<speaker>/<name>{suffix}: {', '.join(loose[:5])}")
    return pd.DataFrame({'filename': [str(p) for p in files],
                         'speaker_id': [p.relative_to(root).parts[0] for p in files],
                         'dataset_id': root.name})


def read_DB_structure(directory):
    """The wav files under `directory`."""
    return find_files(directory, '.wav')


def read_feats_structure(directory):
    """The feature files under `directory`."""
    return find_files(directory, '.p')


def is_enroll_file(filename):
    """Enrollment files are those whose name contains 'enroll' (enroll.p); every other file is a test file."""
    return 'enroll' in Path(filename).name


def split_enroll_and_test(directory):
    """(enroll_DB, test_DB): the feature files under `directory` split by name."""
    DB = read_feats_structure(directory)
    enroll = DB['filename'].map(is_enroll_file)
    return DB[enroll].reset_index(drop=True), DB[~enroll].reset_index(drop=True)


def speaker_test_file(directory, speaker):
    """The first (by name) test file of `speaker` under `directory`: its test.p in the tutorial's layout."""
    _, test_DB = split_enroll_and_test(directory)
    files = test_DB.loc[test_DB['speaker_id'] == speaker, 'filename']
    if files.empty:
        raise ValueError(f"no test file of speaker {speaker!r} under {directory}; speakers with test files: "
                         f"{', '.join(sorted(test_DB['speaker_id'].unique()))}")
    return files.iloc[0]
