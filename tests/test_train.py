"""Training: the split, the loss going down, checkpoints, resuming, and interruption."""
import argparse
import errno
import io
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import configure
import train
from DB_wav_reader import read_feats_structure
from dvector import atomic, training
from dvector.atomic import atomic_save, atomic_write
from dvector.checkpoint import CHECKPOINT_KEYS, TRAINING_KEYS, load_checkpoint, model_from_checkpoint
from dvector.fbank import feature_settings
from dvector.feature_files import FeatureFileError
from dvector.stage import Bfloat16Units
from dvector.training import DeviceSetup, autocast_dtype
from dvector.training_run import check_resume, split_train_valid
from model.model import BackgroundResNet

from conftest import REPO, trains_as_the_plain_loop, write_feature, write_feature_tree


def run(feature_tree, log_dir, *flags):
    return train.main(['--train-feat-dir', str(feature_tree / 'train'), '--log-dir', str(log_dir),
                       '--batch-size', '8', '--valid-batch-size', '4', '--device', 'cpu', *flags])


def test_split_is_seeded_and_ninety_ten(feature_tree):
    DB = read_feats_structure(feature_tree / 'train')
    train_DB, valid_DB = split_train_valid(DB, 10, seed=0)
    assert (len(train_DB), len(valid_DB)) == (36, 4)
    assert set(train_DB['filename']).isdisjoint(valid_DB['filename'])
    again, _ = split_train_valid(DB, 10, seed=0)
    other, _ = split_train_valid(DB, 10, seed=1)
    assert list(again['filename']) == list(train_DB['filename'])
    assert list(other['filename']) != list(train_DB['filename'])
    with pytest.raises(ValueError, match='empty training or validation set'):
        split_train_valid(DB.iloc[:5], 10, seed=0)
    for ratio in (0, -5, 100, 150):
        with pytest.raises(ValueError, match=f'--val-ratio is a percentage between 0 and 100, not {ratio}'):
            split_train_valid(DB, ratio, seed=0)


@pytest.mark.parametrize('speed', [('--precision', 'fp32', '--channels-last', 'no'),  # the tutorial's
                                   ('--precision', 'auto', '--channels-last', 'auto')])  # bf16 on this CPU
@pytest.mark.slow
def test_training_lowers_the_loss(tmp_path, speed):
    tree = write_feature_tree(tmp_path / 'feat', n_train_speakers=4, n_utts=16, seed=1)
    # 6 epochs: with 3 validation utterances, batch norm's running statistics take a few epochs to settle (4 were
    # enough for one thread count and not for another)
    history = run(tree, tmp_path / 'log', '--epochs', '6', '--lr', '0.01', *speed)
    losses = [h['train_loss'] for h in history]
    assert losses[-1] < 0.5 * losses[0], losses
    assert history[-1]['valid_acc'] > 50  # 4 speakers: chance is 25%


@pytest.mark.parametrize('channels_last, kept', [('yes', True), ('no', False)])
@pytest.mark.slow
def test_freed_memory_is_kept_only_for_channels_last_training(feature_tree, tmp_path, monkeypatch, channels_last,
                                                             kept):
    """The tutorial's contiguous loop runs as the tutorial ran it; speed.keep_freed_memory is for our fast path."""
    calls = []
    monkeypatch.setattr(train, 'keep_freed_memory', lambda: calls.append(1))
    run(feature_tree, tmp_path, '--epochs', '1', '--precision', 'fp32', '--channels-last', channels_last)
    assert bool(calls) is kept


@pytest.mark.slow
def test_the_tutorial_path_adds_nothing_to_the_plain_loop(feature_tree, tmp_path):
    trains_as_the_plain_loop(tmp_path, feature_tree / 'train', tmp_path, '--batch-size', '8')


def test_checkpoints_hold_everything_needed_to_use_them(trained):
    # what train.py wrote; the stages' caches beside a checkpoint (its ONNX export, its AS-norm cohort) appear
    # when other tests of the session have used it
    files = sorted(p.name for p in trained.iterdir() if not p.name.endswith(('.onnx', '_cohort.pth')))
    assert files == ['checkpoint_1.pth', 'checkpoint_2.pth', 'checkpoint_best.pth', 'loss_plot.png']
    ckpt = load_checkpoint(trained / 'checkpoint_2.pth')
    assert ckpt['epoch'] == 2 and len(ckpt['history']) == 2
    assert ckpt['speakers'] == ['spk0', 'spk1', 'spk2', 'spk3']
    assert ckpt['model_args'] == {'embedding_size': 128, 'num_classes': 4, 'backbone': 'resnet18', 'base_channels': 16,
                                  'pooling': 'avg', 'head': 'linear', 'n_filters': 40}
    assert ckpt['feature']['n_filters'] == 40 and ckpt['feature']['trim_frames'] == 50
    assert ckpt['feature']['train_level'] == configure.TRAIN_LEVEL  # the tiny tree's feature files record no level
    assert set(ckpt) == CHECKPOINT_KEYS | TRAINING_KEYS
    # the settings as asked for ('auto'), and apart from them what this run made of them
    assert ckpt['train_args']['precision'] == 'auto' and ckpt['train_args']['channels_last'] == 'auto'
    assert ckpt['auto_choices']['precision'] in ('fp32', 'bf16') and ckpt['auto_choices']['channels_last'] == 'yes'
    best = min(ckpt['history'], key=lambda h: h['valid_loss'])['epoch']
    assert load_checkpoint(trained / 'checkpoint_best.pth')['epoch'] == best
    assert (trained / 'loss_plot.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_the_model_rebuilt_from_a_checkpoint_is_the_trained_one(trained, feature_tree):
    ckpt = load_checkpoint(trained / 'checkpoint_2.pth')
    model = model_from_checkpoint(ckpt, 'cpu')
    DB = read_feats_structure(feature_tree / 'train')
    train_DB, valid_DB = split_train_valid(DB, ckpt['train_args']['val_ratio'], ckpt['train_args']['seed'])
    args = argparse.Namespace(**ckpt['train_args'])
    cpu = torch.device('cpu')
    _, valid_loader = train.make_loaders(train.TrainingData(train_DB, valid_DB, ckpt['speakers'], None, None),
                                         ckpt['feature'], args, cpu)
    resolved = ckpt['auto_choices']  # as trained: the same kernels give the same numbers
    memory_format = torch.channels_last if resolved['channels_last'] == 'yes' else torch.contiguous_format
    compute = DeviceSetup(cpu, autocast_dtype(resolved['precision'], cpu), memory_format)
    model = model.to(memory_format=memory_format)
    loss, accuracy = train.validate(model, valid_loader, torch.nn.CrossEntropyLoss(), compute)
    assert loss == pytest.approx(ckpt['history'][-1]['valid_loss'], rel=1e-5)
    assert accuracy == ckpt['history'][-1]['valid_acc']


@pytest.mark.parametrize('flags', [('--num-workers', '0'), ('--num-workers', '2'),
                                   # the margin grows in epoch 3; a fixed schedule's lr depends on --epochs, which
                                   # this test changes to stop early
                                   ('--recipe', 'improved', '--margin-warmup', '2', '--schedule', 'plateau',
                                    '--finetune-epochs', '0')])
@pytest.mark.slow
def test_resume_continues_exactly(feature_tree, tmp_path, flags):
    straight = run(feature_tree, tmp_path / 'a', '--epochs', '3', *flags)
    run(feature_tree, tmp_path / 'b', '--epochs', '2', *flags)
    resumed = run(feature_tree, tmp_path / 'b', '--epochs', '3', '--resume')
    assert [h['valid_loss'] for h in resumed] == [h['valid_loss'] for h in straight]
    a, b = (load_checkpoint(tmp_path / d / 'checkpoint_3.pth')['state_dict'] for d in 'ab')
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
@pytest.mark.parametrize('precision', ['fp32', 'auto'])
def test_features_in_memory_train_exactly_as_features_read_per_item(feature_tree, tmp_path, precision):
    for preload in ('yes', 'no'):
        run(feature_tree, tmp_path / preload, '--epochs', '2', '--preload', preload, '--precision', precision)
    a, b = (load_checkpoint(tmp_path / d / 'checkpoint_2.pth')['state_dict'] for d in ('yes', 'no'))
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
def test_training_under_torchrun_with_two_processes(feature_tree, tmp_path):
    # --standalone: the rendezvous binds a port the OS picks (port 0), so no other test or run can hold it;
    # gloo on the loopback interface, whatever the host name resolves to; one thread a process, so that
    # two processes on a 2-core machine do not wait on each other's threads at every all-reduce
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'GLOO_SOCKET_IFNAME': 'lo'}
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
               str(REPO / 'train.py'), '--train-feat-dir', str(feature_tree / 'train'), '--log-dir',
               str(tmp_path / 'log'), '--epochs', '2', '--batch-size', '8', '--valid-batch-size', '4',
               '--device', 'cpu', '--lr', '0.01', '--finetune-epochs', '1']  # the fine-tuning epoch waits at a barrier
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun did not finish in 300 s:\n{e.stdout}\n{e.stderr}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count('Epoch   2: train loss') == 1  # the first process speaks for both
    assert result.stdout.count('Large-margin fine-tuning, epochs 3-3') == 1
    assert sorted(p.name for p in (tmp_path / 'log').iterdir()) == [
        'checkpoint_1.pth', 'checkpoint_2.pth', 'checkpoint_3.pth', 'checkpoint_best.pth', 'loss_plot.png']
    assert load_checkpoint(tmp_path / 'log' / 'checkpoint_best.pth')['history'][-1]['finetune']
    ckpt = load_checkpoint(tmp_path / 'log' / 'checkpoint_2.pth')
    assert len(ckpt['history']) == 2 and ckpt['history'][1]['train_loss'] < ckpt['history'][0]['train_loss']
    assert not any(name.startswith('module.') for name in ckpt['state_dict'])  # usable without DDP
    model_from_checkpoint(ckpt, 'cpu')


def test_the_batch_must_split_over_the_processes(feature_tree, tmp_path, monkeypatch):
    monkeypatch.setenv('WORLD_SIZE', '3')
    with pytest.raises(ValueError, match='the batch size 8 must split evenly over the 3 processes'):
        run(feature_tree, tmp_path / 'log', '--epochs', '1')


def test_resume_refuses_to_change_the_runs_settings(trained, feature_tree):
    with pytest.raises(ValueError, match='--batch-size, --lr cannot change when resuming'):
        run(feature_tree, trained, '--epochs', '3', '--resume', '--lr', '0.5', '--batch-size', '16')


@pytest.mark.slow
def test_resume_never_writes_over_another_run(trained, feature_tree, tmp_path):
    run(feature_tree, tmp_path, '--epochs', '1')
    with pytest.raises(ValueError, match='already holds a training run'):
        run(feature_tree, tmp_path, '--epochs', '3', '--resume', str(trained / 'checkpoint_1.pth'))


def test_a_folder_holding_only_another_runs_best_checkpoint_is_refused(trained, feature_tree, tmp_path):
    (tmp_path / 'checkpoint_best.pth').write_bytes((trained / 'checkpoint_best.pth').read_bytes())
    with pytest.raises(ValueError, match='already holds a training run'):
        run(feature_tree, tmp_path, '--epochs', '1')


@pytest.mark.slow
def test_resume_refuses_changed_training_files(tmp_path):
    tree = write_feature_tree(tmp_path / 'feat')
    run(tree, tmp_path / 'log', '--epochs', '1')
    (tree / 'train' / 'spk0' / 'u00.p').unlink()
    with pytest.raises(ValueError, match='changed since the run started.*resume needs the same files'):
        run(tree, tmp_path / 'log', '--epochs', '2', '--resume')


def test_resume_accepts_what_the_run_resolved_and_refuses_other_values(trained, feature_tree):
    resolved = load_checkpoint(trained / 'checkpoint_2.pth')['auto_choices']
    other = 'no' if resolved['channels_last'] == 'yes' else 'yes'
    for value in ('auto', resolved['channels_last']):  # --epochs 2: nothing left to train
        assert len(run(feature_tree, trained, '--epochs', '2', '--resume', '--channels-last', value)) == 2
    with pytest.raises(ValueError, match='--channels-last cannot change when resuming'):
        run(feature_tree, trained, '--epochs', '2', '--resume', '--channels-last', other)


@pytest.mark.slow
def test_a_resumed_run_keeps_what_it_resolved(trained, feature_tree, tmp_path):
    """'auto' may choose otherwise on another machine: a resumed run goes on with the choice it made."""
    ckpt = load_checkpoint(trained / 'checkpoint_2.pth')
    ckpt['auto_choices'] = {'precision': 'fp32', 'channels_last': 'no'}  # not what 'auto' chooses on a CPU
    torch.save(ckpt, tmp_path / 'checkpoint_2.pth')
    run(feature_tree, tmp_path, '--epochs', '3', '--resume')
    resumed = load_checkpoint(tmp_path / 'checkpoint_3.pth')
    assert resumed['auto_choices'] == {'precision': 'fp32', 'channels_last': 'no'}
    assert resumed['train_args']['precision'] == resumed['train_args']['channels_last'] == 'auto'


def test_a_published_checkpoint_cannot_be_resumed(feature_tree, tmp_path):
    with pytest.raises(ValueError, match='holds no training state to resume from.*--init-from'):
        run(feature_tree, tmp_path, '--resume', str(REPO / 'pretrained' / 'dvector_etri200_improved.pth'))


def test_the_resume_check_compares_settings_and_the_set_of_files(trained):
    ckpt = load_checkpoint(trained / 'checkpoint_2.pth')
    files = list(read_feats_structure(ckpt['train_args']['train_feat_dir'])['filename'])
    check_resume(ckpt, {'lr': ckpt['train_args']['lr'], 'precision': 'auto'}, files[::-1])  # any order
    with pytest.raises(ValueError, match='^--lr cannot change'):
        check_resume(ckpt, {'lr': 0.5}, files)
    with pytest.raises(ValueError, match='changed since the run started'):
        check_resume(ckpt, {}, files[1:])


@pytest.mark.slow
def test_resume_takes_the_runs_own_settings(feature_tree, tmp_path):
    run(feature_tree, tmp_path, '--epochs', '1', '--embedding-size', '32')
    run(feature_tree, tmp_path, '--epochs', '2', '--resume')  # default flags say 128
    assert load_checkpoint(tmp_path / 'checkpoint_2.pth')['model_args']['embedding_size'] == 32


def test_a_new_run_never_overwrites_an_old_one(trained, feature_tree):
    before = (trained / 'checkpoint_1.pth').read_bytes()
    with pytest.raises(ValueError, match='already holds a training run; continue it with --resume'):
        run(feature_tree, trained, '--epochs', '1')
    assert (trained / 'checkpoint_1.pth').read_bytes() == before


def test_resume_without_a_checkpoint(feature_tree, tmp_path):
    with pytest.raises(FileNotFoundError, match='no checkpoint_<epoch>.pth in'):
        run(feature_tree, tmp_path, '--resume')


def test_unusable_training_files_are_all_reported_before_training(tmp_path):
    tree = write_feature_tree(tmp_path / 'feat')
    write_feature(tree / 'train' / 'spk0' / 'u05.p', np.zeros((120, 40)), 'spk0')
    (tree / 'train' / 'spk1' / 'u07.p').write_bytes(b'corrupt')
    with pytest.raises(FeatureFileError, match=r'2 unusable feature file\(s\):\n.*u05.p: too short.*\n.*u07.p'):
        run(tree, tmp_path / 'log', '--epochs', '1')
    assert not (tmp_path / 'log').exists()


@pytest.mark.slow
def test_interrupted_run_keeps_its_checkpoints_and_resumes(feature_tree, tmp_path, monkeypatch):
    real_train_epoch = train.train_epoch

    def interrupted_in_epoch_2(model, loader, criterion, optimizer, scaler, compute, epoch, *rest):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_train_epoch(model, loader, criterion, optimizer, scaler, compute, epoch, *rest)

    monkeypatch.setattr(train, 'train_epoch', interrupted_in_epoch_2)
    with pytest.raises(SystemExit, match='Interrupted in epoch 2; epochs 1-1 are saved.*--resume --log-dir'):
        run(feature_tree, tmp_path, '--epochs', '3')
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['checkpoint_1.pth', 'checkpoint_best.pth']
    monkeypatch.setattr(train, 'train_epoch', real_train_epoch)
    assert len(run(feature_tree, tmp_path, '--epochs', '3', '--resume')) == 3


def test_atomic_write_never_leaves_a_half_written_file(tmp_path):
    path = tmp_path / 'checkpoint.pth'
    path.write_bytes(b'old')

    def crash_midway(f):
        f.write(b'half of the new')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash_midway)
    assert path.read_bytes() == b'old'
    assert [p.name for p in tmp_path.iterdir()] == ['checkpoint.pth']


class FillingDisk(io.FileIO):
    """A file on a disk with `room` bytes left: what fits is written, then every write fails with ENOSPC."""
    room = 600

    def write(self, data):
        if self.tell() >= self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(bytes(data)[:self.room - self.tell()])


def test_a_full_disk_while_saving_a_checkpoint_says_so_and_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / 'checkpoint_best.pth'
    atomic_save({'epoch': 1}, path)
    monkeypatch.setattr(atomic, 'open', lambda name, mode: io.BufferedWriter(FillingDisk(name, mode)), raising=False)
    with pytest.raises(OSError, match=rf'^cannot write {path}: No space left on device \(the disk is full: free some '
                                      r'space; the file there before, if any, is kept\)$'):
        atomic_save({'epoch': 2, 'weights': torch.zeros(10000)}, path)
    assert torch.load(path, weights_only=True) == {'epoch': 1} and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_bad_training_data(tmp_path):
    with pytest.raises(FileNotFoundError, match='folder not found'):
        run(tmp_path, tmp_path / 'log', '--epochs', '1')
    tree = write_feature_tree(tmp_path / 'few', n_train_speakers=2, n_utts=4)
    with pytest.raises(ValueError, match='4 training utterances, fewer than one batch of 8'):
        run(tree, tmp_path / 'log', '--epochs', '1', '--val-ratio', '50')


def test_training_precision_auto_is_the_fastest_safe_one_and_bad_ones_are_refused(monkeypatch):
    cpu = torch.device('cpu')
    for fast, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(training, 'bfloat16_units', lambda device, fast=fast: Bfloat16Units(fast, ''))
        assert autocast_dtype('auto', cpu) == expected
    with pytest.raises(ValueError, match="'fp16' needs a CUDA GPU"):
        autocast_dtype('fp16', cpu)
    with pytest.raises(ValueError, match="unknown precision 'bf32' .PRECISION of configure.py"):
        autocast_dtype('bf32', cpu)


@pytest.mark.parametrize('flag', ['--epochs', '--batch-size', '--log-interval', '--embedding-size'])
def test_sizes_must_be_positive(flag, capsys):
    with pytest.raises(SystemExit):
        train.parse_args([flag, '0'])
    assert 'must be a positive integer' in capsys.readouterr().err


def test_the_improved_recipe_sets_its_settings_and_flags_still_win():
    tutorial = train.parse_args(['--recipe', 'tutorial'])
    assert (tutorial.pooling, tutorial.loss, tutorial.win_size, tutorial.spec_augment) == ('avg', 'softmax', 100, 'no')
    improved = train.parse_args(['--recipe', 'improved'])
    assert {k: getattr(improved, k) for k in configure.RECIPES['improved']} == configure.RECIPES['improved']
    assert train.parse_args(['--recipe', 'improved', '--loss', 'am', '--win-size', '150']).loss == 'am'
    assert train.parse_args(['--win-size', '150', '--recipe', 'improved']).win_size == 150


@pytest.mark.slow
def test_an_improved_recipe_run_records_its_model_and_windows(feature_tree, tmp_path):
    history = run(feature_tree, tmp_path / 'log', '--epochs', '2', '--recipe', 'improved', '--win-size', '120',
                  '--base-channels', '8', '--warmup-epochs', '1', '--finetune-epochs', '1',
                  '--finetune-win-size', '150')
    assert len(history) == 3 and all(np.isfinite(h['valid_loss']) for h in history)
    assert [h['finetune'] for h in history] == [False, False, True]
    ckpt = load_checkpoint(tmp_path / 'log' / 'checkpoint_best.pth')
    assert ckpt['model_args'] == {'embedding_size': 128, 'num_classes': 12, 'backbone': 'resnet18', 'base_channels': 8,
                                  'pooling': 'asp', 'head': 'cosine', 'n_filters': 40}
    assert ckpt['feature']['win_size'] == 120 and ckpt['train_args']['spec_augment'] == 'yes'
    assert ckpt['train_args']['speed_perturb'] == 'yes'  # 4 speakers at 3 speeds: 12 classes
    model = model_from_checkpoint(ckpt, 'cpu')
    assert model.embed(torch.randn(2, 1, 40, 230)).shape == (2, 128)


@pytest.mark.parametrize('flags', [('--margin', '1.5'), ('--margin', '-0.1'), ('--scale', '0'),
                                   ('--margin-warmup', '-3'), ('--time-mask', '-1')])
def test_margin_loss_and_masking_settings_must_make_sense(flags, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(list(flags))
    assert flags[0] in capsys.readouterr().err


def test_fixed_schedules_warm_up_then_fall_to_the_floor():
    lr = [train.scheduled_lr(p / 100, 'cosine', 0.1, 1e-4, 0.1) for p in range(101)]
    assert lr[0] == 0 and lr[10] == pytest.approx(0.1)       # linear warm-up over the first 10 %
    assert all(a < b for a, b in itertools.pairwise(lr[:11]))
    assert all(a >= b for a, b in itertools.pairwise(lr[10:]))  # then never rising
    # cosine: half-way at the middle
    assert lr[100] == pytest.approx(1e-4) and lr[55] == pytest.approx((0.1 + 1e-4) / 2)
    exp = [train.scheduled_lr(p / 10, 'exponential', 0.1, 1e-4, 0.0) for p in range(11)]
    assert exp[0] == pytest.approx(0.1) and exp[10] == pytest.approx(1e-4)
    assert exp[5] == pytest.approx(0.1 * 1e-3 ** 0.5)           # geometric: the same factor every step
    with pytest.raises(ValueError, match='unknown schedule'):
        train.scheduled_lr(0.5, 'step', 0.1, 1e-4, 0.1)


@pytest.mark.slow
def test_a_cosine_run_follows_its_schedule_and_ends_at_the_floor(tmp_path, feature_tree):
    history = run(feature_tree, tmp_path / 'log', '--epochs', '3', '--schedule', 'cosine', '--warmup-epochs', '1')
    # 36 training utterances: 4 batches of 8 an epoch; the lr recorded is the epoch's last batch's
    expected = [train.scheduled_lr((epoch + 3 / 4) / 3, 'cosine', 0.1, configure.MIN_LR, 1 / 3) for epoch in range(3)]
    assert [h['lr'] for h in history] == pytest.approx(expected)
    assert expected[0] == pytest.approx(0.075) and expected[0] > expected[1] > expected[2]


@pytest.mark.slow
def test_init_from_starts_a_new_run_from_the_weights_and_refuses_another_model(tmp_path, feature_tree, trained):
    start = trained / 'checkpoint_best.pth'
    run(feature_tree, tmp_path / 'ft', '--epochs', '1', '--init-from', str(start), '--lr', '0')
    tuned = load_checkpoint(tmp_path / 'ft' / 'checkpoint_1.pth')
    original = load_checkpoint(start)
    assert tuned['run_id'] != original['run_id'] and tuned['train_args']['init_from'] == str(start)
    # lr 0 (and no momentum yet): the convolution weights are those it started from
    assert torch.equal(tuned['state_dict']['backbone.conv1.weight'], original['state_dict']['backbone.conv1.weight'])
    with pytest.raises(ValueError, match='does not match'):
        run(feature_tree, tmp_path / 'other', '--epochs', '1', '--init-from', str(start), '--pooling', 'asp')
    with pytest.raises(ValueError, match='would validate on utterances the weights were trained on; pass --seed'):
        run(feature_tree, tmp_path / 'split', '--epochs', '1', '--init-from', str(start), '--seed', '7')


@pytest.mark.slow
def test_a_fixed_schedule_run_resumes_exactly_from_a_middle_checkpoint(feature_tree, tmp_path):
    flags = ('--epochs', '3', '--schedule', 'cosine', '--warmup-epochs', '1')
    straight = run(feature_tree, tmp_path / 'a', *flags)
    run(feature_tree, tmp_path / 'b', *flags)
    resumed = run(feature_tree, tmp_path / 'b', *flags, '--resume', str(tmp_path / 'b' / 'checkpoint_2.pth'))
    assert [h['lr'] for h in resumed] == [h['lr'] for h in straight]
    assert [h['valid_loss'] for h in resumed] == [h['valid_loss'] for h in straight]
    # its epoch count sets every step's lr: resuming keeps the run's (EPOCHS is 30), and refuses another
    assert len(run(feature_tree, tmp_path / 'b', '--resume')) == 3
    with pytest.raises(ValueError, match=r"--epochs 4: the run's cosine schedule is set by its epoch count, 3 "):
        run(feature_tree, tmp_path / 'b', '--epochs', '4', '--resume')


def test_the_resume_check_refuses_another_epoch_count_for_a_fixed_schedule_only(trained):
    ckpt = load_checkpoint(trained / 'checkpoint_2.pth')
    files = list(read_feats_structure(ckpt['train_args']['train_feat_dir'])['filename'])
    cosine = {**ckpt, 'train_args': {**ckpt['train_args'], 'schedule': 'cosine'}}
    with pytest.raises(ValueError, match=r"--epochs 40: the run's cosine schedule is set by its epoch count, 2 .*"
                                         r"resume without --epochs, "
                                         r"or start a new run from its weights \(--init-from\)"):
        check_resume(cosine, {'epochs': 40}, files)
    check_resume(cosine, {'epochs': 2}, files)  # (plateau: --epochs is not among the settings checked)


@pytest.mark.slow
def test_the_float16_gradient_scaler_takes_the_same_step(feature_tree):
    """train_epoch's GradScaler branch (float16 runs on CUDA), run here in float32 on the CPU: scaling the loss by
    a power of 2 and the gradients back is exact, so the weights end as without a scaler."""
    DB = read_feats_structure(feature_tree / 'train')
    speakers = sorted(DB['speaker_id'].unique())
    args = train.parse_args(['--batch-size', '8', '--device', 'cpu'])
    cpu = torch.device('cpu')
    compute = DeviceSetup(cpu, None, torch.contiguous_format)
    weights = []
    for scaler in (None, torch.amp.GradScaler('cpu', init_scale=2.0 ** 10)):
        torch.manual_seed(0)
        model = BackgroundResNet(16, len(speakers), base_channels=8)
        loader, _ = train.make_loaders(train.TrainingData(DB, DB, speakers, None, None),
                                       {**feature_settings(), 'win_size': 50}, args, cpu)
        optimizer = train.create_optimizer('sgd', model.parameters(), 0.1, 0.9, 1e-4)
        train.train_epoch(model, loader, torch.nn.CrossEntropyLoss(), optimizer, scaler, compute, 1, 100)
        weights.append(model.state_dict())
    assert scaler.get_scale() == 2.0 ** 10  # no overflow: every step was taken
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


@pytest.mark.slow
def test_the_fine_tuning_epochs_follow_their_own_schedule_and_pick_the_best_among_them(feature_tree, tmp_path):
    history = run(feature_tree, tmp_path / 'log', '--epochs', '2', '--loss', 'aam', '--finetune-epochs', '2',
                  '--finetune-lr', '0.01')
    assert [h['finetune'] for h in history] == [False, False, True, True]
    # 4 batches an epoch; the lr recorded is the epoch's last batch's: a cosine from 0.01 over epochs 3-4
    expected = [train.scheduled_lr((epoch + 3 / 4) / 2, 'cosine', 0.01, configure.MIN_LR, 0.0) for epoch in range(2)]
    assert [h['lr'] for h in history[2:]] == pytest.approx(expected)
    assert history[0]['lr'] == history[1]['lr'] == 0.1  # the plateau schedule's, before
    best = load_checkpoint(tmp_path / 'log' / 'checkpoint_best.pth')
    assert best['epoch'] == min(history[2:], key=lambda h: h['valid_loss'])['epoch']
    assert best['train_args']['finetune_margin'] == configure.FINETUNE_MARGIN


def test_best_epoch_is_among_the_fine_tuning_epochs_once_they_begin():
    history = [{'epoch': 1, 'valid_loss': 0.1}, {'epoch': 2, 'valid_loss': 0.5, 'finetune': False}]
    assert train.best_epoch(history)['epoch'] == 1
    history += [{'epoch': 3, 'valid_loss': 0.3, 'finetune': True}, {'epoch': 4, 'valid_loss': 0.2, 'finetune': True}]
    assert train.best_epoch(history)['epoch'] == 4
    assert train.best_epoch(history[:3])['epoch'] == 3


def test_fine_tuning_starts_from_the_best_epoch_with_a_fresh_optimizer(trained, tmp_path):
    args = train.parse_args(['--finetune-epochs', '3', '--finetune-lr', '0.005'])
    first = load_checkpoint(trained / 'checkpoint_1.pth')
    history = [{'epoch': 1, 'valid_loss': 0.1}, {'epoch': 2, 'valid_loss': 0.2}]  # epoch 1 the best
    net = BackgroundResNet(**first['model_args'])
    optimizer = train.begin_finetuning(net, args, trained, history)
    for name, value in net.state_dict().items():
        assert torch.equal(value, first['state_dict'][name]), name
    assert optimizer.param_groups[0]['lr'] == 0.005 and not optimizer.state
    with pytest.raises(FileNotFoundError, match='holds no checkpoint of it'):
        train.begin_finetuning(net, args, tmp_path, history)


@pytest.mark.parametrize('resume_from', ['checkpoint_2.pth', 'checkpoint_3.pth'])  # at the start, and inside
@pytest.mark.slow
def test_a_run_resumes_exactly_into_and_inside_its_fine_tuning_epochs(feature_tree, tmp_path, resume_from):
    flags = ('--epochs', '2', '--loss', 'am', '--finetune-epochs', '2', '--finetune-win-size', '120')
    straight = run(feature_tree, tmp_path / 'a', *flags)
    run(feature_tree, tmp_path / 'b', *flags)
    resumed = run(feature_tree, tmp_path / 'b', '--epochs', '2', '--resume', str(tmp_path / 'b' / resume_from))
    assert [h['valid_loss'] for h in resumed] == [h['valid_loss'] for h in straight]
    a, b = (load_checkpoint(tmp_path / d / 'checkpoint_4.pth')['state_dict'] for d in 'ab')
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
def test_fine_tuning_can_be_added_to_a_finished_run_but_not_changed_once_begun(feature_tree, tmp_path):
    run(feature_tree, tmp_path / 'log', '--epochs', '2')
    history = run(feature_tree, tmp_path / 'log', '--epochs', '2', '--resume', '--finetune-epochs', '1')
    assert [h['finetune'] for h in history] == [False, False, True]
    with pytest.raises(ValueError, match='--finetune-lr cannot change when resuming'):
        run(feature_tree, tmp_path / 'log', '--epochs', '2', '--resume', '--finetune-lr', '0.5')
    with pytest.raises(ValueError, match="--epochs 5: the run's fine-tuning epochs have begun after its epoch 2"):
        run(feature_tree, tmp_path / 'log', '--epochs', '5', '--resume')


@pytest.mark.slow
def test_a_checkpoint_that_does_not_record_every_setting_is_refused_clearly(feature_tree, tmp_path):
    run(feature_tree, tmp_path / 'log', '--epochs', '2')
    ckpt = load_checkpoint(tmp_path / 'log' / 'checkpoint_2.pth')
    del ckpt['train_args']['aug_codec_share']  # added since: its runs go on as they were, without the codec
    atomic_save(ckpt, tmp_path / 'log' / 'checkpoint_2.pth')
    run(feature_tree, tmp_path / 'log', '--epochs', '3', '--resume')
    ckpt = load_checkpoint(tmp_path / 'log' / 'checkpoint_3.pth')
    assert ckpt['train_args']['aug_codec_share'] == 0.0
    del ckpt['train_args']['min_lr']  # as a train.py that read MIN_LR from configure.py wrote it
    atomic_save(ckpt, tmp_path / 'log' / 'checkpoint_3.pth')
    with pytest.raises(ValueError, match='an older train.py wrote it, without recording min_lr.*--init-from'):
        run(feature_tree, tmp_path / 'log', '--epochs', '4', '--resume')


@pytest.mark.slow
def test_a_plateau_run_with_fine_tuning_cannot_resume_below_the_epoch_it_reached(feature_tree, tmp_path):
    run(feature_tree, tmp_path / 'log', '--epochs', '3', '--finetune-epochs', '1')
    checkpoint_2 = str(tmp_path / 'log' / 'checkpoint_2.pth')
    with pytest.raises(ValueError, match='--epochs 1: the run is at epoch 2 already'):
        run(feature_tree, tmp_path / 'log', '--epochs', '1', '--resume', checkpoint_2)


@pytest.mark.parametrize('flags', [('--lr', 'nan'), ('--lr', 'inf'), ('--momentum', 'nan'), ('--weight-decay', 'nan'),
                                   ('--scale', 'nan'), ('--min-lr', 'inf'), ('--val-ratio', 'nan'),
                                   ('--aug-eq-db', 'nan'), ('--aug-noise-snr', 'nan,5'), ('--speeds', '0,0'),
                                   ('--speeds', '0,1.1'), ('--aug-rt60', '0,0')])
def test_non_finite_and_dividing_by_zero_settings_are_refused_when_parsed(flags, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(list(flags))
    assert f"argument {flags[0]}: must be" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_whose_loss_becomes_nan_stops_and_keeps_its_last_good_checkpoint(feature_tree, tmp_path, monkeypatch):
    real_train_step, steps = train.train_step, []

    def poisoned_after_epoch_1_step_1(model, *rest):  # 4 steps an epoch: the weights go NaN after step 5
        steps.append(1)
        if len(steps) == 6:
            with torch.no_grad():
                next(model.parameters()).fill_(float('nan'))
        return real_train_step(model, *rest)

    monkeypatch.setattr(train, 'train_step', poisoned_after_epoch_1_step_1)
    with pytest.raises(ValueError, match=r'the training loss became nan in epoch 2, step 2 of 4: training stopped, '
                                         r'and the checkpoints of epochs 1-1 are kept'):
        run(feature_tree, tmp_path, '--epochs', '3', '--optimizer', 'adam', '--lr', '0.001')
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['checkpoint_1.pth', 'checkpoint_best.pth']
    best = load_checkpoint(tmp_path / 'checkpoint_best.pth')
    assert best['epoch'] == 1 and all(v.isfinite().all() for v in best['state_dict'].values() if v.is_floating_point())


@pytest.mark.parametrize('flags, message', [
    (('--noise-dir', 'musan'), '--noise-dir: used by augmentation only, which is off; add --augment yes, or leave it'),
    (('--noise-dir', 'musan', '--rir-dir', 'rirs'), '--noise-dir and --rir-dir: used by augmentation only'),
])
def test_augmentation_folders_without_augmentation_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(list(flags))
    assert message in capsys.readouterr().err


@pytest.mark.parametrize('flags, message', [
    (('--fbank', 'torch'), r'--fbank torch: .* holds features \(\.p\) made already'),
    (('--augment', 'yes', '--rir-dir', 'rirs'), '--rir-dir rirs: on features, room impulse responses are used with '
                                                '--aug-rooms drawn'),
])
def test_flags_that_do_nothing_on_features_are_refused(feature_tree, tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        run(feature_tree, tmp_path, '--epochs', '1', *flags)
    assert not list(tmp_path.glob('*.pth'))
