"""The code's layout (docs/code.md draws it): a root that is the tutorial, scripts that import only library
modules, stages that load no training code, and no import circle."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ('dvector', 'model', 'tools', 'bench')
TUTORIAL = {'configure', 'DB_wav_reader', 'SR_Dataset', 'feature_extraction', 'train', 'enroll', 'verification',
            'identification'}  # the tutorial's own files
RUN_FIRST = {'demo', 'make_trials', 'plot_dvectors', 'app'}  # what a user runs first, beside them
LIBRARIES = {'configure', 'DB_wav_reader', 'SR_Dataset'}  # the root's modules that scripts import
INFERENCE = ('enroll', 'verification', 'identification', 'plot_dvectors', 'app')
TRAINING = {'SR_Dataset', 'train', 'dvector.training', 'dvector.training_run', 'dvector.losses',
            'dvector.distributed', 'dvector.augmentation', 'dvector.augment_audio', 'dvector.augment_features',
            'scipy.signal'}


def project_imports():
    """{module: {project modules it imports, anywhere in it}} of the root's modules and the packages' (dotted)."""
    files = {p.stem: p for p in ROOT.glob('*.py')}
    for package in PACKAGES:
        files |= {f'{package}.{p.stem}': p for p in (ROOT / package).glob('*.py') if p.stem != '__init__'}
    graph = {}
    for name, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found |= {f'{node.module}.{alias.name}' for alias in node.names}  # from dvector import cli
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def scripts(graph):
    """The modules a user runs: the root's, less the tutorial's libraries, and tools' and bench's that have a main."""
    def runs(name):
        path = ROOT / (name.replace('.', '/') + '.py')
        return "__name__ == '__main__'" in path.read_text()
    return {m for m in graph if '.' not in m and m not in LIBRARIES} | {
        m for m in graph if m.split('.')[0] in ('tools', 'bench') and runs(m)}


def scripts_importing_scripts(graph, runnable):
    """{script: [the scripts it imports]} for each script of `runnable` that imports one."""
    return {s: sorted(graph[s] & runnable) for s in sorted(runnable) if graph[s] & runnable}


def circle(graph):
    """One import circle of the graph as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = 'open'
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 'open':
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 'done'
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_circle_finder_finds_one():
    assert circle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert circle({'a': {'b'}, 'b': set()}) is None


def test_no_module_imports_itself_through_others():
    graph = project_imports()
    assert {'train', 'dvector.stage', 'dvector.records', 'dvector.checkpoint', 'tools.robustness'} <= set(graph)
    assert circle(graph) is None


def test_the_root_holds_the_tutorial_and_what_a_user_runs_first():
    root = {p.stem for p in ROOT.glob('*.py')}
    assert root == TUTORIAL | RUN_FIRST and len(root) <= 16


def test_no_script_imports_a_script():
    graph = project_imports()
    runnable = scripts(graph)
    assert {'train', 'enroll', 'demo', 'tools.robustness', 'bench.throughput'} <= runnable
    assert not runnable & {'configure', 'SR_Dataset', 'tools.rooms', 'bench.measure', 'dvector.stage'}
    found = scripts_importing_scripts(graph, runnable)
    assert not found, f"scripts importing scripts: {found}"


def test_the_layout_checks_can_fail():
    graph = {'train': {'SR_Dataset'}, 'enroll': {'train', 'SR_Dataset'}, 'SR_Dataset': set()}
    assert scripts_importing_scripts(graph, {'train', 'enroll'}) == {'enroll': ['train']}
    assert loaded_by('import json', {'json', 'configure'}) == ['json']


def loaded_by(code, watched):
    """The modules of `watched` that running `code` in a fresh interpreter at the root loads."""
    probe = f"{code}\nimport json, sys; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, '-c', probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return sorted(set(json.loads(result.stdout.splitlines()[-1])) & watched)


@pytest.mark.slow
@pytest.mark.parametrize('stage', INFERENCE)
def test_an_inference_stage_loads_no_training_or_augmentation_code(stage):
    """Enrolling, verifying, identifying, mapping and the app load neither the training code nor augmentation
    (nor scipy.signal, which augmentation needs): a fresh interpreter, so that nothing else loaded them."""
    assert loaded_by(f'import {stage}', TRAINING) == []
