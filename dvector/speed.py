"""Speed code a student can skip: how much memory there is, and oneDNN's bugs kept clear of.

Nothing here changes what is computed beyond float rounding (bfloat16 trades a little precision for speed):
  - preload_fits: whether the training features fit in memory (PRELOAD 'auto')
  - use_channels_last: whether convolutions may run channels-last on this model (CHANNELS_LAST 'auto')
  - LowPrecision: a backbone run in bfloat16, with float32 where bfloat16 fails
  - the probe of every convolution shape (python speed.py), which a test checks the policy against
The device and the embedding precision are chosen in embedder.py, training's precision in train.py.

Channels-last (NHWC) is oneDNN's fast layout on the CPU, but oneDNN has a bug: the weight gradient
of a 1x1 convolution with stride > 1 and fewer input channels than its channel block (16 here)
writes past its buffer. Measured on this project's CPU (AMD EPYC, AVX512-BF16, torch 2.13.0):
in float32, every strided 1x1 convolution with 2-15 input channels crashed the process in
backward (for some input sizes), while 16 or more never did, nor did any 3x3 or 7x7 convolution,
nor bfloat16 autocast. Other machines are reported to give wrong gradients instead of crashing.
So a model with such a convolution (the ResNet's shortcut when BASE_CHANNELS < 16) stays
contiguous, for training and for embedding.

    python speed.py                  # probe every convolution shape of the ResNet widths 4-32 on this machine

bfloat16 has a bug of its own here: a 3x3 convolution with stride 2 whose input is 1 or 2 frames
wide returns garbage (inf, or values ~1e18) in bfloat16, in either layout, while float32 is exact.
The ResNet's strided convolutions see T, T/2 and T/4 frames of a T-frame input, so segments of
fewer than MIN_BF16_FRAMES frames (the short last segment of an utterance) are embedded in
float32 (LowPrecision).

The probe runs each shape forward and backward in channels-last and contiguous memory (same
weights, batch and dtype) in a child process, and reports crash / mismatch / ok, so that a torch
upgrade that fixes the bug shows up here, and a test checks the policy against it.
"""
import copy
import json
import os
import queue
import subprocess
import sys
import threading
from dataclasses import asdict, astuple, dataclass
from pathlib import Path

import torch
from torch import nn

from model.resnet import build_resnet

MIN_BF16_FRAMES = 9     # the last strided convolution sees ceil(T / 4) frames of a T-frame input: at least 3
MIN_SAFE_CHANNELS = 16  # oneDNN's channel block on AVX512: strided 1x1 convolutions with fewer input channels fail
PROBE_WIDTHS = (4, 8, 12, 16, 32)
PROBE_BACKBONES = ('resnet18',)
PROBE_FRAMES = (100, 200)  # the tutorial's and the improved recipe's training windows
TOLERANCE = {'fp32': 1e-4, 'bf16': 2e-2}  # relative error of outputs and gradients that counts as a mismatch


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


@dataclass(frozen=True)
class ConvShape:
    """One convolution as the ResNet runs it: channels, kernel, stride and the input's (frequency, time) size."""
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    height: int
    width: int


def conv_shapes(backbone, base_channels, frames, n_filters=40):
    """The distinct ConvShapes of a backbone for a batch of (n_filters, frames) inputs."""
    net = build_resnet(backbone, base_channels=base_channels)
    shapes = []

    def record(conv, inputs, _):
        x = inputs[0]
        shapes.append(ConvShape(conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0],
                                x.shape[2], x.shape[3]))
    hooks = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net(torch.zeros(1, 1, n_filters, frames))
    for h in hooks:
        h.remove()
    return list(dict.fromkeys(shapes))


def probe_shapes():
    """Every ConvShape of PROBE_BACKBONES at PROBE_WIDTHS and PROBE_FRAMES, sorted."""
    shapes = {s for b in PROBE_BACKBONES for w in PROBE_WIDTHS for f in PROBE_FRAMES for s in conv_shapes(b, w, f)}
    return sorted(shapes, key=astuple)


def _relative_error(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-12)).item()


def compare_layouts(shape, dtype, batch=8, seed=0):
    """Largest relative difference of output, weight and input gradients between channels-last and contiguous.

    One forward and backward step of the same convolution and batch in each layout; dtype 'bf16' runs
    under bfloat16 autocast, as training does.
    """
    torch.manual_seed(seed)
    conv = nn.Conv2d(shape.in_channels, shape.out_channels, shape.kernel, shape.stride, shape.kernel // 2, bias=False)
    x = torch.randn(batch, shape.in_channels, shape.height, shape.width)
    results = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        c = nn.Conv2d(shape.in_channels, shape.out_channels, shape.kernel, shape.stride, shape.kernel // 2, bias=False)
        c.load_state_dict(conv.state_dict())
        c = c.to(memory_format=memory_format)
        xi = x.clone().to(memory_format=memory_format).requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=dtype == 'bf16'):
            y = c(xi)
        y.float().square().mean().backward()
        results.append((y.detach(), c.weight.grad, xi.grad))
    return max(_relative_error(cl, ref) for cl, ref in zip(results[1], results[0]))


def _probe_child(cases):
    """In the child process: compare_layouts of each (shape dict, dtype), one JSON line each, as soon as known."""
    for shape, dtype in cases:
        print(json.dumps({'error': compare_layouts(ConvShape(**shape), dtype)}), flush=True)


def _forward_lines(stream, lines):
    """Put each line of stream into the queue `lines`, then None at its end."""
    for line in stream:
        lines.put(line)
    lines.put(None)


PROBE_CHILD = 'import json, sys; from dvector import speed; speed._probe_child(json.loads(sys.argv[1]))'


def probe(shapes, dtypes=('fp32', 'bf16'), case_timeout=60, code=PROBE_CHILD):
    """[(shape, dtype, 'ok' | 'mismatch' | 'crash', relative error or None)] of each shape in each dtype.

    The cases run in a child process; when it dies or hangs (oneDNN's bug kills the process or
    corrupts its memory), the case it was on is a crash and a new child takes the rest: a crash
    is a finding, never the caller's death. code: what the child runs, given the cases as JSON in argv[1].
    """
    cases = [(s, d) for s in shapes for d in dtypes]
    found = []
    while len(found) < len(cases):
        todo = json.dumps([(asdict(s), d) for s, d in cases[len(found):]])
        child = subprocess.Popen([sys.executable, '-c', code, todo],
                                 cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 text=True)
        lines = queue.Queue()
        threading.Thread(target=_forward_lines, args=(child.stdout, lines), daemon=True).start()
        while len(found) < len(cases):
            shape, dtype = cases[len(found)]
            try:
                line = lines.get(timeout=case_timeout)
            except queue.Empty:  # hung
                line = None
            if line is None:
                found.append((shape, dtype, 'crash', None))
                break
            error = json.loads(line)['error']
            found.append((shape, dtype, 'ok' if error <= TOLERANCE[dtype] else 'mismatch', error))
        child.kill()
        child.wait()
    return found


def main():
    shapes = probe_shapes()
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}: {len(shapes)} convolution shapes "
          f"of {', '.join(PROBE_BACKBONES)} at widths {PROBE_WIDTHS}, windows of {PROBE_FRAMES} frames")
    print(f"{'in':>4} {'out':>4} {'kernel':>6} {'stride':>6} {'input':>9} {'dtype':>5}  result")
    for shape, dtype, result, error in probe(shapes):
        detail = '' if error is None else f" (max relative difference {error:.1e})"
        print(f"{shape.in_channels:4d} {shape.out_channels:4d} {shape.kernel:6d} {shape.stride:6d} "
              f"{f'{shape.height}x{shape.width}':>9} {dtype:>5}  {result}{detail}")


if __name__ == '__main__':
    main()
