"""d-vectors of utterances: what enroll, verification and identification share (scoring.py scores them).

d_vector is the definition, the tutorial's loop over an utterance's segments; embed_all computes the
same d-vectors, faster, and the stages use it.
"""
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dvector.feature_files import FeatureFileError, require_finite
from dvector.utterance import read_utterance

MAX_BATCH = 16  # segments per forward pass: on a CPU larger batches spill the caches and run slower


def to_input(feat):
    """Network input (1, n_filters, n_frames) float32 of a feature array (n_frames, n_filters)."""
    return torch.from_numpy(np.ascontiguousarray(feat.T)).float().unsqueeze(0)


def split_segments(feat, segment_frames):
    """Consecutive pieces of `segment_frames` frames of feat (n_frames, n_filters); the last may be shorter.

    segment_frames 0: the whole utterance, one piece (what statistics pooling is made for).
    """
    if segment_frames == 0:
        return [feat]
    return [feat[i:i + segment_frames] for i in range(0, len(feat), segment_frames)]


@torch.no_grad()
def d_vector(model, feat, segment_frames, device):
    """The d-vector (embedding_size,) of an utterance's trimmed features feat (n_frames, n_filters): the definition.

    As in the tutorial: the utterance is cut into segments of `segment_frames` frames (split_segments),
    each segment goes through the model in a forward pass of its own, and the segments' embeddings are
    summed and L2-normalised. embed_all gives the same d-vectors, faster.
    """
    total = sum(model.embed(to_input(s).unsqueeze(0).to(device))[0] for s in split_segments(feat, segment_frames))
    return F.normalize(total, dim=0)


@torch.no_grad()
def embed_all(model, names, read, segment_frames, device, desc=None):
    """{name: d-vector} of distinct utterances, read(name) giving each one's trimmed features (n_frames, n_filters).

    The same d-vectors as d_vector (to float precision), faster: the segments of all the utterances
    go through the model MAX_BATCH at a time, grouped by length (only last segments are shorter, and
    they wait for others of their length), and each utterance's are summed and L2-normalised. One
    utterance's features are in memory at a time, and its segments' d-vectors are summed as they come.

    Utterances that cannot be read are reported together, after all have been read (no more are
    embedded after the first); a d-vector that is not finite is refused, naming its utterance.
    """
    sums, failures = {}, {}
    waiting = {}  # segment length -> [(name, input (1, n_filters, length))] not embedded yet

    def embed(batch):
        vectors = model.embed(torch.stack([x for _, x in batch]).to(device))
        for (name, _), vector in zip(batch, vectors):
            sums[name] = sums[name] + vector if name in sums else vector

    for name in tqdm(names, desc=desc, disable=None if desc else True):
        try:
            feat = read(name)
        except (ValueError, OSError) as e:  # each names its file
            failures[name] = str(e)
            continue
        for segment in [] if failures else split_segments(feat, segment_frames):
            batch = waiting.setdefault(len(segment), [])
            batch.append((name, to_input(segment)))
            if len(batch) == MAX_BATCH:
                embed(waiting.pop(len(segment)))
    if failures:
        raise unusable_files(failures)
    for batch in waiting.values():
        embed(batch)
    return {name: F.normalize(require_finite(sums[name], f"{name}: its d-vector"), dim=0) for name in names}


def unusable_files(failures):
    """The error reporting {file: message} of files that could not be used: the message, or all of them listed."""
    if len(failures) == 1:
        return FeatureFileError(next(iter(failures.values())))
    return FeatureFileError(f"{len(failures)} files cannot be used:\n  " + "\n  ".join(failures.values()))


def embed_files(model, settings, filenames, segment_frames, device, desc=None):
    """{file: d-vector} of feature or audio files, read with feature settings (a checkpoint's 'feature', or a
    frontend.reading_settings()), by embed_all."""
    return embed_all(model, filenames, lambda f: read_utterance(f, settings), segment_frames, device, desc)


def embed_file(model, settings, filename, segment_frames, device):
    """d-vector of a feature or audio file, read with feature settings (embed_files)."""
    return embed_files(model, settings, [filename], segment_frames, device)[filename]


def mean_dvector(vectors):
    """A speaker's d-vector (embedding_size,) from the d-vectors (n_utterances, embedding_size) of its utterances:
    their mean, L2-normalised."""
    return F.normalize(vectors.mean(0), dim=0)


def enroll_speakers(model, settings, files, segment_frames, device, desc=None):
    """{speaker: d-vector} of speakers' enrollment files, {speaker: [files]} (features or audio): each speaker's is the
    mean_dvector of its files' d-vectors. Every file that cannot be used is reported, together."""
    vectors = embed_files(model, settings, [f for fs in files.values() for f in fs], segment_frames, device, desc)
    return {speaker: mean_dvector(torch.stack([vectors[f] for f in fs])) for speaker, fs in files.items()}


def enroll_speaker(model, settings, files, segment_frames, device):
    """A speaker's d-vector: the mean_dvector of the d-vectors of the enrollment files (features or audio)."""
    return enroll_speakers(model, settings, {None: list(files)}, segment_frames, device)[None]


def require_enrolled(enrolled, speaker):
    """What `enrolled` holds for a speaker (its d-vector, or its enrollment record), or an error listing who is
    enrolled."""
    if speaker not in enrolled:
        raise ValueError(f"speaker {speaker!r} is not enrolled; enrolled speakers: {', '.join(sorted(enrolled))}")
    return enrolled[speaker]
