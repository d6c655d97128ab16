"""The probe of oneDNN's convolutions on this machine: every convolution shape of the ResNet, channels-last
against contiguous memory, so that a torch upgrade that fixes oneDNN's bugs shows up here.

    python -m tools.probe_layout     # probe every convolution shape of the ResNet widths 4-32 on this machine

Each shape runs forward and backward in channels-last and contiguous memory (same weights, batch and
dtype) in a child process, and is reported crash / mismatch / ok. dvector/speed.py says what was found
and keeps the models it would harm contiguous (use_channels_last); a test checks that policy against
this probe.
"""
import json
import queue
import subprocess
import sys
import threading
from dataclasses import asdict, astuple, dataclass
from pathlib import Path

import torch
from torch import nn

from model.resnet import build_resnet

PROBE_WIDTHS = (4, 8, 12, 16, 32)
PROBE_BACKBONES = ('resnet18',)
PROBE_FRAMES = (100, 200)  # the tutorial's and the improved recipe's training windows
TOLERANCE = {'fp32': 1e-4, 'bf16': 2e-2}  # relative error of outputs and gradients that counts as a mismatch


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


PROBE_CHILD = 'import json, sys; from tools import probe_layout; probe_layout._probe_child(json.loads(sys.argv[1]))'


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
                                 cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
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
