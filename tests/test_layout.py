"""The code's layout: no import circle among the project's modules (docs/code.md draws who imports whom)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ('dvector', 'model', 'tools', 'bench')


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
