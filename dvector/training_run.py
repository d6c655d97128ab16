"""The life of a training run around train.py's lesson: what its checkpoints hold, its training/validation split,
resuming it exactly, starting from another run's weights, and refusing what would mix two runs.
"""
import argparse
import hashlib
import re
from pathlib import Path

import torch

from DB_wav_reader import read_training_structure
from dvector.checkpoint import load_checkpoint

# Flags that --resume takes from the command line; every other setting comes from the checkpoint,
# so that the run continues exactly (num_workers too: each worker draws its own random windows).
# --epochs only under a plateau schedule: a fixed schedule's learning rate at every step is set by the epoch count.
RESUME_OVERRIDES = ('resume', 'epochs', 'log_dir', 'device', 'log_interval', 'preload')
# Settings of the fine-tuning epochs: a resumed run takes those given on the command line until they begin.
FINETUNE_SETTINGS = ('finetune_epochs', 'finetune_lr', 'finetune_win_size', 'finetune_margin')
# Settings added after runs were made, with the value that does what those runs did: their checkpoints continue so.
ADDED_SETTINGS = {'aug_codec_share': 0.0, 'aug_rooms': 'decay'}


def training_checkpoint(*, epoch, history, model, optimizer, scheduler, scaler, run_id, speakers, model_args,
                        feature, scoring, train_args, auto_choices, train_files):
    """The checkpoint train.py writes after each epoch: the model, and the state of the run to resume it."""
    return {
        # to use the model (checkpoint.CHECKPOINT_KEYS): model_from_checkpoint rebuilds it from these alone
        'state_dict': model.state_dict(),
        'model_args': model_args,  # BackgroundResNet(**model_args)
        'speakers': speakers,      # the training speakers, in the order of the classifier's outputs
        'feature': feature,        # the features it was trained on (fbank.feature_settings) and 'win_size'
        'run_id': run_id,          # the training run and the epoch name the model: enrollments record them
        'epoch': epoch,
        'scoring': scoring,        # the scoring settings its recipe recommends (configure.SCORINGS)
        # to resume the run (checkpoint.TRAINING_KEYS)
        'history': history,        # one record per epoch: losses, accuracies, lr, seconds
        'optimizer': optimizer.state_dict(),
        'scheduler': scheduler.state_dict(),
        'scaler': scaler.state_dict() if scaler else None,  # float16's gradient scaler, if it has one
        'rng_state': torch.get_rng_state(),  # the random windows (and the workers' seeds) go on from here
        'train_args': train_args,  # every setting of the run: configure.py, then the flags
        'auto_choices': auto_choices,  # what 'auto' chose on this machine: {'precision', 'channels_last'}
        'train_files': train_files,  # files_fingerprint of the training files: a resumed run needs the same ones
    }


def split_train_valid(DB, val_ratio, seed):
    """(train_DB, valid_DB): a seeded random `val_ratio` percent of the utterances go to validation."""
    if not 0 < val_ratio < 100:
        raise ValueError(f"--val-ratio is a percentage between 0 and 100, not {val_ratio}")
    shuffled = DB.sample(frac=1, random_state=seed).reset_index(drop=True)
    n_train = len(DB) - int(len(DB) * val_ratio / 100)
    if n_train == len(DB) or n_train == 0:
        raise ValueError(f"{len(DB)} utterances and --val-ratio {val_ratio} (%) leave an empty training or validation "
                         "set")
    return shuffled.iloc[:n_train].reset_index(drop=True), shuffled.iloc[n_train:].reset_index(drop=True)


def files_fingerprint(filenames):
    """A digest of a set of training files: a resumed run must see the same files (and so the same split)."""
    return hashlib.sha1('\n'.join(sorted(map(str, filenames))).encode()).hexdigest()


def check_resume(ckpt, given, train_files):
    """Refuse to continue the run of checkpoint ckpt with other settings or other training files than its own.

    given: {setting: value} of the flags given on the command line that a resumed run takes from its
    checkpoint; each must be the run's ('auto', or what the run's 'auto' chose, passes too). Among them
    'epochs' under a fixed schedule (cosine, exponential), which its epoch count sets, and under any schedule
    once the fine-tuning epochs (numbered after them) have begun.
    train_files: the names of the training files now.
    """
    asked, chosen = ckpt['train_args'], ckpt['auto_choices']
    if given.get('epochs', asked['epochs']) != asked['epochs']:
        if asked['schedule'] == 'plateau':  # only once fine-tuning has begun is 'epochs' checked then
            raise ValueError(f"--epochs {given['epochs']}: the run's fine-tuning epochs have begun after its epoch "
                             f"{asked['epochs']}, so resuming cannot change that count; resume without --epochs")
        raise ValueError(f"--epochs {given['epochs']}: the run's {asked['schedule']} schedule is set by its epoch "
                         f"count, {asked['epochs']} (the learning rate of every step depends on it), so resuming "
                         f"cannot change it; resume without --epochs, or start a new run from its weights "
                         f"(--init-from) to train on. A plateau schedule may be resumed with more epochs")
    changed = [f"--{k.replace('_', '-')}" for k, v in given.items()
               if v not in ('auto', asked[k], chosen.get(k, 'auto'))]
    if changed:
        raise ValueError(f"{', '.join(changed)} cannot change when resuming a run (it continues with its own "
                         f"settings); start a new run in another --log-dir to change them")
    if files_fingerprint(train_files) != ckpt['train_files']:
        raise ValueError(f"the files in {asked['train_feat_dir']} changed since the run started, and with them the "
                         "train/validation split; resume needs the same files")


def latest_checkpoint(log_dir):
    """The checkpoint_<epoch>.pth of the highest epoch in log_dir, or None."""
    found = [(int(m.group(1)), p) for p in Path(log_dir).glob('checkpoint_*.pth')
             if (m := re.fullmatch(r'checkpoint_(\d+)\.pth', p.name))]
    return max(found)[1] if found else None


def finetuning_begun(history):
    """Whether the epochs of `history` include fine-tuning epochs."""
    return any(h.get('finetune') for h in history)


def resumed_args(args):
    """(run settings, checkpoint) of --resume: the checkpoint's own settings, with only the RESUME_OVERRIDES given
    on the command line (--epochs under a plateau schedule only), and, until the fine-tuning epochs begin, the
    FINETUNE_SETTINGS given there. Other settings, or other training files, than the run's are refused."""
    path = latest_checkpoint(args.log_dir) if args.resume == 'latest' else args.resume
    if path is None:
        raise FileNotFoundError(f"--resume: no checkpoint_<epoch>.pth in {args.log_dir} to continue from")
    ckpt = load_checkpoint(path, to_resume=True)
    ckpt['train_args'] = {**ADDED_SETTINGS, **ckpt['train_args']}
    unrecorded = sorted(set(vars(args)) - set(ckpt['train_args']) - {'given'})
    if unrecorded:
        raise ValueError(f"{path}: an older train.py wrote it, without recording {', '.join(unrecorded)}, so its run "
                         "cannot continue exactly; start a new run from its weights with --init-from")
    before_finetuning = not finetuning_begun(ckpt['history'])
    overrides = [k for k in RESUME_OVERRIDES
                 if k != 'epochs' or (ckpt['train_args']['schedule'] == 'plateau' and before_finetuning)]
    if before_finetuning:
        overrides += [k for k in FINETUNE_SETTINGS if k in args.given]
    given = {k: getattr(args, k) for k in sorted(args.given - set(overrides))}
    run_args = {**ckpt['train_args'], **{k: getattr(args, k) for k in overrides if k in args.given}}
    check_resume(ckpt, given, read_training_structure(run_args['train_feat_dir'])['filename'])
    if before_finetuning and run_args['finetune_epochs'] and run_args['epochs'] < ckpt['epoch']:
        raise ValueError(f"--epochs {run_args['epochs']}: the run is at epoch {ckpt['epoch']} already, and its "
                         f"fine-tuning epochs come after --epochs; resume with --epochs {ckpt['epoch']} or more")
    print(f"Resuming from {path} (epoch {ckpt['epoch']})")
    return argparse.Namespace(**run_args, given=args.given), ckpt


def check_log_dir(log_dir, run_id):
    """Refuse to write into a log dir that holds the checkpoints of another run."""
    for path in (latest_checkpoint(log_dir), Path(log_dir) / 'checkpoint_best.pth'):
        if path and path.is_file() and load_checkpoint(path)['run_id'] != run_id:
            raise ValueError(f"{log_dir} already holds a training run; continue it with --resume, "
                             "or choose another --log-dir (or delete it) to start a new one")


def init_weights(net, path, model_args, speakers, split):
    """Load the weights of the checkpoint at `path` into net, a model of the same settings and speakers,
    trained with the same validation split (`split`: {'seed', 'val_ratio'})."""
    init = load_checkpoint(path)
    differ = [f"{k} {init['model_args'].get(k)} (--init-from) vs {v}" for k, v in model_args.items()
              if init['model_args'].get(k) != v]
    if differ or init['speakers'] != speakers:
        raise ValueError(f"--init-from {path}: its model does not match this run's "
                         f"({'; '.join(differ) or 'other training speakers'}); use the same --recipe and model flags")
    its_split = {k: init['train_args'][k] for k in split}
    if its_split != split:
        raise ValueError(f"--init-from {path}: its run split off validation utterances with {its_split}, this run "
                         f"with {split}, so this run would validate on utterances the weights were trained on; pass "
                         f"--seed {its_split['seed']} --val-ratio {its_split['val_ratio']}")
    net.load_state_dict(init['state_dict'])
    print(f"Weights from {path} (epoch {init['epoch']})")


def restore(ckpt, init_from, net, optimizer, scheduler, scaler, model_args, speakers, split):
    """The history of the epochs done so far, after loading what the run goes on from.

    Resuming (ckpt: the run's checkpoint), the weights, optimizer, lr scheduler, gradient scaler and
    random generator continue where they were; a new run (ckpt None) starts from the weights of the
    checkpoint init_from (fine-tuning), if one is given, else from the random ones.
    """
    if ckpt is None:
        if init_from:
            init_weights(net, init_from, model_args, speakers, split)
        return []
    net.load_state_dict(ckpt['state_dict'])
    optimizer.load_state_dict(ckpt['optimizer'])
    scheduler.load_state_dict(ckpt['scheduler'])
    if scaler:
        scaler.load_state_dict(ckpt['scaler'])
    torch.set_rng_state(ckpt['rng_state'])  # the same random windows as if the run had never stopped
    return ckpt['history']


def interrupted(epoch, log_dir):
    """What to say when Ctrl-C stops the run in `epoch`: what is saved, and how to go on."""
    if epoch == 1:
        return "\nInterrupted in epoch 1, before any checkpoint was saved"
    return (f"\nInterrupted in epoch {epoch}; epochs 1-{epoch - 1} are saved in {log_dir}. "
            f"Continue with: python train.py --resume --log-dir {log_dir}")


def diverged(which, loss, epoch, where=''):
    """What to say when the `which` loss ('training' or 'validation') becomes NaN or infinite in `epoch` (at `where`
    in it): the run stops there, and no checkpoint of that epoch is written (the earlier ones are kept)."""
    kept = "no checkpoint was saved" if epoch == 1 else f"the checkpoints of epochs 1-{epoch - 1} are kept"
    return (f"the {which} loss became {loss} in epoch {epoch}{where}: training stopped, and {kept}. Lower --lr "
            "(or check --momentum, --weight-decay, --scale and the training files), and start again")
