"""Flags: each setting's flag from configure.py, the flag types and the flags several scripts share, the clean
error exit of every entry script, and running a script's command from another (the demo, the tools).

(The flags of the stages that use a model, and how they are resolved, are in dvector/stage.py.)
"""
import argparse
import io
import math
import os
import re
import runpy
import shlex
import sys
import tokenize
import warnings
from pathlib import Path

import configure as c
from dvector.audio import AudioNote
from dvector.frontend import VADS, check_level

REPO = Path(__file__).resolve().parent.parent  # the repository root, where the scripts are


def setting_comments(path=Path(c.__file__)):
    """{NAME: description} of each setting in configure.py: its comment (with the indented comment lines under it),
    or else the comment lines just above it. Flags take their help from here, so each setting is described once."""
    lines = path.read_text().splitlines()
    comments = {t.start[0]: t.string.lstrip('#').strip()
                for t in tokenize.generate_tokens(io.StringIO('\n'.join(lines) + '\n').readline)
                if t.type == tokenize.COMMENT}

    def comment_only(row):
        return row in comments and lines[row - 1].lstrip().startswith('#')

    described = {}
    for row, line in enumerate(lines, 1):
        name = re.match(r'([A-Z][A-Z0-9_]*) *=', line)
        if not name:
            continue
        if row in comments:  # on its line, continued on indented comment lines below
            text, below = [comments[row]], row + 1
            while comment_only(below) and lines[below - 1].startswith(' '):
                text, below = text + [comments[below]], below + 1
        else:  # the comment lines above it (not a section heading)
            text, above = [], row - 1
            while comment_only(above) and not lines[above - 1].startswith(('#  ', '# --')):
                text, above = [comments[above]] + text, above - 1
        described[name.group(1)] = ' '.join(text)
    return described


SETTING_HELP = setting_comments()


def setting(p, name, flag=None, **kwargs):
    """Add the flag of configure.py's setting `name`: --lower-case-name (or `flag`), its value as the default and
    its comment there as the help. A number's type is the default's (a float's: finite_float) unless `type` or
    `choices` say otherwise."""
    default = getattr(c, name)
    if not {'type', 'choices', 'nargs'} & set(kwargs) and type(default) in (int, float):
        kwargs['type'] = finite_float if type(default) is float else int
    return p.add_argument(flag or '--' + name.lower().replace('_', '-'), default=default,
                          help=SETTING_HELP[name].replace('%', '%%'), **kwargs)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that keeps the script's docstring as written and shows each flag's default."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose result says which settings the command line gave: `args.given`, a set of names.

    A setting given on the command line wins over what a checkpoint recommends, even when its value is
    configure.py's (stage.resolve_scoring); a resumed run refuses settings given that it cannot take.
    """

    def parse_known_args(self, args=None, namespace=None):
        parsed, extra = super().parse_known_args(args, namespace)
        parsed.given = self.given_settings(args)
        return parsed, extra

    def given_settings(self, args):
        """The names of the settings that the command line `args` gives: those a parse into a namespace pre-filled
        with a marker sets (argparse puts a default only where the namespace has no value)."""
        unset = object()
        namespace = argparse.Namespace(**{a.dest: unset for a in self._actions if a.dest != argparse.SUPPRESS})
        super().parse_known_args(args, namespace)
        return frozenset(k for k, v in vars(namespace).items() if v is not unset) - {'given'}


def parser(description):
    """A Parser for an entry script; its defaults come from configure.py."""
    return Parser(description=description, formatter_class=HelpFormatter, allow_abbrev=False)


def positive_int(text):
    """argparse type: an integer above 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def non_negative_int(text):
    """argparse type: an integer of 0 or more."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, not {text}")
    return value


def value_range(text):
    """argparse type: a range 'LOW,HIGH' of two finite numbers, LOW <= HIGH, as a tuple."""
    try:
        low, high = (finite_float(v) for v in text.split(','))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"must be two finite numbers LOW,HIGH such as 0,15, not {text}") from None
    if low > high:
        raise argparse.ArgumentTypeError(f"LOW must not be above HIGH, not {text}")
    return low, high


def positive_range(text):
    """argparse type: a value_range of numbers above 0 (a speed or a reverberation time: they divide)."""
    low, high = value_range(text)
    if low <= 0:
        raise argparse.ArgumentTypeError(f"must be two numbers above 0 (LOW,HIGH), not {text}")
    return low, high


def finite_float(text):
    """argparse type: a finite number (nan and inf compare as no score can: every trial would be rejected)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
    return value


def probability(text):
    """argparse type: a probability, from 0 to 1."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a probability from 0 to 1, not {text}")
    return value


def cohort_size(text):
    """argparse type: how many top cohort scores AS-norm takes, 2 or more (one score has no standard deviation)."""
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be 2 or more (AS-norm divides by the standard deviation of the top "
                                         f"cohort scores), not {text}")
    return value


def decibel_range(text):
    """argparse type: a value_range of decibels (a gain, a level, an SNR), from -100 to 100: beyond, a signal is below
    the features' floor (-100 dB) or past float32's range, and training would fail on whichever file it met first."""
    low, high = value_range(text)
    if not -100 <= low <= high <= 100:
        raise argparse.ArgumentTypeError(f"must be decibels from -100 to 100, not {text}")
    return low, high


def port(text):
    """argparse type: a TCP port, 0 (any free one) to 65535."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 (any free one) to 65535, not {text}")
    return value


def add_device_arg(p):
    setting(p, 'DEVICE')


def level(text):
    """argparse type: 'no', or a target speech level in dBFS."""
    try:
        return check_level(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_audio_args(p):
    """Flags of the scripts that read audio: speech detection, level normalisation and the longest recording
    (frontend.py, audio.py)."""
    setting(p, 'VAD', choices=VADS)
    setting(p, 'LEVEL', type=level, nargs='?', const=c.TRAIN_LEVEL, metavar='DBFS')
    setting(p, 'MAX_SECONDS', type=positive_int)
    return p


def add_test_args(p):
    """Flags of the scripts that score test utterances."""
    setting(p, 'TEST_SPEAKER')
    p.add_argument('--test-file', help='score this file (.p features or audio) instead of the test speaker\'s')
    return p


def flag_text(name, value):
    """A setting as its flag on the command line would give it: flag_text('enroll_frames', 0) is '--enroll-frames 0'."""
    return f"--{name.replace('_', '-')} {value}"


def flags_text(settings):
    """{setting: value} as the flags that give them: '--vad no --level no'."""
    return ' '.join(flag_text(k, v) for k, v in settings.items())


def format_note(message, category, filename, lineno, line=None, default=warnings.formatwarning):
    """An AudioNote (audio.py) as one line, 'Note: <file>: <what was found>'; other warnings as Python writes them."""
    if issubclass(category, AudioNote):
        return f"Note: {message}\n"
    return default(message, category, filename, lineno, line)


def run(main):
    """Run an entry script's main(); a bad input ends it with an error message instead of a traceback, Ctrl-C with
    one line and exit status 130 (the shell's for SIGINT). AudioNotes are shown as 'Note:' lines.

    DVECTOR_DEBUG=1 in the environment shows the whole traceback instead, to find where the error arose.
    """
    warnings.formatwarning = format_note
    debug = os.environ.get('DVECTOR_DEBUG', '0') not in ('', '0')
    try:
        main()
    except (OSError, ValueError) as e:  # bad paths, files, names or settings
        if debug:
            raise
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)


def run_command(script, argv):
    """What main(argv) of a script returns, run in this process as `python <script> <argv>` runs it; the command
    is printed first. script: its path from the repository root.

    The script's file is run (runpy), not imported: one script uses another's command line, never its code.
    """
    argv = [str(a) for a in argv]
    print(f"$ python {shlex.join([script, *argv])}")
    return runpy.run_path(str(REPO / script))['main'](argv)
