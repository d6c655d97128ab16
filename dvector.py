"""d-vectors of utterances and their cosine scores: what enroll, verification and identification share."""
import torch
import torch.nn.functional as F
from tqdm import tqdm

from features import read_utterance
from SR_Dataset import to_input

MAX_BATCH = 16  # segments per forward pass: on a CPU larger batches spill the caches and run slower


def split_segments(feat, segment_frames):
    """Consecutive pieces of `segment_frames` frames of feat (n_frames, n_filters); the last may be shorter."""
    return [feat[i:i + segment_frames] for i in range(0, len(feat), segment_frames)]


@torch.no_grad()
def embed_all(model, names, read, segment_frames, device, desc=None):
    """{name: d-vector} of distinct utterances, read(name) giving each one's trimmed features (n_frames, n_filters).

    As in the tutorial, a d-vector is the sum of the d-vectors of the utterance's segments of
    `segment_frames` frames, L2-normalised. Here the segments of all the utterances go through the
    model MAX_BATCH at a time, grouped by length (only last segments are shorter, and they wait for
    others of their length).
    """
    sums = {}
    waiting = {}  # segment length -> [(name, input (1, n_filters, length))] not embedded yet

    def embed(batch):
        vectors = model.embed(torch.stack([x for _, x in batch]).to(device))
        for (name, _), vector in zip(batch, vectors):
            sums[name] = sums[name] + vector if name in sums else vector

    for name in tqdm(names, desc=desc, disable=None if desc else True):
        for segment in split_segments(read(name), segment_frames):
            batch = waiting.setdefault(len(segment), [])
            batch.append((name, to_input(segment)))
            if len(batch) == MAX_BATCH:
                embed(waiting.pop(len(segment)))
    for batch in waiting.values():
        embed(batch)
    return {name: F.normalize(sums[name], dim=0) for name in names}


def embed_utterances(model, feats, segment_frames, device):
    """d-vectors (n_utterances, embedding_size) of utterances' trimmed features (n_frames, n_filters)."""
    vectors = embed_all(model, range(len(feats)), feats.__getitem__, segment_frames, device)
    return torch.stack([vectors[i] for i in range(len(feats))])


def embed_utterance(model, feat, segment_frames, device):
    """d-vector (embedding_size,) of one utterance's trimmed features (n_frames, n_filters)."""
    return embed_utterances(model, [feat], segment_frames, device)[0]


def embed_file(model, settings, filename, segment_frames, device):
    """d-vector of a feature or audio file, read with feature settings (a checkpoint's 'feature', or a recipe())."""
    return embed_utterance(model, read_utterance(filename, settings), segment_frames, device)


def enroll_speaker(model, settings, files, segment_frames, device):
    """A speaker's d-vector: the mean of the d-vectors of the enrollment files (features or audio), L2-normalised."""
    vectors = embed_utterances(model, [read_utterance(f, settings) for f in files], segment_frames, device)
    return F.normalize(vectors.mean(0), dim=0)


def cosine_score(enrolled, test):
    """Cosine similarity of d-vectors: enrolled (..., embedding_size) against test (embedding_size,)."""
    return F.cosine_similarity(enrolled, test, dim=-1)


def require_enrolled(enrolled, speaker):
    """The d-vector of an enrolled speaker, or an error listing who is enrolled."""
    if speaker not in enrolled:
        raise ValueError(f"speaker {speaker!r} is not enrolled; enrolled speakers: {', '.join(sorted(enrolled))}")
    return enrolled[speaker]


def rank_speakers(enrolled, embedding):
    """[(speaker, cosine score)] of every enrolled speaker against one d-vector, best first."""
    speakers = sorted(enrolled)
    scores = cosine_score(torch.stack([enrolled[s] for s in speakers]), embedding)
    return sorted(zip(speakers, scores.tolist()), key=lambda pair: -pair[1])
