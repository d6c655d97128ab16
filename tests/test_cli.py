"""cli.run: a bad input ends in one `error:` line, or, with DVECTOR_DEBUG=1, in the whole traceback."""
import pytest
from conftest import run_script

import cli


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


def test_the_debug_switch_shows_where_a_scripts_error_arose(tmp_path, monkeypatch):
    monkeypatch.setenv('DVECTOR_DEBUG', '1')
    result = run_script(tmp_path, 'enroll.py')  # run_script passes this process's environment on
    assert result.returncode == 1
    assert result.stderr.startswith('Traceback (most recent call last):')
    assert 'in load_checkpoint' in result.stderr
    assert result.stderr.rstrip().endswith('FileNotFoundError: checkpoint not found: model_saved/checkpoint_best.pth '
                                           '(train one with train.py, or pass --checkpoint)')
