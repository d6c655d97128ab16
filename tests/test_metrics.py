"""EER, minDCF and top-k accuracy: hand-made cases with known answers, and a brute-force reference on random scores."""
import numpy as np
import pytest

from dvector.metrics import compute_eer, compute_min_dcf, error_rates, top_k_accuracy


def reference_rates(scores, labels, threshold):
    """(P_fa, P_miss) when the trials scoring above threshold are accepted, counted one by one."""
    targets = [s for s, y in zip(scores, labels) if y == 1]
    nontargets = [s for s, y in zip(scores, labels) if y == 0]
    p_fa = sum(s > threshold for s in nontargets) / len(nontargets)
    p_miss = sum(s <= threshold for s in targets) / len(targets)
    return p_fa, p_miss


def reference_thresholds(scores):
    """A threshold at and just below every score, and one above them all: every operating point."""
    return [max(scores) + 1] + [t for s in scores for t in (s, s - 1e-9)]


def reference_min_dcf(scores, labels, p_target):
    return min(p_target * miss + (1 - p_target) * fa
               for fa, miss in (reference_rates(scores, labels, t) for t in reference_thresholds(scores))
               ) / min(p_target, 1 - p_target)


def reference_eer_bounds(scores, labels):
    """The EER lies between the two rates at the threshold where they are closest."""
    fa, miss = min((reference_rates(scores, labels, t) for t in reference_thresholds(scores)),
                   key=lambda rates: abs(rates[0] - rates[1]))
    return min(fa, miss), max(fa, miss)


@pytest.mark.parametrize('scores, labels, eer', [
    ([3, 4, 1, 2], [1, 1, 0, 0], 0.0),         # separable
    ([1, 2], [1, 0], 1.0),                      # every target below every non-target
    ([4, 3, 2, 1], [1, 0, 1, 0], 0.5),          # interleaved: half of each is on the wrong side
    ([5, 5, 5, 5], [1, 0, 1, 0], 0.5),          # all tied: no threshold separates anything
    ([4, 3, 2, 1, 0], [1, 1, 0, 1, 0], 1 / 3),  # the rates cross on the segment (P_fa, P_miss) = (0, 1/3) -> (1/2, 1/3)
])
def test_eer_of_hand_made_cases(scores, labels, eer):
    assert compute_eer(scores, labels)[0] == pytest.approx(eer)


def test_eer_threshold_separates_as_the_eer_says():
    eer, threshold = compute_eer([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 0])
    assert eer == 0 and 0.3 < threshold < 0.8


@pytest.mark.parametrize('p_target', [0.01, 0.05, 0.5])
def test_min_dcf_of_hand_made_cases(p_target):
    assert compute_min_dcf([3, 4, 1, 2], [1, 1, 0, 0], p_target)[0] == 0
    assert compute_min_dcf([1, 2], [1, 0], p_target)[0] == pytest.approx(1)  # no better than rejecting all
    # one target of two below both non-targets: P_miss 1/2 at best without false alarms
    expected = min(p_target * 0.5, 1 - p_target, p_target) / min(p_target, 1 - p_target)
    assert compute_min_dcf([5, 0, 3, 2], [1, 1, 0, 0], p_target)[0] == pytest.approx(expected)


@pytest.mark.parametrize('seed', range(5))
def test_metrics_match_a_brute_force_reference_on_random_scores(seed):
    rng = np.random.default_rng(seed)
    n_target, n_nontarget = rng.integers(5, 40), rng.integers(20, 200)
    scores = np.r_[rng.normal(1, 1, n_target), rng.normal(0, 1, n_nontarget)].round(1)  # rounding makes ties
    labels = np.r_[np.ones(n_target, int), np.zeros(n_nontarget, int)]
    perm = rng.permutation(len(scores))
    scores, labels = list(scores[perm]), list(labels[perm])
    for p_target in (0.01, 0.05):
        assert compute_min_dcf(scores, labels, p_target)[0] == pytest.approx(
            reference_min_dcf(scores, labels, p_target))
    low, high = reference_eer_bounds(scores, labels)
    eer, threshold = compute_eer(scores, labels)
    assert low - 1e-12 <= eer <= high + 1e-12
    fa, miss = reference_rates(scores, labels, threshold)  # an operating point next to the crossing
    assert min(fa, miss) - 1e-12 <= eer <= max(fa, miss) + 1e-12


def test_operating_points_run_from_rejecting_all_to_accepting_all():
    thresholds, p_fa, p_miss = error_rates([0.5, 0.5, 0.1, 0.9], [1, 0, 0, 1])
    assert list(p_fa) == [0, 0, 0.5, 1] and list(p_miss) == [1, 0.5, 0, 0]
    assert thresholds[0] == 0.9 and thresholds[-1] == -np.inf


@pytest.mark.parametrize('scores, labels, message', [
    ([1, 2], [1, 1], 'need both target and non-target'),
    ([1, 2], [1, 2], 'labels must be 1'),
    ([1, np.nan], [1, 0], 'finite'),
    ([1, 2, 3], [1, 0], 'same length'),
])
def test_bad_trials_are_refused(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        compute_eer(scores, labels)


def test_top_k_accuracy():
    ranked = [['a', 'b', 'c'], ['b', 'a', 'c'], ['c', 'b', 'a']]
    assert top_k_accuracy(ranked, ['a', 'a', 'a'], 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(ranked, ['a', 'a', 'a'], 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(ranked, ['a', 'a', 'a'], 5) == 1
