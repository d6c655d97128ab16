"""Windows and macOS: no POSIX-only module is needed to import the code or to ask a script for its --help."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
POSIX_ONLY = ('fcntl', 'resource')  # what Windows lacks among the modules the code uses
PACKAGES = ('dvector', 'model', 'tools', 'bench')

# In a child: the POSIX-only modules made unimportable first, then every module imported and every script's --help
# run as `python <script> --help` (a root script) or `python -m <package>.<name> --help` (a package's) runs it;
# prints {what: the error} of each that failed
CHILD = '''
import contextlib, importlib, io, json, runpy, sys
for name in {posix_only}:
    sys.modules[name] = None
failed = {{}}
for name in {modules}:
    try:
        importlib.import_module(name)
    except Exception as e:
        failed[name] = repr(e)
for script in {scripts}:
    sys.argv = [script, '--help']
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            if script.endswith('.py'):
                runpy.run_path(script, run_name='__main__')
            else:
                runpy.run_module(script, run_name='__main__', alter_sys=True)
        failed[script] = '--help did not exit'
    except SystemExit as e:
        if e.code != 0 or 'usage:' not in out.getvalue():
            failed[script] = f'--help exited with {{e.code}}: {{out.getvalue()[-300:]}}'
    except Exception as e:
        failed[script] = repr(e)
print(json.dumps(failed))
'''


def modules_and_scripts():
    """(every module of the root and of PACKAGES, by its import name; every script with a command line: the root's
    by file name, the packages' by module name)."""
    files = [*ROOT.glob('*.py'), *(p for package in PACKAGES for p in (ROOT / package).glob('*.py'))]
    names = {p: '.'.join(p.relative_to(ROOT).with_suffix('').parts).removesuffix('.__init__') for p in files}
    scripts = [p.name if p.parent == ROOT else names[p] for p in files if 'cli.parser(' in p.read_text()]
    return sorted(names.values()), sorted(scripts)


def test_the_modules_and_scripts_are_found():
    modules, scripts = modules_and_scripts()
    assert {'configure', 'dvector', 'dvector.utterance', 'model.model', 'tools', 'tools.robustness',
            'bench.throughput'} <= set(modules)
    assert {'train.py', 'enroll.py', 'verification.py', 'identification.py', 'demo.py', 'tools.robustness',
            'tools.make_pretrained', 'bench.throughput', 'bench.data'} <= set(scripts)


@pytest.mark.slow  # a child that imports every module
def test_every_module_imports_and_every_script_gives_its_help_without_posix_only_modules():
    modules, scripts = modules_and_scripts()
    code = CHILD.format(posix_only=POSIX_ONLY, modules=modules, scripts=scripts)
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {}


def test_the_child_does_make_them_unimportable():
    code = f"import sys\nfor n in {POSIX_ONLY}: sys.modules[n] = None\nimport fcntl"
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and 'ModuleNotFoundError' in result.stderr
