"""Files written whole or not at all: what every stage's outputs go through."""
import contextlib
import errno
import io
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
    """torch.save(obj, path), atomically. Serialised in memory first: torch's writer turns a disk that fills midway
    into a RuntimeError that does not say so ('unexpected pos 704 vs 598'); a plain write raises the OSError."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def cannot_write(path, e):
    """The OSError e, about writing `path`, as an error of its kind naming `path` (not a temporary file beside it)."""
    full = e.errno == errno.ENOSPC
    return type(e)(f"cannot write {path}: {e.strerror or e}"
                   + (" (the disk is full: free some space; the file there before, if any, is kept)" if full else ""))


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


def refuse_overwriting(output, inputs):
    """Refuse, before any work, an output that is one of the inputs however either is written (s.txt and ./s.txt,
    relative and absolute, through a link): writing it would lose the input."""
    for path in inputs:
        if path is not None and Path(path).resolve() == Path(output).resolve():
            raise ValueError(f"{output} is also an input ({path}): writing it would lose it; write to another file")
