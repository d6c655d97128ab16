"""The documentation stays true to the code: every command it quotes parses, every link and image exists.

Commands: each `python <script>.py ...` (a script of the root: the tutorial's), `python -m tools.<name> ...` and
`python -m bench.<name> ...` (a tool or a benchmark, run from the repository's root), and `torchrun ... <script>.py
...`, in a fenced code block of README.md or docs/*.md, and in an inline code span, is parsed by the script's own
argument parser, without running it. A renamed or removed flag, a missing script or module, or a tool run as a
file (`python tools/<name>.py`, which cannot import the library), fails the test of that command, naming the file,
the line and the command.
"""
import argparse
import contextlib
import importlib
import importlib.util
import inspect
import io
import re
import shlex
import subprocess
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]

# Scripts without an argparse parser, checked by hand (see parse_command).
POSITIONAL_ONLY = {'examples/onnx_dvector.py': 2}  # reads sys.argv: the .onnx file, then one or more audio files
NO_ARGUMENTS = {'tools.probe_layout', 'model/model.py'}  # main() (or the __main__ block) takes no arguments
RUNNABLE_PACKAGES = ('tools', 'bench')  # packages whose modules the docs run with `python -m <package>.<name>`

FENCE = re.compile(r'^\s*(```|~~~)\s*([\w+-]*)')
INLINE_CODE = re.compile(r'(?<!`)`([^`\n]+)`(?!`)')
SEPARATORS = {'&&', '||', ';', '|'}  # between commands, as words of their own
PLACEHOLDER = re.compile(r'<[^<>]*>')  # <speaker>, <their folder>: a word the reader fills in
SKIPPED_LANGUAGES = {'python', 'mermaid', 'json'}


def logical_lines(path):
    """[(line number, text, fenced)] of the shell lines of fenced code blocks (backslash continuations joined;
    fenced True), and of the inline code spans elsewhere (fenced False)."""
    found, fence, language, pending = [], None, '', None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence, language = match.group(1), match.group(2).lower()
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
                continue
            if language in SKIPPED_LANGUAGES:
                continue
            start, text = pending if pending else (number, '')
            text += ' ' + line.strip()
            if text.endswith('\\'):
                pending = (start, text[:-1])
            else:
                pending = None
                found.append((start, text.strip(), True))
            continue
        found.extend((number, span, False) for span in INLINE_CODE.findall(line))
    return found


def command_words(text):
    """The words of each command of a shell line (`a && b; c | d  # comment`), `<placeholders>` made words."""
    lexer = shlex.shlex(PLACEHOLDER.sub('X', text), posix=True, punctuation_chars=';&|')
    lexer.whitespace_split = True  # words as the shell splits them; ; & | are words of their own
    try:
        words = list(lexer)
    except ValueError:  # not shell: an unbalanced quote in prose
        return []
    commands = [[]]
    for word in words:
        if word in SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def script_and_argv(words):
    """(script, its arguments) of a `python <script>.py ...`, `python -m tools.<name> ...` (script: the module's
    name, 'tools.<name>') or `torchrun ... <script>.py ...` command; None for anything else (`python -m pytest`,
    `python ../shared/...`, other programs)."""
    while words and (re.fullmatch(r'\w+=\S*', words[0]) or words[0] in ('time', 'nice')):  # VAR=1, time, nice
        words = words[3:] if words[:2] == ['nice', '-n'] else words[1:]
    if not words:
        return None
    if words[0] in ('python', 'python3') and len(words) > 2 and words[1] == '-m':
        if words[2].split('.')[0] not in RUNNABLE_PACKAGES:
            return None
        script, argv = words[2], words[3:]
    elif words[0] in ('python', 'python3') and len(words) > 1 and words[1].endswith('.py'):
        script, argv = words[1], words[2:]
    elif words[0] == 'torchrun':
        scripts = [i for i, w in enumerate(words) if w.endswith('.py')]
        if not scripts:
            return None
        script, argv = words[scripts[0]], words[scripts[0] + 1:]
    else:
        return None
    if script.startswith('../'):  # the data's own tools, outside the repository
        return None
    return script, argv


def documented_commands():
    """pytest params, one per command: (file, line, command text, script, argv)."""
    params = []
    for doc in DOCS:
        name = doc.relative_to(REPO).as_posix()
        for number, text, _ in logical_lines(doc):
            for words in command_words(text):
                found = script_and_argv(words)
                if found:
                    script, argv = found
                    shown = shlex.join([script, *argv] if script.endswith('.py') else ['-m', script, *argv])
                    params.append(pytest.param(name, number, shown, script, argv, id=f"{name}:{number}: {shown}"[:150]))
    return params


class Parsed(Exception):
    """Raised by the patched ArgumentParser.parse_args once the flags parsed: stops a main() before it runs."""


def load_script(script):
    """The module of a script path (`train.py`, `examples/x.py`) or of a module name (`tools.holdout`); raises
    FileNotFoundError when there is none, AssertionError for a tool or a benchmark given as a file."""
    if not script.endswith('.py'):
        try:
            found = importlib.util.find_spec(script)
        except ModuleNotFoundError:  # its package is missing
            found = None
        if found is None:
            raise FileNotFoundError(script)
        return importlib.import_module(script)
    path = REPO / script
    if not path.is_file():
        raise FileNotFoundError(script)
    package = path.parent.relative_to(REPO).as_posix()
    assert package not in RUNNABLE_PACKAGES, f"{script} imports the library only as python -m {package}.{path.stem}"
    if path.parent == REPO:
        return importlib.import_module(path.stem)
    spec = importlib.util.spec_from_file_location(f"docs_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_command(script, argv):
    """Parse argv with the script's own parser; raises SystemExit (with argparse's message on stderr) when it
    refuses them, AssertionError for the scripts without a parser."""
    if script in POSITIONAL_ONLY:
        assert not [a for a in argv if a.startswith('-')], f"{script} takes no flags"
        assert len(argv) >= POSITIONAL_ONLY[script], f"{script} needs at least {POSITIONAL_ONLY[script]} arguments"
        return
    module = load_script(script)
    if script in NO_ARGUMENTS:
        main = getattr(module, 'main', None)
        assert main is None or not inspect.signature(main).parameters, f"{script}: main() takes arguments now"
        assert not argv, f"{script} takes no arguments"
        return
    if hasattr(module, 'parse_args'):
        module.parse_args(argv)
        return
    # A main(argv) that builds its parser inline (tools/make_pretrained.py): stop it as soon as its flags parsed.
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise Parsed

    with mock.patch.object(argparse.ArgumentParser, 'parse_args', parse_then_stop), pytest.raises(Parsed):
        module.main(argv)


def refusal(script, argv):
    """None when the script's parser takes argv; else argparse's message."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parse_command(script, argv)
    except SystemExit as e:
        if e.code == 0 and ('--help' in argv or '-h' in argv):
            return None
        return stderr.getvalue().strip() or f"exit status {e.code}"
    except FileNotFoundError:
        return f"no such {'script' if script.endswith('.py') else 'module'}: {script}"
    return None


@pytest.mark.parametrize('doc, line, command, script, argv', documented_commands())
def test_documented_command_parses(doc, line, command, script, argv):
    try:
        problem = refusal(script, argv)
    except AssertionError as e:
        problem = str(e)
    assert problem is None, f"{doc}, line {line}: `{command}` does not parse:\n{problem}"


def test_the_documents_quote_commands():
    """The extraction finds the commands (a broken extractor would pass every test above vacuously)."""
    scripts = {p.values[3] for p in documented_commands()}
    assert {'train.py', 'enroll.py', 'verification.py', 'identification.py', 'feature_extraction.py',
            'tools.robustness', 'tools.holdout', 'bench.throughput'} <= scripts


@pytest.mark.parametrize('line, found', [
    ('python train.py --epochs 2', ('train.py', ['--epochs', '2'])),
    ('OMP_NUM_THREADS=1 python -m bench.throughput --utts 3  # one thread', ('bench.throughput', ['--utts', '3'])),
    ('nice -n 5 python -m tools.robustness --dev', ('tools.robustness', ['--dev'])),
    ('python -m pytest -q tests', None),
    ('python ../shared/etri/unpack.py', None),
])
def test_the_commands_are_read_as_the_shell_runs_them(line, found):
    [words] = command_words(line)
    assert script_and_argv(words) == found


@pytest.mark.parametrize('script, argv, problem', [
    ('tools.holdout', ['--speakers', '5'], None),
    ('tools.holdout', ['--speakerz', '5'], 'unrecognized arguments: --speakerz'),
    ('tools.no_such_tool', [], 'no such module: tools.no_such_tool'),
    ('no_such_package.tool', [], 'no such module: no_such_package.tool'),
    ('no_such_script.py', [], 'no such script: no_such_script.py'),
])
def test_a_command_that_would_fail_is_refused(script, argv, problem):
    found = refusal(script, argv)
    assert found == problem if problem is None else problem in found


def test_a_tool_run_as_a_file_is_refused():
    """`python tools/holdout.py` puts tools/ first on the path, where the library is not: it runs with -m only."""
    with pytest.raises(AssertionError, match='only as python -m tools.holdout'):
        refusal('tools/holdout.py', [])


# ---- Links and images ----------------------------------------------------------------------------------------

LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
HTML_SOURCE = re.compile(r'<(?:img|a)\s[^>]*(?:src|href)="([^"]+)"')
EXTERNAL = re.compile(r'^(?:[a-z][a-z0-9+.-]*:|//)', re.IGNORECASE)


def prose_lines(path):
    """[(line number, text)] of the lines of a Markdown file outside fenced code blocks, inline code removed."""
    lines, fence = [], None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
        else:
            lines.append((number, INLINE_CODE.sub('', line)))
    return lines


def heading_anchors(path):
    """The anchors GitHub gives the headings of a Markdown file (inline code kept, without its backticks)."""
    anchors, seen, fence = set(), {}, None
    for line in path.read_text().splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        heading = re.match(r'^#{1,6}\s+(.*?)\s*#*\s*$', line)
        if heading:
            slug = re.sub(r'[^\w\- ]', '', heading.group(1).replace('`', '').lower()).replace(' ', '-')
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def documented_links():
    params = []
    for doc in DOCS:
        name = doc.relative_to(REPO).as_posix()
        for number, line in prose_lines(doc):
            for target in LINK.findall(line) + HTML_SOURCE.findall(line):
                if not EXTERNAL.match(target):
                    params.append(pytest.param(doc, number, target, id=f"{name}:{number}: {target}"))
    return params


@pytest.mark.parametrize('doc, line, target', documented_links())
def test_relative_link_points_to_a_file_that_exists(doc, line, target):
    where = f"{doc.relative_to(REPO)}, line {line}: link {target!r}"
    path, _, anchor = target.partition('#')
    destination = (doc.parent / path).resolve() if path else doc
    assert destination.exists(), f"{where}: {path} does not exist"
    assert destination.is_relative_to(REPO), f"{where}: points outside the repository"
    if anchor and destination.suffix == '.md':
        assert anchor in heading_anchors(destination), f"{where}: no heading #{anchor} in {path or doc.name}"


def test_images_are_committed_files():
    """Images the documents show are in git (generated results are ignored, so a clean checkout would lack them)."""
    images = [(doc, line, t) for doc in DOCS for line, text in prose_lines(doc)
              for t in re.findall(r'!\[[^\]]*\]\(\s*<?([^)\s>]+)', text) + re.findall(r'<img\s[^>]*src="([^"]+)"', text)
              if not EXTERNAL.match(t)]
    assert images, "no images found: the extraction is broken"
    try:
        tracked = subprocess.run(['git', 'ls-files'], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip('not a git checkout')
    tracked = set(tracked.split())
    untracked = [f"{doc.relative_to(REPO)}:{line}: {t}" for doc, line, t in images
                 if (doc.parent / t).resolve().relative_to(REPO).as_posix() not in tracked]
    assert not untracked, f"images not in git: {untracked}"


# ---- The test command --------------------------------------------------------------------------------------

@pytest.mark.parametrize('command', ['ruff check .', 'python -m pytest -q tests'])
def test_ci_runs_the_readme_test_commands(command):
    """README.md's test commands (the linter, then the tests), in a shell block, are what .ci/run runs."""
    readme_lines = [text for _, text, fenced in logical_lines(REPO / 'README.md') if fenced]
    assert command in readme_lines, f"README.md has no line `{command}` in a code block"
    ci_lines = [line.strip() for line in (REPO / '.ci' / 'run').read_text().splitlines()]
    assert command in ci_lines, f".ci/run does not run `{command}`"
