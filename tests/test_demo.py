"""demo.py end to end, and the demo voices: a briefly trained model tells unseen ones apart, an untrained one cannot."""
import pytest
import torch

import demo
import feature_extraction
import make_trials
import train
import verification
from dvector.atomic import atomic_save
from dvector.checkpoint import load_checkpoint
from dvector.demo_corpus import write_corpus
from model.model import BackgroundResNet

from conftest import run_ok

pytestmark = pytest.mark.slow  # the fast lane leaves these out (README, Tests)


def test_demo_runs_every_stage_and_writes_only_under_its_folder(tmp_path):
    out = run_ok(tmp_path, 'demo.py', '--train-speakers', '6', '--train-utts', '6', '--test-speakers', '3',
                 '--epochs', '2', '--device', 'cpu')
    for line in ('Voices:          6 training x 6 utterances, 3 test voices', 'Training:        2 epochs',
                 'Identification:  top-1', 'Verification:    EER', "tst000 claims tst000's test: score",
                 'd-vector map:    demo/results/dvector_map.png'):
        assert line in out
    assert [p.name for p in tmp_path.iterdir()] == ['demo']  # no feat_logfbank_nfilt40, model_saved, ...
    demo = tmp_path / 'demo'
    for plot in ('model_saved/loss_plot.png', 'results/confusion_matrix.png', 'results/trials_det.png',
                 'results/dvector_map.png'):
        assert (demo / plot).is_file()
    again = run_ok(tmp_path, 'demo.py', '--train-speakers', '6', '--train-utts', '6', '--test-speakers', '3',
                   '--epochs', '2', '--device', 'cpu')  # reuses the corpus, the features and the finished run
    assert '0 written, 36 already there' in again and 'Resuming from' in again


def test_the_demo_trains_from_its_wavs_as_from_their_features(tmp_path, capsys):
    sizes = ['--root', str(tmp_path / 'demo'), '--train-speakers', '6', '--train-utts', '6', '--test-speakers', '3',
             '--epochs', '2', '--device', 'cpu']
    from_audio = demo.main(sizes + ['--from-audio', 'yes'])
    out = capsys.readouterr().out
    assert 'features made from audio per item' in out and 'Training:        2 epochs' in out
    assert not (tmp_path / 'demo' / 'feat' / 'train').exists()  # the training voices' features are never written
    assert (tmp_path / 'demo' / 'model_saved_from_audio' / 'checkpoint_best.pth').is_file()
    from_features = demo.main(sizes)  # the same voices, extracted first; its model beside the other
    assert 'features in memory' in capsys.readouterr().out
    # the features made per item are the extracted ones, and the windows the same draws: the same training
    learned = lambda run: [{k: v for k, v in epoch.items() if k != 'seconds'} for epoch in run['history']]  # noqa: E731
    assert learned(from_audio) == learned(from_features)


def untrained_copy(checkpoint, path):
    """The checkpoint with freshly initialised weights: the same model before any training."""
    ckpt = load_checkpoint(checkpoint)
    torch.manual_seed(1)
    ckpt['state_dict'] = BackgroundResNet(**ckpt['model_args']).state_dict()
    ckpt['run_id'] = 'untrained'
    atomic_save(ckpt, path)
    return path


def top1_on_pieces(checkpoint, trials, tmp_path):
    summary = verification.main(['--trials', str(trials), '--checkpoint', str(checkpoint), '--device', 'cpu',
                                 '--results-dir', str(tmp_path / 'results')])
    return summary['top1_percent']


@pytest.fixture(scope='module')
def small_demo(tmp_path_factory):
    """(trained checkpoint, trial list of 2-s test pieces) of a small demo corpus trained for a few epochs."""
    root = tmp_path_factory.mktemp('demo')
    write_corpus(root / 'wavs', n_train_speakers=16, n_train_utts=10, n_test_speakers=8, seed=0)
    for part in ('train', 'test'):
        feature_extraction.extract_tree(root / 'wavs' / part, root / 'feat' / part)
    train.main(['--train-feat-dir', str(root / 'feat' / 'train'), '--log-dir', str(root / 'model'), '--epochs', '6',
                '--batch-size', '16', '--optimizer', 'adam', '--lr', '0.001', '--device', 'cpu'])
    trials = root / 'pieces.txt'
    make_trials.main(['--test-dir', str(root / 'feat' / 'test'), '--piece-seconds', '2', '--out', str(trials)])
    return root / 'model' / 'checkpoint_best.pth', trials


def test_a_briefly_trained_model_identifies_unseen_demo_voices(small_demo, tmp_path):
    checkpoint, trials = small_demo
    assert top1_on_pieces(checkpoint, trials, tmp_path) >= 40  # chance: 1 in 8, 12.5 %


def test_an_untrained_model_does_not(small_demo, tmp_path):
    checkpoint, trials = small_demo
    assert top1_on_pieces(untrained_copy(checkpoint, tmp_path / 'untrained.pth'), trials, tmp_path) < 40
