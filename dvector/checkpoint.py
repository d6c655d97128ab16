"""A trained model's checkpoint: reading one safely, and rebuilding its model.

What train.py writes in it is listed in training_run.training_checkpoint; the stages need CHECKPOINT_KEYS.
"""
from pathlib import Path

import torch

from dvector.feature_files import is_level
from model.model import BackgroundResNet

# What every checkpoint holds: all that the stages need to use its model ...
CHECKPOINT_KEYS = {'state_dict', 'model_args', 'speakers', 'feature', 'run_id', 'epoch'}
# ... and what train.py's checkpoints hold besides, to continue the run (make_pretrained keeps scoring, train_args)
TRAINING_KEYS = {'scoring', 'history', 'optimizer', 'scheduler', 'scaler', 'rng_state', 'train_args', 'auto_choices',
                 'train_files'}


def load_checkpoint(path, device='cpu', to_resume=False):
    """The checkpoint dict saved by train.py, with tensors on `device`.

    to_resume: it must hold the training state that --resume continues from (TRAINING_KEYS).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (train one with train.py, or pass --checkpoint)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable checkpoint ({load_problem(e)})") from e
    if not isinstance(ckpt, dict) or not CHECKPOINT_KEYS <= set(ckpt) or not isinstance(ckpt['feature'], dict):
        raise ValueError(f"{path}: not a checkpoint written by this project's train.py")
    level = ckpt['feature'].get('train_level')
    if level is not None and not is_level(level):
        raise ValueError(f"{path}: its training speech level {level!r} is not a level in dBFS (train.py writes one "
                         "between -200 and 50)")
    if to_resume and not TRAINING_KEYS <= set(ckpt):
        missing = ', '.join(sorted(TRAINING_KEYS - set(ckpt)))
        raise ValueError(f"{path}: holds no training state to resume from (it lacks {missing}: a published "
                         "checkpoint keeps only what the stages need, and an older train.py wrote other keys); "
                         "start a new run from its weights with --init-from")
    return ckpt


def load_problem(e):
    """What torch.load(weights_only=True) found wrong with a file, in a line, without its advice to load it with
    weights_only=False: that runs whatever code the file holds, never to be done with a file of unknown origin."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip() and 'weights_only' not in line]
    return ' '.join(lines).removeprefix('WeightsUnpickler error:').strip() or type(e).__name__


def model_from_checkpoint(ckpt, device):
    """The model rebuilt from a checkpoint's own settings and weights, in eval mode."""
    try:
        model = BackgroundResNet(**ckpt['model_args'])
        model.load_state_dict(ckpt['state_dict'])
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"the checkpoint's weights do not fit its model settings ({e})") from e
    model.eval()
    try:  # its features' settings must fit its model's: the filters it was built for, and one tiny input of them
        n_filters = ckpt['feature']['n_filters']
        if ckpt['model_args'].get('n_filters', n_filters) != n_filters:
            raise ValueError(f"{ckpt['model_args']['n_filters']} filters, not {n_filters}")
        with torch.no_grad():
            model.embed(torch.zeros(1, 1, n_filters, 100))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"the checkpoint's settings do not fit together: its model {ckpt['model_args']} does not "
                         f"take its features {ckpt.get('feature')} ({str(e).splitlines()[0]})") from e
    return model.to(device)


def model_id(ckpt):
    """Which trained model a checkpoint holds: its training run and epoch."""
    return f"{ckpt['run_id']}/epoch{ckpt['epoch']}"
