"""An utterance's features, from a feature file or from audio: what the model is given.

Feature files (.p) are pickles of {'feat': float array (n_frames, n_filters), 'label': speaker id},
and of 'settings', how they were made, when feature_extraction.py wrote them. They are read with a
restricted unpickler, so that a hostile file cannot run code. read_MFB (the tutorial's name) gives
a file's features trimmed at both ends, as the model is trained on them.

Audio is made into features by the tutorial's recipe, with a model's feature settings (a checkpoint's
'feature', or configure.py's):

    audio (n_samples,) at 16 kHz mono          librosa's way: other rates resampled (soxr), channels averaged
    -> fb (n_frames, 40)                       python_speech_features.fbank: 25-ms windows every 10 ms
    -> 20 * log10(max(fb, 1e-5))               dB, with an absolute floor at -100 dB
    -> minus the utterance's mean frame        mean normalisation

Settings come in three shapes: the model's (feature_settings(), or a checkpoint's 'feature': rate,
filters, windows, trimming, training window), how an utterance is read (reading_settings(): those and
the front end's vad and level), and what a feature file records of how it was made
(extraction_settings()).

Two optional steps, off by default ('vad' and 'level' of the settings: VAD and LEVEL of configure.py),
both led by the level (dBFS) of each fbank frame's samples, and by the utterance's *loud frames*:
those within VAD_DB of the LOUD_PERCENTILE-th percentile of its frame levels (a percentile, not the
maximum, so that a click does not set the reference):

- level (a target in dBFS): before the fbank, a gain that brings the utterance's speech level (the
  RMS of its loud frames) to the target. Mean normalisation makes the features blind to gain,
  except through the absolute floor: quiet speech sinks into it (at -70 dBFS every value of the
  ETRI test wavs is at the floor). Aiming at the training data's level (TRAIN_LEVEL) keeps clean
  speech where the model saw it.
- vad 'energy': the frames that are not loud are dropped after the log, before mean
  normalisation, so that silences neither become d-vector segments nor pull the mean. They are the
  fbank's own frames, so the kept frames are rows of the tutorial's features. Every utterance is
  then trimmed (TRIM_FRAMES at each end, when it is read for the model) as without it: the frames
  trimmed are speech then. A piece `file@start-end` of a trial list is cut on the recording's own
  timeline, and holds the kept frames between start and end.

Every audio file is checked as it is read: from its header, a sample rate below LOWEST_RATE or a length
over MAX_SECONDS (refused before it is decoded); unreadable, empty, NaN or infinite samples, or silent
(every sample 0, or a peak below SILENCE_DBFS) as the model hears it, after down-mixing and
resampling (stereo channels that cancel are silent), raise FeatureFileError naming the file; and
features that are not finite are never returned. Audio that is used but may score wrong gives an
AudioNote (a warning naming the file): a wav cut off before the end its header declares, a clipped
recording, or one recorded below the model's sample rate. The fbank is computed FRAMES_AT_ONCE
frames at a time, so that a long recording takes bounded memory.

The same fbank is written in torch too (fbank_batch, log_fbank_batch): many utterances at once, on the GPU when
there is one, with python_speech_features' own filterbank; in float64 its features are the recipe's to 1e-12 dB,
in float32 to 3e-4 dB. The recipe's features are python_speech_features' (the torch path is an addition).
"""
import codecs
import os
import pickle
import struct
import warnings
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import librosa
import numpy as np
import python_speech_features
import soundfile
import torch
from numpy._core.multiarray import _reconstruct, scalar
from numpy._core.numeric import _frombuffer

import configure as c

FEATURE_SUFFIX = '.p'
# Audio suffixes and the libsndfile format that reads each; those the installed libsndfile lacks
# (mp3 before libsndfile 1.1) are left out. The only place that knows which files are audio.
_AUDIO_FORMATS = {'.wav': 'WAV', '.flac': 'FLAC', '.ogg': 'OGG', '.opus': 'OGG', '.mp3': 'MP3', '.aiff': 'AIFF',
                  '.aif': 'AIFF', '.au': 'AU', '.caf': 'CAF', '.w64': 'W64'}
AUDIO_SUFFIXES = tuple(s for s, f in _AUDIO_FORMATS.items() if f in soundfile.available_formats())
SUFFIXES = (FEATURE_SUFFIX,) + AUDIO_SUFFIXES  # what the stages read: features, or audio made into features
# Audio that libsndfile does not read (the compressed formats of phones and the web): refused by name
# wherever audio is looked for, never skipped silently
UNREADABLE_AUDIO = ('.m4a', '.aac', '.wma', '.amr', '.3gp', '.webm') + tuple(set(_AUDIO_FORMATS) - set(AUDIO_SUFFIXES))

VADS = ('no', 'energy', 'silero')
SILERO_RATE = 16000  # silero-vad's model runs at 16 kHz (or 8); audio at other rates is resampled for it
SILENCE_DBFS = -90.0  # peak below this: silent. 16-bit audio's smallest step is -90.3 dBFS: only dither is below
LOUD_PERCENTILE = 95  # the reference of the utterance's loud frames (5 % of the frames may be louder: clicks)
# dB below that reference where speech ends. On the 20 ETRI test wavs (clean read speech, 1 m) the
# frame levels are bimodal: speech mostly within 25 dB of the reference, the room's silence 40-50 dB
# below it, fewest frames between -40 and -30 dB. 30 dB keeps weak consonants and drops the silence.
VAD_DB = 30.0

LOWEST_RATE = 4000  # Hz: audio recorded below this is refused: no speech band is left (a header's 1 Hz would be hours)
FULL_SCALE = 0.999  # |sample| at or above this is at full scale (within 0.01 dB): where a recording clips
CLIPPED_NOTE = 0.01  # a note says a recording is clipped when more than this fraction of its samples is at full scale
FRAMES_AT_ONCE = 3000  # fbank frames computed together (30 s): a long recording's features take bounded memory
NFFT = 512  # python_speech_features.fbank's FFT size (its default; the recipe passes no other)
PREEMPHASIS = 0.97  # python_speech_features.fbank's pre-emphasis coefficient (its default)
FLOOR = 1e-5  # the recipe's floor on the filterbank energies: 20 * log10(FLOOR) = -100 dB

TRIM_SECONDS = c.TRIM_FRAMES * c.WIN_STEP  # seconds trimmed at each end of every utterance (configure.py's)


# ---- Feature files ------------------------------------------------------------------------

class FeatureFileError(ValueError):
    """A feature file that cannot be used; the message names the file."""


def require_finite(values, what):
    """values (a numpy array, tensor or number) when every one is finite; else a ValueError naming `what` (the file,
    or what they are). Every feature array, d-vector, cohort, threshold and score is checked where it is made."""
    finite = torch.isfinite(values).all() if torch.is_tensor(values) else np.isfinite(values).all()
    if not finite:
        raise FeatureFileError(f"{what}: NaN or infinite values")
    return values


class _Array:
    """What a feature pickle's `numpy.ndarray` stands for: only an argument of _empty_array, never called (calling
    ndarray itself would allocate an array of any shape whose data is not in the file)."""


def _empty_array(subtype, shape, dtype):
    """numpy's _reconstruct as numpy's own pickles use it: an empty array, which the state that follows in the file
    fills with the file's own bytes. Any other shape would be an array of leftover memory, not the file's."""
    if subtype is not _Array or shape != (0,):
        raise pickle.UnpicklingError(f"an array of shape {shape} whose values are not in the file")
    return _reconstruct(np.ndarray, shape, dtype)


def _latin1(text, encoding):
    """codecs.encode as protocol-2 pickles use it for bytes: latin1, one byte per character of the file. Other
    codecs could make bytes far larger than the file ('hex', again and again)."""
    if encoding != 'latin1' or not isinstance(text, str):
        raise pickle.UnpicklingError(f"bytes encoded as {encoding!r}: not what numpy writes")
    return codecs.encode(text, encoding)


# The only globals a feature pickle may name: what numpy 1.x and 2.x write for arrays. Each array's bytes are bytes
# of the file, so its frame count is bounded by the file's size.
_SAFE_GLOBALS = {('numpy', 'ndarray'): _Array, ('numpy', 'dtype'): np.dtype,
                 ('_codecs', 'encode'): _latin1}  # bytes in protocol-2 pickles
for _core in ('numpy.core', 'numpy._core'):
    _SAFE_GLOBALS.update({(f'{_core}.multiarray', '_reconstruct'): _empty_array,
                          (f'{_core}.multiarray', 'scalar'): scalar,
                          (f'{_core}.numeric', '_frombuffer'): _frombuffer})


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data (dicts, lists, strings, numbers) and numpy arrays of the file's own bytes; refuses
    anything else."""

    def find_class(self, module, name):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden object {module}.{name}") from None


def feature_settings():
    """configure.py's feature settings, as a checkpoint records them for the stages that use the model."""
    return {'sample_rate': c.SAMPLE_RATE, 'n_filters': c.FILTER_BANK, 'win_len': c.WIN_LEN, 'win_step': c.WIN_STEP,
            'trim_frames': c.TRIM_FRAMES, 'min_frames': c.MIN_FRAMES, 'win_size': c.NUM_WIN_SIZE}


def load_feature_record(filename, n_filters=c.FILTER_BANK):
    """The checked dict of a feature pickle: 'feat' float64 (n_frames, n_filters), 'label' str, and 'settings'
    (a dict of plain values) when the file records how it was made (feature_extraction.py writes it)."""
    try:
        with open(filename, 'rb') as f:
            data = RestrictedUnpickler(f).load()
    except OSError:  # missing or unreadable: the error already names the file
        raise
    except Exception as e:  # truncated, corrupt or hostile: all unusable the same way
        raise FeatureFileError(f"{filename}: not a readable feature pickle ({e})") from e
    if not isinstance(data, dict) or 'feat' not in data:
        raise FeatureFileError(f"{filename}: expected a dict with 'feat' and 'label', got {type(data).__name__}")
    feat = data['feat']
    if not isinstance(feat, np.ndarray) or feat.ndim != 2 or feat.dtype.kind not in 'fiu':
        raise FeatureFileError(f"{filename}: 'feat' must be a 2-D numeric array (n_frames, {n_filters})")
    if feat.shape[1] != n_filters:
        raise FeatureFileError(f"{filename}: feature dimension {feat.shape[1]}, expected {n_filters}")
    if not np.isfinite(feat).all():
        raise FeatureFileError(f"{filename}: 'feat' contains NaN or infinite values")
    if not isinstance(data.get('settings', {}), dict):
        raise FeatureFileError(f"{filename}: 'settings' must be a dict")
    return {**data, 'feat': feat.astype(np.float64, copy=False), 'label': str(data.get('label', ''))}


def load_feature_file(filename, n_filters=c.FILTER_BANK):
    """(feat float64 (n_frames, n_filters), label str) of a feature pickle, checked."""
    record = load_feature_record(filename, n_filters)
    return record['feat'], record['label']


def trim_edges(feat, filename, trim_frames, min_frames):
    """feat without `trim_frames` frames at each end: the tutorial's 0.5 s silence trimming.

    As the tutorial, more than `min_frames` frames must remain.
    """
    trimmed = feat[trim_frames:len(feat) - trim_frames]
    if len(trimmed) <= min_frames:
        raise FeatureFileError(
            f"{filename}: too short: {len(feat)} frames, {len(trimmed)} after trimming {trim_frames} "
            f"at each end; more than {min_frames} are needed")
    return trimmed


def read_MFB(filename, feature=None):
    """Trimmed features (n_frames, n_filters) of a feature file; `feature`: settings, default configure.py's."""
    feature = feature or feature_settings()
    feat, _ = load_feature_file(filename, feature['n_filters'])
    return trim_edges(feat, filename, feature['trim_frames'], feature['min_frames'])


# ---- Audio ------------------------------------------------------------------------------

def is_audio(path):
    """Whether path names an audio file (by its suffix, in any case)."""
    return Path(path).suffix.lower() in AUDIO_SUFFIXES


def is_utterance_file(path):
    """Whether path names a file the stages read: a feature pickle or an audio file."""
    return Path(path).suffix.lower() in SUFFIXES


def check_level(level):
    """A LEVEL setting checked: 'no', 'auto', or a target speech level in dBFS (a float below 0)."""
    if level in ('no', 'auto'):
        return level
    try:
        level = float(level)
    except (TypeError, ValueError):
        raise ValueError(f"level must be 'no', 'auto' or a target in dBFS such as -44, not {level!r}") from None
    if not -120 < level < 0:
        raise ValueError(f"level {level} dBFS: a target speech level must be between -120 and 0 dBFS")
    return level


def reading_settings(feature, vad='no', level='no', max_seconds=c.MAX_SECONDS):
    """How an utterance is read: a model's feature settings (feature_settings() or a checkpoint's 'feature') with
    the front end's vad and level, and the longest recording read (max_seconds).

    The settings every function below takes; 'vad' and 'level' default to 'no' (the tutorial) when absent,
    'max_seconds' to MAX_SECONDS.
    """
    if vad not in VADS:
        raise ValueError(f"unknown vad {vad!r} (VAD of configure.py or --vad); choose one of {', '.join(VADS)}")
    return {**feature, 'vad': vad, 'level': check_level(level), 'max_seconds': max_seconds}


def front_end(settings):
    """{'vad', 'level'} of feature settings; absent means the tutorial's 'no'."""
    return {'vad': settings.get('vad', 'no'), 'level': settings.get('level', 'no')}


def same_front_end(a, b):
    """Whether two front ends ({'vad', 'level'}, or settings holding them) make the same features of speech at the
    training level: level 'auto' leaves it as 'no' does, so features, enrollments and thresholds made with
    either are used with the other (the ETRI features and the published thresholds were made with 'no')."""
    def plain(settings):
        chosen = front_end(settings)
        return {**chosen, 'level': 'no' if chosen['level'] == 'auto' else chosen['level']}
    return plain(a) == plain(b)


def extraction_settings(settings):
    """What features written with these settings record about how they were made (plain data for the pickle)."""
    keys = ('sample_rate', 'n_filters', 'win_len', 'win_step')
    return {**{k: settings[k] for k in keys}, **front_end(settings)}


def check_samples(audio, path, heard=''):
    """Refuse audio (n_samples,) or (channels, n_samples) that is empty, not finite, or silent once its DC offset is
    removed; name the file.

    heard: how the model hears it, when these are the samples after down-mixing and resampling (in the message).
    """
    if audio.size == 0:
        raise FeatureFileError(f"{path}: no audio samples")
    if not np.isfinite(audio).all():
        raise FeatureFileError(f"{path}: NaN or infinite samples")
    found = silence(audio)
    if found:
        raise FeatureFileError(f"{path}: silent{heard}: {found}")


def silence(audio):
    """Why finite audio (n_samples,) or (channels, n_samples) is silent once its DC offset is removed (a DC offset is
    no sound: 8 s of constant 0.5 are silent), in words; None when it is not."""
    peak = float(np.abs(without_dc(audio)).max())
    if peak == 0:
        return "every sample is 0" if not audio.any() else "a DC offset only, every sample of a channel the same"
    if 20 * np.log10(peak) < SILENCE_DBFS:
        return f"peak {20 * np.log10(peak):.1f} dBFS, below {SILENCE_DBFS:.0f} dBFS"
    return None


class AudioNote(UserWarning):
    """Audio that is used, but may score wrong: the message names the file and what was found; kind says which
    ('truncated', 'clipped', 'low sample rate'). Scripts print it as a 'Note:' line (cli.run); collect_notes counts."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def wav_missing_bytes(path):
    """Bytes of audio data that the header of a RIFF wav declares and the file lacks (it was cut off); 0 when it
    holds them all, does not declare a length (a stream's 0 or 0xFFFFFFFF), or is no RIFF wav."""
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
        if f.read(12)[8:] != b'WAVE':
            return 0
        position = 12
        while position + 8 <= size:  # the chunks: a 4-byte id, a 4-byte little-endian length, the data
            f.seek(position)
            chunk, length = struct.unpack('<4sI', f.read(8))
            if chunk == b'data':
                return 0 if length in (0, 0xFFFFFFFF) else max(0, position + 8 + length - size)
            position += 8 + length + length % 2
    return 0


def audio_notes(path, audio, native_rate, sample_rate):
    """[(kind, what was found)] of audio (channels, n_samples) as read from path at native_rate: a wav cut off, a
    clipped recording, one recorded below the model's sample_rate."""
    notes = []
    missing = wav_missing_bytes(path) if Path(path).suffix.lower() == '.wav' else 0
    if missing:
        notes.append(('truncated', f"truncated: its header declares {missing} more bytes of audio than the file "
                                   f"holds (cut off after {audio.shape[-1] / native_rate:.2f} s)"))
    clipped = float(np.mean(np.abs(audio) >= FULL_SCALE))
    if clipped > CLIPPED_NOTE:
        notes.append(('clipped', f"clipped: {100 * clipped:.1f} % of its samples are at full scale"))
    if native_rate < sample_rate:
        notes.append(('low sample rate', f"recorded at {native_rate} Hz: it holds nothing above {native_rate // 2} "
                                         f"Hz, and the model was trained on {sample_rate} Hz audio"))
    return notes


def unreadable_audio(path, e):
    """The error of an audio file that soundfile could not open (error e): a file that is not there (libsndfile says
    only 'System error.'), or one that is not readable audio."""
    if not os.path.exists(path):
        return FeatureFileError(f"{path}: no such file; correct its path where it is given (a list file's relative "
                                "paths are from the list's folder)")
    return FeatureFileError(f"{path}: not a readable audio file ({e})")


def check_length(path, rate, n_samples, max_seconds):
    """Refuse audio of `n_samples` samples at `rate` Hz that is recorded below LOWEST_RATE or lasts over max_seconds:
    read, it would take far more memory and time than any recording of speech."""
    if rate < LOWEST_RATE:
        raise FeatureFileError(f"{path}: recorded at {rate} Hz, below {LOWEST_RATE} Hz: it holds no speech band (or "
                               "its header is wrong); record it again, or resample it to 16000 Hz")
    if n_samples > max_seconds * rate:
        raise FeatureFileError(f"{path}: longer than {max_seconds:g} s ({n_samples / rate:.0f} s or more), the most a "
                               "recording may be (MAX_SECONDS, --max-seconds): cut it into shorter recordings, or "
                               "raise --max-seconds")


def read_audio(path, sample_rate, max_seconds=c.MAX_SECONDS):
    """Samples (n_samples,) float32 of an audio file, mono at sample_rate, checked by check_samples.

    Exactly librosa.load(path, sr=sample_rate, mono=True), read with soundfile only (no slow,
    deprecated audioread fallback), with the samples checked before librosa sees them and after
    (silence, as the model hears it). Truncated, clipped or low-rate audio gives an AudioNote.
    A rate below LOWEST_RATE, or a length over max_seconds, is refused from the header, before
    anything is decoded (soundfile decodes no more than the header's length).
    """
    try:
        with soundfile.SoundFile(path) as f:
            native_rate = f.samplerate
            check_length(path, native_rate, f.frames, max_seconds)
            audio = f.read(dtype='float32', always_2d=False)
    except (RuntimeError, soundfile.SoundFileError) as e:  # LibsndfileError: unknown format, truncated header
        raise unreadable_audio(path, e) from e
    audio = audio.T  # (channels, n_samples), as librosa reads it
    check_samples(audio, path)
    for kind, found in audio_notes(path, audio, native_rate, sample_rate):
        warnings.warn(AudioNote(kind, f"{path}: {found}"), stacklevel=2)
    mono = librosa.resample(librosa.to_mono(audio), orig_sr=native_rate, target_sr=sample_rate)
    check_samples(mono, path, heard=f' as the model hears it (mono, {sample_rate} Hz)')
    return mono


def check_audio_header(path, settings):
    """Refuse, from its header alone, an audio file that cannot be opened or is too short for trim_edges: the
    check of every training file before a run from audio, where decoding a million files would take an hour.
    Silent or broken samples are found when the file is read for a batch (the error names it)."""
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, soundfile.SoundFileError) as e:
        raise unreadable_audio(path, e) from e
    check_length(path, info.samplerate, info.frames, settings.get('max_seconds', c.MAX_SECONDS))
    n_frames = frame_count(round(info.duration * settings['sample_rate']), *frame_geometry(settings))
    trim_edges(np.empty((n_frames, 0)), path, edge_frames(settings), settings['min_frames'])


@contextmanager
def collect_notes():
    """A context that collects the AudioNotes raised inside it instead of showing them: it gives {kind: [message]},
    filled on leaving it, each message once. Other warnings are shown as usual."""
    notes = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', AudioNote)
        yield notes
    for w in caught:
        if isinstance(w.message, AudioNote):
            messages = notes.setdefault(w.message.kind, [])
            if str(w.message) not in messages:
                messages.append(str(w.message))
        else:  # not ours: shown as it would have been
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def decibels(power):
    """10 * log10(power), with 0 as the smallest positive float instead of -inf."""
    return 10 * np.log10(np.maximum(power, np.finfo(np.float64).tiny))


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


def fbank(audio, settings):
    """python_speech_features.fbank's filterbank energies (n_frames, n_filters) of audio (n_samples,), made
    FRAMES_AT_ONCE frames at a time: a long recording takes memory for a chunk, not for a copy of each step."""
    return np.concatenate([python_speech_features.fbank(emphasised(audio, chunk), samplerate=settings['sample_rate'],
                                                        nfilt=settings['n_filters'], winlen=settings['win_len'],
                                                        winstep=settings['win_step'], preemph=0)[0]
                           for chunk in frame_chunks(audio, settings)])


# ---- The same fbank in torch: many utterances at once, on the GPU when there is one ---------------

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


def frame_levels(audio, settings):
    """dBFS (n_frames,) of each fbank frame of audio (n_samples,): the mean power of its samples, 0 dBFS = 1.0.

    The fbank's frames exactly (python_speech_features' framing, the last one padded with
    zeros), but of the samples as they are: the fbank's pre-emphasis would lift the hiss of
    silence towards the (low-frequency) speech and blur the two apart.
    """
    rate = settings['sample_rate']
    return np.concatenate([
        decibels(np.mean(np.square(python_speech_features.sigproc.framesig(
            audio[chunk], settings['win_len'] * rate, settings['win_step'] * rate), dtype=np.float64), axis=1))
        for chunk in frame_chunks(audio, settings)])


def without_dc(audio):
    """audio (n_samples,) or (channels, n_samples) float32 less each channel's mean: a recording's DC offset (cheap
    sound cards, some phones) would count as loudness, and drown the silences, wherever levels are measured."""
    return audio - np.mean(audio, axis=-1, keepdims=True, dtype=np.float64).astype(np.float32)


def loud_frames(frame_db):
    """Boolean mask (n_frames,) of the frames within VAD_DB of the LOUD_PERCENTILE-th percentile of frame_db (dB)."""
    return frame_db >= np.percentile(frame_db, LOUD_PERCENTILE) - VAD_DB


def speech_level(frame_db):
    """dBFS: the RMS of the loud frames of an utterance whose frames have levels frame_db (n_frames,) dBFS.

    Silences, however long, do not lower it, as they lower the RMS of the whole file.
    """
    return float(decibels(np.mean(10 ** (frame_db[loud_frames(frame_db)] / 10))))


def level_gain(level, speech_dbfs):
    """dB of gain for a LEVEL setting (a target in dBFS, or 'auto') on speech at speech_dbfs.

    'auto' lifts speech to TRAIN_LEVEL only when it lies more than AUTO_LEVEL_DB below it, and leaves the
    recording as it is otherwise: quiet speech does not sink into the floor, and recordings at the training
    data's level or louder keep the tutorial's features exactly (a model trained from audio, such as the demo's,
    was trained at that audio's own level, which checkpoints do not record: turning loud speech down would move
    it away from them).
    """
    if level != 'auto':
        return level - speech_dbfs
    return c.TRAIN_LEVEL - speech_dbfs if speech_dbfs < c.TRAIN_LEVEL - c.AUTO_LEVEL_DB else 0.0


def import_silero():
    """The silero_vad module. Importing it sets torch's threads to 1 for the whole process (its model.py does):
    that is undone, or every d-vector after the first detection would be computed on one core."""
    threads = torch.get_num_threads()
    import silero_vad
    torch.set_num_threads(threads)
    return silero_vad


@contextmanager
def torch_threads(n):
    """A context in which torch computes on n threads; the number before is restored on leaving it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@lru_cache(maxsize=1)
def silero_model():
    """silero-vad's trained speech detector (MIT licence; the model ships inside its PyPI wheel)."""
    silero_vad = import_silero()
    with warnings.catch_warnings():  # its loader uses APIs that torch and Python now call deprecated
        warnings.simplefilter('ignore', DeprecationWarning)
        return silero_vad.load_silero_vad()


def silero_frames(audio, settings, n_frames):
    """Boolean mask (n_frames,) of the fbank frames whose centre silero-vad's detector finds in speech."""
    silero_vad = import_silero()
    rate = settings['sample_rate']
    audio16 = audio if rate == SILERO_RATE else librosa.resample(audio, orig_sr=rate, target_sr=SILERO_RATE)
    with torch.no_grad(), torch_threads(1):  # 32-ms steps of a tiny network: threads only add overhead
        spans = silero_vad.get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(audio16, np.float32)),
                                                 silero_model(), sampling_rate=SILERO_RATE)
    centres = (np.arange(n_frames) * settings['win_step'] + settings['win_len'] / 2) * SILERO_RATE
    kept = np.zeros(n_frames, bool)
    for span in spans:
        kept |= (centres >= span['start']) & (centres < span['end'])
    return kept


def min_speech_frames(settings, n_frames):
    """Frames of speech silero-vad must find in a recording of n_frames before its choice is trusted: MIN_SPEECH
    seconds, or the whole recording when it is shorter."""
    return min(n_frames, round(c.MIN_SPEECH / settings['win_step']))


def log_fbank_frames(audio, settings, device=None, source='the recording'):
    """(feat float64 (n_kept, n_filters) in dB, kept bool (n_frames,)) of audio (n_samples,) at settings' rate.

    feat holds the kept frames, mean-normalised; kept marks which of the fbank's n_frames frames
    they are (all of them without vad). Level and speech detection both use the frames' levels
    before any gain, of the samples without their DC offset: the loud frames are the same either
    way. The gain applies to the samples without it too.
    device: None, the fbank by python_speech_features (the recipe); a torch device, by torch_fbank there in
    float64 (the same numbers to float precision). Where silero-vad finds less than MIN_SPEECH seconds of speech
    (noise or babble can hide speech from it), every frame is kept, with an AudioNote naming source: a detector
    never discards a speaker.
    """
    level, vad = front_end(settings)['level'], front_end(settings)['vad']
    if level != 'no' or vad == 'energy':
        centred = without_dc(audio)
        frame_db = frame_levels(centred, settings)
    gain = 0.0 if level == 'no' else level_gain(level, speech_level(frame_db))
    if gain:  # a gain on the samples: the floor below then meets speech at the target level
        audio = centred
        audio *= np.float32(10 ** (gain / 20))  # in place: no other copy of a long one
    fb = fbank(audio, settings) if device is None else torch_fbank(audio, settings, device)
    kept = (loud_frames(frame_db) if vad == 'energy' else
            silero_frames(audio, settings, len(fb)) if vad == 'silero' else np.ones(len(fb), bool))
    if vad == 'silero' and kept.sum() < min_speech_frames(settings, len(fb)):
        warnings.warn(AudioNote('little speech', f"{source}: silero-vad found {kept.sum() * settings['win_step']:.2f} "
                                f"s of speech in {len(fb) * settings['win_step']:.2f} s: every frame is used instead"))
        kept = np.ones(len(fb), bool)
    fb = 20 * np.log10(np.maximum(fb[kept], FLOOR))
    return require_finite(fb - fb.mean(axis=0), 'features'), kept


def log_fbank(path, settings=None):
    """Mean-normalised log Mel-filterbank energies (n_frames, n_filters) float64 in dB of an audio file.

    settings: a reading_settings(); default configure.py's feature settings without vad or level (the tutorial's
    recipe).
    """
    settings = settings or feature_settings()
    return audio_features(path, settings)[0]


def audio_features(path, settings, device=None, prepare=None):
    """log_fbank_frames of an audio file (its fbank on `device`, as log_fbank_frames says), of its waveform as
    prepare(waveform) makes it when given (training's speed and augmentation); an error names the file."""
    try:
        audio = read_audio(path, settings['sample_rate'], settings.get('max_seconds', c.MAX_SECONDS))
        return log_fbank_frames(prepare(audio) if prepare else audio, settings, device, source=path)
    except FeatureFileError as e:
        if str(path) in str(e):
            raise
        raise FeatureFileError(f"{path}: {e}") from None


def file_features(path, settings):
    """(feat (n_kept, n_filters), kept bool (n_frames,)) of a feature pickle or an audio file, untrimmed.

    Audio is made into features with settings (a reading_settings()). A pickle's features are used as they
    are, so they must have been made with the same vad and level (a pickle that does not record
    them was made by the tutorial's recipe, without either; see same_front_end); its frames are all kept.
    """
    if is_audio(path):
        return audio_features(path, settings)
    record = load_feature_record(path, settings['n_filters'])
    made, asked = front_end(record.get('settings', {})), front_end(settings)
    if not same_front_end(made, asked):
        raise FeatureFileError(f"{path}: features made with vad {made['vad']!r} and level {made['level']!r}, but "
                               f"vad {asked['vad']!r} and level {asked['level']!r} are asked for (--vad, --level); "
                               "extract them again with these settings (feature_extraction.py), or score with theirs")
    return record['feat'], np.ones(len(record['feat']), bool)


def edge_frames(settings):
    """Frames trimmed at each end of an utterance read with settings: the tutorial's trim_frames (the ETRI
    recordings' silent edges), but none after silero-vad, which has found where the speech begins and ends
    (trimming then cuts only speech: a 3-s clip would lose a third of it)."""
    return 0 if settings.get('vad') == 'silero' else settings['trim_frames']


def read_utterance(path, settings):
    """Trimmed features (n_frames, n_filters) of a feature pickle or an audio file: what the model embeds.

    settings: a reading_settings() (its trim_frames and min_frames too). Trimming comes after speech
    detection: with vad 'energy' the frames cut at each end are speech; with 'silero' none are cut.
    """
    feat, _ = file_features(path, settings)
    return trim_edges(feat, path, edge_frames(settings), settings['min_frames'])


def refuse_unreadable_audio(paths):
    """Raise ValueError naming the files of paths that are audio in a format libsndfile does not read here."""
    unreadable = [str(p) for p in paths if Path(p).suffix.lower() in UNREADABLE_AUDIO]
    if unreadable:
        raise ValueError(f"audio that soundfile cannot read here (formats: {', '.join(AUDIO_SUFFIXES)}): "
                         f"{', '.join(unreadable[:5])}{' ...' if len(unreadable) > 5 else ''}; convert it, e.g. "
                         f"ffmpeg -i {Path(unreadable[0]).name} {Path(unreadable[0]).stem}.wav")


def require_utterance_file(path):
    """path, when it names an existing feature pickle or audio file; else an error saying which it is not."""
    if Path(path).is_dir():
        raise ValueError(f"{path}: a folder, not a file: give one file (.p or audio)")
    if not Path(path).is_file():
        raise FileNotFoundError(f"file not found: {path}")
    refuse_unreadable_audio([path])
    if not is_utterance_file(path):
        raise ValueError(f"{path}: neither features (.p) nor audio ({', '.join(AUDIO_SUFFIXES)})")
    return path
