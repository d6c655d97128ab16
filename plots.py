"""PNG plots of the results: DET curve, score histogram, confusion matrix. Each is written atomically."""
from statistics import NormalDist

import numpy as np
from matplotlib.figure import Figure

from metrics import compute_eer, error_rates
from storage import atomic_write

DET_TICKS = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8]


def save_figure(fig, path):
    """Write a matplotlib Figure as a PNG file, atomically."""
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=100, bbox_inches='tight'))


def probit(p):
    """Standard normal quantiles of probabilities, clipped away from 0 and 1: the axes of a DET plot."""
    return np.array([NormalDist().inv_cdf(x) for x in np.clip(p, 1e-4, 1 - 1e-4)])


def plot_det(curves, path, title):
    """DET curves (miss rate against false-alarm rate on normal-deviate scales), each with its EER point marked.

    curves: {name: (scores, labels)}, one curve each, in one plot.
    """
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    for name, (scores, labels) in curves.items():
        _, p_fa, p_miss = error_rates(scores, labels)
        eer = compute_eer(scores, labels)[0]
        line, = ax.plot(probit(p_fa), probit(p_miss), label=f'{name}: EER {100 * eer:.2f} %')
        ax.plot(probit([eer]), probit([eer]), 'o', color=line.get_color())
    ticks = probit(DET_TICKS)
    ax.set_xticks(ticks, [f'{100 * t:g}' for t in DET_TICKS])
    ax.set_yticks(ticks, [f'{100 * t:g}' for t in DET_TICKS])
    ax.set_xlim(ticks[0], ticks[-1])
    ax.set_ylim(ticks[0], ticks[-1])
    ax.set_xlabel('false-alarm rate (%)')
    ax.set_ylabel('miss rate (%)')
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def plot_score_histogram(scores, labels, threshold, path, title):
    """Histograms of the target and non-target scores, with the threshold drawn."""
    scores, labels = np.asarray(scores), np.asarray(labels).astype(bool)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    bins = np.linspace(scores.min(), scores.max(), 50)
    ax.hist(scores[~labels], bins=bins, alpha=0.6, density=True, label=f'non-target ({(~labels).sum()})')
    ax.hist(scores[labels], bins=bins, alpha=0.6, density=True, label=f'target ({labels.sum()})')
    ax.axvline(threshold, color='k', linestyle='--', label=f'EER threshold {threshold:.3f}')
    ax.set_xlabel('cosine score')
    ax.set_ylabel('density')
    ax.set_title(title)
    ax.legend()
    save_figure(fig, path)


def plot_confusion(true, predicted, speakers, path, title):
    """Confusion matrix of identification: rows the true speaker, columns the predicted one."""
    index = {s: i for i, s in enumerate(speakers)}
    counts = np.zeros((len(speakers), len(speakers)), dtype=int)
    for t, p in zip(true, predicted, strict=True):
        counts[index[t], index[p]] += 1
    size = min(4 + 0.3 * len(speakers), 16)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(counts, cmap='Blues')
    fig.colorbar(image, ax=ax, label='test utterances')
    if len(speakers) <= 40:
        ax.set_xticks(range(len(speakers)), speakers, rotation=90, fontsize=7)
        ax.set_yticks(range(len(speakers)), speakers, fontsize=7)
    if len(speakers) <= 20:
        for (i, j), n in np.ndenumerate(counts):
            if n:
                ax.text(j, i, n, ha='center', va='center', fontsize=7, color='w' if n > counts.max() / 2 else 'k')
    ax.set_xlabel('predicted speaker')
    ax.set_ylabel('true speaker')
    ax.set_title(title)
    save_figure(fig, path)
