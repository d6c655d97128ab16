"""Verification metrics of scored trials: EER and minDCF, as speaker-recognition papers report them, and
top-1 identification; summarize gives them all for a scored trial list.

A trial is accepted when its score is above the threshold. Sweeping the threshold from above
the highest score down past the lowest gives every achievable pair of error rates:
  false-alarm rate P_fa = accepted non-target trials / non-target trials,
  miss rate        P_miss = rejected target trials / target trials.
"""
import numpy as np

P_TARGETS = (0.01, 0.05)  # the target-speaker priors minDCF is reported at


def check_trials(scores, labels):
    """(scores float64, labels bool) as arrays, checked: 1-D, same length, both classes present."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"scores and labels must be 1-D and of the same length, got {scores.shape} and "
                         f"{labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 1 (target) or 0 (non-target)")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    labels = labels.astype(bool)
    if labels.all() or not labels.any():
        raise ValueError(f"need both target and non-target trials, got {labels.sum()} target and "
                         f"{(~labels).sum()} non-target")
    return scores, labels


def error_rates(scores, labels):
    """(thresholds, P_fa, P_miss) at every distinct operating point, from accepting nothing to accepting all.

    Point i accepts the trials scoring above thresholds[i]: the first threshold is the highest score
    (nothing accepted), the others lie halfway between consecutive distinct scores, and the last is
    -inf (everything accepted).
    """
    scores, labels = check_trials(scores, labels)
    order = np.argsort(-scores, kind='stable')
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]  # accept whole groups of tied scores only
    n_accepted = np.r_[0, np.flatnonzero(last_of_tie) + 1]
    targets_accepted = np.r_[0, np.cumsum(labels)][n_accepted]
    p_fa = (n_accepted - targets_accepted) / (~labels).sum()
    p_miss = 1 - targets_accepted / labels.sum()
    below = scores[n_accepted[1:-1]]  # the highest score left rejected at each inner point
    thresholds = np.r_[scores[0], (scores[n_accepted[1:-1] - 1] + below) / 2, -np.inf]
    return thresholds, p_fa, p_miss


def compute_eer(scores, labels):
    """(EER, threshold): the rate at which misses equal false alarms, and the threshold closest to it.

    Between the two operating points where the miss rate falls below the false-alarm rate, both
    rates are interpolated linearly and the EER is where they cross.
    """
    thresholds, p_fa, p_miss = error_rates(scores, labels)
    i = int(np.argmax(p_fa >= p_miss))  # the first point past the crossing; never 0, where p_fa = 0 < 1 = p_miss
    gap_before, gap_after = p_miss[i - 1] - p_fa[i - 1], p_miss[i] - p_fa[i]
    t = gap_before / (gap_before - gap_after)
    eer = p_fa[i - 1] + t * (p_fa[i] - p_fa[i - 1])
    return float(eer), float(thresholds[i] if t >= 0.5 else thresholds[i - 1])


def compute_min_dcf(scores, labels, p_target, c_miss=1.0, c_fa=1.0):
    """(minDCF, threshold): the lowest normalised detection cost over all thresholds, and where it is reached.

    DCF = c_miss * P_miss * p_target + c_fa * P_fa * (1 - p_target), divided by the cost of the
    better of accepting everything or rejecting everything, min(c_miss * p_target, c_fa * (1 - p_target)).
    """
    if not 0 < p_target < 1:
        raise ValueError(f"p_target must be between 0 and 1, got {p_target}")
    thresholds, p_fa, p_miss = error_rates(scores, labels)
    dcf = (c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)) / min(c_miss * p_target, c_fa * (1 - p_target))
    i = int(np.argmin(dcf))
    return float(dcf[i]), float(thresholds[i])


def top_k_accuracy(ranked, truth, k):
    """Fraction of the rankings (lists of labels, best first) whose first k hold the true label."""
    if not ranked:
        raise ValueError("nothing to rank")
    return sum(t in r[:k] for r, t in zip(ranked, truth, strict=True)) / len(ranked)


def trial_identification(trials, scores):
    """(top-1 accuracy, test items counted): how often a test item's best-scoring enrollment is a target.

    trials: trials.Trial (label, enroll, test), scores their scores. Counts the test items that have a
    target trial and at least one non-target trial.
    """
    by_test = {}
    for trial, score in zip(trials, scores, strict=True):
        by_test.setdefault(trial.test, []).append((score, trial.label))
    contests = [pairs for pairs in by_test.values() if {label for _, label in pairs} == {0, 1}]
    if not contests:
        return None, 0
    correct = sum(max(pairs, key=lambda pair: pair[0])[1] == 1 for pairs in contests)
    return correct / len(contests), len(contests)


def summarize(trials, scores):
    """The figures of a scored trial list (trials.Trial and their scores), as a dict (rates in percent).

    Counts, EER and its threshold, minDCF at each of P_TARGETS, and top-1 identification (trial_identification).
    """
    labels = [t.label for t in trials]
    eer, eer_threshold = compute_eer(scores, labels)
    top1, n_items = trial_identification(trials, scores)
    summary = {'trials': len(trials), 'target_trials': sum(labels), 'nontarget_trials': len(labels) - sum(labels),
               'eer_percent': 100 * eer, 'eer_threshold': eer_threshold}
    for p in P_TARGETS:
        summary[f'min_dcf_p{p}'] = compute_min_dcf(scores, labels, p)[0]
    summary['top1_percent'] = None if top1 is None else 100 * top1
    summary['top1_test_items'] = n_items
    return summary
