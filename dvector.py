"""d-vectors of utterances and their cosine scores: what enroll, verification and identification share."""
import torch
import torch.nn.functional as F

from SR_Dataset import read_MFB, to_input

MAX_BATCH = 256  # segments per forward pass: bounds memory on hour-long recordings


def split_segments(feat, segment_frames):
    """Consecutive pieces of `segment_frames` frames of feat (n_frames, n_filters); the last may be shorter."""
    return [feat[i:i + segment_frames] for i in range(0, len(feat), segment_frames)]


@torch.no_grad()
def embed_utterance(model, feat, segment_frames, device):
    """d-vector (embedding_size,) of an utterance: its segments' d-vectors summed, then L2-normalised.

    feat: (n_frames, n_filters) trimmed features. Segments of the same length go through the
    model together, in batches of up to MAX_BATCH (the last segment may be shorter).
    """
    by_length = {}
    for segment in split_segments(feat, segment_frames):
        by_length.setdefault(len(segment), []).append(to_input(segment))
    total = 0
    for group in by_length.values():
        for batch in torch.stack(group).split(MAX_BATCH):  # (n, 1, n_filters, length)
            total = total + model.embed(batch.to(device)).sum(0)
    return F.normalize(total, dim=0)


def embed_file(model, ckpt, filename, segment_frames, device):
    """d-vector of a feature file, read with the checkpoint's feature settings."""
    return embed_utterance(model, read_MFB(filename, ckpt['feature']), segment_frames, device)


def enroll_speaker(model, ckpt, files, segment_frames, device):
    """A speaker's d-vector: the mean of the d-vectors of the enrollment files, L2-normalised."""
    vectors = [embed_file(model, ckpt, f, segment_frames, device) for f in files]
    return F.normalize(torch.stack(vectors).mean(0), dim=0)


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
