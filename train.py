"""Stage 1: train the background model, a ResNet speaker classifier whose embedding layer gives d-vectors.

    python train.py                  # settings from configure.py
    python train.py --epochs 5       # flags override configure.py (--help lists them)
    python train.py --resume         # continue the interrupted run in --log-dir
    python train.py --recipe improved  # attentive statistics pooling, AAM-softmax, 2 s windows, SpecAugment,
                                       # then 3 epochs of large-margin fine-tuning
    python train.py --resume --finetune-epochs 3  # add fine-tuning to a finished run in --log-dir
    torchrun --standalone --nproc_per_node 2 train.py   # several processes, e.g. one per GPU (distributed.py)

Writes <log-dir>/checkpoint_<epoch>.pth every epoch, checkpoint_best.pth (lowest validation
loss; among the fine-tuning epochs once they begin) and loss_plot.png.
"""
import math
import re
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.utils.data import DataLoader
from tqdm import tqdm

import configure as c
from DB_wav_reader import holds_audio, read_training_structure
from dvector import cli, distributed
from dvector.atomic import atomic_save
from dvector.augment_audio import WaveAugmenter
from dvector.augment_features import Augmenter
from dvector.augmentation import AUGMENT_SETTINGS, ROOMS, augment_settings
from dvector.checkpoint import load_checkpoint
from dvector.fbank import feature_settings
from dvector.frontend import reading_settings
from dvector.losses import LOSSES, build_criterion, margin_at
from dvector.plots import plot_history
from dvector.speed import keep_freed_memory, preload_fits, use_channels_last
from dvector.stage import bfloat16_units, select_device
from dvector.training import PRECISIONS, DeviceSetup, autocast_dtype, train_step
from dvector.training_run import (
    check_log_dir,
    diverged,
    files_fingerprint,
    finetuning_begun,
    interrupted,
    restore,
    resumed_args,
    split_train_valid,
    training_checkpoint,
)
from dvector.utterance import training_level
from model.model import POOLINGS, BackgroundResNet
from model.resnet import BACKBONES
from SR_Dataset import DvectorDataset, collate_fn_feat_padded, load_features

SCHEDULES = ('plateau', 'cosine', 'exponential')


def augment_type(name, kind):
    """The argparse type of the flag of AUGMENT_SETTINGS' `name`, whose default is of type `kind`."""
    if kind is tuple:
        if name.endswith(('_SNR', '_DRR', '_DB', '_DBFS')):
            return cli.decibel_range
        return cli.positive_range if name == 'AUG_RT60' else cli.value_range  # a reverberation time divides
    return cli.probability if name.endswith(('_PROB', '_SHARE')) else cli.finite_float if kind is float else kind


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
    setting('MOMENTUM')
    setting('WEIGHT_DECAY')
    setting('SCHEDULE', choices=SCHEDULES)
    setting('LR_PATIENCE', type=cli.non_negative_int)
    setting('MIN_LR')
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
    setting('AUGMENT', choices=['yes', 'no'])
    for name in AUGMENT_SETTINGS:
        kind = type(getattr(c, name))
        choices = {'choices': ROOMS} if name == 'AUG_ROOMS' else {'metavar': 'LOW,HIGH' if kind is tuple else None}
        setting(name, type=augment_type(name, kind), **choices)
    setting('SPEED_PERTURB', choices=['yes', 'no'])
    setting('SPEEDS', type=cli.positive_range, metavar='SLOW,FAST')
    setting('FINETUNE_EPOCHS', type=cli.non_negative_int)
    setting('FINETUNE_LR')
    setting('FINETUNE_WIN_SIZE', type=cli.positive_int)
    setting('FINETUNE_MARGIN')
    setting('VAL_RATIO', type=cli.finite_float)
    setting('NUM_WORKERS')
    setting('SEED')
    cli.add_device_arg(p)
    setting('PRECISION', choices=PRECISIONS)
    setting('CHANNELS_LAST', choices=['auto', 'yes', 'no'])
    setting('PRELOAD', choices=['auto', 'yes', 'no'])
    setting('FBANK', choices=['python_speech_features', 'torch'])
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
    if not 0 <= args.margin < 1 or not 0 <= args.finetune_margin < 1 or args.scale <= 0:
        p.error(f"--margin and --finetune-margin must be in [0, 1) and --scale above 0, not {args.margin}, "
                f"{args.finetune_margin} and {args.scale}")
    try:  # checked whether augmentation is on or not: a run records them either way
        augment_settings(args)
    except ValueError as e:
        p.error(str(e))
    unused = [f"--{k.replace('_', '-')}" for k in ('noise_dir', 'rir_dir') if k in args.given and getattr(args, k)]
    if unused and args.augment != 'yes':
        p.error(f"{' and '.join(unused)}: used by augmentation only, which is off; add --augment yes, or leave "
                f"{'them' if len(unused) > 1 else 'it'} out")
    return args


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


class TrainingData(NamedTuple):
    """The utterances a run trains and validates on."""
    train_DB: object  # DataFrame (filename, speaker_id, dataset_id) of the training utterances
    valid_DB: object  # ... and of the validation utterances
    speakers: list    # the sorted speaker ids: the classes
    train_feats: list | None  # the trimmed features of train_DB in memory (float32), or None: read per item
    valid_feats: list | None  # ... and of valid_DB

    def files(self):
        return list(self.train_DB['filename']) + list(self.valid_DB['filename'])


def read_data(args, feature):
    """The TrainingData of args.train_feat_dir: the split of split_train_valid, the features preloaded as
    --preload says. Made from audio, the validation utterances' features are kept in memory when they fit
    (unless --preload no): they are the same every epoch (whole utterances, no augmentation)."""
    DB = read_training_structure(args.train_feat_dir)
    train_DB, valid_DB = split_train_valid(DB, args.val_ratio, args.seed)
    speakers = sorted(DB['speaker_id'].unique())
    files, valid_files = list(train_DB['filename']) + list(valid_DB['filename']), list(valid_DB['filename'])
    audio = holds_audio(DB)
    if not audio and 'fbank' in args.given and args.fbank != c.FBANK:
        raise ValueError(f"--fbank {args.fbank}: {args.train_feat_dir} holds features (.p) made already; --fbank says "
                         "how training from audio makes them: leave it out")
    preload = args.preload == 'yes' or (args.preload == 'auto' and not audio and preload_fits(files))
    keep_valid = audio and not preload and args.preload == 'auto' and preload_fits(valid_files)
    print(f"Training set {len(train_DB)} utts, validation set {len(valid_DB)} utts, {len(speakers)} speakers "
          f"(classes), features "
          f"{'in memory' if preload else 'made from audio per item' if audio else 'read from disk per item'}"
          f"{' (validation in memory)' if keep_valid else ''}")
    feats = load_features(files, feature, keep=preload, fbank_device=fbank_device(args))  # every file checked
    if preload:
        return TrainingData(train_DB, valid_DB, speakers, feats[:len(train_DB)], feats[len(train_DB):])
    valid_feats = load_features(valid_files, feature, fbank_device=fbank_device(args)) if keep_valid else None
    return TrainingData(train_DB, valid_DB, speakers, None, valid_feats)


def fbank_device(args):
    """Where training from audio makes its fbank: None, by python_speech_features; 'cpu', by torch (FBANK)."""
    return 'cpu' if args.fbank == 'torch' else None


def num_classes(args, speakers):
    """The classifier's classes: the training speakers, and with speed perturbation each at each speed."""
    return len(speakers) * (1 + len(args.speeds) if args.speed_perturb == 'yes' else 1)


def build_model(args, num_classes, feature, device, auto_choices=None):
    """(net, model_args, setup, auto_choices): the model of args' settings, its initial weights seeded with
    args.seed, on the device; and how the batches run through it (a DeviceSetup).

    auto_choices: {'precision', 'channels_last'} as a resumed run's 'auto' chose them (it may choose otherwise
    on another machine); None: choose for args' own. Returned: what was chosen, never 'auto'.
    """
    model_args = {'embedding_size': args.embedding_size, 'num_classes': num_classes, 'backbone': args.backbone,
                  'base_channels': args.base_channels, 'pooling': args.pooling,
                  'head': 'linear' if args.loss == 'softmax' else 'cosine', 'n_filters': feature['n_filters']}
    torch.manual_seed(args.seed)
    net = BackgroundResNet(**model_args)
    asked = auto_choices or {'precision': args.precision, 'channels_last': args.channels_last}
    amp_dtype = autocast_dtype(asked['precision'], device)
    channels_last = use_channels_last(asked['channels_last'], device, net)
    chosen = {'precision': {None: 'fp32', torch.bfloat16: 'bf16', torch.float16: 'fp16'}[amp_dtype],
              'channels_last': 'yes' if channels_last else 'no'}
    why = f" ({bfloat16_units(device).why})" if asked['precision'] == 'auto' else ''
    setup = DeviceSetup(device, amp_dtype, torch.channels_last if channels_last else torch.contiguous_format)
    print(f"Recipe {args.recipe}: {args.backbone} x{args.base_channels}, pooling {args.pooling}, loss {args.loss}"
          f"{f' (margin {args.margin}, scale {args.scale})' if args.loss != 'softmax' else ''}, "
          f"windows of {feature['win_size']} frames, SpecAugment {args.spec_augment}, augmentation {args.augment}"
          f"{f', speeds {args.speeds}' if args.speed_perturb == 'yes' else ''}; lr {args.lr} {args.schedule}"
          f"{f' (warm-up {args.warmup_epochs} epochs)' if args.schedule != 'plateau' else ''}"
          f"{f', weights from {args.init_from}' if args.init_from else ''}; device {device}, precision "
          f"{chosen['precision']}{why}, channels-last {chosen['channels_last']}")
    return net.to(device, memory_format=setup.memory_format), model_args, setup, chosen


def augmenters(args, feature, train_feats, train_DB):
    """{'augmenter'} (augmentation on the features) or {'wave_augmenter'} (on the waveform: audio read per item)
    of the training set, as args.augment asks; {} without augmentation."""
    if args.augment != 'yes':
        return {}
    if train_feats is None and holds_audio(train_DB):
        return {'wave_augmenter': WaveAugmenter(augment_settings(args), feature['sample_rate'])}
    if args.rir_dir and args.aug_rooms == 'decay':
        raise ValueError(f"--rir-dir {args.rir_dir}: on features, room impulse responses are used with --aug-rooms "
                         "drawn (each through its energy response); with 'decay' the rooms are the synthetic decay of "
                         "--aug-rt60 and --aug-drr: add --aug-rooms drawn, or leave --rir-dir out")
    return {'augmenter': Augmenter(augment_settings(args), feature)}


def make_loaders(data, feature, args, device, ddp=None):
    """Training windows (random, shuffled, SpecAugment-masked if args say) and whole validation utterances
    (padded by repetition) of the TrainingData `data`.

    ddp: a distributed.Torchrun, whose process trains on its share of every batch (and validates on all).
    """
    train_DB, valid_DB, speakers, train_feats, valid_feats = data
    spk_to_idx = {spk: i for i, spk in enumerate(speakers)}

    train_set = DvectorDataset(train_DB, spk_to_idx, feature, random_windows=True, feats=train_feats,
                               spec_augment=(args.freq_mask, args.time_mask) if args.spec_augment == 'yes' else None,
                               speeds=args.speeds if args.speed_perturb == 'yes' else (),
                               fbank_device=fbank_device(args), **augmenters(args, feature, train_feats, train_DB))
    valid_set = DvectorDataset(valid_DB, spk_to_idx, feature, random_windows=False, feats=valid_feats,
                               fbank_device=fbank_device(args))
    if len(train_set) < args.batch_size:
        raise ValueError(f"{len(train_set)} training utterances, fewer than one batch of {args.batch_size}")
    # Workers are started afresh each epoch and seeded from torch's main generator, whose state the
    # checkpoints keep: that is what makes --resume exact.
    workers = {'num_workers': args.num_workers, 'pin_memory': device.type == 'cuda'}
    # drop_last: a last batch of one sample would break batch norm; the windows are random anyway
    if ddp:
        train_loader = ddp.train_loader(train_set, args.batch_size, args.seed, **workers)
    else:
        train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True, **workers)
    valid_loader = DataLoader(valid_set, batch_size=args.valid_batch_size, collate_fn=collate_fn_feat_padded,
                              **workers)
    return train_loader, valid_loader


def fixed_schedule(args):
    """lr_at(progress in epochs) of a cosine or exponential schedule; None for 'plateau', which sets the
    learning rate after each epoch instead."""
    if args.schedule == 'plateau':
        return None
    return lambda progress: scheduled_lr(progress / args.epochs, args.schedule, args.lr, args.min_lr,
                                         args.warmup_epochs / args.epochs)


def finetune_schedule(args):
    """lr_at(progress in epochs) of the fine-tuning epochs: a cosine from FINETUNE_LR to MIN_LR, no warm-up."""
    return lambda progress: scheduled_lr((progress - args.epochs) / args.finetune_epochs, 'cosine',
                                         args.finetune_lr, args.min_lr, 0.0)


def begin_finetuning(net, args, log_dir, history, ddp=None):
    """The optimizer of the fine-tuning epochs (fresh), after loading into net the weights of the epoch of
    `history` (the epochs so far) with the lowest validation loss, from its checkpoint in log_dir."""
    if ddp:
        ddp.barrier()  # the first process has written the last epoch's checkpoint
    epoch = best_epoch(history)['epoch']
    for path in (Path(log_dir) / f'checkpoint_{epoch}.pth', Path(log_dir) / 'checkpoint_best.pth'):
        if path.is_file() and (ckpt := load_checkpoint(path))['epoch'] == epoch:
            net.load_state_dict(ckpt['state_dict'])
            break
    else:
        raise FileNotFoundError(f"fine-tuning starts from epoch {epoch} (lowest validation loss), but {log_dir} "
                                f"holds no checkpoint of it (checkpoint_{epoch}.pth or checkpoint_best.pth)")
    print(f"Large-margin fine-tuning, epochs {args.epochs + 1}-{args.epochs + args.finetune_epochs}, from epoch "
          f"{epoch} (lowest validation loss): windows of {args.finetune_win_size} frames"
          f"{f', margin {args.finetune_margin} at once' if args.loss != 'softmax' else ''}, lr {args.finetune_lr} "
          f"cosine to {args.min_lr}")
    return create_optimizer(args.optimizer, net.parameters(), args.finetune_lr, args.momentum, args.weight_decay)


def worker_error(e):
    """The error a DataLoader worker caught, its message naming the file as with --num-workers 0, of e: torch's
    'Caught FeatureFileError in DataLoader worker process 0. Original Traceback (...)'; None when e is no such error."""
    text = str(e)
    caught = list(re.finditer(rf'^(?:[\w.]+\.)?{type(e).__name__}: ', text, re.M))
    if not text.startswith(f'Caught {type(e).__name__} in DataLoader worker') or not caught:
        return None
    return type(e)(text[caught[-1].end():].strip())


def train_epoch(model, loader, criterion, optimizer, scaler, setup, epoch, log_interval, lr_at=None):
    """One pass over the training windows; returns (mean loss, accuracy %) (of this process's share).

    scaler: float16's torch.amp.GradScaler, or None. lr_at(progress in epochs), when given, sets the
    learning rate before every batch (fixed schedules).
    """
    model.train()
    total_loss, n_correct, n_seen = 0.0, 0, 0
    bar = tqdm(loader, desc=f'epoch {epoch}', leave=False, dynamic_ncols=True, disable=None)
    for batch_idx, (inputs, targets) in enumerate(bar):
        if lr_at:
            for group in optimizer.param_groups:
                group['lr'] = lr_at(epoch - 1 + batch_idx / len(loader))
        inputs = inputs.to(setup.device, memory_format=setup.memory_format)  # (B, 1, n_filters, win_size)
        targets = targets.to(setup.device)                                    # (B,) speaker indices
        loss, logits = train_step(model, inputs, targets, criterion, optimizer, scaler, setup)
        value = loss.item()  # on the CPU already for the running mean: checking it costs nothing
        if not math.isfinite(value):
            raise ValueError(diverged('training', value, epoch, f', step {batch_idx + 1} of {len(loader)}'))
        total_loss += value * len(targets)
        n_correct += (logits.argmax(1) == targets).sum().item()
        n_seen += len(targets)
        bar.set_postfix(loss=f'{total_loss / n_seen:.4f}', acc=f'{100 * n_correct / n_seen:.2f}%')
        if batch_idx % log_interval == 0:
            tqdm.write(f'Train Epoch: {epoch:3d} [{n_seen:7d}/{len(loader.sampler):7d}] '
                       f'Loss {value:.4f} ({total_loss / n_seen:.4f})  Acc {100 * n_correct / n_seen:.2f}%')
    return total_loss / n_seen, 100 * n_correct / n_seen


@torch.no_grad()
def validate(model, loader, criterion, setup):
    """Loss and accuracy % on whole validation utterances."""
    model.eval()
    total_loss, n_correct, n_seen = 0.0, 0, 0
    for inputs, targets in tqdm(loader, desc='validation', leave=False, dynamic_ncols=True, disable=None):
        inputs = inputs.to(setup.device, memory_format=setup.memory_format)  # (B, 1, n_filters, T)
        targets = targets.to(setup.device)
        with setup.autocast():
            _, logits = model(inputs)
            loss = criterion(logits, targets)
        total_loss += loss.item() * len(targets)
        n_correct += (logits.argmax(1) == targets).sum().item()
        n_seen += len(targets)
    return total_loss / n_seen, 100 * n_correct / n_seen


def best_epoch(history):
    """The epoch record with the lowest validation loss: among the fine-tuning epochs once there are some."""
    phase = history[-1].get('finetune', False)
    return min((h for h in history if h.get('finetune', False) == phase), key=lambda h: h['valid_loss'])


def save_epoch(checkpoint, history, log_dir):
    """Write the epoch's checkpoint_<epoch>.pth, checkpoint_best.pth when it is the best so far, and the plot."""
    epoch = history[-1]['epoch']
    # the best first: a crash between the two writes is then repaired by resuming, which redoes this epoch
    if best_epoch(history)['epoch'] == epoch:
        atomic_save(checkpoint, log_dir / 'checkpoint_best.pth')
    atomic_save(checkpoint, log_dir / f'checkpoint_{epoch}.pth')
    plot_history(history, best_epoch(history)['epoch'], log_dir / 'loss_plot.png')


class Phase(NamedTuple):
    """A stretch of epochs trained alike: the main epochs, then the large-margin fine-tuning epochs."""
    finetune: bool
    epochs: range
    win_size: int                          # frames of the training windows
    lr_at: Callable[[float], float] | None  # the lr at a progress in epochs (fixed schedules); None: plateau
    margin_at: Callable[[int], float]       # the margin of the loss in an epoch


def training_phases(args):
    """The Phases of a run: its EPOCHS, then its FINETUNE_EPOCHS (none by default)."""
    return (Phase(False, range(1, args.epochs + 1), args.win_size, fixed_schedule(args),
                  lambda epoch: margin_at(epoch, args.margin, args.margin_warmup)),
            Phase(True, range(args.epochs + 1, args.epochs + args.finetune_epochs + 1), args.finetune_win_size,
                  finetune_schedule(args), lambda epoch: args.finetune_margin))


class Training(NamedTuple):
    """What every epoch of a run uses (fit builds it; the optimizer is fit's: fine-tuning starts a new one)."""
    net: torch.nn.Module
    model: torch.nn.Module  # net, or net wrapped by DDP
    criterion: torch.nn.Module
    valid_criterion: torch.nn.Module
    scheduler: ReduceLROnPlateau
    scaler: torch.amp.GradScaler | None
    setup: DeviceSetup
    log_dir: Path


def main(argv=None):
    args = parse_args(argv)
    ckpt = None
    if args.resume:
        args, ckpt = resumed_args(args)
    device = select_device(args.device)
    if distributed.started_by_torchrun():  # one of several processes (distributed.py)
        with distributed.Torchrun(device, args.batch_size) as ddp:
            return fit(args, ckpt, ddp.device, ddp)
    return fit(args, ckpt, device)


def fit(args, ckpt, device, ddp=None):
    """Train (or continue training) as args say; returns the history of the epochs.

    ckpt: the checkpoint of the run to continue, or None for a new run. ddp: this process's
    distributed.Torchrun when torchrun started several, else None.
    """
    run_id = ckpt['run_id'] if ckpt else uuid.uuid4().hex[:12]
    check_log_dir(args.log_dir, run_id)
    feature = ckpt['feature'] if ckpt else {**feature_settings(), 'win_size': args.win_size}
    data = read_data(args, feature)
    if not ckpt:  # recorded for the stages' level 'auto' (frontend.level_gain)
        feature['train_level'], found = training_level(data.files(), reading_settings(feature))
        print(f"Speech level of the training data: {feature['train_level']:g} dBFS ({found})")
    net, model_args, setup, auto_choices = build_model(args, num_classes(args, data.speakers), feature, device,
                                                       ckpt['auto_choices'] if ckpt else None)
    if setup.memory_format == torch.channels_last:  # our fast path; the tutorial's loop runs as it ran
        keep_freed_memory()
    optimizer = create_optimizer(args.optimizer, net.parameters(), args.lr, args.momentum, args.weight_decay)
    scheduler = ReduceLROnPlateau(optimizer, 'min', patience=args.lr_patience, min_lr=args.min_lr)
    # float16 only: its gradients would underflow without a scaled-up loss (bfloat16 has float32's range)
    scaler = torch.amp.GradScaler(device.type) if setup.amp_dtype == torch.float16 else None
    split = {'seed': args.seed, 'val_ratio': args.val_ratio}
    history = restore(ckpt, args.init_from, net, optimizer, scheduler, scaler, model_args, data.speakers, split)
    run = {'run_id': run_id, 'speakers': data.speakers, 'model_args': model_args, 'feature': feature,
           'train_args': {k: v for k, v in vars(args).items() if k != 'given'}, 'auto_choices': auto_choices,
           'scoring': c.SCORINGS.get(args.recipe, {}), 'train_files': files_fingerprint(data.files())}
    training = Training(net, ddp.wrap(net) if ddp else net,  # DDP averages the gradients over the processes
                        build_criterion(args.loss, args.margin, args.scale),
                        build_criterion(args.loss, 0.0, args.scale),  # without margin: comparable across epochs
                        scheduler, scaler, setup, Path(args.log_dir))
    for phase in training_phases(args):
        epochs = [epoch for epoch in phase.epochs if epoch > len(history)]
        if not epochs:
            continue
        if phase.finetune and not finetuning_begun(history):
            optimizer = begin_finetuning(net, args, training.log_dir, history, ddp)
        loaders = make_loaders(data, {**feature, 'win_size': phase.win_size}, args, device, ddp)
        for epoch in epochs:
            history.append(train_and_validate(training, phase, epoch, loaders, optimizer, args, ddp))
            if ddp is None or ddp.is_first:  # one process writes for all
                save_epoch(training_checkpoint(epoch=epoch, history=history, model=net, optimizer=optimizer,
                                               scheduler=scheduler, scaler=scaler, **run), history, training.log_dir)
    if history:
        best = best_epoch(history)
        print(f"Lowest validation loss {best['valid_loss']:.4f} (accuracy {best['valid_acc']:.2f}%) "
              f"{'of the fine-tuning epochs ' if best.get('finetune') else ''}at epoch {best['epoch']}: "
              f"{training.log_dir / 'checkpoint_best.pth'}")
    return history


def train_and_validate(training, phase, epoch, loaders, optimizer, args, ddp=None):
    """Train one epoch of a phase, validate, and step the plateau schedule; returns the epoch's record."""
    start = time.time()
    train_loader, valid_loader = loaders
    if args.loss != 'softmax':
        training.criterion.margin = phase.margin_at(epoch)
    if ddp:
        ddp.start_epoch(train_loader, epoch)
    try:
        train_loss, train_acc = train_epoch(training.model, train_loader, training.criterion, optimizer,
                                            training.scaler, training.setup, epoch, args.log_interval, phase.lr_at)
        valid_loss, valid_acc = validate(training.net, valid_loader, training.valid_criterion, training.setup)
    except KeyboardInterrupt:
        raise SystemExit(interrupted(epoch, training.log_dir)) from None
    except (OSError, ValueError) as e:  # a bad training file: named in one line, whether a worker read it or not
        if (caught := worker_error(e)) is None:
            raise
        raise caught from e  # DVECTOR_DEBUG=1 shows the worker's traceback too
    if ddp:  # every process trained on its share, and validated with its own batch-norm statistics
        train_loss, train_acc, valid_loss, valid_acc = ddp.mean(train_loss, train_acc, valid_loss, valid_acc)
    if not math.isfinite(valid_loss):
        raise ValueError(diverged('validation', valid_loss, epoch))
    lr = optimizer.param_groups[0]['lr']  # the epoch's last
    if phase.lr_at is None:
        training.scheduler.step(valid_loss)
    print(f"Epoch {epoch:3d}: train loss {train_loss:.4f} acc {train_acc:.2f}% | "
          f"validation loss {valid_loss:.4f} acc {valid_acc:.2f}% | lr {lr:g} | {time.time() - start:.0f} s")
    return {'epoch': epoch, 'train_loss': train_loss, 'train_acc': train_acc, 'valid_loss': valid_loss,
            'valid_acc': valid_acc, 'lr': lr, 'seconds': time.time() - start, 'finetune': phase.finetune}


if __name__ == '__main__':
    cli.run(main)
