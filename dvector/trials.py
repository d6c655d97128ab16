"""Trial lists in the VoxCeleb1 format, scoring them with a d-vector model, and score files.

One trial per line, `<label> <enroll> <test>`: label 1 when both sides are the same speaker, 0
otherwise; the two paths are relative to a root folder. Fields are separated by white space; a
path that holds white space is written in double quotes, `"my speaker/enroll.wav"` (a path that
begins with a quote cannot be written). A pair listed twice with one label is scored once (the
repeated lines are counted); with both labels the list is refused. A path names
  - a feature pickle (.p) or an audio file (.wav, .flac, ...: audio.AUDIO_SUFFIXES, turned into
    features by utterance.py's recipe with the model's settings and --vad/--level), trimmed at both
    ends as every utterance;
  - a piece of one, `<file>@<start>-<end>` in seconds from the start of the recording, e.g.
    `103F3021/test.wav@0.5-3.5`: exactly those frames, not trimmed again (with --vad, those of them
    that are speech: the times stay the recording's);
  - (enroll side only) a speaker folder ending in `/`: the speaker's d-vector from its files
    whose name contains 'enroll', as enroll.py makes it.

A score file (verification.py --scores, compare_scores.py) holds the scored trials of a list, one
`<score> <label> <enroll> <test>` per line.
"""
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from DB_wav_reader import is_enroll_file, utf8_text, utterance_files
from dvector.atomic import atomic_write
from dvector.audio import SUFFIXES, is_utterance_file
from dvector.embedding import embed_all, mean_dvector
from dvector.feature_files import FeatureFileError, require_finite, trim_edges
from dvector.frontend import edge_frames
from dvector.scoring import score
from dvector.utterance import file_features

PIECE = re.compile(r'(?P<file>.+)@(?P<start>\d+(?:\.\d+)?)-(?P<end>\d+(?:\.\d+)?)')


@dataclass(frozen=True)
class Trial:
    label: int
    enroll: str
    test: str


FIELD = re.compile(r'"([^"]*)"(?=\s|$)|(\S+)')  # a field: a quoted path (white space in it), or no white space


def quote_path(path):
    """A path as trial and score files write it: in double quotes when it holds white space."""
    if path.startswith('"') or ('"' in path and re.search(r'\s', path)) or re.search(r'[\r\n]', path):
        raise ValueError(f"{path!r}: a path of a trial list cannot begin with a quote, hold a line break, or hold "
                         "both a quote and white space; rename it")
    return f'"{path}"' if re.search(r'\s', path) else path


def split_fields(line, where):
    """The fields of a line of a trial or score file: separated by white space, a quoted path as one field."""
    fields = []
    for quoted, plain in FIELD.findall(line):
        if plain.startswith('"'):
            raise ValueError(f"{where}: a quote that does not close where its path ends: {line.strip()!r}")
        fields.append(quoted or plain)
    return fields


def text_lines(path):
    """(line number, line, fields) of each line that holds any of a trial or score file (UTF-8 text)."""
    text = utf8_text(path, "trial and score files are text, one trial a line")
    for number, line in enumerate(text.split('\n'), 1):
        fields = split_fields(line, f"{path}, line {number}")
        if fields:
            yield number, line, fields


def read_trial_list(path):
    """(trials, repeated): the distinct trials of a trial list file, checked line by line, in order, and the numbers
    of the lines that repeat an earlier one (its pair, its label). A pair labelled both 1 and 0 is refused."""
    trials, first, repeated, contradictions = [], {}, [], []
    for number, line, fields in text_lines(path):
        if len(fields) != 3 or fields[0] not in ('0', '1'):
            raise ValueError(f"{path}, line {number}: expected '<0|1> <enroll> <test>', got {line.strip()!r}")
        if fields[2].endswith('/'):
            raise ValueError(f"{path}, line {number}: the test side must be a file, not a folder: {fields[2]}")
        trial = Trial(int(fields[0]), fields[1], fields[2])
        if (trial.enroll, trial.test) not in first:
            first[trial.enroll, trial.test] = number, trial
            trials.append(trial)
        elif first[trial.enroll, trial.test][1].label == trial.label:
            repeated.append(number)
        else:
            contradictions.append(f"lines {first[trial.enroll, trial.test][0]} and {number} ({trial.enroll} "
                                  f"{trial.test})")
    if contradictions:
        raise ValueError(f"{path}: {len(contradictions)} pair(s) labelled both 1 and 0, at "
                         + "; ".join(contradictions[:10]) + (" ..." if len(contradictions) > 10 else "")
                         + ": say which is right")
    if not trials:
        raise ValueError(f"{path}: no trials")
    return trials, repeated


def write_trials(path, trials):
    """Write trials as a trial list, one `<label> <enroll> <test>` line each."""
    text = ''.join(f"{t.label} {quote_path(t.enroll)} {quote_path(t.test)}\n" for t in trials)
    atomic_write(path, lambda f: f.write(text.encode()))


def read_scores(path):
    """(trials, scores) of a score file (write_scores, verification.py --scores), in its order."""
    trials, scores = [], []
    for number, line, fields in text_lines(path):
        try:
            score, label, enroll, test = float(fields[0]), int(fields[1]), fields[2], fields[3]
            if len(fields) != 4 or label not in (0, 1):
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(f"{path}, line {number}: expected '<score> <0|1> <enroll> <test>', "
                             f"got {line.strip()!r}") from None
        require_finite(score, f"{path}, line {number}: the score")
        trials.append(Trial(label, enroll, test))
        scores.append(score)
    if not trials:
        raise ValueError(f"{path}: no scores")
    return trials, scores


def write_scores(path, trials, scores):
    """Write scored trials as a score file, one `<score> <label> <enroll> <test>` line each (read_scores reads it)."""
    require_finite(scores, f"the scores to write to {path}")
    text = ''.join(f"{score:.6f} {t.label} {quote_path(t.enroll)} {quote_path(t.test)}\n"
                   for score, t in zip(scores, trials, strict=True))
    atomic_write(path, lambda f: f.write(text.encode()))


def split_piece(name):
    """(file name, (start, end) seconds or None) of a trial path."""
    match = PIECE.fullmatch(name)
    if not match:
        return name, None
    start, end = float(match['start']), float(match['end'])
    if end <= start:
        raise ValueError(f"{name}: the piece must end after it starts")
    return match['file'], (start, end)


def enrollment_files(folder):
    """The enrollment files of a speaker folder, as enroll.py takes them: names containing 'enroll', .p or audio
    (a .p wins over audio of the same name), hidden folders left out."""
    files = [f for f in utterance_files(folder, SUFFIXES) if is_enroll_file(f)]
    if not files:
        raise FileNotFoundError(f"{folder}: no enrollment files (.p or audio named like 'enroll*') in it")
    return files


def missing_paths(trials, root):
    """Every path that the trials name and that is not there (or is of an unknown kind), sorted."""
    missing = set()
    for name in {t.enroll for t in trials} | {t.test for t in trials}:
        path, _ = split_piece(name)
        full = Path(root) / path
        if not (full.is_dir() if name.endswith('/') else full.is_file() and is_utterance_file(full)):
            missing.add(str(full))
    return sorted(missing)


def utterance_features(frames, path, piece, feature):
    """The frames the model embeds of a file whose frames = file_features(): all of them trimmed, or the piece's.

    A piece's times are on the file's own timeline (for audio, the recording's): it holds the kept
    frames (all, without vad) from its start to its end, not trimmed again.
    """
    feat, kept = frames
    if piece is None:
        return trim_edges(feat, path, edge_frames(feature), feature['min_frames'])
    start, end = (round(s / feature['win_step']) for s in piece)
    if end > len(kept):
        raise FeatureFileError(f"{path}: piece {piece[0]}-{piece[1]} s ends after the last frame "
                               f"({len(kept) * feature['win_step']:.2f} s)")
    rows = feat[np.count_nonzero(kept[:start]):np.count_nonzero(kept[:end])]
    if len(rows) <= feature['min_frames']:
        speech = f" of speech (of {end - start})" if len(rows) < end - start else ""
        raise FeatureFileError(f"{path}: piece {piece[0]}-{piece[1]} s is too short: {len(rows)} frames{speech}, "
                               f"more than {feature['min_frames']} are needed")
    return rows


class TrialEmbedder:
    """d-vectors of the enroll and test sides of trials, each distinct one computed once.

    Utterances are read with `reading`, a frontend.reading_settings() (the checkpoint's feature settings, the
    front end's vad and level).
    """

    def __init__(self, model, reading, root, enroll_frames, test_frames, device):
        self.model, self.root, self.device = model, Path(root), device
        self.feature = reading
        self.enroll_frames, self.test_frames = enroll_frames, test_frames

        self._last_file = (None, None)  # (path, (feat, kept)): the pieces of one file come one after another

    def file_features(self, path):
        if self._last_file[0] != path:
            self._last_file = (path, file_features(path, self.feature))
        return self._last_file[1]

    def features(self, name):
        path, piece = split_piece(name)
        return utterance_features(self.file_features(self.root / path), self.root / path, piece, self.feature)

    def embed(self, names, segment_frames, desc):
        return embed_all(self.model, names, self.features, segment_frames, self.device, desc)

    def enrollments(self, names):
        """{name: d-vector} of enrollments: files or pieces, or speaker folders whose enrollment files are averaged."""
        files = {name: [str(Path(name) / f.relative_to(self.root / name)) for f in enrollment_files(self.root / name)]
                 if name.endswith('/') else [name] for name in names}
        vectors = self.embed(sorted({f for fs in files.values() for f in fs}), self.enroll_frames, 'enroll side')
        return {name: mean_dvector(torch.stack([vectors[f] for f in fs])) for name, fs in files.items()}

    def tests(self, names):
        return self.embed(names, self.test_frames, 'test side')


def score_trials(embedder, trials, cohort=None, cohort_top=None):
    """Scores (n_trials,) of the trials, in their order; each distinct side is embedded once.

    Cosine scores, or with a cohort (n_speakers, embedding_size) their AS-norm over its cohort_top best (scoring.score).
    """
    enroll_names, test_names = sorted({t.enroll for t in trials}), sorted({t.test for t in trials})
    enrolled, tested = embedder.enrollments(enroll_names), embedder.tests(test_names)
    enroll_index, test_index = ({n: i for i, n in enumerate(names)} for names in (enroll_names, test_names))
    E = torch.stack([enrolled[n] for n in enroll_names])  # (n_enroll, embedding_size)
    T = torch.stack([tested[n] for n in test_names])      # (n_test, embedding_size)
    pairs = torch.tensor([(enroll_index[t.enroll], test_index[t.test]) for t in trials])
    scores = score(E, T, pairs, cohort, cohort_top)
    return require_finite(scores.double().cpu().numpy(), 'the trial scores')
