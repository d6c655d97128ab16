"""Find wav and feature files in a <root>/<speaker>/<file> tree and list them in DataFrames.

Each DataFrame has one row per file, sorted by path: filename, speaker_id (the parent folder)
and dataset_id (the folder above that).
"""
from pathlib import Path

import pandas as pd


def find_files(directory, suffix):
    """Sorted paths of every `*suffix` file under `directory`, at any depth."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"folder not found: {root}")
    files = sorted(str(p) for p in root.rglob(f'*{suffix}') if p.is_file())
    if not files:
        raise FileNotFoundError(f"no {suffix} files under {root} (expected {root}/<speaker>/<name>{suffix})")
    return files


def find_wavs(directory):
    return find_files(directory, '.wav')


def find_feats(directory):
    return find_files(directory, '.p')


def files_to_DB(files):
    """The DataFrame (filename, speaker_id, dataset_id) of a list of paths."""
    paths = [Path(f) for f in files]
    return pd.DataFrame({
        'filename': [str(p) for p in paths],
        'speaker_id': [p.parent.name for p in paths],
        'dataset_id': [p.parent.parent.name for p in paths],
    })


def read_DB_structure(directory):
    """The wav files under `directory`."""
    return files_to_DB(find_wavs(directory))


def read_feats_structure(directory):
    """The feature files under `directory`."""
    return files_to_DB(find_feats(directory))


def is_enroll_file(filename):
    """Enrollment files are those whose name contains 'enroll'; every other file is a test file."""
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
