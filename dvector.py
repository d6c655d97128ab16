"""d-vectors of utterances and their cosine scores: what enroll, verification and identification share."""
import torch
import torch.nn.functional as F
from tqdm import tqdm

from SR_Dataset import read_MFB, to_input

MAX_BATCH = 32        # segments per forward pass: on a CPU larger batches spill the caches and run slower
UTTERANCE_BATCH = 64  # utterances read and embedded together by embed_all


def split_segments(feat, segment_frames):
    """Consecutive pieces of `segment_frames` frames of feat (n_frames, n_filters); the last may be shorter."""
    return [feat[i:i + segment_frames] for i in range(0, len(feat), segment_frames)]


@torch.no_grad()
def embed_utterances(model, feats, segment_frames, device):
    """d-vectors (n_utterances, embedding_size) of utterances: each its segments' d-vectors summed, L2-normalised.

    feats: trimmed features (n_frames, n_filters) of each utterance. The segments of all of them go
    through the model together, grouped by length (only last segments are shorter), MAX_BATCH at a time.
    """
    by_length = {}
    for i, feat in enumerate(feats):
        for segment in split_segments(feat, segment_frames):
            by_length.setdefault(len(segment), []).append((i, segment))
    sums = None
    for items in by_length.values():
        for start in range(0, len(items), MAX_BATCH):
            chunk = items[start:start + MAX_BATCH]
            embeddings = model.embed(torch.stack([to_input(s) for _, s in chunk]).to(device))
            if sums is None:
                sums = embeddings.new_zeros(len(feats), embeddings.shape[1])
            sums.index_add_(0, torch.tensor([i for i, _ in chunk], device=device), embeddings)
    return F.normalize(sums, dim=1)


def embed_all(model, names, read, segment_frames, device, desc):
    """{name: d-vector} of many utterances, read(name) giving trimmed features; UTTERANCE_BATCH at a time."""
    vectors = {}
    with tqdm(total=len(names), desc=desc, disable=None) as bar:
        for start in range(0, len(names), UTTERANCE_BATCH):
            chunk = names[start:start + UTTERANCE_BATCH]
            vectors.update(zip(chunk, embed_utterances(model, [read(n) for n in chunk], segment_frames, device)))
            bar.update(len(chunk))
    return vectors


def embed_utterance(model, feat, segment_frames, device):
    """d-vector (embedding_size,) of one utterance's trimmed features (n_frames, n_filters)."""
    return embed_utterances(model, [feat], segment_frames, device)[0]


def embed_file(model, ckpt, filename, segment_frames, device):
    """d-vector of a feature file, read with the checkpoint's feature settings."""
    return embed_utterance(model, read_MFB(filename, ckpt['feature']), segment_frames, device)


def enroll_speaker(model, ckpt, files, segment_frames, device):
    """A speaker's d-vector: the mean of the d-vectors of the enrollment files, L2-normalised."""
    vectors = embed_utterances(model, [read_MFB(f, ckpt['feature']) for f in files], segment_frames, device)
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
