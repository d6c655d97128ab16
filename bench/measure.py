"""Measuring a benchmark's paths: each in a fresh process, its peak memory, a GPU waited for before the clock stops.
"""
import math
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import torch


def peak_memory_mb():
    """The peak resident memory of this process so far, in MiB; NaN on Windows, which has no getrusage.

    The resource module is imported here, not at the top, so that the benchmarks import on Windows too.
    """
    try:
        import resource
    except ImportError:
        return math.nan
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 1024 ** (2 if sys.platform == 'darwin' else 1)


def synchronize(device):
    """Wait for the work queued on a GPU (a CPU has none queued): before a clock is read."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def in_fresh_process(function, *arguments):
    """function(*arguments) run in a new process (its own peak memory); returns its result."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context('spawn')) as pool:
        return pool.submit(function, *arguments).result()
