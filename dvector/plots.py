"""PNG plots of the results: training curves, DET curve, score histogram, confusion matrix, d-vector map. Each is
written atomically."""
from statistics import NormalDist

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dvector.atomic import atomic_write
from dvector.metrics import compute_eer, error_rates

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
    ax.set_xlabel('score')
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


SEX_MARKERS = {'F': 'o', 'M': '^'}  # test points of speakers whose id says their sex; the others get UNKNOWN_MARKER
SEX_NAMES = {'F': 'female', 'M': 'male'}
UNKNOWN_MARKER = 's'
MAX_LEGEND_SPEAKERS = 40


def plot_history(history, best, path):
    """Loss and accuracy curves (training and validation) of a training run's epoch records (train.py's history), the
    best epoch (its number) marked, as a PNG."""
    epochs = [h['epoch'] for h in history]
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ['loss', 'acc']):
        ax.plot(epochs, [h[f'train_{metric}'] for h in history], 'o-', label='training')
        ax.plot(epochs, [h[f'valid_{metric}'] for h in history], 'o-', label='validation')
        ax.axvline(best, color='r', linestyle='--', label=f'lowest validation loss (epoch {best})')
        finetuned = [h['epoch'] for h in history if h.get('finetune')]
        if finetuned:
            ax.axvspan(finetuned[0] - 0.5, finetuned[-1] + 0.5, color='0.9', label='large-margin fine-tuning')
        ax.set_xlabel('epoch')
        ax.set_ylabel('loss' if metric == 'loss' else 'accuracy (%)')
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def speaker_colours(n):
    """n distinct colours: tab20's ten strong hues, then its ten light ones (neighbours differ most); beyond 20,
    turbo."""
    if n > 20:
        return list(colormaps['turbo'](np.linspace(0.05, 0.95, n)))
    tab20 = colormaps['tab20'].colors
    return [tab20[i] for i in list(range(0, 20, 2)) + list(range(1, 20, 2))][:n]


def project(vectors, method, perplexity, seed):
    """2-D coordinates (n, 2) of d-vectors (n, embedding_size), and the axes' labels (none for t-SNE)."""
    from sklearn.decomposition import PCA  # scikit-learn is imported when a map is drawn: the stages that plot
    from sklearn.manifold import TSNE  # only curves do not load it
    x = vectors.numpy().astype(np.float64)
    if method == 'pca':
        pca = PCA(n_components=2).fit(x)
        share = 100 * pca.explained_variance_ratio_
        return pca.transform(x), (f'PC 1 ({share[0]:.0f} % of the variance)', f'PC 2 ({share[1]:.0f} %)')
    # t-SNE wants more than 3 x perplexity points; with fewer it is lowered, as the perplexity flag's help says
    perplexity = min(perplexity, max((len(x) - 1) / 3, 1))
    tsne = TSNE(n_components=2, perplexity=perplexity, init='pca', random_state=seed)
    return tsne.fit_transform(x), ('', '')


def plot_dvector_map(points, centres, sexes, path, title, axis_labels=('', '')):
    """A 2-D map of d-vectors: one colour per speaker, the marker its sex, a large star for its enrollment.

    points: {speaker: (n, 2) map coordinates of its test d-vectors}; centres: {speaker: (2,) of its
    enrollment d-vector} (speakers without one get no star); sexes: {speaker: 'F', 'M' or None};
    axis_labels: (x, y); none given: the axes carry no meaning of their own (t-SNE) and have no ticks.
    """
    speakers = sorted(set(points) | set(centres))
    colour = dict(zip(speakers, speaker_colours(len(speakers))))
    any_sex = any(sexes.get(s) for s in speakers)
    unknown = UNKNOWN_MARKER if any_sex else 'o'

    def marker(speaker):
        return SEX_MARKERS.get(sexes.get(speaker), unknown)

    size = float(np.clip(4000 / max(sum(len(xy) for xy in points.values()), 1), 8, 40))  # smaller when many

    fig = Figure(figsize=(9, 6.5))
    ax = fig.subplots()
    for s in speakers:
        if s in points:
            xy = np.asarray(points[s])
            ax.scatter(xy[:, 0], xy[:, 1], s=size, marker=marker(s), color=colour[s], alpha=0.7, linewidths=0)
    for s in speakers:  # stars over every point, so that none hides one
        if s in centres:
            ax.scatter(*centres[s], s=320, marker='*', color=colour[s], edgecolors='k', linewidths=1.2, zorder=3)
    grey = {'color': '0.4', 'linestyle': 'none'}
    handles = [Line2D([], [], marker=m, label=f'test, {SEX_NAMES[sex]}', **grey)
               for sex, m in SEX_MARKERS.items() if any(sexes.get(s) == sex for s in points)]
    if any(not sexes.get(s) for s in points):
        handles.append(Line2D([], [], marker=unknown, label='test, sex not in the id' if any_sex else 'test', **grey))
    if centres:
        handles.append(Line2D([], [], marker='*', markersize=14, markeredgecolor='k', label='enrollment', **grey))
    if len(speakers) <= MAX_LEGEND_SPEAKERS:
        handles += [Line2D([], [], marker=marker(s), color=colour[s], linestyle='none', label=s) for s in speakers]
    ax.legend(handles=handles, loc='upper left', bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False,
              ncols=2 if len(handles) > 24 else 1)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    if not any(axis_labels):
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)
