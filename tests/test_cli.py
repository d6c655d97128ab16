"""cli.run: a bad input ends in one `error:` line, or, with DVECTOR_DEBUG=1, in the whole traceback."""
import pytest

from dvector import cli

from conftest import run_script, voice, write_audio


def bad_setting():
    raise ValueError("unknown thing 'x'")


def test_an_error_is_one_line_unless_debugging(monkeypatch):
    monkeypatch.delenv('DVECTOR_DEBUG', raising=False)
    with pytest.raises(SystemExit, match="^error: unknown thing 'x'$"):
        cli.run(bad_setting)
    monkeypatch.setenv('DVECTOR_DEBUG', '0')  # 0 (or empty) is off
    with pytest.raises(SystemExit):
        cli.run(bad_setting)
    monkeypatch.setenv('DVECTOR_DEBUG', '1')
    with pytest.raises(ValueError, match="unknown thing 'x'"):
        cli.run(bad_setting)


@pytest.mark.slow
def test_the_debug_switch_shows_where_a_scripts_error_arose(tmp_path, monkeypatch):
    monkeypatch.setenv('DVECTOR_DEBUG', '1')
    result = run_script(tmp_path, 'enroll.py')  # run_script passes this process's environment on
    assert result.returncode == 1
    assert result.stderr.startswith('Traceback (most recent call last):')
    assert 'in load_checkpoint' in result.stderr
    assert result.stderr.rstrip().endswith('FileNotFoundError: checkpoint not found: model_saved/checkpoint_best.pth '
                                           '(train one with train.py, or pass --checkpoint)')


def interrupted():
    raise KeyboardInterrupt


def test_ctrl_c_ends_a_script_with_one_line_and_exit_status_130(monkeypatch, capsys):
    monkeypatch.delenv('DVECTOR_DEBUG', raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli.run(interrupted)
    assert exit_.value.code == 130
    assert capsys.readouterr().err == 'interrupted (Ctrl-C)\n'


@pytest.mark.slow
def test_an_audio_note_is_one_line_naming_the_file(tmp_path):
    phone = write_audio(tmp_path / 'wavs' / 'spk' / 'phone.wav', voice(seconds=2.0)[::2], 8000)
    result = run_script(tmp_path, 'feature_extraction.py', '--wav-dir', 'wavs', '--feat-dir', 'feats')
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if 'phone.wav' in line]
    assert notes == [f"Note: {phone.relative_to(tmp_path)}: recorded at 8000 Hz: it holds nothing above 4000 Hz, and "
                     "the model was trained on 16000 Hz audio"]
