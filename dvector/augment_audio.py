"""Augmentation on the waveform, for training from audio: the kinds of augment_features.Augmenter, with the same
settings, on an utterance's samples before its features are made, as Kaldi and WeSpeaker augment; and the
degradations of audio that tools/robustness.py and tools/augment_check.py apply (at_snr, codec_audio,
telephone_audio). The settings and the draws are augmentation.py's; speed perturbation of
the waveform (resample_speed) is here too.
"""
import io
from fractions import Fraction

import numpy as np
import scipy.signal
import soundfile

from dvector.audio import read_audio, silence
from dvector.augmentation import (
    EARLY_REFLECTIONS,
    NOISE_SECONDS,
    TELEPHONE_BAND,
    audio_files,
    check_files,
    coloured_noise,
    degrade,
    hum,
    music,
    noise_kind,
    numpy_rng,
    read_room,
    room_impulse_response,
)

TELEPHONE_RATE = 8000


def rms(audio):
    return float(np.sqrt(np.mean(audio ** 2)))


def at_snr(speech, noise, snr_db):
    """speech + noise scaled so that the ratio of their powers is snr_db."""
    return speech + noise * rms(speech) / (rms(noise) * 10 ** (snr_db / 20))


def telephone_audio(audio, sample_rate):
    """The 300-3400 Hz band of audio, at 8 kHz: a telephone line."""
    band = scipy.signal.butter(6, TELEPHONE_BAND, btype='bandpass', fs=sample_rate, output='sos')
    return scipy.signal.resample_poly(scipy.signal.sosfiltfilt(band, audio), TELEPHONE_RATE, sample_rate)


def codec_audio(audio, sample_rate, compression=1.0):
    """audio encoded and decoded by Opus (libsndfile's, in memory): compression 1.0 is its lowest bitrate, about
    6 kbit/s on speech (a poor mobile or VoIP line); the length is kept."""
    encoded = io.BytesIO()
    soundfile.write(encoded, np.asarray(audio, np.float32), sample_rate, format='OGG', subtype='OPUS',
                    compression_level=compression)
    encoded.seek(0)
    decoded, _ = soundfile.read(encoded, dtype='float64')
    return np.pad(decoded, (0, max(0, len(audio) - len(decoded))))[:len(audio)]


def resample_speed(audio, speed):
    """audio played `speed` times as fast (pitch and tempo: the field's speed perturbation), by resampling."""
    ratio = Fraction(speed).limit_denominator(100)
    return scipy.signal.resample_poly(audio, ratio.denominator, ratio.numerator)


def equalise(audio, gain_db_at, sample_rate):
    """audio through a smooth filter whose gain at f Hz is gain_db_at(f) dB."""
    spectrum = np.fft.rfft(audio)
    freqs = np.fft.rfftfreq(len(audio), 1 / sample_rate)
    return np.fft.irfft(spectrum * 10 ** (gain_db_at(freqs) / 20), len(audio))


def read_stretch(path, n_samples, sample_rate, rng):
    """A random stretch of n_samples of an audio file at sample_rate (looped when shorter), read without the rest."""
    info = soundfile.info(str(path))
    if info.samplerate != sample_rate or info.frames <= n_samples:
        return np.resize(read_audio(path, sample_rate).astype(np.float64), n_samples)
    start = int(rng.integers(0, info.frames - n_samples))
    stretch, _ = soundfile.read(str(path), start=start, frames=n_samples, dtype='float64', always_2d=True)
    return stretch.mean(axis=1)


class WaveAugmenter:
    """The kinds of Augmenter, with the same settings (an AugmentSettings), on an utterance's waveform before its
    features are made: what the field does when training from audio.

    Noise and babble voices come from settings.noise_dir (MUSAN's layout) and room impulse responses from
    settings.rir_dir (RIRS_NOISES' files, or any folder of them); without them, from generated noise and music
    (the clips Augmenter uses) and synthetic rooms (exponentially decaying noise). others(k): the waveforms of k
    other training utterances (babble), or None. Each kind of KINDS is a method of that name: (audio float64, a
    numpy Generator, others) -> the audio degraded, or None.
    """

    def __init__(self, settings, sample_rate):
        self.s, self.rate = settings, sample_rate
        rng = np.random.default_rng(0)
        n = int(NOISE_SECONDS * sample_rate)
        self.generated = {'noise': [coloured_noise(rng, n, e) for e in (0, 1, 2)] + [hum(rng, n, sample_rate)],
                          'music': [music(rng, n, sample_rate) for _ in range(4)]}
        self.files = {'noise': [], 'music': [], 'babble': []}
        if settings.noise_dir:
            for path in check_files(audio_files(settings.noise_dir, '--noise-dir'), '--noise-dir', sample_rate):
                self.files[noise_kind(path, settings.noise_dir)].append(path)
        self.rirs = (check_files(audio_files(settings.rir_dir, '--rir-dir'), '--rir-dir', sample_rate)
                     if settings.rir_dir else [])

    def source(self, kind, n_samples, rng):
        """n_samples of a random noise of `kind`: one of noise_dir's files when it has some, else a generated one.
        None when the file's stretch drawn is silent (digital silence: scaled to an SNR, it would divide by 0)."""
        files = self.files.get(kind) or []
        if files:
            stretch = read_stretch(files[int(rng.integers(len(files)))], n_samples, self.rate, rng)
            return None if silence(stretch) else stretch
        clips = self.generated[kind]
        return np.resize(np.roll(clips[int(rng.integers(len(clips)))], int(rng.integers(n_samples))), n_samples)

    def room(self, rng):
        """An impulse response: one of rir_dir's, or a synthetic room of the settings' ranges (with early
        reflections when AUG_ROOMS is 'drawn')."""
        if not self.rirs:
            return room_impulse_response(rng, self.rate, rng.uniform(*self.s.rt60), rng.uniform(*self.s.drr),
                                         EARLY_REFLECTIONS if self.s.rooms == 'drawn' else 0)
        return read_room(self.rirs[int(rng.integers(len(self.rirs)))], self.rate)

    def __call__(self, audio, others=None):
        """audio (n_samples,) degraded by the kinds that its draws choose (the same array when none is chosen)."""
        rng = numpy_rng()
        out, changed = degrade(audio.astype(np.float64), self.s, lambda kind, x: getattr(self, kind)(x, rng, others))
        return out.astype(np.float32) if changed else audio

    def reverb(self, audio, rng, others):
        return scipy.signal.fftconvolve(audio, self.room(rng))[:len(audio)]

    def noise(self, audio, rng, others):
        kind = 'music' if rng.uniform() < 0.25 else 'noise'
        noise, snr = self.source(kind, len(audio), rng), rng.uniform(*getattr(self.s, f'{kind}_snr'))
        return None if noise is None else at_snr(audio, noise, snr)

    def babble(self, audio, rng, others):
        n, voices = len(audio), int(rng.integers(self.s.babble_voices[0], self.s.babble_voices[1] + 1))
        clips = ([c for c in (self.source('babble', n, rng) for _ in range(voices)) if c is not None]
                 if self.files['babble'] else [np.resize(o, n) for o in others(voices)] if others else [])
        if not clips:
            return None
        babble = sum(c / (np.sqrt(np.mean(c ** 2)) + 1e-12) for c in clips)
        return at_snr(audio, babble, rng.uniform(*self.s.babble_snr))

    def pause(self, audio, rng, others):
        n = len(audio)
        frames = int(rng.integers(n // 20, n // 2 + 1))
        at = int(rng.integers(n + 1))
        tone = rng.normal(0, 10 ** (rng.uniform(*self.s.pause_dbfs) / 20), frames)
        return np.concatenate([audio[:at], tone, audio[at:]])

    def channel(self, audio, rng, others):
        draw = rng.uniform()
        if draw < self.s.telephone_share:
            return scipy.signal.resample_poly(telephone_audio(audio, self.rate), self.rate, TELEPHONE_RATE)[:len(audio)]
        if draw < self.s.telephone_share + self.s.codec_share:
            return codec_audio(audio, self.rate)
        knots = np.linspace(0, self.rate / 2, 8)
        gains = rng.uniform(-self.s.eq_db, self.s.eq_db, len(knots))
        return equalise(audio, lambda f: np.interp(f, knots, gains), self.rate)

    def gain(self, audio, rng, others):
        return audio * 10 ** (rng.uniform(*self.s.gain_db) / 20)
