"""Scores of d-vectors: how alike an enrolled speaker and a test utterance are, by one rule for every stage.

score() is the one place that decides between cosine and AS-norm scores: verification (a single trial and a
trial list), identification and the app all score through it.

A raw cosine score depends on how "typical" each side is: some voices score high against everyone.
AS-norm (adaptive symmetric normalisation, Matejka et al., Interspeech 2017) measures that on a
cohort of other speakers (cohort.py: d-vectors of the training speakers): for each side, the mean
and standard deviation of its `top` highest cohort scores, and normalises with both:
    s' = ((s - mean_e) / std_e + (s - mean_t) / std_t) / 2
"""
import torch

from dvector.feature_files import require_finite

ONE_PAIR = torch.tensor([[0, 0]])  # the pairs of a single trial: the one enrolled d-vector against the one tested


def score(enrolled, tested, pairs, cohort=None, top=None):
    """Scores (n_pairs,) of (enroll index, test index) pairs of the d-vectors enrolled (E, d) and tested (T, d).

    Cosine scores (the dot products of the L2-normalised d-vectors), or with a cohort (n_cohort, d) their
    AS-norm over each side's `top` highest cohort scores.
    """
    e, t = pairs[:, 0], pairs[:, 1]
    raw = (enrolled[e] * tested[t]).sum(1)
    if cohort is None:
        return raw
    cohort = cohort.to(enrolled.device)
    enroll_stats, test_stats = cohort_stats(enrolled, cohort, top), cohort_stats(tested, cohort, top)
    return as_norm(raw, (enroll_stats[0][e], enroll_stats[1][e]), (test_stats[0][t], test_stats[1][t]))


def rank_speakers(enrolled, embedding, cohort=None, cohort_top=None):
    """[(speaker, score)] of every enrolled speaker {speaker: d-vector} against one d-vector, best first.

    With a cohort the scores are AS-norm's, which can change the ranking: each enrolled speaker's scores are
    normalised by its own cohort statistics.
    """
    speakers = sorted(enrolled)
    vectors = torch.stack([enrolled[s] for s in speakers])  # (n_enrolled, embedding_size)
    pairs = torch.tensor([(i, 0) for i in range(len(speakers))])
    scores = score(vectors, embedding[None], pairs, cohort, cohort_top)
    require_finite(scores, 'the scores against the enrolled speakers')
    return sorted(zip(speakers, scores.tolist()), key=lambda pair: -pair[1])


# ---- AS-norm ------------------------------------------------------------------------------------

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
