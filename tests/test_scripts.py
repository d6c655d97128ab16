"""Smoke tests: every stage run as a user runs it, from the command line, with configure.py's defaults."""
import re
import shutil

import pytest

import configure as c
import train
from dvector import cli

from conftest import decision_is_right, run_ok, run_script, write_feature_tree


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    """A folder laid out as configure.py expects: feat_logfbank_nfilt40/{train,test}."""
    root = tmp_path_factory.mktemp('work')
    write_feature_tree(root / 'feat_logfbank_nfilt40', n_test_speakers=2)
    for test_dir in (root / 'feat_logfbank_nfilt40' / 'test').iterdir():  # the default speaker of configure.py
        if test_dir.name == 'tst0':
            shutil.move(test_dir, test_dir.with_name('230M4087'))
    return root


@pytest.mark.slow
def test_every_stage_runs_from_the_command_line_with_configure_defaults(workdir):
    out = run_ok(workdir, 'train.py', '--epochs', '1', '--batch-size', '8')  # a tiny data set
    assert 'Epoch   1: train loss' in out and (workdir / 'model_saved' / 'checkpoint_best.pth').is_file()
    assert 'Enrolled 2 speakers' in run_ok(workdir, 'enroll.py')
    assert sorted(p.name for p in (workdir / 'enroll_embeddings').iterdir()) == ['230M4087.pth', 'tst1.pth']
    out = run_ok(workdir, 'verification.py')
    threshold = re.search(r'Threshold: ([\d.]+) \(THRESHOLD of configure.py\)\n', out).group(1)
    assert 'Claimed speaker (enrolled): 230M4087' in out and float(threshold) == c.THRESHOLD and decision_is_right(out)
    # the made-up speakers are far apart (conftest): even one epoch tells them apart
    assert 'Predicted speaker: 230M4087\n' in run_ok(workdir, 'identification.py')
    assert 'Top-1 identification accuracy: 100.00% (2/2 test files' in run_ok(workdir, 'identification.py', '--all')
    assert '4 trials (2 target, 2 non-target)' in run_ok(workdir, 'make_trials.py')
    out = run_ok(workdir, 'verification.py', '--trials', 'trials/trials.txt', '--calibrate')
    assert re.search(r'EER: +0\.00 %', out)  # a threshold between the target and the non-target scores
    calibrated = '(calibrated, model_saved/checkpoint_best_threshold.json)\nResult: '
    assert calibrated + 'Accept' in run_ok(workdir, 'verification.py')  # its own speaker's test utterance
    assert calibrated + 'Reject' in run_ok(workdir, 'verification.py', '--test-speaker', 'tst1')  # another speaker's
    assert {p.name for p in (workdir / 'results').iterdir()} == {'confusion_matrix.png', 'trials_det.png',
                                                                 'trials_scores.png'}


@pytest.mark.slow
def test_bad_input_ends_with_a_one_line_error(tmp_path):
    result = run_script(tmp_path, 'enroll.py')
    assert result.returncode == 1
    assert result.stderr.strip() == ('error: checkpoint not found: model_saved/checkpoint_best.pth '
                                     '(train one with train.py, or pass --checkpoint)')


@pytest.mark.slow
def test_a_bad_flag_value_ends_with_a_one_line_error(tmp_path):
    result = run_script(tmp_path, 'verification.py', '--device', 'bogus')
    assert result.returncode == 1
    assert result.stderr.strip() == "error: unknown device 'bogus'; use 'auto', 'cpu' or 'cuda'"


@pytest.mark.slow
def test_help_shows_the_configured_defaults(tmp_path):
    out = run_ok(tmp_path, 'train.py', '--help')
    assert '--resume [CHECKPOINT]' in out and f'(default: {c.EPOCHS})' in out


def test_every_setting_is_described_once_in_configure_and_flags_take_that_description():
    names = [n for n in vars(c) if n.isupper()]
    assert set(cli.SETTING_HELP) == set(names) and all(cli.SETTING_HELP[n] for n in names)
    assert cli.SETTING_HELP['TEST_FEAT_DIR'].endswith("files whose name contains 'enroll' enroll a speaker, the "
                                                      "others test")  # a comment continued on the next line
    assert cli.SETTING_HELP['HOLDOUT_SPEAKERS'] == 'speakers held out, spread evenly over the sorted speaker list'
    p = cli.parser('')
    action = cli.setting(p, 'NUM_WIN_SIZE', '--win-size', type=cli.positive_int)
    assert (action.option_strings, action.default, action.help) == (['--win-size'], c.NUM_WIN_SIZE,
                                                                    cli.SETTING_HELP['NUM_WIN_SIZE'])
    assert cli.setting(p, 'LR').type is cli.finite_float and cli.setting(p, 'SEED').type is int  # from the default
    assert train.parse_args(['--win-size', '300']).win_size == 300
