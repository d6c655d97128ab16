"""Stage 1: train the background model, a ResNet speaker classifier whose embedding layer gives d-vectors.

    python train.py                  # settings from configure.py
    python train.py --epochs 5       # flags override configure.py (--help lists them)
    python train.py --resume         # continue the interrupted run in --log-dir
    python train.py --recipe improved  # attentive statistics pooling, AAM-softmax, 2 s windows, SpecAugment
    python train.py --recipe improved --init-from model_saved/checkpoint_best.pth --log-dir runs/lmft \
        --win-size 300 --margin 0.5 --margin-warmup 0 --lr 0.001 --epochs 3   # large-margin fine-tuning

Writes <log-dir>/checkpoint_<epoch>.pth every epoch, checkpoint_best.pth (lowest validation
loss) and loss_plot.png.
"""
import argparse
import contextlib
import hashlib
import math
import os
import re
import time
import uuid
from functools import partial
from pathlib import Path

from matplotlib.figure import Figure
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

import cli
import configure as c
from DB_wav_reader import read_feats_structure
from features import feature_settings
from SR_Dataset import DvectorDataset, collate_fn_feat_padded, load_features
from losses import LOSSES, build_criterion, margin_at
from model.model import POOLINGS, BackgroundResNet
from model.resnet import BACKBONES
from plots import save_figure
from speed import PRECISIONS, Step, autocast_dtype, preload_fits, select_device, use_channels_last
from storage import atomic_save, load_checkpoint

# Flags that --resume takes from the command line; every other setting comes from the checkpoint,
# so that the run continues exactly (num_workers too: each worker draws its own random windows).
RESUME_OVERRIDES = ('resume', 'epochs', 'log_dir', 'device', 'log_interval', 'preload')
SCHEDULES = ('plateau', 'cosine', 'exponential')
# what runs of checkpoints without these settings used
EARLIER_RUNS = {'precision': 'fp32', 'channels_last': 'no', 'recipe': 'tutorial', 'pooling': 'avg', 'loss': 'softmax',
                'base_channels': 16, 'spec_augment': 'no', 'freq_mask': c.FREQ_MASK, 'time_mask': c.TIME_MASK,
                'margin': c.MARGIN, 'scale': c.SCALE, 'margin_warmup': c.MARGIN_WARMUP, 'schedule': 'plateau',
                'init_from': None}
TRAINING_STATE_KEYS = {'optimizer', 'scheduler', 'rng_state', 'history', 'train_args', 'train_files'}


def parse_args(argv=None):
    p = cli.parser(__doc__)
    setting = partial(cli.setting, p)  # flag, default and help of a configure.py setting
    setting('TRAIN_FEAT_DIR')
    setting('LOG_DIR')
    setting('EPOCHS', type=cli.positive_int)
    setting('BATCH_SIZE', type=cli.positive_int)
    setting('VALID_BATCH_SIZE', type=cli.positive_int)
    setting('OPTIMIZER', choices=['sgd', 'adam', 'adagrad'])
    setting('LR')
    setting('SCHEDULE', choices=SCHEDULES)
    setting('WARMUP_EPOCHS', type=cli.non_negative_int)
    p.add_argument('--init-from', metavar='CHECKPOINT',
                   help="start a new run from this checkpoint's weights (fine-tuning); the model settings must match")
    setting('RECIPE', choices=list(c.RECIPES))
    setting('BACKBONE', choices=list(BACKBONES))
    setting('BASE_CHANNELS', type=cli.positive_int)
    setting('EMBEDDING_SIZE', type=cli.positive_int)
    setting('POOLING', choices=POOLINGS)
    setting('LOSS', choices=LOSSES)
    setting('MARGIN')
    setting('SCALE')
    setting('MARGIN_WARMUP', type=cli.non_negative_int)
    setting('NUM_WIN_SIZE', '--win-size', type=cli.positive_int)
    setting('SPEC_AUGMENT', choices=['yes', 'no'])
    setting('FREQ_MASK', type=cli.non_negative_int)
    setting('TIME_MASK', type=cli.non_negative_int)
    setting('VAL_RATIO', type=float)
    setting('NUM_WORKERS')
    setting('SEED')
    cli.add_device_arg(p)
    setting('PRECISION', choices=PRECISIONS)
    setting('CHANNELS_LAST', choices=['auto', 'yes', 'no'])
    setting('PRELOAD', choices=['auto', 'yes', 'no'])
    setting('LOG_INTERVAL', type=cli.positive_int)
    p.add_argument('--resume', nargs='?', const='latest', metavar='CHECKPOINT',
                   help='continue a run: from the latest checkpoint in --log-dir, or from CHECKPOINT')
    recipe = p.parse_known_args(argv)[0].recipe
    unknown = set(c.RECIPES[recipe]) - set(vars(p.parse_known_args([])[0]))
    if unknown:
        p.error(f"configure.RECIPES[{recipe!r}] names settings that train.py does not have: {', '.join(unknown)}")
    p.set_defaults(**c.RECIPES[recipe])
    args = p.parse_args(argv)
    if args.schedule != 'plateau' and args.warmup_epochs >= args.epochs:
        p.error(f"--warmup-epochs ({args.warmup_epochs}) must be fewer than --epochs ({args.epochs})")
    if not 0 <= args.margin < 1 or args.scale <= 0:
        p.error(f"--margin must be in [0, 1) and --scale above 0, not {args.margin} and {args.scale}")
    return args


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


def scheduled_lr(progress, schedule, lr, min_lr, warmup):
    """The learning rate `progress` of the way through training under a fixed schedule.

    progress and warmup are fractions of the whole run (0..1): a linear rise from 0 to `lr` over the warm-up,
    then a cosine or exponential fall that reaches `min_lr` at the end, as WeSpeaker schedules it.
    """
    if progress < warmup:
        return lr * progress / warmup
    t = (progress - warmup) / (1 - warmup) if warmup < 1 else 1.0
    if schedule == 'cosine':
        return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * t))
    if schedule == 'exponential':
        return lr * (min_lr / lr) ** t
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def make_loaders(train_DB, valid_DB, speakers, feature, args, device, feats=None, rank=0, world_size=1):
    """Training windows (random, shuffled, SpecAugment-masked if args say) and whole validation utterances
    (padded by repetition).

    feats: the preloaded features of train_DB and valid_DB (in that order), or None to read files per item.
    With several processes (torchrun), each trains on its share of every batch of args.batch_size
    and validates on all of the validation set.
    """
    spk_to_idx = {spk: i for i, spk in enumerate(speakers)}
    train_feats, valid_feats = (feats[:len(train_DB)], feats[len(train_DB):]) if feats else (None, None)
    train_set = DvectorDataset(train_DB, spk_to_idx, feature, random_windows=True, feats=train_feats,
                               augment=(args.freq_mask, args.time_mask) if args.spec_augment == 'yes' else None)
    valid_set = DvectorDataset(valid_DB, spk_to_idx, feature, random_windows=False, feats=valid_feats)
    if len(train_set) < args.batch_size:
        raise ValueError(f"{len(train_set)} training utterances, fewer than one batch of {args.batch_size}")
    # Workers are started afresh each epoch and seeded from torch's main generator, whose state the
    # checkpoints keep: that is what makes --resume exact.
    workers = dict(num_workers=args.num_workers, pin_memory=device.type == 'cuda')
    # drop_last: a last batch of one sample would break batch norm; the windows are random anyway
    if world_size == 1:
        train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True, **workers)
    else:
        sampler = DistributedSampler(train_set, world_size, rank, shuffle=True, seed=args.seed, drop_last=True)
        train_loader = DataLoader(train_set, batch_size=args.batch_size // world_size, sampler=sampler,
                                  drop_last=True, **workers)
    valid_loader = DataLoader(valid_set, batch_size=args.valid_batch_size, collate_fn=collate_fn_feat_padded,
                              **workers)
    return train_loader, valid_loader


def train_epoch(model, loader, criterion, optimizer, step, epoch, log_interval, lr_at=None):
    """One pass over the training windows; returns (mean loss, accuracy %) (of this process's share).

    lr_at(progress in epochs), when given, sets the learning rate before every batch (fixed schedules).
    """
    model.train()
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)  # another shuffle every epoch
    total_loss, n_correct, n_seen = 0.0, 0, 0
    bar = tqdm(loader, desc=f'epoch {epoch}', leave=False, dynamic_ncols=True, disable=None)
    for batch_idx, (inputs, targets) in enumerate(bar):  # (B, 1, n_filters, win_size), (B,)
        if lr_at:
            for group in optimizer.param_groups:
                group['lr'] = lr_at(epoch - 1 + batch_idx / len(loader))
        logits, loss = step.forward(model, inputs, targets, criterion)
        step.backward(loss, optimizer)
        targets = targets.to(logits.device)

        total_loss += loss.item() * len(targets)
        n_correct += (logits.argmax(1) == targets).sum().item()
        n_seen += len(targets)
        bar.set_postfix(loss=f'{total_loss / n_seen:.4f}', acc=f'{100 * n_correct / n_seen:.2f}%')
        if batch_idx % log_interval == 0:
            tqdm.write(f'Train Epoch: {epoch:3d} [{n_seen:7d}/{len(loader.sampler):7d}] '
                       f'Loss {loss.item():.4f} ({total_loss / n_seen:.4f})  Acc {100 * n_correct / n_seen:.2f}%')
    return total_loss / n_seen, 100 * n_correct / n_seen


def start_processes(device_name, batch_size):
    """(rank, world size, device) of this process: one of torchrun's processes when it started us, else (0, 1, ...)."""
    device = select_device(device_name)
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    if world_size == 1:
        return 0, 1, device
    if batch_size % world_size:
        raise ValueError(f"the batch size {batch_size} must split evenly over the {world_size} processes")
    if device.type == 'cuda':
        device = torch.device('cuda', int(os.environ['LOCAL_RANK']))
        torch.cuda.set_device(device)
    dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    return dist.get_rank(), world_size, device


def mean_over_processes(device, *values):
    """The values averaged over torchrun's processes (each worked on an equal share of the data)."""
    if not dist.is_initialized():
        return values
    total = torch.tensor(values, dtype=torch.float64, device=device)  # NCCL reduces only GPU tensors
    dist.all_reduce(total)
    return tuple((total / dist.get_world_size()).tolist())


@torch.no_grad()
def validate(model, loader, criterion, step):
    """Loss and accuracy % on whole validation utterances."""
    model.eval()
    total_loss, n_correct, n_seen = 0.0, 0, 0
    for inputs, targets in tqdm(loader, desc='validation', leave=False, dynamic_ncols=True, disable=None):
        logits, loss = step.forward(model, inputs, targets, criterion)
        targets = targets.to(logits.device)
        total_loss += loss.item() * len(targets)
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
    saved = {**vars(args), **EARLIER_RUNS, 'win_size': ckpt['feature']['win_size'], **ckpt['train_args']}
    changed = [f"--{k.replace('_', '-')}" for k in cli.flags_given(argv, sorted(set(saved) - set(RESUME_OVERRIDES)))
               if getattr(args, k) not in (saved[k], 'auto')]  # 'auto' leaves the run's resolved setting
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


def init_weights(net, path, model_args, speakers):
    """Load the weights of the checkpoint at `path` into net, a model of the same settings and speakers."""
    init = load_checkpoint(path)
    differ = [f"{k} {init['model_args'].get(k)} (--init-from) vs {v}" for k, v in model_args.items()
              if init['model_args'].get(k) != v]
    if differ or init['speakers'] != speakers:
        raise ValueError(f"--init-from {path}: its model does not match this run's "
                         f"({'; '.join(differ) or 'other training speakers'}); use the same --recipe and model flags")
    net.load_state_dict(init['state_dict'])
    print(f"Weights from {path} (epoch {init['epoch']})")


def files_fingerprint(DB):
    """A digest of the list of training files: a resumed run must see the same files (and so the same split)."""
    return hashlib.sha1('\n'.join(DB['filename']).encode()).hexdigest()


def main(argv=None):
    args = parse_args(argv)
    ckpt = None
    if args.resume:
        args, ckpt = resumed_args(args, argv)
    rank, world_size, device = start_processes(args.device, args.batch_size)
    try:
        with contextlib.ExitStack() as stack:
            if rank != 0:  # the first process speaks and writes for all
                stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, 'w'))))
            return fit(args, ckpt, device, rank, world_size)
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def fit(args, ckpt, device, rank=0, world_size=1):
    """Train (or continue training) as args say; returns the history of the epochs."""
    run_id = ckpt['run_id'] if ckpt else uuid.uuid4().hex[:12]
    check_log_dir(args.log_dir, run_id)
    feature = ckpt['feature'] if ckpt else {**feature_settings(), 'win_size': args.win_size}

    DB = read_feats_structure(args.train_feat_dir)
    train_DB, valid_DB = split_train_valid(DB, args.val_ratio, args.seed)
    speakers = sorted(DB['speaker_id'].unique())
    if ckpt and ckpt['train_files'] != files_fingerprint(DB):
        raise ValueError(f"the files in {args.train_feat_dir} changed since the run started, and with them the "
                         "train/validation split; resume needs the same files")
    amp_dtype = autocast_dtype(args.precision, device)
    args.precision = {None: 'fp32', torch.bfloat16: 'bf16', torch.float16: 'fp16'}[amp_dtype]  # 'auto' resolved
    torch.manual_seed(args.seed)
    model_args = {'embedding_size': args.embedding_size, 'num_classes': len(speakers), 'backbone': args.backbone,
                  'base_channels': args.base_channels, 'pooling': args.pooling,
                  'head': 'linear' if args.loss == 'softmax' else 'cosine', 'n_filters': feature['n_filters']}
    net = BackgroundResNet(**model_args)
    channels_last = use_channels_last(args.channels_last, device, net)
    args.channels_last = 'yes' if channels_last else 'no'
    net = net.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    files = list(train_DB['filename']) + list(valid_DB['filename'])
    preload = args.preload == 'yes' or (args.preload == 'auto' and preload_fits(files))
    print(f"Training set {len(train_DB)} utts, validation set {len(valid_DB)} utts, "
          f"{len(speakers)} speakers (classes), device {device}, precision {args.precision}, channels-last "
          f"{args.channels_last}, features {'in memory' if preload else 'read from disk per item'}\n"
          f"Recipe {args.recipe}: {args.backbone} x{args.base_channels}, pooling {args.pooling}, loss {args.loss}"
          f"{f' (margin {args.margin}, scale {args.scale})' if args.loss != 'softmax' else ''}, "
          f"windows of {feature['win_size']} frames, SpecAugment {args.spec_augment}; lr {args.lr} {args.schedule}"
          f"{f' (warm-up {args.warmup_epochs} epochs)' if args.schedule != 'plateau' else ''}"
          f"{f', weights from {args.init_from}' if args.init_from else ''}")
    feats = load_features(files, feature, keep=preload)

    step = Step(device, amp_dtype, channels_last)
    criterion = build_criterion(args.loss, args.margin, args.scale)
    valid_criterion = build_criterion(args.loss, 0.0, args.scale)  # without margin: comparable across epochs
    optimizer = create_optimizer(args.optimizer, net.parameters(), args.lr, c.MOMENTUM, c.WEIGHT_DECAY)
    scheduler = ReduceLROnPlateau(optimizer, 'min', patience=c.LR_PATIENCE, min_lr=c.MIN_LR)
    lr_at = None
    if args.schedule != 'plateau':
        def lr_at(progress):  # progress in epochs
            return scheduled_lr(progress / args.epochs, args.schedule, args.lr, c.MIN_LR,
                                args.warmup_epochs / args.epochs)
    history = []
    if args.init_from and not ckpt:
        init_weights(net, args.init_from, model_args, speakers)
    if ckpt:
        net.load_state_dict(ckpt['state_dict'])
        optimizer.load_state_dict(ckpt['optimizer'])
        scheduler.load_state_dict(ckpt['scheduler'])
        torch.set_rng_state(ckpt['rng_state'])
        step.scaler.load_state_dict(ckpt.get('scaler', {}))
        history = ckpt['history']
    train_loader, valid_loader = make_loaders(train_DB, valid_DB, speakers, feature, args, device, feats, rank,
                                              world_size)
    # several processes: DDP averages the gradients, and starts every process from the first one's weights
    model = net if world_size == 1 else DistributedDataParallel(net, [device] if device.type == 'cuda' else None)

    log_dir = Path(args.log_dir)
    for epoch in range(len(history) + 1, args.epochs + 1):
        start = time.time()
        if args.loss != 'softmax':
            criterion.margin = margin_at(epoch, args.margin, args.margin_warmup)
        try:
            train_loss, train_acc = mean_over_processes(device, *train_epoch(
                model, train_loader, criterion, optimizer, step, epoch, args.log_interval, lr_at))
            # every process validates on all of it, but with its own batch-norm statistics: the mean makes
            # the learning-rate schedule the same everywhere
            valid_loss, valid_acc = mean_over_processes(device, *validate(net, valid_loader, valid_criterion, step))
        except KeyboardInterrupt:
            if epoch == 1:
                raise SystemExit("\nInterrupted in epoch 1, before any checkpoint was saved") from None
            raise SystemExit(f"\nInterrupted in epoch {epoch}; epochs 1-{epoch - 1} are saved in {log_dir}. "
                             f"Continue with: python train.py --resume --log-dir {log_dir}") from None
        lr = optimizer.param_groups[0]['lr']  # the epoch's last
        if args.schedule == 'plateau':
            scheduler.step(valid_loss)
        history.append({'epoch': epoch, 'train_loss': train_loss, 'train_acc': train_acc, 'valid_loss': valid_loss,
                        'valid_acc': valid_acc, 'lr': lr, 'seconds': time.time() - start})
        print(f"Epoch {epoch:3d}: train loss {train_loss:.4f} acc {train_acc:.2f}% | "
              f"validation loss {valid_loss:.4f} acc {valid_acc:.2f}% | lr {lr:g} | {time.time() - start:.0f} s")

        if rank != 0:
            continue
        checkpoint = {'epoch': epoch, 'run_id': run_id, 'state_dict': net.state_dict(),
                      'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict(),
                      'rng_state': torch.get_rng_state(), 'scaler': step.scaler.state_dict(), 'history': history,
                      'speakers': speakers, 'model_args': model_args, 'feature': feature, 'train_args': vars(args),
                      'scoring': c.SCORINGS.get(args.recipe, {}),
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
