"""What the two augmenters of training utterances share: their one settings record, draws from torch's generator,
and their sources of noise and rooms (generated, or files checked when training starts).

augment_features.Augmenter degrades training windows of features, augment_audio.WaveAugmenter an utterance's
waveform before its features are made (training from audio). Both read an AugmentSettings (configure.py's AUG_*
settings, NOISE_DIR and RIR_DIR, or train.py's flags of them), and both draw each kind of degradation (KINDS) with its
probability, in the same order (degrade). Every random draw uses torch's generator, so that runs repeat and resume
exactly.
"""
import dataclasses
from pathlib import Path

import numpy as np
import soundfile
import torch

import configure as c
from dvector.audio import AUDIO_SUFFIXES, read_audio
from dvector.feature_files import FeatureFileError

# configure.py's settings of augmentation, in their order there: each is a flag of train.py (--aug-noise-prob, ...,
# --noise-dir, --rir-dir), recorded in its checkpoints, and a field of AugmentSettings
AUGMENT_SETTINGS = tuple(name for name in vars(c) if name.startswith('AUG_')) + ('NOISE_DIR', 'RIR_DIR')
KINDS = ('reverb', 'noise', 'babble', 'pause', 'channel', 'gain')  # in the order applied; each has <kind>_prob
CHECKED_WHOLE_SECONDS = 60.0  # noise and room files up to this long are read whole when training starts (the
                              # silent refused); longer ones are read a stretch at a time, the silent skipped
TELEPHONE_BAND = (300, 3400)  # Hz; nothing above 4 kHz (8 kHz sampling)
NOISE_SECONDS = 8.0           # length of each generated noise clip
ROOMS = ('decay', 'drawn')    # AUG_ROOMS: the room decay in expectation, or an impulse response drawn each time
EARLY_MS = 40                 # ms after the direct sound that hold the discrete reflections of a drawn synthetic room
EARLY_REFLECTIONS = 8         # ... and how many


def field(name):
    """AugmentSettings' field of a setting of AUGMENT_SETTINGS: AUG_NOISE_PROB is noise_prob, NOISE_DIR noise_dir."""
    return name.removeprefix('AUG_').lower()


AugmentSettings = dataclasses.make_dataclass(
    'AugmentSettings', [field(name) for name in AUGMENT_SETTINGS], frozen=True,
    namespace={'__module__': __name__, '__doc__': "The settings of augmentation, a field for each of AUGMENT_SETTINGS "
                                                  "(configure.py describes them): probabilities, ranges, folders."})


def augment_settings(args=None):
    """The AugmentSettings of train.py's args (the flags of AUGMENT_SETTINGS); configure.py's without args."""
    settings = AugmentSettings(**{field(name): getattr(c, name) if args is None else getattr(args, name.lower())
                                  for name in AUGMENT_SETTINGS})
    if settings.rooms not in ROOMS:
        raise ValueError(f"AUG_ROOMS (--aug-rooms) {settings.rooms!r}: choose one of {', '.join(ROOMS)}")
    if settings.telephone_share + settings.codec_share > 1:
        raise ValueError(f"AUG_TELEPHONE_SHARE {settings.telephone_share} and AUG_CODEC_SHARE {settings.codec_share} "
                         "(--aug-telephone-share, --aug-codec-share) are shares of the channel degradations: together "
                         "at most 1")
    return settings


def degrade(signal, settings, degradation):
    """(signal, changed): signal through each of KINDS that its draw chooses (with the kind's probability in
    settings), in that order. degradation(kind, signal) is the signal degraded so, or None when the kind has nothing
    to add (no babble voices, a silent stretch of noise); changed: whether any kind degraded it."""
    changed = False
    for kind in KINDS:
        if happens(getattr(settings, f'{kind}_prob')):
            degraded = degradation(kind, signal)
            if degraded is not None:
                signal, changed = degraded, True
    return signal, changed


def happens(prob):
    """True with probability prob, from torch's generator (no draw when prob is 0)."""
    return prob > 0 and float(torch.rand(())) < prob


def uniform(low, high):
    """A float uniform in [low, high), from torch's generator."""
    return low + (high - low) * float(torch.rand(()))


def numpy_rng():
    """A numpy Generator seeded from torch's generator: numpy's draws then repeat and resume with torch's."""
    return np.random.default_rng(int(torch.randint(2 ** 62, ())))


def room_impulse_response(rng, sample_rate, rt60, drr_db, reflections=0):
    """A synthetic room: a direct impulse, then Gaussian noise decaying 60 dB in rt60 s, holding 10**(-drr/10)
    times the direct sound's energy. With `reflections`, the first EARLY_MS hold that many discrete reflections
    (walls, floor, table: random delays and signs, as strong as the decay allows at their delay, and 3 times its
    noise) over a fifth of the noise, as the first tens of milliseconds of a real room do."""
    t = np.arange(1, int(rt60 * sample_rate)) / sample_rate
    envelope = 10 ** (-3 * t / rt60)
    tail = rng.normal(size=len(t)) * envelope
    if reflections:
        tail[t < EARLY_MS / 1000] *= 0.2
        at = rng.choice(min(int(EARLY_MS / 1000 * sample_rate), len(t)), reflections, replace=False)
        tail[at] += rng.choice([-3.0, 3.0], reflections) * envelope[at]
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail ** 2))
    return np.concatenate([[1.0], tail])


def coloured_noise(rng, n_samples, exponent):
    """Gaussian noise with a power spectrum falling as 1/f**exponent (0 white, 1 pink, 2 brown), unit power."""
    spectrum = np.fft.rfft(rng.normal(size=n_samples))
    freqs = np.maximum(np.fft.rfftfreq(n_samples), 1 / n_samples)
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n_samples)
    return noise / np.sqrt(np.mean(noise ** 2))


def hum(rng, n_samples, sample_rate):
    """Mains hum: 50 or 60 Hz and its harmonics, with random strengths, and a little white noise."""
    t = np.arange(n_samples) / sample_rate
    base = rng.choice([50, 60])
    audio = sum(rng.uniform(0, 1) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3)) for k in range(1, 12))
    audio = audio + 0.01 * rng.normal(size=n_samples)
    return audio / np.sqrt(np.mean(audio ** 2))


def music(rng, n_samples, sample_rate):
    """Music-like tones: a sequence of notes (0.1-0.6 s) of two or three harmonic voices, each note with its
    decay, on a random scale."""
    audio = np.zeros(n_samples)
    for _ in range(rng.integers(2, 4)):
        start = 0
        while start < n_samples:
            length = min(int(rng.uniform(0.1, 0.6) * sample_rate), n_samples - start)
            f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
            t = np.arange(length) / sample_rate
            note = sum(rng.uniform(0.2, 1) / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 8) if f0 * k < 7500)
            audio[start:start + length] += note * np.exp(-t * rng.uniform(2, 8))
            start += length
    return audio / np.sqrt(np.mean(audio ** 2))


def audio_files(folder, what):
    """The audio files under folder, sorted; an error naming `what` (the flag) when there are none."""
    files = sorted(p for p in Path(folder).rglob('*') if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{what} {folder}: no audio files ({', '.join(AUDIO_SUFFIXES)}) under it")
    return files


def noise_kind(path, root):
    """MUSAN's folders: music/ is music, speech/ babble voices, the rest noise."""
    parts = {p.lower() for p in Path(path).relative_to(root).parts[:-1]}
    return 'music' if 'music' in parts else 'babble' if 'speech' in parts else 'noise'


def check_files(files, what, sample_rate):
    """Refuse, when training starts rather than hours in, a noise or room file of the flag `what` that cannot be
    read, or (up to CHECKED_WHOLE_SECONDS long: those read whole) is empty or silent; returns files."""
    for path in files:
        try:
            if soundfile.info(str(path)).duration <= CHECKED_WHOLE_SECONDS:
                read_audio(path, sample_rate)  # refuses one that is empty or silent, naming it
        except (RuntimeError, soundfile.SoundFileError) as e:
            raise FeatureFileError(f"{what}: {path}: not a readable audio file ({e}); remove it") from e
        except FeatureFileError as e:
            raise FeatureFileError(f"{what}: {e}; remove it") from None
    return files


def read_room(path, sample_rate):
    """A room impulse response file at sample_rate, from its direct path (its largest sample) on, at unit energy."""
    rir = read_audio(path, sample_rate).astype(np.float64)
    rir = rir[int(np.argmax(np.abs(rir))):]
    return rir / np.sqrt(np.sum(rir ** 2))
