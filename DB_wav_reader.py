"""Find audio and feature files in a <root>/<speaker>/... tree and list them in DataFrames.

Each DataFrame has one row per utterance, sorted by path: filename, speaker_id (the first folder
under the root, so <speaker>/<session>/<file> trees work too) and dataset_id (the root's name).
An utterance is a file name without its suffix: where it has both a .p and an audio file, the .p
(its features, already made) is the one listed; two audio files of one utterance are refused.
"""
import os
from pathlib import Path

import pandas as pd

from dvector.audio import AUDIO_SUFFIXES, SUFFIXES, UNREADABLE_AUDIO, is_audio, refuse_unreadable_audio
from dvector.feature_files import FEATURE_SUFFIX


def one_per_utterance(files):
    """files (Paths) with one file per utterance (folder and stem): its .p where it has one, sorted."""
    by_utterance = {}
    for f in files:
        by_utterance.setdefault(f.with_suffix(''), []).append(f)
    chosen = []
    for group in by_utterance.values():
        audio = [f for f in group if is_audio(f)]
        if len(audio) > 1 and len(audio) == len(group):
            raise ValueError(f"two audio files of one utterance, {', '.join(map(str, audio))}: keep one")
        chosen.append(min(group, key=lambda f: f.suffix.lower() != FEATURE_SUFFIX))
    return sorted(chosen)


def first_met(first, path, root):
    """Whether `path` (a folder or file under root) is met for the first time, by what it is (a link is its target),
    recording it in `first`, {(device, inode): the path it was first met at}. A folder met again inside itself is a
    link that loops; one met again under another speaker folder (the first folder under root) is refused: its
    recordings would have two speakers."""
    found = path.stat()
    earlier = first.setdefault((found.st_dev, found.st_ino), path)
    if earlier == path:
        return True
    if not path.is_relative_to(earlier) and speaker_of(earlier, root) != speaker_of(path, root):
        raise ValueError(f"{earlier} and {path} are one (a link to it): a recording under two speaker folders; "
                         "remove the link, or copy it")
    return False


def speaker_of(path, root):
    """The speaker folder of a path under root: its first folder there (None for root itself)."""
    parts = path.relative_to(root).parts
    return parts[0] if parts else None


def walk_files(folder):
    """Every file under folder, each once: links to folders are followed (symlinked speaker folders), but never into a
    folder met before (a loop, or a second link to it), and a file reached by two paths is listed at the first.
    Hidden files and folders (.ipynb_checkpoints) are skipped."""
    folder, first, files = Path(folder), {}, []
    for top, dirs, names in os.walk(folder, followlinks=True):
        if not first_met(first, Path(top), folder):
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        for name in sorted(names):
            path = Path(top) / name
            if not name.startswith('.') and path.is_file() and first_met(first, path, folder):
                files.append(path)
    return files


def utterance_files(folder, suffixes):
    """Every file under folder (recursively, walk_files) whose suffix, in any case, is one of suffixes: one per
    utterance.

    When audio is looked for, audio files of a format libsndfile cannot read are refused, not skipped.
    """
    files = walk_files(folder)
    if set(suffixes) & set(AUDIO_SUFFIXES):
        refuse_unreadable_audio(files)
    return one_per_utterance(f for f in files if f.suffix.lower() in suffixes)


def find_files(directory, suffixes):
    """DataFrame (filename, speaker_id, dataset_id) of the utterance files (suffixes: a tuple) under `directory`."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"folder not found: {root}")
    files = utterance_files(root, suffixes)
    kinds = '/'.join(suffixes)
    if not files:
        raise FileNotFoundError(f"no {kinds} files under {root} (expected {root}/<speaker>/<name>{suffixes[0]})")
    loose = [str(p) for p in files if p.parent == root]
    if loose:
        raise ValueError(f"files must be in speaker folders, {root}/<speaker>/<name>{suffixes[0]}: "
                         f"{', '.join(loose[:5])}")
    return pd.DataFrame({'filename': [str(p) for p in files],
                         'speaker_id': [p.relative_to(root).parts[0] for p in files],
                         'dataset_id': root.name})


def read_DB_structure(directory):
    """The audio files under `directory` (every format of audio.AUDIO_SUFFIXES)."""
    return find_files(directory, AUDIO_SUFFIXES)


def read_feats_structure(directory):
    """The feature files under `directory`."""
    return find_files(directory, (FEATURE_SUFFIX,))


def read_utterances(directory):
    """The utterances under `directory` that the stages can embed: feature files, or audio where there are none."""
    return find_files(directory, SUFFIXES)


def read_list_file(path):
    """DataFrame (filename, speaker_id, dataset_id) of a list of training utterances: a file of `<path> <speaker>`
    lines (the speaker is the last word, so paths may hold spaces; relative paths are from the list's folder), or
    a Kaldi data folder holding wav.scp (`<utterance-id> <path>`, plain paths only) and utt2spk
    (`<utterance-id> <speaker>`). Nothing is looked up on disk: a million lines take seconds."""
    path = Path(path)
    if path.is_dir():
        scp, utt2spk = (read_pairs(path / name) for name in ('wav.scp', 'utt2spk'))
        missing = sorted(set(scp) - set(utt2spk))
        if missing:
            raise ValueError(f"{path / 'utt2spk'}: no speaker for {len(missing)} utterance(s) of wav.scp: "
                             f"{', '.join(missing[:5])}")
        pairs, base = [(scp[u], utt2spk[u]) for u in scp], path
    else:
        pairs, base = list(read_pairs(path).items()), path.parent
    if not pairs:
        raise ValueError(f"{path}: no utterances listed")
    unreadable = set(UNREADABLE_AUDIO)  # by suffix, without a Path per line: a million lines take seconds
    refuse_unreadable_audio([p for p, _ in pairs if os.path.splitext(p)[1].lower() in unreadable])
    files = [p if os.path.isabs(p) else os.path.join(base, p) for p, _ in pairs]
    return pd.DataFrame({'filename': files, 'speaker_id': [s for _, s in pairs], 'dataset_id': path.stem})


def utf8_text(path, what):
    """The text of a file of lines, UTF-8; else an error naming the file and the line of its first byte that is not.
    what: what to say then (what the file must be, what to do)."""
    data = Path(path).read_bytes()
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b'\n') + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text (byte {data[e.start]:#04x}): {what}") from None


def read_pairs(path):
    """{first: second} of a file of `<first> <second>` lines, split at the last run of spaces (Kaldi's files split
    at the first; for wav.scp the id has no spaces and the path takes the rest)."""
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    pairs = {}
    kaldi_style = path.name in ('wav.scp', 'utt2spk')
    text = utf8_text(path, f"save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > {path.name}.utf8")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith('#'):
            continue
        fields = line.split(maxsplit=1) if kaldi_style else line.rsplit(maxsplit=1)
        if len(fields) != 2:
            raise ValueError(f"{path}, line {number}: expected two fields, got {line!r}")
        if kaldi_style and fields[1].rstrip().endswith('|'):
            raise ValueError(f"{path}, line {number}: a command (pipe), not a path; write the audio to files first")
        if fields[0] in pairs:
            raise ValueError(f"{path}, line {number}: {fields[0]} listed twice")
        pairs[fields[0]] = fields[1].strip()
    return pairs


def holds_audio(DB):
    """Whether any of the utterances of DB is an audio file."""
    return DB['filename'].str.lower().str.endswith(AUDIO_SUFFIXES).any()


def read_training_structure(source):
    """The training utterances of `source`: a <speaker>/.../<utterance> tree of features or audio (audio is made
    into features as it is read), or a list file or Kaldi data folder (read_list_file)."""
    source = Path(source)
    DB = read_list_file(source) if source.is_file() or (source / 'wav.scp').is_file() else read_utterances(source)
    refuse_same_files(DB['filename'], source)
    return DB


def refuse_same_files(filenames, source):
    """Refuse a training set of `source` that names one file twice (a/./u.wav and a/u.wav, relative and absolute, or
    through a linked folder): it would count twice, or under two speakers. Each folder is resolved once, so that a
    million files take seconds."""
    split = [os.path.split(f) for f in filenames]
    folders = {folder: os.path.realpath(folder) for folder in {folder for folder, _ in split}}
    seen = {}
    for filename, (folder, name) in zip(filenames, split):
        same = seen.setdefault(os.path.join(folders[folder], name), filename)
        if same != filename:
            raise ValueError(f"{source}: {same} and {filename} are the same file; list it once")


def is_enroll_file(filename):
    """Enrollment files are those whose name contains 'enroll' (enroll.p); every other file is a test file."""
    return 'enroll' in Path(filename).name


def split_enroll_and_test(directory):
    """(enroll_DB, test_DB): the utterances (features or audio) under `directory` split by name."""
    DB = read_utterances(directory)
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
