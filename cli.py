"""Command-line plumbing shared by the entry scripts: common flags and clean error exits."""
import argparse
import sys

import configure as c


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that keeps the script's docstring as written and shows each flag's default."""


def parser(description):
    """An ArgumentParser for an entry script; its defaults come from configure.py."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)


def add_model_args(p):
    """Flags of the scripts that use a trained model: checkpoint, enrolled d-vectors, test data, device."""
    p.add_argument('--checkpoint', default=c.CHECKPOINT, help='trained model (train.py writes it)')
    p.add_argument('--embedding-dir', default=c.EMBEDDING_DIR, help='enrolled d-vectors, <speaker>.pth')
    p.add_argument('--test-feat-dir', default=c.TEST_FEAT_DIR, help='<speaker>/{enroll*,test*}.p feature tree')
    p.add_argument('--device', default=c.DEVICE, help="'auto', 'cpu' or 'cuda'")
    return p


def run(main):
    """Run an entry script's main(); a bad input ends it with a one-line error instead of a traceback."""
    try:
        main()
    except (FileNotFoundError, ValueError) as e:  # bad paths, files, names or settings
        sys.exit(f"error: {e}")
