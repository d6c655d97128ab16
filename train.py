"""Stage 1: train the background model, a ResNet speaker classifier whose embedding layer gives d-vectors.

    python train.py                  # settings from configure.py
    python train.py --epochs 5       # flags override configure.py (--help lists them)
    python train.py --resume         # continue the interrupted run in --log-dir

Writes <log-dir>/checkpoint_<epoch>.pth every epoch, checkpoint_best.pth (lowest validation
loss) and loss_plot.png.
"""
import argparse
import hashlib
import re
import time
import uuid
from pathlib import Path

from matplotlib.figure import Figure
import torch
import torch.nn as nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader
from tqdm import tqdm

import cli
import configure as c
from DB_wav_reader import read_feats_structure
from SR_Dataset import DvectorDataset, check_feature_files, collate_fn_feat_padded, feature_settings
from model.model import BackgroundResNet
from model.resnet import BACKBONES
from plots import save_figure
from storage import atomic_save, load_checkpoint

# Flags that --resume takes from the command line; every other setting comes from the checkpoint,
# so that the run continues exactly (num_workers too: each worker draws its own random windows).
RESUME_OVERRIDES = ('resume', 'epochs', 'log_dir', 'device', 'log_interval')
TRAINING_STATE_KEYS = {'optimizer', 'scheduler', 'rng_state', 'history', 'train_args', 'train_files'}


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument('--train-feat-dir', default=c.TRAIN_FEAT_DIR, help='<speaker>/<utterance>.p feature tree')
    p.add_argument('--log-dir', default=c.LOG_DIR, help='where checkpoints and plots go')
    p.add_argument('--epochs', type=cli.positive_int, default=c.EPOCHS, help='train up to this epoch')
    p.add_argument('--batch-size', type=cli.positive_int, default=c.BATCH_SIZE, help='training windows per batch')
    p.add_argument('--valid-batch-size', type=cli.positive_int, default=c.VALID_BATCH_SIZE,
                   help='utterances per validation batch')
    p.add_argument('--optimizer', choices=['sgd', 'adam', 'adagrad'], default=c.OPTIMIZER, help='optimizer')
    p.add_argument('--lr', type=float, default=c.LR, help='initial learning rate')
    p.add_argument('--backbone', choices=list(BACKBONES), default=c.BACKBONE, help='ResNet depth')
    p.add_argument('--embedding-size', type=cli.positive_int, default=c.EMBEDDING_SIZE, help='d-vector dimension')
    p.add_argument('--val-ratio', type=float, default=c.VAL_RATIO, help='percent of utterances for validation')
    p.add_argument('--num-workers', type=int, default=c.NUM_WORKERS, help='DataLoader worker processes')
    p.add_argument('--seed', type=int, default=c.SEED, help='seeds the split, the initial weights, the windows')
    cli.add_device_arg(p)
    p.add_argument('--log-interval', type=cli.positive_int, default=c.LOG_INTERVAL, help='batches between log lines')
    p.add_argument('--resume', nargs='?', const='latest', metavar='CHECKPOINT',
                   help='continue a run: from the latest checkpoint in --log-dir, or from CHECKPOINT')
    return p.parse_args(argv)


def split_train_valid(DB, val_ratio, seed):
    """(train_DB, valid_DB): a seeded random `val_ratio` percent of the utterances go to validation."""
    if not 0 < val_ratio < 100:
        raise ValueError(f"val_ratio is a percentage between 0 and 100, not {val_ratio}")
    shuffled = DB.sample(frac=1, random_state=seed).reset_index(drop=True)
    n_train = len(DB) - int(len(DB) * val_ratio / 100)
    if n_train == len(DB) or n_train == 0:
        raise ValueError(f"{len(DB)} utterances and val_ratio {val_ratio}% leave an empty training or validation set")
    return shuffled.iloc[:n_train].reset_index(drop=True), shuffled.iloc[n_train:].reset_index(drop=True)


def create_optimizer(name, params, lr, momentum, weight_decay):
    if name == 'sgd':
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == 'adam':
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == 'adagrad':
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose 'sgd', 'adam' or 'adagrad'")


def make_loaders(train_DB, valid_DB, speakers, feature, batch_size, valid_batch_size, num_workers, device):
    """Training windows (random, shuffled) and whole validation utterances (padded by repetition)."""
    spk_to_idx = {spk: i for i, spk in enumerate(speakers)}
    train_set = DvectorDataset(train_DB, spk_to_idx, feature, random_windows=True)
    valid_set = DvectorDataset(valid_DB, spk_to_idx, feature, random_windows=False)
    if len(train_set) < batch_size:
        raise ValueError(f"{len(train_set)} training utterances, fewer than one batch of {batch_size}")
    # Workers are started afresh each epoch and seeded from torch's main generator, whose state the
    # checkpoints keep: that is what makes --resume exact.
    workers = dict(num_workers=num_workers, pin_memory=device.type == 'cuda')
    # drop_last: a last batch of one sample would break batch norm; the windows are random anyway
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True, **workers)
    valid_loader = DataLoader(valid_set, batch_size=valid_batch_size, collate_fn=collate_fn_feat_padded, **workers)
    return train_loader, valid_loader


def train_epoch(model, loader, criterion, optimizer, device, epoch, log_interval):
    """One pass over the training windows; returns (mean loss, accuracy %)."""
    model.train()
    total_loss, n_correct, n_seen = 0.0, 0, 0
    bar = tqdm(loader, desc=f'epoch {epoch}', leave=False, dynamic_ncols=True, disable=None)
    for batch_idx, (inputs, targets) in enumerate(bar):
        inputs, targets = inputs.to(device), targets.to(device)  # (B, 1, n_filters, win_size), (B,)
        _, logits = model(inputs)
        loss = criterion(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        total_loss += loss.item() * len(targets)
        n_correct += (logits.argmax(1) == targets).sum().item()
        n_seen += len(targets)
        bar.set_postfix(loss=f'{total_loss / n_seen:.4f}', acc=f'{100 * n_correct / n_seen:.2f}%')
        if batch_idx % log_interval == 0:
            tqdm.write(f'Train Epoch: {epoch:3d} [{n_seen:7d}/{len(loader.dataset):7d}] '
                       f'Loss {loss.item():.4f} ({total_loss / n_seen:.4f})  Acc {100 * n_correct / n_seen:.2f}%')
    return total_loss / n_seen, 100 * n_correct / n_seen


@torch.no_grad()
def validate(model, loader, criterion, device):
    """Loss and accuracy % on whole validation utterances."""
    model.eval()
    total_loss, n_correct, n_seen = 0.0, 0, 0
    for inputs, targets in tqdm(loader, desc='validation', leave=False, dynamic_ncols=True, disable=None):
        inputs, targets = inputs.to(device), targets.to(device)
        _, logits = model(inputs)
        total_loss += criterion(logits, targets).item() * len(targets)
        n_correct += (logits.argmax(1) == targets).sum().item()
        n_seen += len(targets)
    return total_loss / n_seen, 100 * n_correct / n_seen


def best_epoch(history):
    """The epoch record with the lowest validation loss."""
    return min(history, key=lambda h: h['valid_loss'])


def plot_history(history, path):
    """Loss and accuracy curves (training and validation) per epoch, the best epoch marked, as a PNG."""
    epochs = [h['epoch'] for h in history]
    best = best_epoch(history)['epoch']
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ['loss', 'acc']):
        ax.plot(epochs, [h[f'train_{metric}'] for h in history], 'o-', label='training')
        ax.plot(epochs, [h[f'valid_{metric}'] for h in history], 'o-', label='validation')
        ax.axvline(best, color='r', linestyle='--', label=f'lowest validation loss (epoch {best})')
        ax.set_xlabel('epoch')
        ax.set_ylabel('loss' if metric == 'loss' else 'accuracy (%)')
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def latest_checkpoint(log_dir):
    """The checkpoint_<epoch>.pth of the highest epoch in log_dir, or None."""
    found = [(int(m.group(1)), p) for p in Path(log_dir).glob('checkpoint_*.pth')
             if (m := re.fullmatch(r'checkpoint_(\d+)\.pth', p.name))]
    return max(found)[1] if found else None


def resumed_args(args, argv):
    """(run settings, checkpoint): the checkpoint's own settings, with only RESUME_OVERRIDES from the flags."""
    path = latest_checkpoint(args.log_dir) if args.resume == 'latest' else args.resume
    if path is None:
        raise FileNotFoundError(f"--resume: no checkpoint_<epoch>.pth in {args.log_dir} to continue from")
    ckpt = load_checkpoint(path)
    if not TRAINING_STATE_KEYS <= set(ckpt):
        raise ValueError(f"{path}: holds no training state to resume from")
    saved = dict(ckpt['train_args'])
    changed = [f"--{k.replace('_', '-')}" for k in cli.flags_given(argv, sorted(set(saved) - set(RESUME_OVERRIDES)))
               if getattr(args, k) != saved[k]]
    if changed:
        raise ValueError(f"{', '.join(changed)} cannot change when resuming a run (it continues with its own "
                         f"settings); start a new run in another --log-dir to change them")
    saved.update({k: getattr(args, k) for k in RESUME_OVERRIDES})
    print(f"Resuming from {path} (epoch {ckpt['epoch']})")
    return argparse.Namespace(**saved), ckpt


def check_log_dir(log_dir, run_id):
    """Refuse to write into a log dir that holds the checkpoints of another run."""
    for path in (latest_checkpoint(log_dir), Path(log_dir) / 'checkpoint_best.pth'):
        if path and path.is_file() and load_checkpoint(path)['run_id'] != run_id:
            raise ValueError(f"{log_dir} already holds a training run; continue it with --resume, "
                             "or choose another --log-dir (or delete it) to start a new one")


def files_fingerprint(DB):
    """A digest of the list of training files: a resumed run must see the same files (and so the same split)."""
    return hashlib.sha1('\n'.join(DB['filename']).encode()).hexdigest()


def main(argv=None):
    args = parse_args(argv)
    ckpt = None
    if args.resume:
        args, ckpt = resumed_args(args, argv)
    run_id = ckpt['run_id'] if ckpt else uuid.uuid4().hex[:12]
    check_log_dir(args.log_dir, run_id)
    device = cli.select_device(args.device)
    feature = ckpt['feature'] if ckpt else feature_settings()

    DB = read_feats_structure(args.train_feat_dir)
    train_DB, valid_DB = split_train_valid(DB, args.val_ratio, args.seed)
    speakers = sorted(DB['speaker_id'].unique())
    if ckpt and ckpt['train_files'] != files_fingerprint(DB):
        raise ValueError(f"the files in {args.train_feat_dir} changed since the run started, and with them the "
                         "train/validation split; resume needs the same files")
    print(f"Training set {len(train_DB)} utts, validation set {len(valid_DB)} utts, "
          f"{len(speakers)} speakers (classes), device {device}")
    check_feature_files(DB['filename'], feature)

    torch.manual_seed(args.seed)
    model_args = {'embedding_size': args.embedding_size, 'num_classes': len(speakers), 'backbone': args.backbone}
    model = BackgroundResNet(**model_args).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = create_optimizer(args.optimizer, model.parameters(), args.lr, c.MOMENTUM, c.WEIGHT_DECAY)
    scheduler = ReduceLROnPlateau(optimizer, 'min', patience=c.LR_PATIENCE, min_lr=c.MIN_LR)
    history = []
    if ckpt:
        model.load_state_dict(ckpt['state_dict'])
        optimizer.load_state_dict(ckpt['optimizer'])
        scheduler.load_state_dict(ckpt['scheduler'])
        torch.set_rng_state(ckpt['rng_state'])
        history = ckpt['history']
    train_loader, valid_loader = make_loaders(train_DB, valid_DB, speakers, feature, args.batch_size,
                                              args.valid_batch_size, args.num_workers, device)

    log_dir = Path(args.log_dir)
    for epoch in range(len(history) + 1, args.epochs + 1):
        start = time.time()
        try:
            train_loss, train_acc = train_epoch(model, train_loader, criterion, optimizer, device, epoch,
                                                args.log_interval)
            valid_loss, valid_acc = validate(model, valid_loader, criterion, device)
        except KeyboardInterrupt:
            if epoch == 1:
                raise SystemExit("\nInterrupted in epoch 1, before any checkpoint was saved") from None
            raise SystemExit(f"\nInterrupted in epoch {epoch}; epochs 1-{epoch - 1} are saved in {log_dir}. "
                             f"Continue with: python train.py --resume --log-dir {log_dir}") from None
        lr = optimizer.param_groups[0]['lr']
        scheduler.step(valid_loss)
        history.append({'epoch': epoch, 'train_loss': train_loss, 'train_acc': train_acc, 'valid_loss': valid_loss,
                        'valid_acc': valid_acc, 'lr': lr, 'seconds': time.time() - start})
        print(f"Epoch {epoch:3d}: train loss {train_loss:.4f} acc {train_acc:.2f}% | "
              f"validation loss {valid_loss:.4f} acc {valid_acc:.2f}% | lr {lr:g} | {time.time() - start:.0f} s")

        checkpoint = {'epoch': epoch, 'run_id': run_id, 'state_dict': model.state_dict(),
                      'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict(),
                      'rng_state': torch.get_rng_state(), 'history': history, 'speakers': speakers,
                      'model_args': model_args, 'feature': feature, 'train_args': vars(args),
                      'train_files': files_fingerprint(DB)}
        # the best first: a crash between the two writes is then repaired by resuming, which redoes this epoch
        if best_epoch(history)['epoch'] == epoch:
            atomic_save(checkpoint, log_dir / 'checkpoint_best.pth')
        atomic_save(checkpoint, log_dir / f'checkpoint_{epoch}.pth')
        plot_history(history, log_dir / 'loss_plot.png')

    if history:
        best = best_epoch(history)
        print(f"Lowest validation loss {best['valid_loss']:.4f} (accuracy {best['valid_acc']:.2f}%) at epoch "
              f"{best['epoch']}: {log_dir / 'checkpoint_best.pth'}")
    return history


if __name__ == '__main__':
    cli.run(main)
