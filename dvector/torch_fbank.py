"""The recipe's fbank written in torch (fbank_batch, log_fbank_batch): many utterances at once, on the GPU when there
is one, with python_speech_features' own filterbank; in float64 its features are the recipe's to 1e-12 dB, in float32
to 3e-4 dB. The recipe's features are python_speech_features' (fbank.py; the torch path is an addition).
"""
from functools import lru_cache

import numpy as np
import python_speech_features
import torch

from dvector.fbank import FLOOR, FRAMES_AT_ONCE, NFFT, PREEMPHASIS, frame_count, frame_geometry
from dvector.feature_files import require_finite
from dvector.frontend import front_end


@lru_cache(maxsize=8)
def mel_filters(n_filters, sample_rate, device, dtype):
    """python_speech_features' own Mel filterbank (n_filters, NFFT // 2 + 1), the fbank's, as a tensor on device."""
    return torch.from_numpy(python_speech_features.get_filterbanks(n_filters, NFFT, sample_rate)).to(device, dtype)


def emphasised_batch(audios, device):
    """(B, max n_samples) float32 on device: each of audios [(n_samples,) float32] pre-emphasised as
    python_speech_features does (in float32, the first sample kept), then zeros, which frame its last frame."""
    lengths = torch.tensor([len(a) for a in audios])
    batch = torch.zeros(len(audios), int(lengths.max()), dtype=torch.float32)
    for row, audio in zip(batch, audios):
        row[:len(audio)] = torch.from_numpy(np.asarray(audio, np.float32))
    batch = batch.to(device)
    batch[:, 1:] -= PREEMPHASIS * batch[:, :-1]  # the right side is a new tensor: the samples before emphasis
    return batch * (torch.arange(batch.shape[1], device=device) < lengths.to(device)[:, None])  # past each end: 0


def fbank_batch(audios, settings, device, dtype=torch.float64):
    """(fb, n_frames): python_speech_features.fbank's filterbank energies fb (B, max n_frames, n_filters) of audios
    [(n_samples,) float32 at settings' rate], computed by torch on device in dtype; n_frames [B]: how many rows of
    fb are each utterance's (the rows after them belong to none of its frames).

    FRAMES_AT_ONCE frames (of all the utterances together) are transformed at a time. As python_speech_features,
    energies of exactly 0 are made its eps (2.2e-16); the recipe's floor (FLOOR) is far above it.

    In float64 the features are the numpy path's to float precision (within 1e-12 dB after the log); in float32,
    the GPU's fast type, within 3e-4 dB (2e-5 dB on the ETRI test wavs; tests/test_torch_fbank.py).
    """
    if not len(audios) or any(np.ndim(a) != 1 or len(a) == 0 for a in audios):
        raise ValueError("fbank_batch: give one or more utterances, each a non-empty 1-D array of samples")
    length, step = frame_geometry(settings)
    n_frames = [frame_count(len(a), length, step) for a in audios]
    signal = emphasised_batch(audios, device)
    padded = (max(n_frames) - 1) * step + length  # the longest's last frame, padded with zeros as the fbank pads it
    frames = torch.nn.functional.pad(signal, (0, padded - signal.shape[1])).to(dtype).unfold(1, length, step)
    filters = mel_filters(settings['n_filters'], settings['sample_rate'], torch.device(device), dtype)
    fb = torch.cat([torch.fft.rfft(chunk, NFFT).abs().square().div(NFFT) @ filters.T  # power spectra (B, F, NFFT/2+1)
                    for chunk in frames.split(max(1, FRAMES_AT_ONCE // len(audios)), dim=1)], dim=1)
    return torch.where(fb == 0, np.finfo(np.float64).eps, fb), n_frames


def torch_fbank(audio, settings, device='cpu', dtype=torch.float64):
    """fbank's energies (n_frames, n_filters) float64 of audio (n_samples,), computed by torch (fbank_batch)."""
    fb, n_frames = fbank_batch([audio], settings, device, dtype)
    return fb[0, :n_frames[0]].cpu().double().numpy()


def log_fbank_batch(audios, settings, device, dtype=torch.float64):
    """The recipe's features [(n_frames, n_filters) tensors on device, in dtype] of audios [(n_samples,) float32],
    computed by torch: log_fbank_frames' numbers (without vad or level), many utterances at once."""
    if front_end(settings) != {'vad': 'no', 'level': 'no'}:
        raise ValueError(f"log_fbank_batch makes the tutorial's features only (vad 'no', level 'no'), not "
                         f"{front_end(settings)}; use log_fbank_frames")
    fb, n_frames = fbank_batch(audios, settings, device, dtype)
    db = require_finite(20 * torch.log10(fb.clamp_min(FLOOR)), 'features')  # (B, F, n_filters); padding rows too
    return [utterance[:n] - utterance[:n].mean(dim=0) for utterance, n in zip(db, n_frames)]
