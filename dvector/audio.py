"""Audio files: which files are audio, and reading one as the model hears it, checked.

Audio is read as librosa reads it (other rates resampled, channels averaged), with soundfile only.
Every audio file is checked as it is read: from its header, a sample rate below LOWEST_RATE or a length
over MAX_SECONDS (refused before it is decoded); unreadable, empty, NaN or infinite samples, or silent
(every sample 0, or a peak below SILENCE_DBFS) as the model hears it, after down-mixing and
resampling (stereo channels that cancel are silent), raise FeatureFileError naming the file. Audio that is
used but may score wrong gives an AudioNote (a warning naming the file): a wav cut off before the end its
header declares, a clipped recording, or one recorded below the model's sample rate.
"""
import os
import struct
import warnings
from contextlib import contextmanager
from pathlib import Path

import librosa
import numpy as np
import soundfile

import configure as c
from dvector.feature_files import FEATURE_SUFFIX, FeatureFileError

# Audio suffixes and the libsndfile format that reads each; those the installed libsndfile lacks
# (mp3 before libsndfile 1.1) are left out. The only place that knows which files are audio.
_AUDIO_FORMATS = {'.wav': 'WAV', '.flac': 'FLAC', '.ogg': 'OGG', '.opus': 'OGG', '.mp3': 'MP3', '.aiff': 'AIFF',
                  '.aif': 'AIFF', '.au': 'AU', '.caf': 'CAF', '.w64': 'W64'}
AUDIO_SUFFIXES = tuple(s for s, f in _AUDIO_FORMATS.items() if f in soundfile.available_formats())
SUFFIXES = (FEATURE_SUFFIX,) + AUDIO_SUFFIXES  # what the stages read: features, or audio made into features
# Audio that libsndfile does not read (the compressed formats of phones and the web): refused by name
# wherever audio is looked for, never skipped silently
UNREADABLE_AUDIO = ('.m4a', '.aac', '.wma', '.amr', '.3gp', '.webm') + tuple(set(_AUDIO_FORMATS) - set(AUDIO_SUFFIXES))

SILENCE_DBFS = -90.0  # peak below this: silent. 16-bit audio's smallest step is -90.3 dBFS: only dither is below
LOWEST_RATE = 4000  # Hz: audio recorded below this is refused: no speech band is left (a header's 1 Hz would be hours)
FULL_SCALE = 0.999  # |sample| at or above this is at full scale (within 0.01 dB): where a recording clips
CLIPPED_NOTE = 0.01  # a note says a recording is clipped when more than this fraction of its samples is at full scale


def is_audio(path):
    """Whether path names an audio file (by its suffix, in any case)."""
    return Path(path).suffix.lower() in AUDIO_SUFFIXES


def is_utterance_file(path):
    """Whether path names a file the stages read: a feature pickle or an audio file."""
    return Path(path).suffix.lower() in SUFFIXES


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


class AudioNote(UserWarning):
    """Audio that is used, but may score wrong: the message names the file and what was found; kind says which
    ('truncated', 'clipped', 'low sample rate'). Scripts print it as a 'Note:' line (cli.run); collect_notes counts."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


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


def without_dc(audio):
    """audio (n_samples,) or (channels, n_samples) float32 less each channel's mean: a recording's DC offset (cheap
    sound cards, some phones) would count as loudness, and drown the silences, wherever levels are measured."""
    return audio - np.mean(audio, axis=-1, keepdims=True, dtype=np.float64).astype(np.float32)


def silence(audio):
    """Why finite audio (n_samples,) or (channels, n_samples) is silent once its DC offset is removed (a DC offset is
    no sound: 8 s of constant 0.5 are silent), in words; None when it is not."""
    peak = float(np.abs(without_dc(audio)).max())
    if peak == 0:
        return "every sample is 0" if not audio.any() else "a DC offset only, every sample of a channel the same"
    if 20 * np.log10(peak) < SILENCE_DBFS:
        return f"peak {20 * np.log10(peak):.1f} dBFS, below {SILENCE_DBFS:.0f} dBFS"
    return None


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
    mono = audio
    if audio.ndim > 1 or native_rate != sample_rate:  # librosa's resampler takes seconds to import: only when needed
        mono = librosa.resample(librosa.to_mono(audio), orig_sr=native_rate, target_sr=sample_rate)
    check_samples(mono, path, heard=f' as the model hears it (mono, {sample_rate} Hz)')
    return mono
