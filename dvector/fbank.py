"""The tutorial's recipe of features, up to the filterbank: the model's feature settings, and python_speech_features'
fbank computed a chunk of frames at a time.

Audio is made into features by the tutorial's recipe, with a model's feature settings (a checkpoint's
'feature', or configure.py's: feature_settings()):

    audio (n_samples,) at 16 kHz mono          librosa's way: other rates resampled (soxr), channels averaged
    -> fb (n_frames, 40)                       python_speech_features.fbank: 25-ms windows every 10 ms
    -> 20 * log10(max(fb, 1e-5))               dB, with an absolute floor at -100 dB
    -> minus the utterance's mean frame        mean normalisation

audio.py reads the audio, this module makes fb, and utterance.py (log_fbank_frames) the rest, with the front end
(frontend.py) around it; torch_fbank.py makes the same fb in torch. The fbank is computed FRAMES_AT_ONCE frames at a
time, so that a long recording takes bounded memory, and on one BLAS thread, so that the features are the same on
every number of cores.
"""
import functools

import numpy as np
import python_speech_features
from threadpoolctl import ThreadpoolController

import configure as c

FRAMES_AT_ONCE = 3000  # fbank frames computed together (30 s): a long recording's features take bounded memory
NFFT = 512  # python_speech_features.fbank's FFT size (its default; the recipe passes no other)
PREEMPHASIS = 0.97  # python_speech_features.fbank's pre-emphasis coefficient (its default)
FLOOR = 1e-5  # the recipe's floor on the filterbank energies: 20 * log10(FLOOR) = -100 dB


def feature_settings():
    """configure.py's feature settings, as a checkpoint records them for the stages that use the model."""
    return {'sample_rate': c.SAMPLE_RATE, 'n_filters': c.FILTER_BANK, 'win_len': c.WIN_LEN, 'win_step': c.WIN_STEP,
            'trim_frames': c.TRIM_FRAMES, 'min_frames': c.MIN_FRAMES, 'win_size': c.NUM_WIN_SIZE}


def frame_geometry(settings):
    """(frame length, frame step) in samples of settings' win_len and win_step, rounded as python_speech_features."""
    return tuple(int(python_speech_features.sigproc.round_half_up(settings[k] * settings['sample_rate']))
                 for k in ('win_len', 'win_step'))


def frame_count(n_samples, length, step):
    """python_speech_features' number of frames of n_samples samples: at least one, the last padded with zeros."""
    return 1 if n_samples <= length else 1 + int(np.ceil((n_samples - length) / step))


def frame_chunks(audio, settings):
    """slices of audio (n_samples,) whose frames (python_speech_features' framing) are the fbank's frames of the
    whole, FRAMES_AT_ONCE at a time, in order: only the last slice's last frame is padded with zeros, as the whole's."""
    length, step = frame_geometry(settings)
    n_frames = frame_count(len(audio), length, step)
    for first in range(0, n_frames, FRAMES_AT_ONCE):
        last = min(first + FRAMES_AT_ONCE, n_frames)
        yield slice(first * step, (last - 1) * step + length)


def emphasised(audio, chunk, coeff=PREEMPHASIS):
    """The samples audio[chunk] pre-emphasised as python_speech_features pre-emphasises the whole audio, each sample
    less coeff times the one before it (the first sample of the whole kept as it is)."""
    start = max(chunk.start - 1, 0)  # from the sample before the chunk's first
    return python_speech_features.sigproc.preemphasis(audio[start:chunk.stop], coeff)[chunk.start - start:]


@functools.cache
def blas():
    """numpy's BLAS thread pools (threadpoolctl)."""
    return ThreadpoolController().select(user_api='blas')


def fbank(audio, settings):
    """python_speech_features.fbank's filterbank energies (n_frames, n_filters) of audio (n_samples,), made
    FRAMES_AT_ONCE frames at a time: a long recording takes memory for a chunk, not for a copy of each step.

    On one BLAS thread: on several, the BLAS sums the filterbank's products in another order, and the features
    changed in their last bits with the number of threads (so between machines, and between the processes of
    parallel extraction and this one). Its matrices are small: one thread is as fast.
    """
    with blas().limit(limits=1):
        chunks = [python_speech_features.fbank(emphasised(audio, chunk), samplerate=settings['sample_rate'],
                                               nfilt=settings['n_filters'], winlen=settings['win_len'],
                                               winstep=settings['win_step'], preemph=0)[0]
                  for chunk in frame_chunks(audio, settings)]
    return np.concatenate(chunks)
