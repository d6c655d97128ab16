"""Write a published checkpoint (pretrained/): what the stages need, in float16, and how it was made.

    python -m tools.make_pretrained --checkpoint runs/all200/checkpoint_best.pth \\
        --twin runs/holdout180/checkpoint_best.pth --out pretrained/dvector_etri200_improved.pth

Keeps the weights (stored in float16, checked to move no score by more than 1e-3), the model and
feature settings, the scoring settings its recipe recommends (configure.SCORINGS), its AS-norm
cohort (of those settings, with what it was built from, so that AS-norm works without the training
data) and its thresholds; for the record, its training settings (train_args), the validation accuracy of its
epoch (valid_acc) and the float16 check's largest score change (float16_score_change). The
thresholds are not tuned on anything this model is scored on: they are the EER thresholds of its
twin, the same recipe trained without the held-out speakers, calibrated on them with the recommended
segment lengths (`verification.py --trials trials/holdout20.txt --checkpoint <twin> --calibrate`,
and again with `--score-norm none`); a threshold file missing beside the twin, or calibrated with
other scoring settings, is left out.
"""
import argparse
import json

import torch
import torch.nn.functional as F

import configure as c
from DB_wav_reader import read_training_structure
from dvector import cli
from dvector.atomic import atomic_save, refuse_overwriting
from dvector.checkpoint import load_checkpoint, model_from_checkpoint
from dvector.cohort import build_cohort
from dvector.embedding import embed_all
from dvector.frontend import reading_settings
from dvector.records import load_threshold, threshold_path
from dvector.stage import (
    COHORT_SETTINGS,
    SCORE_NORMS,
    SCORING_SETTINGS,
    for_inference,
    resolve_scoring,
    scoring_settings,
)
from dvector.utterance import read_utterance

MAX_SCORE_CHANGE = 1e-3
CHECK_UTTERANCES = 200  # training utterances whose d-vectors check the float16 weights


def twin_thresholds(twin, scoring):
    """{score_norm: calibration record} of the twin checkpoint's thresholds calibrated with the recommended scoring
    (each score normalisation with the recommended segment lengths). One that is not finite, or calibrated on
    another model than the twin's, is refused (records.load_threshold)."""
    thresholds, twin_ckpt = {}, load_checkpoint(twin)
    for score_norm in SCORE_NORMS:
        path = threshold_path(twin, score_norm)
        expected = scoring_settings(argparse.Namespace(**{**scoring_without_flags(scoring), 'score_norm': score_norm}))
        record = json.loads(path.read_text()) if path.is_file() else None
        if record and record.get('scoring') == expected:
            record = {k: v for k, v in load_threshold(twin, twin_ckpt, expected).items() if k != 'source'}
            thresholds[score_norm] = {**record, 'calibrated_on': f"the twin model {twin}, {record['trials']}"}
        else:
            print(f"No threshold for {expected}: {path} {'holds another' if record else 'is not there'}")
    return thresholds


def scoring_without_flags(scoring):
    """The scoring settings a stage resolves, with no flag given, for a checkpoint that recommends `scoring`:
    configure.py's, with the recommended ones in their place."""
    asked = {name: getattr(c, name.upper()) for name in SCORING_SETTINGS + COHORT_SETTINGS}
    return {name: value for name, (value, _) in resolve_scoring(asked, set(), {'scoring': scoring}).items()}


def float16_score_change(ckpt, state, files):
    """The largest change of a cosine score between d-vectors of `files` when the weights are stored as `state`."""
    vectors = []
    feats = {f: read_utterance(f, reading_settings(ckpt['feature'])) for f in files}  # read once, for both
    for weights in (ckpt['state_dict'], state):
        model = model_from_checkpoint({**ckpt, 'state_dict': weights}, 'cpu')
        found = embed_all(model, files, feats.__getitem__, c.TEST_FRAMES, 'cpu')
        vectors.append(torch.stack([found[f] for f in files]))
    return ((vectors[0] @ vectors[0].T) - (vectors[1] @ vectors[1].T)).abs().max().item()


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument('--checkpoint', required=True, help='the trained model (train.py on all training speakers)')
    p.add_argument('--twin', help='the same recipe trained without the held-out speakers, with calibrated thresholds')
    p.add_argument('--out', required=True, help='the published checkpoint to write')
    args = p.parse_args(argv)
    refuse_overwriting(args.out, (args.checkpoint, args.twin))

    ckpt = load_checkpoint(args.checkpoint)
    scoring = c.SCORINGS[ckpt['train_args']['recipe']]
    model = for_inference(model_from_checkpoint(ckpt, 'cpu'), 'cpu')  # as load_model, without reading it again
    train_dir = ckpt['train_args']['train_feat_dir']
    settings = scoring_without_flags(scoring)
    cohort_source = {'utts_per_speaker': settings['cohort_utts'], 'kind': settings['cohort']}
    cohort = build_cohort(model, {**ckpt, 'scoring': scoring}, train_dir, settings['cohort_utts'], 'cpu',
                          settings['cohort'])
    state = {k: v.half() if v.is_floating_point() else v for k, v in ckpt['state_dict'].items()}
    train_files = read_training_structure(train_dir)['filename']
    files = list(train_files.sample(min(CHECK_UTTERANCES, len(train_files)), random_state=0))
    change = float16_score_change(ckpt, state, files)
    if change > MAX_SCORE_CHANGE:
        raise ValueError(f"float16 weights move scores by {change:.1e}, more than {MAX_SCORE_CHANGE}")
    valid_acc = ckpt['history'][-1]['valid_acc']  # a checkpoint's history ends with its own epoch
    published = {
        'state_dict': state, 'model_args': ckpt['model_args'], 'speakers': ckpt['speakers'],
        'feature': ckpt['feature'], 'run_id': ckpt['run_id'], 'epoch': ckpt['epoch'], 'scoring': scoring,
        'cohort': F.normalize(cohort.half().float(), dim=1).half(), 'cohort_source': cohort_source,
        'thresholds': twin_thresholds(args.twin, scoring) if args.twin else {},
        'train_args': ckpt['train_args'], 'valid_acc': valid_acc, 'float16_score_change': change,
    }
    atomic_save(published, args.out)
    print(f"{args.out}: epoch {ckpt['epoch']}, validation accuracy {valid_acc:.2f} %, scoring {scoring}, "
          f"cohort {tuple(cohort.shape)}, thresholds {sorted(published['thresholds'])}; float16 weights move "
          f"scores by at most {change:.1e}")


if __name__ == '__main__':
    cli.run(main)
