"""Augmentation of training windows on the features themselves: noise, babble, rooms, channels, level, pauses.

The recipe's features are logs of Mel filterbank *energies*, mean-normalised per utterance. Degradations of
the audio act on those energies in simple ways, in expectation:

    additive noise    P_noisy = P_speech + g * P_noise       (uncorrelated sources add their energies)
    channel           P_out = H_b * P                        (a filter is a gain per band)
    level             P_out = a**2 * P                       (then the recipe's floor at 1e-5 bites)
    reverberation     P_out[t] = sum_k h[k] * P[t - k]       (each band's energy smeared by the room's decay)

So a window is turned back into energies, degraded, and made into features again as the recipe does: log
(20 * log10, floored at -100 dB), then mean-normalised (over the window, keeping the clean window's offset
from its utterance's mean).

The catch is the mean normalisation: the absolute level of each band, which the SNR and the floor need, has
been subtracted. It comes back from the floor itself: ETRI's speech is quiet (about -44 dBFS), so every band
of every training window has frames at the floor, and they all hold the band's lowest value, -100 dB minus
the subtracted mean. Where a band has no such frames, the mean of the ETRI test recordings stands in
(ETRI_BAND_MEAN). Energies at the floor are unknown below it and taken as 0.

`python -m tools.augment_check` compares these transforms with features made from degraded audio
(docs/augmentation.md). The settings and the draws are augmentation.py's; speed perturbation on the features
(warp_speed) is here too.
"""
from functools import lru_cache

import numpy as np
import python_speech_features
import scipy.signal
import torch

import configure as c
from dvector.audio import read_audio
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
    uniform,
)
from dvector.fbank import FLOOR, NFFT

FLOOR_DB = 20 * np.log10(FLOOR)  # -100 dB
FLOOR_TOLERANCE_DB = 0.05     # values this close to a band's lowest are at the floor (float16 copies: 0.016 dB)
# Per-band mean of 20 * log10(max(fbank, 1e-5)) over the 20 official ETRI test wavs (whole files):
# what mean normalisation subtracted, for bands with no frame at the floor. `python -m tools.augment_check --band-mean`
ETRI_BAND_MEAN = np.array([
    -100.0, -100.0, -99.9, -98.3, -96.9, -98.7, -99.0, -97.4, -96.4, -97.6, -96.5, -96.6, -97.6, -97.1, -97.5,
    -97.5, -97.0, -96.8, -97.9, -98.3, -98.4, -99.0, -98.9, -98.6, -98.2, -97.7, -97.6, -98.2, -98.8, -98.1,
    -97.3, -98.1, -99.1, -99.5, -99.5, -99.4, -99.1, -98.6, -98.2, -98.2])
# Filterbank energy (floored frames as 0) per unit of raw signal power, of ETRI speech: the median over the
# official test wavs. It converts an SNR on the waveform (what robustness.py and the field quote) to one on the
# energies; a noise's own ratio comes from its audio.
SPEECH_FBANK_PER_POWER = 12.8
# A low-bitrate codec (augment_audio.codec_audio: Opus, about 6 kbit/s) as a gain per band, in dB, at the centres of 40
# filters: the median change of the energies above the floor in the 10 official ETRI *enrollment* wavs.
# `python -m tools.augment_check --codec-gains --files enroll.wav`
CODEC_GAIN_DB = np.array([
    -2.7, -2.0, -4.6, -3.0, -3.0, -2.9, -3.1, -3.6, -3.8, -3.7, -4.6, -4.2, -3.8, -4.7, -4.2, -3.9, -4.4, -4.3, -3.6,
    -3.6, -4.4, -3.4, -3.6, -4.3, -4.3, -4.3, -3.8, -4.2, -3.4, -4.1, -7.8, -16.8, -25.9, -28.6, -32.2, -34.8, -35.7,
    -36.0, -35.0, -34.4])


# ---- Features <-> energies -------------------------------------------------------------------

def band_offsets(window):
    """(offset (n_filters,), floored bool (T, n_filters)): what mean normalisation subtracted from each band of a
    window (T, n_filters) of mean-normalised features, and which of its values are at the floor."""
    lowest = window.min(axis=0)
    floored = window <= lowest + FLOOR_TOLERANCE_DB
    has_floor = floored.sum(axis=0) >= 3  # one value at the minimum is a minimum, not the floor
    if not has_floor.all() and len(ETRI_BAND_MEAN) != window.shape[1]:
        raise ValueError(f"augmentation needs the absolute level of each band: these {window.shape[1]}-band "
                         f"features have bands without frames at the floor, and ETRI_BAND_MEAN has 40 bands")
    fallback = ETRI_BAND_MEAN if len(ETRI_BAND_MEAN) == window.shape[1] else 0.0
    offset = np.where(has_floor, FLOOR_DB - lowest, fallback)
    return offset, floored & has_floor


def to_energies(window):
    """Filterbank energies (T, n_filters) of a window of mean-normalised log features; those at the floor are 0."""
    offset, floored = band_offsets(window)
    energies = 10 ** ((window + offset) / 20)
    energies[floored] = 0.0
    return energies


def to_features(energies, clean_window):
    """Log features of energies (T, n_filters), floored as the recipe does and mean-normalised over the window,
    keeping the clean window's mean (its offset from its utterance's mean)."""
    feat = 20 * np.log10(np.maximum(energies, FLOOR))
    return feat - feat.mean(axis=0) + clean_window.mean(axis=0)


# ---- The transforms, on energies (T, n_filters) ------------------------------------------------

def add_at_snr(speech, noise, snr_db, noise_per_power=SPEECH_FBANK_PER_POWER):
    """speech + noise (both energies (T, n_filters)), the noise scaled to snr_db below the speech in raw signal power.

    noise_per_power: the noise's filterbank energy per unit of raw power (a speech-like noise: the speech's own)."""
    speech_power = speech.sum() / SPEECH_FBANK_PER_POWER
    noise_power = noise.sum() / noise_per_power
    if noise_power == 0 or speech_power == 0:
        return speech
    return speech + noise * (speech_power / noise_power / 10 ** (snr_db / 10))


def reverberate(energies, rt60, drr_db, win_step=c.WIN_STEP):
    """Each band's energy convolved along time with a room's energy decay: the direct sound, then an exponential
    tail (60 dB down after rt60 seconds) that holds 10**(-drr_db/10) times the direct sound's energy."""
    decay = 10 ** (-6 * win_step / rt60)              # per frame
    tail = 10 ** (-drr_db / 10) * (1 - decay) / decay  # tail[k] = tail * decay**k, k >= 1, sums to 10**(-drr/10)
    smeared = scipy.signal.lfilter([0, tail * decay], [1, -decay], energies, axis=0)
    return energies + smeared


def band_response(rir, feature):
    """(n_lags, n_filters): how much of a band's energy an impulse response rir (n_samples,) at feature's rate puts
    each frame step (10 ms) later: the energy of each step's stretch of rir through each Mel filter, relative to
    a unit impulse's. The direct sound and the reflections within its step colour the bands (a comb filter);
    later steps smear them along time."""
    hop = int(round(feature['win_step'] * feature['sample_rate']))
    steps = -(-len(rir) // hop)
    power = np.abs(np.fft.rfft(np.pad(rir, (0, steps * hop - len(rir))).reshape(steps, hop), NFFT)) ** 2
    return power @ unit_filters(feature['n_filters'], feature['sample_rate'])


@lru_cache(maxsize=8)
def unit_filters(n_filters, sample_rate):
    """(NFFT // 2 + 1, n_filters): python_speech_features' Mel filters as columns, each summing to 1."""
    bank = python_speech_features.get_filterbanks(n_filters, NFFT, sample_rate)
    return (bank / bank.sum(axis=1, keepdims=True)).T


@lru_cache(maxsize=1024)
def room_file_response(path, sample_rate, n_filters, win_step):
    """The band_response of a room impulse response file (read when first drawn; the last 1024 kept)."""
    feature = {'sample_rate': sample_rate, 'n_filters': n_filters, 'win_step': win_step}
    return band_response(read_room(path, sample_rate), feature)


def reverberate_with(energies, response):
    """Each band's energy convolved along time with a band_response: a drawn room's energies."""
    return np.maximum(scipy.signal.fftconvolve(energies, response, axes=0)[:len(energies)], 0)


@lru_cache(maxsize=8)
def band_centres(n_filters, sample_rate=c.SAMPLE_RATE, nfft=NFFT):
    """Hz at the peak of each of python_speech_features' Mel filters."""
    bank = python_speech_features.get_filterbanks(n_filters, nfft, sample_rate)
    return bank.argmax(axis=1) * sample_rate / nfft


@lru_cache(maxsize=8)
def filter_gains(low, high, n_filters, sample_rate=c.SAMPLE_RATE, order=6):
    """Power gain (n_filters,) of each Mel filter through a Butterworth band-pass [low, high] Hz, and 0 above
    4 kHz when high is a telephone's: the filter's squared response averaged over each filter's triangle."""
    freqs = np.arange(NFFT // 2 + 1) * sample_rate / NFFT
    sos = scipy.signal.butter(order, [low, high], btype='bandpass', fs=sample_rate, output='sos')
    response = np.abs(scipy.signal.sosfreqz(sos, worN=freqs, fs=sample_rate)[1]) ** 2
    response[freqs >= 4000] = 0  # resampled to 8 kHz: nothing left above 4 kHz
    return response @ unit_filters(n_filters, sample_rate)


def telephone(energies):
    """A telephone line: the 300-3400 Hz band, nothing above 4 kHz."""
    return energies * filter_gains(*TELEPHONE_BAND, energies.shape[1])


def codec(energies):
    """A low-bitrate codec, in expectation: its measured gain per band (CODEC_GAIN_DB; what it quantises differs
    frame by frame and is left out). Little above 4 kHz passes, and more of it than a telephone line lets through."""
    n_filters = energies.shape[1]
    gains_db = np.interp(band_centres(n_filters), band_centres(len(CODEC_GAIN_DB)), CODEC_GAIN_DB)
    return energies * 10 ** (gains_db / 10)


def random_eq(energies, max_db):
    """A microphone's colour: a smooth random gain per band, within +-max_db dB (three cosines over the bands)."""
    bands = np.linspace(0, np.pi, energies.shape[1])
    gain_db = sum(uniform(-1, 1) * np.cos(k * bands + uniform(0, np.pi)) for k in (1, 2, 3)) * max_db / 3
    return energies * 10 ** (gain_db / 10)


def insert_pause(energies, room_tone, frames):
    """energies with `frames` frames of room tone (T', n_filters) inserted at a random place; the same length."""
    at = int(torch.randint(len(energies) + 1, ()))
    tone = crop(room_tone, frames)
    return np.concatenate([energies[:at], tone, energies[at:]])[:len(energies)]


def warp_speed(window, speed, centres):
    """A window (T, n_filters) of log features as if the audio were played `speed` times as fast: each band takes
    the value at centre / speed Hz (frequencies scale with speed), and the frames are resampled in time.
    The window must hold round(T_out * speed) frames for an output of T_out; the caller cuts it."""
    warped = np.stack([np.interp(centres / speed, centres, frame) for frame in window])
    n_out = int(round(len(window) / speed))
    t = np.minimum(np.arange(n_out) * speed, len(window) - 1)
    return np.stack([np.interp(t, np.arange(len(window)), band) for band in warped.T], axis=1)


# ---- Noise sources, as filterbank energies ----------------------------------------------------

def crop(energies, frames):
    """A random stretch of `frames` frames of energies (T, n_filters), looped when shorter."""
    while len(energies) < frames:
        energies = np.concatenate([energies, energies])
    start = int(torch.randint(len(energies) - frames + 1, ()))
    return energies[start:start + frames]


def fbank_energies(audio, feature):
    """Filterbank energies (T, n_filters) of audio (n_samples,), as the recipe makes them (before the log)."""
    fb, _ = python_speech_features.fbank(audio, samplerate=feature['sample_rate'], nfilt=feature['n_filters'],
                                         winlen=feature['win_len'], winstep=feature['win_step'])
    return fb


def noise_clip(audio, feature):
    """(energies, fbank energy per unit of raw power) of a noise's audio."""
    energies = fbank_energies(audio, feature)
    return energies, float(energies.sum() / (len(energies) * np.mean(np.square(audio)) + 1e-30))


def generated_noises(feature, seed=0):
    """{'noise': [...], 'music': [...]} of (energies, energy per unit power) of generated clips: white, pink, brown
    noise and hum; music-like tones. Made from a fixed seed, the same in every process."""
    rng = np.random.default_rng(seed)
    rate = feature['sample_rate']
    n = int(NOISE_SECONDS * rate)
    noises = [coloured_noise(rng, n, e) for e in (0, 1, 2) for _ in range(2)] + [hum(rng, n, rate) for _ in range(2)]
    return {'noise': [noise_clip(a, feature) for a in noises],
            'music': [noise_clip(music(rng, n, rate), feature) for _ in range(4)]}


def folder_noises(noise_dir, feature):
    """{'noise'|'music'|'babble': [(energies, energy per unit power), ...]} of the audio files under noise_dir.

    MUSAN's layout: files under a folder named music are music, under speech babble voices, the rest noise."""
    sources = {'noise': [], 'music': [], 'babble': []}
    for path in audio_files(noise_dir, '--noise-dir'):
        sources[noise_kind(path, noise_dir)].append(noise_clip(read_audio(path, feature['sample_rate']), feature))
    return sources


# ---- The augmenter ------------------------------------------------------------------------------

class Augmenter:
    """Degrades training windows (T, n_filters) of mean-normalised log features, each kind of degradation with
    its probability (settings: an AugmentSettings).

    others(k): k windows of other training utterances, of the same length (babble), or None for no babble from
    the training set. Noise comes from generated clips, and from settings.noise_dir when it names a folder.
    Each kind of KINDS is a method of that name: (energies, others) -> the energies degraded, or None.
    """

    def __init__(self, settings, feature):
        self.s = settings
        self.sources = generated_noises(feature)
        if settings.noise_dir:
            for kind, clips in folder_noises(settings.noise_dir, feature).items():
                self.sources.setdefault(kind, []).extend(clips)
        self.room_tone = self.sources['noise'][0][0]  # for pauses: white noise at 0 dBFS (unit power)
        self.feature = feature
        self.room_files = (check_files(audio_files(settings.rir_dir, '--rir-dir'), '--rir-dir', feature['sample_rate'])
                           if settings.rir_dir and settings.rooms == 'drawn' else [])

    def pick(self, kind):
        clips = self.sources.get(kind) or []
        return clips[int(torch.randint(len(clips), ()))] if clips else None

    def __call__(self, window, others=None):
        """The window degraded by the kinds that its draws choose (the same window when none is chosen)."""
        energies, changed = degrade(to_energies(window), self.s, lambda kind, e: getattr(self, kind)(e, others))
        return to_features(energies, window) if changed else window

    def reverb(self, energies, others):
        if self.s.rooms == 'decay':
            return reverberate(energies, uniform(*self.s.rt60), uniform(*self.s.drr))
        if self.room_files:
            path = self.room_files[int(torch.randint(len(self.room_files), ()))]
            return reverberate_with(energies, room_file_response(path, self.feature['sample_rate'],
                                                                 self.feature['n_filters'], self.feature['win_step']))
        rt60, drr = uniform(*self.s.rt60), uniform(*self.s.drr)
        rir = room_impulse_response(numpy_rng(), self.feature['sample_rate'], rt60, drr, EARLY_REFLECTIONS)
        return reverberate_with(energies, band_response(rir, self.feature))

    def noise(self, energies, others):
        kind = 'music' if self.sources['music'] and float(torch.rand(())) < 0.25 else 'noise'
        noise, per_power = self.pick(kind)
        snr = uniform(*(self.s.music_snr if kind == 'music' else self.s.noise_snr))
        return add_at_snr(energies, crop(noise, len(energies)), snr, per_power)

    def babble(self, energies, others):
        voices = int(torch.randint(self.s.babble_voices[0], self.s.babble_voices[1] + 1, ()))
        babble = self.babble_energies(others, voices, len(energies))
        return None if babble is None else add_at_snr(energies, babble, uniform(*self.s.babble_snr))

    def pause(self, energies, others):
        frames = int(torch.randint(20, len(energies) // 2 + 1, ()))
        tone = self.room_tone * 10 ** (uniform(*self.s.pause_dbfs) / 10)
        return insert_pause(energies, tone, frames)

    def channel(self, energies, others):
        draw = float(torch.rand(()))
        if draw < self.s.telephone_share:
            return telephone(energies)
        if draw < self.s.telephone_share + self.s.codec_share:
            return codec(energies)
        return random_eq(energies, self.s.eq_db)

    def gain(self, energies, others):
        return energies * 10 ** (uniform(*self.s.gain_db) / 10)

    def babble_energies(self, others, voices, frames):
        """The energies (frames, n_filters) of `voices` other utterances, each at the same energy, or None."""
        if others is None:
            from_folder = self.sources.get('babble') or []
            if not from_folder:
                return None
            clips = [crop(self.pick('babble')[0], frames) for _ in range(voices)]
        else:
            clips = [to_energies(w) for w in others(voices)]
        return sum(clip / max(clip.sum(), 1e-30) for clip in clips)
