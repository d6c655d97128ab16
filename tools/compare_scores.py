"""Compare models on one trial list: EER, minDCF and top-1 of each, and their DET curves in one plot.

Score the same trial list with each model (verification.py --scores), then:

    python verification.py --trials trials/holdout20.txt --checkpoint runs/a/checkpoint_best.pth --scores results/a.txt
    python verification.py --trials trials/holdout20.txt --checkpoint runs/b/checkpoint_best.pth --scores results/b.txt
    python -m tools.compare_scores results/a.txt results/b.txt --names tutorial improved --out results/det_compare.png
"""
import configure as c
from dvector import cli
from dvector.atomic import refuse_overwriting
from dvector.metrics import P_TARGETS, summarize
from dvector.plots import plot_det
from dvector.trials import read_scores


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument('scores', nargs='+', help='score files written by verification.py --scores')
    p.add_argument('--names', nargs='+', help='a name for each score file (default: the file names)')
    p.add_argument('--out', default=f'{c.RESULTS_DIR}/det_compare.png', help='the DET plot')
    p.add_argument('--title', default='DET curves', help='the title of the plot')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    refuse_overwriting(args.out, args.scores)
    names = args.names or args.scores
    if len(names) != len(args.scores):
        raise ValueError(f"{len(args.scores)} score files but {len(names)} names")
    if len(set(names)) != len(names):
        raise ValueError(f"each score file needs its own name: {' '.join(names)}")
    runs = {name: read_scores(path) for name, path in zip(names, args.scores, strict=True)}
    first_trials = next(iter(runs.values()))[0]
    for name, path in zip(names, args.scores, strict=True):
        if runs[name][0] != first_trials:
            raise ValueError(f"{path} scores other trials than {args.scores[0]}; compare scores of one trial list")
    summaries = {name: summarize(trials, scores) for name, (trials, scores) in runs.items()}

    width = max(len(n) for n in names)
    s = next(iter(summaries.values()))
    print(f"{s['trials']} trials ({s['target_trials']} target, {s['nontarget_trials']} non-target)")
    print(f"{'':{width}}  {'EER %':>7}" + ''.join(f"  {f'minDCF {p}':>12}" for p in P_TARGETS) + f"  {'top-1 %':>8}")
    for name, s in summaries.items():
        top1 = '' if s['top1_percent'] is None else f"{s['top1_percent']:.2f}"
        print(f"{name:{width}}  {s['eer_percent']:7.2f}" + ''.join(f"  {s[f'min_dcf_p{p}']:12.4f}" for p in P_TARGETS)
              + f"  {top1:>8}")
    plot_det({name: (scores, [t.label for t in trials]) for name, (trials, scores) in runs.items()}, args.out,
             args.title)
    print(f"DET curves: {args.out}")
    return summaries


if __name__ == '__main__':
    cli.run(main)
