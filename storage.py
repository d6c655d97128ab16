"""What the stages write and read back: atomic writes, checkpoints, enrolled d-vectors."""
import os
from pathlib import Path

import torch

from model.model import BackgroundResNet

CHECKPOINT_KEYS = {'state_dict', 'model_args', 'speakers', 'feature', 'run_id', 'epoch'}


def select_device(name='auto'):
    """The torch.device for 'auto' (CUDA when there is a GPU), 'cpu' or 'cuda[:N]'."""
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA GPU is available; use 'auto' or 'cpu'")
    return torch.device(name)


def atomic_write(path, write):
    """Call write(binary file) on a temporary file beside `path`, then rename it to `path`.

    A crash or Ctrl-C midway leaves the old file (or none), never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        with open(tmp, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save(obj, path):
    """torch.save(obj, path), atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path, device='cpu'):
    """The checkpoint dict saved by train.py, with tensors on `device`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (train one with train.py, or pass --checkpoint)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or not CHECKPOINT_KEYS <= set(ckpt):
        raise ValueError(f"{path}: not a checkpoint written by this project's train.py")
    return ckpt


def model_from_checkpoint(ckpt, device):
    """The model rebuilt from a checkpoint's own settings and weights, in eval mode."""
    model = BackgroundResNet(**ckpt['model_args'])
    model.load_state_dict(ckpt['state_dict'])
    return model.to(device).eval()


def load_model(path, device):
    """(model in eval mode, checkpoint dict) of the checkpoint at `path`."""
    ckpt = load_checkpoint(path, device)
    return model_from_checkpoint(ckpt, device), ckpt


def model_id(ckpt):
    """Which trained model a checkpoint holds: its training run and epoch."""
    return f"{ckpt['run_id']}/epoch{ckpt['epoch']}"


def save_enrollment(embedding_dir, speaker, embedding, files, ckpt):
    """Store a speaker's d-vector (embedding_size,) as <embedding_dir>/<speaker>.pth."""
    record = {'embedding': embedding.cpu(), 'files': list(files), 'model_id': model_id(ckpt)}
    atomic_save(record, Path(embedding_dir) / f'{speaker}.pth')


def load_enrollment(embedding_dir, ckpt, device='cpu'):
    """{speaker: d-vector (embedding_size,)} of the speakers enrolled in `embedding_dir`.

    Refuses d-vectors made by another model than the checkpoint's: their scores would be noise.
    """
    paths = sorted(Path(embedding_dir).glob('*.pth'))
    if not paths:
        raise FileNotFoundError(f"no enrolled speakers in {embedding_dir} (run enroll.py first)")
    enrolled = {}
    for p in paths:
        try:
            record = torch.load(p, map_location=device, weights_only=True)
            enrolled[p.stem] = record['embedding']
        except Exception as e:
            raise ValueError(f"{p}: not a readable enrollment file ({e}); run enroll.py again") from e
        if record.get('model_id') != model_id(ckpt):
            raise ValueError(f"{p} was enrolled with model {record.get('model_id')}, not with this checkpoint's "
                             f"{model_id(ckpt)}; run enroll.py again with this checkpoint")
    return enrolled
