"""d-vectors of utterances and their cosine scores: what enroll, verification and identification share.

d_vector is the definition, the tutorial's loop over an utterance's segments; embed_all computes the
same d-vectors, faster, and the stages use it.
"""
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dvector.features import FeatureFileError, read_utterance, require_finite

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


def embed_utterances(model, feats, segment_frames, device):
    """d-vectors (n_utterances, embedding_size) of utterances' trimmed features (n_frames, n_filters)."""
    vectors = embed_all(model, range(len(feats)), feats.__getitem__, segment_frames, device)
    return torch.stack([vectors[i] for i in range(len(feats))])


def embed_utterance(model, feat, segment_frames, device):
    """d-vector (embedding_size,) of one utterance's trimmed features (n_frames, n_filters)."""
    return embed_utterances(model, [feat], segment_frames, device)[0]


def embed_files(model, settings, filenames, segment_frames, device, desc=None):
    """{file: d-vector} of feature or audio files, read with feature settings (a checkpoint's 'feature', or a
    features.reading_settings()), by embed_all."""
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


def cosine_score(enrolled, test):
    """Cosine similarity of d-vectors: enrolled (..., embedding_size) against test (embedding_size,)."""
    return F.cosine_similarity(enrolled, test, dim=-1)


def require_enrolled(enrolled, speaker):
    """What `enrolled` holds for a speaker (its d-vector, or its enrollment record), or an error listing who is
    enrolled."""
    if speaker not in enrolled:
        raise ValueError(f"speaker {speaker!r} is not enrolled; enrolled speakers: {', '.join(sorted(enrolled))}")
    return enrolled[speaker]


def rank_speakers(enrolled, embedding, cohort=None, cohort_top=None):
    """[(speaker, score)] of every enrolled speaker against one d-vector, best first.

    Cosine scores, or with a cohort (n_speakers, embedding_size) their AS-norm, which can change the
    ranking: each enrolled speaker's scores are normalised by its own cohort statistics.
    """
    speakers = sorted(enrolled)
    vectors = torch.stack([enrolled[s] for s in speakers])  # (n_enrolled, embedding_size)
    if cohort is None:
        scores = cosine_score(vectors, embedding)
    else:
        pairs = torch.tensor([(i, 0) for i in range(len(speakers))])
        scores = normalise_scores(vectors, embedding[None], pairs, cohort, cohort_top)
    require_finite(scores, 'the scores against the enrolled speakers')
    return sorted(zip(speakers, scores.tolist()), key=lambda pair: -pair[1])


# ---- Score normalisation ----------------------------------------------------------------------
# A raw cosine score depends on how "typical" each side is: some voices score high against everyone.
# AS-norm (adaptive symmetric normalisation, Matejka et al., Interspeech 2017) measures that on a
# cohort of other speakers (cohort.py: d-vectors of the training speakers): for each side, the mean
# and standard deviation of its `top` highest cohort scores, and normalises with both:
#     s' = ((s - mean_e) / std_e + (s - mean_t) / std_t) / 2

def cohort_stats(vectors, cohort, top):
    """(mean, std) (n,) of each d-vector's `top` highest cosine scores against the cohort.

    vectors (n, embedding_size) and cohort (n_cohort, embedding_size), both L2-normalised.
    """
    n_best = min(top, cohort.shape[0])
    if n_best < 2:
        raise ValueError(f"AS-norm divides by the standard deviation of the top cohort scores: it needs 2 or more, "
                         f"not the top {top} of a cohort of {cohort.shape[0]} d-vectors (--cohort-top)")
    scores = vectors @ cohort.T  # (n, n_cohort)
    best = scores.topk(n_best, dim=1).values
    return best.mean(1), best.std(1).clamp(min=1e-6)


def as_norm(scores, enroll_stats, test_stats):
    """AS-norm of raw scores (...) given the (mean, std) of their enrollment and test sides (broadcastable)."""
    (mean_e, std_e), (mean_t, std_t) = enroll_stats, test_stats
    return 0.5 * ((scores - mean_e) / std_e + (scores - mean_t) / std_t)


def normalise_scores(enrolled, tested, pairs, cohort, top):
    """AS-normed scores (n_pairs,) of (enroll index, test index) pairs of d-vectors enrolled (E, d), tested (T, d)."""
    enroll_stats = cohort_stats(enrolled, cohort, top)
    test_stats = cohort_stats(tested, cohort, top)
    e, t = pairs[:, 0], pairs[:, 1]
    raw = (enrolled[e] * tested[t]).sum(1)
    return as_norm(raw, (enroll_stats[0][e], enroll_stats[1][e]), (test_stats[0][t], test_stats[1][t]))

