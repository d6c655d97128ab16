"""A training step and what it runs on: the precision and memory layout of the batches (train.py's lesson uses
them, bench/throughput.py times them).
"""
from typing import NamedTuple

import torch

from dvector.stage import bfloat16_units

PRECISIONS = ('auto', 'fp32', 'bf16', 'fp16')


def autocast_dtype(precision, device):
    """The autocast dtype of a training PRECISION on a device (None: float32); 'auto' picks the fastest safe one."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (PRECISION of configure.py or --precision); "
                         f"choose one of {', '.join(PRECISIONS)}")
    if precision == 'auto':
        precision = 'bf16' if bfloat16_units(device).native else 'fp16' if device.type == 'cuda' else 'fp32'
    if precision == 'fp16' and device.type != 'cuda':
        raise ValueError("precision 'fp16' needs a CUDA GPU; on the CPU use 'bf16' or 'fp32'")
    return {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[precision]


class DeviceSetup(NamedTuple):
    """Where and how the batches run through the model: chosen once, in train.py's build_model. In float32 and
    contiguous memory, train_step is the plain forward, loss, backward, optimizer step."""
    device: torch.device
    amp_dtype: torch.dtype | None       # autocast to bfloat16 or float16; None: float32 throughout
    memory_format: torch.memory_format  # torch.channels_last (oneDNN's fast layout) or torch.contiguous_format

    def autocast(self):
        """The context in which the model and the loss run in amp_dtype (autocast keeps float32 where it must)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)


def train_step(model, inputs, targets, criterion, optimizer, scaler, setup):
    """One optimizer step on a batch already on the device; returns (loss, logits).

    scaler: float16's torch.amp.GradScaler, or None; setup: a DeviceSetup.
    """
    with setup.autocast():
        _, logits = model(inputs)                                           # (B, num_classes)
        loss = criterion(logits, targets)
    optimizer.zero_grad()
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:  # float16: the loss scaled up, so that small gradients do not underflow to 0
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # unscales the gradients; skips the step if they overflowed
        scaler.update()
    return loss, logits
