"""Speed code a student can skip: how much memory there is, and oneDNN's bugs kept clear of.

Nothing here changes what is computed beyond float rounding (bfloat16 trades a little precision for speed):
  - preload_fits: whether the training features fit in memory (PRELOAD 'auto')
  - keep_freed_memory: the C library keeps freed memory for the next training step instead of returning it
  - use_channels_last: whether convolutions may run channels-last on this model (CHANNELS_LAST 'auto')
  - LowPrecision: a backbone run in bfloat16, with float32 where bfloat16 fails
The device and the embedding precision are chosen in stage.py, training's precision in training.py.

Channels-last (NHWC) is oneDNN's fast layout on the CPU, but oneDNN has a bug: the weight gradient
of a 1x1 convolution with stride > 1 and fewer input channels than its channel block (16 here)
writes past its buffer. Measured on this project's CPU (AMD EPYC, AVX512-BF16, torch 2.13.0):
in float32, every strided 1x1 convolution with 2-15 input channels crashed the process in
backward (for some input sizes), while 16 or more never did, nor did any 3x3 or 7x7 convolution,
nor bfloat16 autocast. Other machines are reported to give wrong gradients instead of crashing.
So a model with such a convolution (the ResNet's shortcut when BASE_CHANNELS < 16) stays
contiguous, for training and for embedding. The probe of every convolution shape on this machine
(python -m tools.probe_layout) shows where the bug is, and a test checks this policy against it.

bfloat16 has a bug of its own here: a 3x3 convolution with stride 2 whose input is 1 or 2 frames
wide returns garbage (inf, or values ~1e18) in bfloat16, in either layout, while float32 is exact.
The ResNet's strided convolutions see T, T/2 and T/4 frames of a T-frame input, so segments of
fewer than MIN_BF16_FRAMES frames (the short last segment of an utterance) are embedded in
float32 (LowPrecision).
"""
import copy
import ctypes
import os
import sys

from torch import nn

MIN_BF16_FRAMES = 9     # the last strided convolution sees ceil(T / 4) frames of a T-frame input: at least 3
MIN_SAFE_CHANNELS = 16  # oneDNN's channel block on AVX512: strided 1x1 convolutions with fewer input channels fail


# ---- Memory --------------------------------------------------------------------------------------

def available_memory():
    """Bytes of memory this process can still get: MemAvailable, or the container's limit if lower (Linux)."""
    with open('/proc/meminfo') as f:
        available = next(int(line.split()[1]) * 1024 for line in f if line.startswith('MemAvailable:'))
    try:
        with open('/sys/fs/cgroup/memory.max') as f:
            limit = f.read().strip()
        with open('/sys/fs/cgroup/memory.current') as f:
            used = int(f.read())
        if limit != 'max':
            available = min(available, int(limit) - used)
    except OSError:  # no cgroup v2 limits here
        pass
    return available


def preload_fits(files, fraction=0.5):
    """Whether the features of these files fit in memory as float32: under `fraction` of the available memory.

    The size is estimated from the pickles, which hold float64 (the float32 copy is half of it); every
    process on this machine (torchrun's LOCAL_WORLD_SIZE) keeps a copy.
    """
    needed = sum(os.path.getsize(f) for f in files) / 2 * int(os.environ.get('LOCAL_WORLD_SIZE', '1'))
    try:
        return needed < fraction * available_memory()
    except (OSError, StopIteration, ValueError):  # not Linux: no cheap way to ask
        return False


def keep_freed_memory():
    """Make the C library keep the memory a training step frees, for the next step (Linux with glibc; elsewhere
    nothing). Returns whether it did.

    Each step allocates and frees the same large activations (16 MB each for the tutorial's first layers). By
    default glibc serves such blocks by mapping fresh pages and hands them back when freed, so every step makes the
    kernel zero the same memory again: tens of thousands of page faults a step, about a tenth of a step's time on
    the AVX2 CPU of docs/speed.md. Serving every block from the heap (M_MMAP_MAX 0) and keeping up to 1 GiB of its
    free top (M_TRIM_THRESHOLD) ends that; the peak memory stays the same, and nothing computed changes.
    """
    if not sys.platform.startswith('linux'):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the symbols of this process, the C library's among them
    except (OSError, AttributeError, TypeError):  # no C library to ask, or one without mallopt
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


# ---- Channels-last and bfloat16 around oneDNN's bugs ---------------------------------------------

class LowPrecision(nn.Module):
    """A module run in a lower dtype: its input cast to it, its output cast back to float32.

    Inputs narrower than MIN_BF16_FRAMES run in float32 instead, through a float32 copy of the module.
    """

    def __init__(self, module, dtype):
        super().__init__()
        self.dtype = dtype
        self.module, self.exact = copy.deepcopy(module).to(dtype), module.float()

    def forward(self, x):  # (B, C, F, T)
        if x.shape[-1] < MIN_BF16_FRAMES:
            return self.exact(x.float())
        return self.module(x.to(self.dtype)).float()


def risky_convolutions(model):
    """Names of the model's convolutions that oneDNN may crash on or miscompute in channels-last."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
            and max(m.stride) > 1 and m.in_channels < MIN_SAFE_CHANNELS]


def use_channels_last(setting, device, model):
    """Whether to run the model's convolutions channels-last: CHANNELS_LAST 'auto' | 'yes' | 'no'.

    'auto' does on the CPU (oneDNN is faster with it) unless the model has a risky convolution, and
    then says so; 'yes' with a risky convolution is refused.
    """
    if setting not in ('auto', 'yes', 'no'):
        raise ValueError(f"unknown channels-last setting {setting!r}; use 'auto', 'yes' or 'no'")
    wanted = device.type == 'cpu' if setting == 'auto' else setting == 'yes'
    risky = risky_convolutions(model) if wanted and device.type == 'cpu' else []
    if risky and setting == 'yes':
        raise ValueError(f"channels-last is unsafe for this model on the CPU: {len(risky)} strided 1x1 "
                         f"convolution(s) with fewer than {MIN_SAFE_CHANNELS} input channels ({risky[0]}, ...) "
                         "crash oneDNN; use --channels-last auto or no, or --base-channels 16 or more")
    if risky:
        print(f"Channels-last off: {len(risky)} strided 1x1 convolution(s) of this model have fewer than "
              f"{MIN_SAFE_CHANNELS} input channels, which oneDNN runs wrongly in channels-last")
    return wanted and not risky
