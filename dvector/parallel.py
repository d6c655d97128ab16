"""Independent items, one function call each, spread over the CPUs in worker processes (threads would not help:
the work is Python holding its interpreter lock)."""
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm

ITEMS_PER_PROCESS = 100  # a worker process for every this many items, one per CPU at most: fewer run in this process


def process_map(function, items, desc):
    """function(item) of every item, yielded in the items' order as they are done, with a progress bar.

    `function` should run on one thread: the processes are the parallelism (fbank.fbank keeps numpy's BLAS on
    one; on two threads each, two workers on 2 cores extracted features no faster than one process). Linux forks
    the workers from this process: they start at once, with what it has imported, and `function` must not use
    torch's threads. Elsewhere they are spawned (macOS, where forking is unsafe, and Windows, which cannot), each
    first importing function's module; `function` must then be picklable: a module-level function, or a
    functools.partial of one.
    """
    items = list(items)
    processes = min(os.cpu_count() or 1, len(items) // ITEMS_PER_PROCESS)
    if processes < 2:
        yield from tqdm(map(function, items), total=len(items), desc=desc, disable=None)
        return
    context = multiprocessing.get_context('fork' if sys.platform.startswith('linux') else 'spawn')
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        yield from tqdm(pool.map(function, items, chunksize=8), total=len(items), desc=desc, disable=None)
