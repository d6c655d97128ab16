"""A corpus of synthetic voices for the demo: deterministic, written as real 16 kHz mono wav files.

    python demo_corpus.py                   # DEMO_DIR/wavs with the sizes of configure.py
    python demo_corpus.py --out demo/wavs --train-speakers 30 --train-utts 20 --test-speakers 10 --seed 0

writes <out>/train/trnNNN/uNN.wav (2.5-4 s each) and <out>/test/tstNNN/{enroll,test}.wav (8-10 s each).
The test voices come from another random stream than the training voices: none is heard in training.

Each voice is a source-filter model with its own parameters, all drawn independently so that no single
one tells the voices apart. The source is a glottal pulse train whose pitch follows the voice's mean F0,
its declination over each phrase and its accent range, plus jitter and shimmer; the voice's glottal
pulse shape and spectral tilt colour it and its breathiness adds noise. The filter is a cascade of five
formant resonators whose targets come from a small vowel table, scaled by the voice's vocal-tract factor
and moved by its own per-vowel offsets; they glide from one vowel to the next. An utterance is random
content at the voice's speaking rate: vowels, fricatives (band-pass noise placed by the vocal-tract
factor) and pauses, between 0.5 s of faint noise at each end (what the pipeline trims), peak-normalised.
Same seed, same bytes.
"""
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from scipy import signal
from scipy.ndimage import uniform_filter1d

import configure as c
from dvector import cli
from dvector.atomic import atomic_write
from dvector.parallel import process_map

MARKER = 'corpus.json'      # written last: a folder holding it holds a complete corpus
CORPUS_VERSION = 1          # part of the marker: bump it when the synthesis changes, so old corpora are not reused
TRAIN_SECONDS = (2.5, 4.0)  # duration range of a training utterance, its silent edges included
TEST_SECONDS = (8.0, 10.0)  # of an enrollment or test recording
EDGE_SECONDS = 0.5          # faint noise before and after the speech: the pipeline trims 0.5 s at each end
PEAK = 0.5                  # every utterance's peak amplitude, so that levels tell nothing about the voice
FLOOR_DB = (55, 65)         # background noise, dB below the peak
STEP = 80                   # samples (5 ms at 16 kHz) per step of the control tracks: pitch, formants, loudness

# F1-F4 (Hz) of a mid-sized vocal tract for /i e E a O o u/; F5 is FIFTH_FORMANT for every vowel
VOWELS = np.array([[300, 2300, 3000, 3700], [430, 2050, 2650, 3600], [580, 1800, 2550, 3600],
                   [750, 1250, 2600, 3600], [620, 1000, 2550, 3500], [470, 900, 2500, 3450],
                   [330, 850, 2350, 3400]], dtype=float)
FIFTH_FORMANT = 4500.0
BANDWIDTHS = np.array([70, 100, 140, 200, 250], dtype=float)  # Hz of F1-F5, times the voice's bandwidth factor
FRICATIVES = np.array([[3800, 6800], [2000, 3800], [1200, 6000]], dtype=float)  # Hz bands of /s/, /sh/, /f/
# Segment kinds of the content, how often each comes and its duration range (s) at speaking rate 1
VOWEL, FRICATIVE, PAUSE = 0, 1, 2
KIND_PROBABILITIES = [0.55, 0.3, 0.15]
SEGMENT_SECONDS = [(0.07, 0.18), (0.05, 0.12), (0.05, 0.2)]


@dataclass
class Voice:
    """One synthetic speaker's parameters."""
    f0: float           # Hz, mean pitch
    accent: float       # semitones, height of the pitch accents
    declination: float  # semitones per second that the pitch falls within a phrase
    jitter: float       # semitones, slow random pitch wobble
    shimmer: float      # relative random amplitude of each glottal pulse
    glottal: float      # pole of the glottal pulse shape: nearer 1, softer pulses with fewer high harmonics
    tilt: float         # one-pole low-pass coefficient: spectral tilt of the source
    breath: float       # breath noise in the source, relative to its voiced RMS
    vtl: float          # formant scaling factor: above 1 for a shorter vocal tract
    formants: np.ndarray  # (len(VOWELS), 5) Hz: this voice's F1-F5 of each vowel
    bandwidth: float    # factor on the formant bandwidths
    tempo: float        # factor on segment durations: above 1 for slower speech


def random_voice(rng):
    """A Voice drawn from the numpy Generator rng."""
    vtl = rng.uniform(0.85, 1.2)
    offsets = np.exp(rng.normal(0, 0.05, (len(VOWELS), 5)))  # the voice's own way of saying each vowel
    formants = np.hstack([VOWELS, np.full((len(VOWELS), 1), FIFTH_FORMANT)]) * vtl * offsets
    return Voice(f0=float(np.exp(rng.uniform(np.log(85), np.log(260)))), accent=rng.uniform(1, 5),
                 declination=rng.uniform(0.3, 3), jitter=rng.uniform(0.1, 0.6), shimmer=rng.uniform(0.02, 0.15),
                 glottal=rng.uniform(0.9, 0.98), tilt=rng.uniform(0.05, 0.75), breath=rng.uniform(0.02, 0.4),
                 vtl=vtl, formants=np.sort(formants, axis=1), bandwidth=rng.uniform(0.7, 1.5),
                 tempo=rng.uniform(0.75, 1.35))


def random_content(voice, n_steps, tempo, rng):
    """What is said, per control step: (vowel index or -1, fricative index or -1, loudness, phrase start step).

    Segments of random kind and duration, starting with a vowel; a pause ends a phrase.
    """
    vowel, fricative = np.full(n_steps, -1), np.full(n_steps, -1)
    loudness, phrase = np.zeros(n_steps), np.zeros(n_steps, dtype=int)
    start, kind = 0, VOWEL
    while start < n_steps:
        seconds = rng.uniform(*SEGMENT_SECONDS[kind]) * voice.tempo * tempo
        end = min(n_steps, start + max(2, round(seconds * c.SAMPLE_RATE / STEP)))
        if kind == VOWEL:
            vowel[start:end] = rng.integers(len(VOWELS))
            loudness[start:end] = rng.uniform(0.5, 1)
        elif kind == FRICATIVE:
            fricative[start:end] = rng.integers(len(FRICATIVES))
            loudness[start:end] = rng.uniform(0.15, 0.5)
        else:
            phrase[end:] = end
        start, kind = end, rng.choice(3, p=KIND_PROBABILITIES)
    return vowel, fricative, loudness, phrase


def pitch_track(voice, phrase, shift, rng):
    """F0 (Hz) per control step: declination within each phrase, pitch accents and a slow wobble."""
    n_steps = len(phrase)
    t = np.arange(n_steps) * STEP / c.SAMPLE_RATE  # s
    in_phrase = np.minimum(t - phrase * STEP / c.SAMPLE_RATE, 3)
    centres = rng.uniform(0, t[-1], max(1, round(t[-1] / 0.7)))
    heights = rng.uniform(0.3, 1, len(centres))
    accents = (heights * np.exp(-0.5 * ((t[:, None] - centres) / 0.12) ** 2)).sum(axis=1)
    wobble = uniform_filter1d(rng.standard_normal(n_steps), 9) * 3  # ~unit variance, smooth over 45 ms
    semitones = shift - voice.declination * (in_phrase - 1) + voice.accent * accents + voice.jitter * wobble
    return voice.f0 * 2 ** (semitones / 12)


def to_samples(track, n):
    """A per-step track (n_steps, ...) linearly interpolated to n samples."""
    centres = (np.arange(len(track)) + 0.5) * STEP
    return np.interp(np.arange(n), centres, track)


def glottal_source(voice, f0, tilt, rng):
    """Excitation (n,) for the pitch f0 (n,) Hz: shaped glottal pulses plus breath noise, unit voiced RMS."""
    n = len(f0)
    phase = np.cumsum(f0) / c.SAMPLE_RATE  # in glottal cycles
    at = np.flatnonzero(np.diff(np.floor(phase))) + 1  # first sample of each cycle
    late = np.clip((phase[at] - np.floor(phase[at])) * c.SAMPLE_RATE / f0[at], 0, 1)  # samples since the cycle began
    amplitude = 1 + voice.shimmer * rng.standard_normal(len(at))
    pulses = np.zeros(n)
    pulses[at] += amplitude * (1 - late)  # a pulse between two samples is shared between them
    pulses[at - 1] += amplitude * late
    g = voice.glottal  # derivative of a critically damped pulse, then the tilt low-pass
    source = signal.lfilter([1 - tilt, tilt - 1], np.convolve([1, -2 * g, g * g], [1, -tilt]), pulses)
    source /= np.sqrt(np.mean(source ** 2))
    return source + voice.breath * rng.standard_normal(n)


def resonators(formants, bandwidths):
    """Second-order sections (..., 5, 6) of unit-DC-gain resonators at formants (..., 5) Hz."""
    r = np.exp(-np.pi * bandwidths / c.SAMPLE_RATE) * np.ones_like(formants)
    a1, a2 = -2 * r * np.cos(2 * np.pi * formants / c.SAMPLE_RATE), r * r
    return np.stack([1 + a1 + a2, 0 * r, 0 * r, 1 + 0 * r, a1, a2], axis=-1)


def formant_filter(x, formants, bandwidths):
    """x (n,) through the resonator cascade of formants (n_steps, 5) Hz, which change every STEP samples.

    The filter changes only where a formant has moved by 1 % or more: one filter call per steady stretch.
    """
    level = np.round(np.log(formants) / 0.01)
    starts = np.r_[0, np.flatnonzero(np.any(np.diff(level, axis=0) != 0, axis=1)) + 1]
    sections = resonators(formants[starts], bandwidths)
    bounds = np.r_[starts * STEP, len(x)]
    y, state = np.empty_like(x), np.zeros((5, 2))
    for sos, begin, end in zip(sections, bounds[:-1], bounds[1:]):
        y[begin:end], state = signal.sosfilt(sos, x[begin:end], zi=state)
    return y


@functools.cache
def fricative_filters(vtl):
    """The band-pass filters (second-order sections) of the fricatives for a vocal-tract factor: designed once a
    voice."""
    return [signal.butter(2, [low, min(high, 0.45 * c.SAMPLE_RATE)], 'bandpass', fs=c.SAMPLE_RATE, output='sos')
            for low, high in FRICATIVES * vtl]


def frication(voice, fricative, loudness, n, rng):
    """Fricative noise (n,): band-pass noise for each fricative, placed by the voice's vocal-tract factor."""
    out = np.zeros(n)
    for k, sos in enumerate(fricative_filters(voice.vtl)):
        noise = signal.sosfilt(sos, rng.standard_normal(n))
        envelope = to_samples(uniform_filter1d(np.where(fricative == k, loudness, 0), 3), n)
        out += envelope * noise / noise.std()
    return out


def synthesize_utterance(voice, seconds, rng):
    """An utterance (round(seconds * SAMPLE_RATE),) float32 of random content said by voice, peak PEAK.

    The speech lies between EDGE_SECONDS of faint noise at each end. Besides the content, the rng draws
    what varies between recordings of one voice: a pitch shift, a tempo and a tilt.
    """
    n = round(seconds * c.SAMPLE_RATE)
    edge = round(EDGE_SECONDS * c.SAMPLE_RATE)
    n_speech = n - 2 * edge
    if n_speech < STEP * 20:
        raise ValueError(f"{seconds} s is too short: an utterance needs {2 * EDGE_SECONDS + 0.1} s or more")
    n_steps = -(-n_speech // STEP)
    shift, tempo, tilt = rng.normal(0, 0.5), rng.uniform(0.92, 1.08), np.clip(voice.tilt + rng.normal(0, 0.04), 0, 0.9)
    vowel, fricative, loudness, phrase = random_content(voice, n_steps, tempo, rng)
    f0 = to_samples(pitch_track(voice, phrase, shift, rng), n_speech)
    voicing = to_samples(uniform_filter1d(np.where(vowel >= 0, loudness, 0), 3), n_speech)
    vowel_held = vowel[np.maximum.accumulate(np.where(vowel >= 0, np.arange(n_steps), 0))]  # first step is a vowel
    formants = np.exp(uniform_filter1d(np.log(voice.formants[vowel_held]), 7, axis=0))  # glides over 35 ms
    voiced = formant_filter(voicing * glottal_source(voice, f0, tilt, rng), formants, BANDWIDTHS * voice.bandwidth)
    voiced /= np.sqrt(np.mean(voiced[voicing > 0.4] ** 2))
    speech = voiced + frication(voice, fricative, loudness, n_speech, rng)
    speech *= np.minimum(1, np.arange(n_speech)[::-1] / (0.02 * c.SAMPLE_RATE))  # fade out where the content is cut
    audio = np.zeros(n)
    audio[edge:edge + n_speech] = speech * PEAK / np.abs(speech).max()
    audio += PEAK * 10 ** (-rng.uniform(*FLOOR_DB) / 20) * rng.standard_normal(n)
    return audio.astype(np.float32)


def corpus_plan(root, n_train_speakers, n_train_utts, n_test_speakers, seed):
    """(path, voice, rng, duration range) of every file of the corpus.

    Each voice and each file has its own random stream, [seed, part, speaker, 0 for the voice or
    1 for a file, file], so that a voice is the same whatever the corpus size.
    """
    parts = [('train', 'trn', n_train_speakers, [f'u{u:02d}' for u in range(n_train_utts)], TRAIN_SECONDS),
             ('test', 'tst', n_test_speakers, ['enroll', 'test'], TEST_SECONDS)]
    plan = []
    for stream, (part, prefix, n_speakers, names, seconds) in enumerate(parts):
        for s in range(n_speakers):
            voice = random_voice(np.random.default_rng([seed, stream, s, 0, 0]))
            for u, name in enumerate(names):
                rng = np.random.default_rng([seed, stream, s, 1, u])
                plan.append((Path(root) / part / f'{prefix}{s:03d}' / f'{name}.wav', voice, rng, seconds))
    return plan


def read_marker(root):
    """The marker {'parameters', 'summary'} of a complete corpus in root, or None."""
    try:
        return json.loads((Path(root) / MARKER).read_text())
    except (OSError, ValueError):
        return None


def write_utterance(item):
    """Synthesize one file of a corpus_plan and write it; returns its length in samples."""
    path, voice, rng, seconds = item
    audio = synthesize_utterance(voice, rng.uniform(*seconds), rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio, c.SAMPLE_RATE, subtype='PCM_16')
    return len(audio)


def write_corpus(root, n_train_speakers=c.DEMO_TRAIN_SPEAKERS, n_train_utts=c.DEMO_TRAIN_UTTS,
                 n_test_speakers=c.DEMO_TEST_SPEAKERS, seed=c.SEED):
    """Write the corpus into root (missing or empty) and return its summary.

    root/train/trnNNN/uNN.wav and root/test/tstNNN/{enroll,test}.wav, then root/corpus.json, which
    marks it complete: a root that already holds the corpus of these parameters is left as it is.
    Summary: {'train_speakers', 'train_utterances', 'test_speakers', 'test_utterances', 'seconds'}.
    """
    root = Path(root)
    parameters = {'n_train_speakers': n_train_speakers, 'n_train_utts': n_train_utts,
                  'n_test_speakers': n_test_speakers, 'seed': seed, 'version': CORPUS_VERSION}
    marker = read_marker(root)
    if marker and marker.get('parameters') == parameters:
        return marker['summary']
    if marker:
        raise FileExistsError(f"{root} holds a demo corpus made with other parameters ({marker.get('parameters')}); "
                              "delete it or write the corpus elsewhere")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} is not empty and holds no complete demo corpus (no {MARKER}): "
                              "delete it or write the corpus elsewhere")
    plan = corpus_plan(root, n_train_speakers, n_train_utts, n_test_speakers, seed)
    samples = sum(process_map(write_utterance, plan, desc=f'voices -> {root}'))
    summary = {'train_speakers': n_train_speakers, 'train_utterances': n_train_speakers * n_train_utts,
               'test_speakers': n_test_speakers, 'test_utterances': 2 * n_test_speakers,
               'seconds': round(samples / c.SAMPLE_RATE, 1)}
    text = json.dumps({'parameters': parameters, 'summary': summary}, indent=2)
    atomic_write(root / MARKER, lambda f: f.write(text.encode()))
    return summary


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument('--out', default=os.path.join(c.DEMO_DIR, 'wavs'), help='the corpus goes here (missing or empty)')
    cli.setting(p, 'DEMO_TRAIN_SPEAKERS', '--train-speakers', type=cli.positive_int)
    cli.setting(p, 'DEMO_TRAIN_UTTS', '--train-utts', type=cli.positive_int)
    cli.setting(p, 'DEMO_TEST_SPEAKERS', '--test-speakers', type=cli.positive_int)
    p.add_argument('--seed', type=int, default=c.SEED, help='seeds every voice and utterance')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    summary = write_corpus(args.out, args.train_speakers, args.train_utts, args.test_speakers, args.seed)
    print(f"{args.out}: {summary['train_speakers']} training voices x {args.train_utts} utterances, "
          f"{summary['test_speakers']} test voices (enroll.wav, test.wav); {summary['seconds'] / 60:.1f} min of audio")
    return summary


if __name__ == '__main__':
    cli.run(main)
