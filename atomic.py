"""Files written whole or not at all: what every stage's outputs go through."""
import contextlib
import os
import tempfile
from pathlib import Path

import torch

TMP_SUFFIX = '.tmp'  # atomic_write's temporary files: '.<name>.<pid>.tmp' beside the file


def atomic_write(path, write):
    """Call write(binary file) on a temporary file beside `path`, then rename it to `path`.

    A crash or Ctrl-C midway leaves the old file (or none), never a half-written one.
    """
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}{TMP_SUFFIX}')
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # name the file asked for, not the hidden temporary one
        remove(tmp)
        raise cannot_write(path, e) from e
    except BaseException:
        remove(tmp)
        raise


def remove(tmp):
    """Remove a temporary file, if it is there and can be: a failure to (its name too long to make, as to remove)
    must not hide the error that ended the write."""
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def atomic_save(obj, path):
    """torch.save(obj, path), atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def cannot_write(path, e):
    """The OSError e, about writing `path`, as an error of its kind naming `path` (not a temporary file beside it)."""
    return type(e)(f"cannot write {path}: {e.strerror or e}")


def check_writable(path):
    """Refuse now, before any work, an output file that could not be written later: its folder is made, and a
    file is tried there (and removed)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as e:
        raise cannot_write(path, e) from e
