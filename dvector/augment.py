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

`python augment_check.py` compares these transforms with features made from degraded audio
(docs/augmentation.md). Every random draw uses torch's generator, so that runs repeat and resume exactly.
"""
import io
import types
from functools import lru_cache
from pathlib import Path

import numpy as np
import python_speech_features
import scipy.signal
import torch

import configure as c
from dvector.audio import AUDIO_SUFFIXES, read_audio, silence
from dvector.fbank import FLOOR, NFFT
from dvector.feature_files import FeatureFileError

FLOOR_DB = 20 * np.log10(FLOOR)  # -100 dB
FLOOR_TOLERANCE_DB = 0.05     # values this close to a band's lowest are at the floor (float16 copies: 0.016 dB)
# Per-band mean of 20 * log10(max(fbank, 1e-5)) over the 20 official ETRI test wavs (whole files):
# what mean normalisation subtracted, for bands with no frame at the floor. `python augment_check.py --band-mean`
ETRI_BAND_MEAN = np.array([
    -100.0, -100.0, -99.9, -98.3, -96.9, -98.7, -99.0, -97.4, -96.4, -97.6, -96.5, -96.6, -97.6, -97.1, -97.5,
    -97.5, -97.0, -96.8, -97.9, -98.3, -98.4, -99.0, -98.9, -98.6, -98.2, -97.7, -97.6, -98.2, -98.8, -98.1,
    -97.3, -98.1, -99.1, -99.5, -99.5, -99.4, -99.1, -98.6, -98.2, -98.2])
# Filterbank energy (floored frames as 0) per unit of raw signal power, of ETRI speech: the median over the
# official test wavs. It converts an SNR on the waveform (what robustness.py and the field quote) to one on the
# energies; a noise's own ratio comes from its audio.
SPEECH_FBANK_PER_POWER = 12.8
TELEPHONE_BAND = (300, 3400)  # Hz; nothing above 4 kHz (8 kHz sampling)
TELEPHONE_RATE = 8000
NOISE_SECONDS = 8.0           # length of each generated noise clip
CHECKED_WHOLE_SECONDS = 60.0  # noise and room files up to this long are read whole when training starts (the
                              # silent refused); longer ones are read a stretch at a time, the silent skipped
KINDS = ('noise', 'music', 'babble', 'reverb', 'channel', 'gain', 'pause')


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


@lru_cache(maxsize=8)
def band_centres(n_filters, sample_rate=c.SAMPLE_RATE, nfft=NFFT):
    """Hz at the peak of each of python_speech_features' Mel filters."""
    bank = python_speech_features.get_filterbanks(n_filters, nfft, sample_rate)
    return bank.argmax(axis=1) * sample_rate / nfft


@lru_cache(maxsize=8)
def filter_gains(low, high, n_filters, sample_rate=c.SAMPLE_RATE, nfft=NFFT, order=6):
    """Power gain (n_filters,) of each Mel filter through a Butterworth band-pass [low, high] Hz, and 0 above
    4 kHz when high is a telephone's: the filter's squared response averaged over each filter's triangle."""
    bank = python_speech_features.get_filterbanks(n_filters, nfft, sample_rate)
    freqs = np.arange(nfft // 2 + 1) * sample_rate / nfft
    sos = scipy.signal.butter(order, [low, high], btype='bandpass', fs=sample_rate, output='sos')
    response = np.abs(scipy.signal.sosfreqz(sos, worN=freqs, fs=sample_rate)[1]) ** 2
    response[freqs >= 4000] = 0  # resampled to 8 kHz: nothing left above 4 kHz
    return (bank @ response) / bank.sum(axis=1)


def telephone(energies):
    """A telephone line: the 300-3400 Hz band, nothing above 4 kHz."""
    return energies * filter_gains(*TELEPHONE_BAND, energies.shape[1])


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

def uniform(low, high):
    """A float uniform in [low, high), from torch's generator."""
    return low + (high - low) * float(torch.rand(()))


def happens(prob):
    """True with probability prob, from torch's generator (no draw when prob is 0)."""
    return prob > 0 and float(torch.rand(())) < prob


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

def augment_settings(args=None):
    """The augmentation settings of train.py's args; configure.py's without args."""
    if args is None:
        return augment_settings(types.SimpleNamespace(**{k.lower(): v for k, v in vars(c).items() if k.isupper()}))
    return {'noise_prob': args.aug_noise_prob, 'noise_snr': args.aug_noise_snr, 'music_snr': args.aug_music_snr,
            'babble_prob': args.aug_babble_prob, 'babble_snr': args.aug_babble_snr,
            'babble_voices': args.aug_babble_voices, 'reverb_prob': args.aug_reverb_prob, 'rt60': args.aug_rt60,
            'drr': args.aug_drr, 'channel_prob': args.aug_channel_prob, 'telephone_share': args.aug_telephone_share,
            'eq_db': args.aug_eq_db, 'gain_prob': args.aug_gain_prob, 'gain_db': args.aug_gain_db,
            'pause_prob': args.aug_pause_prob, 'pause_dbfs': args.aug_pause_dbfs, 'noise_dir': args.noise_dir,
            'rir_dir': args.rir_dir}


class Augmenter:
    """Degrades training windows (T, n_filters) of mean-normalised log features, each kind of degradation with
    its probability (settings: augment_settings(args)).

    others(k): k windows of other training utterances, of the same length (babble), or None for no babble from
    the training set. Noise comes from generated clips, and from settings['noise_dir'] when it names a folder.
    """

    def __init__(self, settings, feature):
        self.s = settings
        self.sources = generated_noises(feature)
        if settings.get('noise_dir'):
            for kind, clips in folder_noises(settings['noise_dir'], feature).items():
                self.sources.setdefault(kind, []).extend(clips)
        self.room_tone = self.sources['noise'][0][0]  # for pauses: white noise at 0 dBFS (unit power)

    def pick(self, kind):
        clips = self.sources.get(kind) or []
        return clips[int(torch.randint(len(clips), ()))] if clips else None

    def __call__(self, window, others=None):
        """The window degraded by the kinds that its draws choose (the same window when none is chosen)."""
        s = self.s
        energies = to_energies(window)
        changed = False
        if happens(s['reverb_prob']):
            energies = reverberate(energies, uniform(*s['rt60']), uniform(*s['drr']))
            changed = True
        if happens(s['noise_prob']):
            kind = 'music' if self.sources['music'] and float(torch.rand(())) < 0.25 else 'noise'
            noise, per_power = self.pick(kind)
            snr = uniform(*(s['music_snr'] if kind == 'music' else s['noise_snr']))
            energies = add_at_snr(energies, crop(noise, len(energies)), snr, per_power)
            changed = True
        if happens(s['babble_prob']):
            voices = int(torch.randint(s['babble_voices'][0], s['babble_voices'][1] + 1, ()))
            babble = self.babble(others, voices, len(energies))
            if babble is not None:
                energies = add_at_snr(energies, babble, uniform(*s['babble_snr']))
                changed = True
        if happens(s['pause_prob']):
            frames = int(torch.randint(20, len(energies) // 2 + 1, ()))
            tone = self.room_tone * 10 ** (uniform(*s['pause_dbfs']) / 10)
            energies = insert_pause(energies, tone, frames)
            changed = True
        if happens(s['channel_prob']):
            energies = telephone(energies) if float(torch.rand(())) < s['telephone_share'] else \
                random_eq(energies, s['eq_db'])
            changed = True
        if happens(s['gain_prob']):
            energies = energies * 10 ** (uniform(*s['gain_db']) / 10)
            changed = True
        return to_features(energies, window) if changed else window

    def babble(self, others, voices, frames):
        """The energies (frames, n_filters) of `voices` other utterances, each at the same energy, or None."""
        if others is None:
            from_folder = self.sources.get('babble') or []
            if not from_folder:
                return None
            clips = [crop(self.pick('babble')[0], frames) for _ in range(voices)]
        else:
            clips = [to_energies(w) for w in others(voices)]
        return sum(clip / max(clip.sum(), 1e-30) for clip in clips)


# ---- The same kinds on the waveform, for training from audio ---------------------------------------

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
    import soundfile
    encoded = io.BytesIO()
    soundfile.write(encoded, np.asarray(audio, np.float32), sample_rate, format='OGG', subtype='OPUS',
                    compression_level=compression)
    encoded.seek(0)
    decoded, _ = soundfile.read(encoded, dtype='float64')
    return np.pad(decoded, (0, max(0, len(audio) - len(decoded))))[:len(audio)]


def room_impulse_response(rng, sample_rate, rt60, drr_db):
    """A synthetic room: a direct impulse, then Gaussian noise decaying 60 dB in rt60 s, holding 10**(-drr/10)
    times the direct sound's energy."""
    t = np.arange(1, int(rt60 * sample_rate)) / sample_rate
    tail = rng.normal(size=len(t)) * 10 ** (-3 * t / rt60)
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail ** 2))
    return np.concatenate([[1.0], tail])



def numpy_rng():
    """A numpy Generator seeded from torch's generator: numpy's draws then repeat and resume with torch's."""
    return np.random.default_rng(int(torch.randint(2 ** 62, ())))


def audio_files(folder, what):
    """The audio files under folder, sorted; an error naming `what` (the flag) when there are none."""
    files = sorted(p for p in Path(folder).rglob('*') if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{what} {folder}: no audio files ({', '.join(AUDIO_SUFFIXES)}) under it")
    return files


def check_files(files, what, sample_rate):
    """Refuse, when training starts rather than hours in, a noise or room file of the flag `what` that cannot be
    read, or (up to CHECKED_WHOLE_SECONDS long: those read whole) is empty or silent; returns files."""
    import soundfile
    for path in files:
        try:
            if soundfile.info(str(path)).duration <= CHECKED_WHOLE_SECONDS:
                read_audio(path, sample_rate)  # refuses one that is empty or silent, naming it
        except (RuntimeError, soundfile.SoundFileError) as e:
            raise FeatureFileError(f"{what}: {path}: not a readable audio file ({e}); remove it") from e
        except FeatureFileError as e:
            raise FeatureFileError(f"{what}: {e}; remove it") from None
    return files


def noise_kind(path, root):
    """MUSAN's folders: music/ is music, speech/ babble voices, the rest noise."""
    parts = {p.lower() for p in Path(path).relative_to(root).parts[:-1]}
    return 'music' if 'music' in parts else 'babble' if 'speech' in parts else 'noise'


def read_stretch(path, n_samples, sample_rate, rng):
    """A random stretch of n_samples of an audio file at sample_rate (looped when shorter), read without the rest."""
    import soundfile
    info = soundfile.info(str(path))
    if info.samplerate != sample_rate or info.frames <= n_samples:
        return np.resize(read_audio(path, sample_rate).astype(np.float64), n_samples)
    start = int(rng.integers(0, info.frames - n_samples))
    stretch, _ = soundfile.read(str(path), start=start, frames=n_samples, dtype='float64', always_2d=True)
    return stretch.mean(axis=1)


def resample_speed(audio, speed):
    """audio played `speed` times as fast (pitch and tempo: the field's speed perturbation), by resampling."""
    from fractions import Fraction
    ratio = Fraction(speed).limit_denominator(100)
    return scipy.signal.resample_poly(audio, ratio.denominator, ratio.numerator)


def equalise(audio, gain_db_at, sample_rate):
    """audio through a smooth filter whose gain at f Hz is gain_db_at(f) dB."""
    spectrum = np.fft.rfft(audio)
    freqs = np.fft.rfftfreq(len(audio), 1 / sample_rate)
    return np.fft.irfft(spectrum * 10 ** (gain_db_at(freqs) / 20), len(audio))


class WaveAugmenter:
    """The kinds of Augmenter, with the same settings (augment_settings), on an utterance's waveform before its
    features are made: what the field does when training from audio.

    Noise and babble voices come from settings['noise_dir'] (MUSAN's layout) and room impulse responses from
    settings['rir_dir'] (RIRS_NOISES' files, or any folder of them); without them, from generated noise and music
    (the clips Augmenter uses) and synthetic rooms (exponentially decaying noise). others(k): the waveforms of k
    other training utterances (babble), or None.
    """

    def __init__(self, settings, sample_rate):
        self.s, self.rate = settings, sample_rate
        rng = np.random.default_rng(0)
        n = int(NOISE_SECONDS * sample_rate)
        self.generated = {'noise': [coloured_noise(rng, n, e) for e in (0, 1, 2)] + [hum(rng, n, sample_rate)],
                          'music': [music(rng, n, sample_rate) for _ in range(4)]}
        self.files = {'noise': [], 'music': [], 'babble': []}
        if settings.get('noise_dir'):
            for path in check_files(audio_files(settings['noise_dir'], '--noise-dir'), '--noise-dir', sample_rate):
                self.files[noise_kind(path, settings['noise_dir'])].append(path)
        self.rirs = (check_files(audio_files(settings['rir_dir'], '--rir-dir'), '--rir-dir', sample_rate)
                     if settings.get('rir_dir') else [])

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
        """An impulse response: one of rir_dir's, its direct path first, or a synthetic room of the settings' ranges."""
        if not self.rirs:
            return room_impulse_response(rng, self.rate, rng.uniform(*self.s['rt60']), rng.uniform(*self.s['drr']))
        rir = read_audio(self.rirs[int(rng.integers(len(self.rirs)))], self.rate).astype(np.float64)
        rir = rir[int(np.argmax(np.abs(rir))):]
        return rir / np.sqrt(np.sum(rir ** 2))

    def __call__(self, audio, others=None):
        """audio (n_samples,) degraded by the kinds that its draws choose (the same array when none is chosen)."""
        s, rng, out = self.s, numpy_rng(), audio.astype(np.float64)
        n, changed = len(out), False
        if happens(s['reverb_prob']):
            out = scipy.signal.fftconvolve(out, self.room(rng))[:n]
            changed = True
        if happens(s['noise_prob']):
            kind = 'music' if rng.uniform() < 0.25 else 'noise'
            noise, snr = self.source(kind, n, rng), rng.uniform(*s[f'{kind}_snr'])
            if noise is not None:
                out, changed = at_snr(out, noise, snr), True
        if happens(s['babble_prob']):
            voices = int(rng.integers(s['babble_voices'][0], s['babble_voices'][1] + 1))
            clips = ([c for c in (self.source('babble', n, rng) for _ in range(voices)) if c is not None]
                     if self.files['babble'] else [np.resize(o, n) for o in others(voices)] if others else [])
            if clips:
                babble = sum(c / (np.sqrt(np.mean(c ** 2)) + 1e-12) for c in clips)
                out = at_snr(out, babble, rng.uniform(*s['babble_snr']))
                changed = True
        if happens(s['pause_prob']):
            frames = int(rng.integers(n // 20, n // 2 + 1))
            at = int(rng.integers(n + 1))
            tone = rng.normal(0, 10 ** (rng.uniform(*s['pause_dbfs']) / 20), frames)
            out = np.concatenate([out[:at], tone, out[at:]])
            changed = True
        if happens(s['channel_prob']):
            if rng.uniform() < s['telephone_share']:
                out = scipy.signal.resample_poly(telephone_audio(out, self.rate), self.rate, TELEPHONE_RATE)[:len(out)]
            else:
                knots = np.linspace(0, self.rate / 2, 8)
                gains = rng.uniform(-s['eq_db'], s['eq_db'], len(knots))
                out = equalise(out, lambda f: np.interp(f, knots, gains), self.rate)
            changed = True
        if happens(s['gain_prob']):
            out = out * 10 ** (rng.uniform(*s['gain_db']) / 20)
            changed = True
        return out.astype(np.float32) if changed else audio
