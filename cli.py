"""Command-line plumbing shared by the entry scripts: flags and clean error exits.

(The device and the precisions the flags name are chosen in speed.py.)
"""
import argparse
import io
import math
import os
import re
import sys
import tokenize
import warnings
from pathlib import Path

import configure as c
import features
import speed
import storage

SCORE_NORMS = ('none', 'asnorm')
COHORTS = ('speakers', 'utterances')


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


def setting(p, name, flag=None, aliases=(), **kwargs):
    """Add the flag of configure.py's setting `name`: --lower-case-name (or `flag`, also spelt as `aliases`), its
    value as the default and its comment there as the help. A number's type is the default's unless `type` or
    `choices` say otherwise."""
    default = getattr(c, name)
    if not {'type', 'choices', 'nargs'} & set(kwargs) and type(default) in (int, float):
        kwargs['type'] = type(default)
    return p.add_argument(flag or '--' + name.lower().replace('_', '-'), *aliases, default=default,
                          help=SETTING_HELP[name].replace('%', '%%'), **kwargs)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that keeps the script's docstring as written and shows each flag's default."""


def parser(description):
    """An ArgumentParser for an entry script; its defaults come from configure.py."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter, allow_abbrev=False)


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
    """argparse type: a range 'LOW,HIGH' of two numbers, LOW <= HIGH, as a tuple."""
    try:
        low, high = (float(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be two numbers LOW,HIGH such as 0,15, not {text}") from None
    if low > high:
        raise argparse.ArgumentTypeError(f"LOW must not be above HIGH, not {text}")
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


def add_device_arg(p):
    setting(p, 'DEVICE')


def add_backend_arg(p):
    setting(p, 'EMBED_BACKEND', '--backend', choices=speed.EMBED_BACKENDS)


def add_model_args(p, embedding_dir=True):
    """Flags of the scripts that use a trained model: checkpoint, enrolled d-vectors (unless not embedding_dir),
    test data, embedding precision, backend, device."""
    setting(p, 'CHECKPOINT')
    if embedding_dir:
        setting(p, 'EMBEDDING_DIR')
    setting(p, 'TEST_FEAT_DIR')
    setting(p, 'EMBED_PRECISION', choices=speed.EMBED_PRECISIONS, aliases=['--precision'])  # its old name
    add_backend_arg(p)
    add_device_arg(p)
    return add_audio_args(p)


def level(text):
    """argparse type: 'no', or a target speech level in dBFS."""
    try:
        return features.check_level(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_audio_args(p):
    """Flags of the scripts that read audio: speech detection and level normalisation (features.py)."""
    setting(p, 'VAD', choices=features.VADS)
    setting(p, 'LEVEL', type=level, nargs='?', const=c.TRAIN_LEVEL, metavar='DBFS')
    return p


def add_test_args(p):
    """Flags of the scripts that score test utterances."""
    setting(p, 'TEST_SPEAKER')
    p.add_argument('--test-file', help='score this file (.p features or audio) instead of the test speaker\'s')
    return p


def add_scoring_args(p, sides=('enroll', 'test'), score_norm=True):
    """Flags of how d-vectors are made and scored: segment lengths of the given sides, score normalisation.

    A checkpoint may recommend other values (its 'scoring'): recommended_scoring applies them.
    """
    for side in sides:
        setting(p, f'{side.upper()}_FRAMES', type=non_negative_int)
    if score_norm:
        setting(p, 'SCORE_NORM', choices=SCORE_NORMS)
        setting(p, 'COHORT', choices=COHORTS)
        setting(p, 'COHORT_UTTS', type=positive_int)
        setting(p, 'COHORT_TOP', type=cohort_size)
        p.add_argument('--cohort-dir', help='asnorm: training feature tree to build the cohort from when the '
                       'checkpoint has none (default: the one it was trained on)')
    return p


def flag_text(name, value):
    """A setting as its flag on the command line would give it: flag_text('enroll_frames', 0) is '--enroll-frames 0'."""
    return f"--{name.replace('_', '-')} {value}"


def flags_text(settings):
    """{setting: value} as the flags that give them: '--vad no --level no'."""
    return ' '.join(flag_text(k, v) for k, v in settings.items())


def recommended_scoring(args, argv, ckpt, settled=()):
    """Set the scoring settings the checkpoint recommends (ckpt['scoring']) that no flag on argv gives; print them.
    A published checkpoint's own cohort settings are set whatever argv says (it carries that cohort), with a note.

    settled: settings that something else has set already (a single trial's enrollment settings): left alone.
    """
    recommended = {k: v for k, v in ckpt.get('scoring', {}).items() if hasattr(args, k) and k not in settled}
    given = flags_given(argv, recommended)
    applied = {k: v for k, v in recommended.items() if k not in given and getattr(args, k) != v}
    for k, v in applied.items():
        setattr(args, k, v)
    if applied:
        print("Scoring as the checkpoint recommends: " + ", ".join(flag_text(k, v) for k, v in applied.items()),
              file=sys.stderr)
    own = published_cohort(ckpt)
    if own and getattr(args, 'score_norm', None) == 'asnorm':
        other = {k: getattr(args, k) for k in own if getattr(args, k) != own[k]}
        if other:
            print(f"Note: {flags_text(other)} is not used: {args.checkpoint} carries its own cohort "
                  f"({flags_text(own)})", file=sys.stderr)
        for k, v in own.items():
            setattr(args, k, v)
    return args


def published_cohort(ckpt):
    """{'cohort', 'cohort_utts'} of the AS-norm cohort a published checkpoint carries; None when it carries none."""
    if 'cohort' not in ckpt:
        return None
    source = ckpt.get('cohort_source')  # absent in those published before cohorts had kinds
    return {'cohort': source['kind'], 'cohort_utts': source['utts_per_speaker']} if source else dict(storage.OLDER_COHORT)


def scoring_record(args):
    """The scoring settings in args that scores depend on: a calibrated threshold is valid for these only (the
    cohort's under AS-norm alone)."""
    asnorm = getattr(args, 'score_norm', 'none') == 'asnorm'
    names = ('enroll_frames', 'test_frames', 'score_norm') + (storage.COHORT_SETTINGS if asnorm else ())
    return {k: getattr(args, k) for k in names if hasattr(args, k)}


def flags_given(argv, names):
    """Which of the flags --<name> (names as argparse dests) appear on the command line argv."""
    tokens = sys.argv[1:] if argv is None else argv
    flags = {name: '--' + name.replace('_', '-') for name in names}
    return [n for n, flag in flags.items() if any(t == flag or t.startswith(flag + '=') for t in tokens)]


def format_note(message, category, filename, lineno, line=None, default=warnings.formatwarning):
    """A features.AudioNote as one line, 'Note: <file>: <what was found>'; other warnings as Python writes them."""
    if issubclass(category, features.AudioNote):
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
