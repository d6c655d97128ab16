"""How close is augmentation on features to degrading the audio? A check on real recordings.

    python -m tools.augment_check                    # the official ETRI test wavs
    python -m tools.augment_check --wav-dir my_wavs  # any <speaker>/<utterance>.wav tree (two speakers or more)
    python -m tools.augment_check --band-mean        # augment_features.py's reference levels (ETRI_BAND_MEAN, ...)
    python -m tools.augment_check --codec-gains --files enroll.wav  # ... and its codec's band gains (CODEC_GAIN_DB)
    python -m tools.augment_check --plot docs/augmentation_examples.png  # and a picture of one recording, both ways

For each recording and condition, the features of the degraded *audio* (the truth) are compared with the
same degradation applied by augment_features.py to the clean *features*. Printed per condition: the mean absolute
difference in dB between the two (lower is better), and, for scale, between the clean features and the truth
(what ignoring the degradation would cost). Noise is added in both with the same SNR and the same noise waveform
(a different draw would differ frame by frame however good the model): the difference is the model's error.
"""
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import scipy.signal

from DB_wav_reader import find_files
from dvector import cli
from dvector.audio import AUDIO_SUFFIXES, read_audio
from dvector.augment_audio import at_snr, codec_audio, telephone_audio
from dvector.augment_features import (
    add_at_snr,
    band_response,
    codec,
    fbank_energies,
    noise_clip,
    reverberate,
    reverberate_with,
    telephone,
    to_energies,
    to_features,
)
from dvector.augmentation import EARLY_REFLECTIONS, coloured_noise, music, room_impulse_response
from dvector.fbank import FLOOR, feature_settings
from dvector.utterance import log_fbank_frames
from tools.rooms import ROOM_DRR_DB as DRR_DB
from tools.rooms import ROOM_RT60 as RT60


def conditions(audio, other, sample_rate, rng):
    """{name: (degraded audio at sample_rate, the same degradation on energies (T, n_filters) -> energies)}."""
    feature = feature_settings()

    def noisy(noise, snr):  # the same noise in both: what differs is the model of its energies, not its draw
        energies, per_power = noise_clip(noise, feature)
        return at_snr(audio, noise, snr), lambda e: add_at_snr(e, energies[:len(e)], snr, per_power)

    def room(rir, on_energies=None):  # drawn rooms: the same impulse response in both, through its band_response
        response = band_response(rir, feature)
        return scipy.signal.fftconvolve(audio, rir)[:n], on_energies or (lambda e: reverberate_with(e, response))

    n = len(audio)
    band = telephone_audio(audio, sample_rate)
    rows = {
        'white noise 10 dB': noisy(rng.normal(size=n), 10),
        'white noise 5 dB': noisy(rng.normal(size=n), 5),
        'pink noise 5 dB': noisy(coloured_noise(rng, n, 1), 5),
        'music 5 dB': noisy(music(rng, n, sample_rate), 5),
        'speech 5 dB': noisy(np.resize(other, n), 5),
        'telephone band': (scipy.signal.resample_poly(band, sample_rate, 8000)[:n], telephone),
        'codec Opus ~6 kbps': (codec_audio(audio, sample_rate), codec),
        'low gain x0.05': (0.05 * audio, lambda e: e * 0.05 ** 2),
    }
    plain_room = room_impulse_response(rng, sample_rate, RT60, DRR_DB)
    return {**rows,
            f'reverberation {RT60} s': room(plain_room, lambda e: reverberate(e, RT60, DRR_DB)),
            f'reverberation {RT60} s, drawn': room(plain_room),
            f'reverberation {RT60} s with early reflections, drawn': room(
                room_impulse_response(rng, sample_rate, RT60, DRR_DB, EARLY_REFLECTIONS))}


def features_of(audio):
    return log_fbank_frames(audio.astype(np.float32), feature_settings())[0]


def recordings(wav_dir, files='*'):
    """The audio files under wav_dir whose names match the pattern `files`."""
    return [path for path in find_files(wav_dir, AUDIO_SUFFIXES)['filename'] if fnmatch(Path(path).name, files)]


def compare(wav_dir, seed=0):
    """{condition: (mean |feature-domain - truth| dB, mean |clean - truth| dB)} over the recordings of wav_dir."""
    files = recordings(wav_dir)
    if len(files) < 2:
        raise ValueError(f"{wav_dir}: two recordings or more are needed (speech is mixed with another one)")
    rng = np.random.default_rng(seed)
    sample_rate = feature_settings()['sample_rate']
    errors = {}
    for i, path in enumerate(files):
        audio = read_audio(path, sample_rate).astype(np.float64)
        other = read_audio(files[(i + 1) % len(files)], sample_rate).astype(np.float64)
        clean = features_of(audio)
        for name, (degraded, on_energies) in conditions(audio, other, sample_rate, rng).items():
            truth = features_of(degraded)
            approx = to_features(on_energies(to_energies(clean)), clean)
            errors.setdefault(name, []).append((np.abs(approx - truth).mean(), np.abs(clean - truth).mean()))
    return {name: tuple(np.mean(pairs, axis=0)) for name, pairs in errors.items()}


def reference_levels(wav_dir, files='*'):
    """(per-band mean of the log energies (n_filters,), median filterbank energy per unit raw power) of the
    recordings of wav_dir: augment_features.ETRI_BAND_MEAN and SPEECH_FBANK_PER_POWER for the ETRI test wavs."""
    feature = feature_settings()
    means, ratios = [], []
    for path in recordings(wav_dir, files):
        audio = read_audio(path, feature['sample_rate']).astype(np.float64)
        energies = fbank_energies(audio, feature)
        means.append((20 * np.log10(np.maximum(energies, FLOOR))).mean(axis=0))
        ratios.append(np.where(energies > FLOOR, energies, 0).sum() / (len(energies) * np.mean(audio ** 2)))
    return np.mean(means, axis=0), float(np.median(ratios))


def codec_gains(wav_dir, files='*'):
    """augment_features.CODEC_GAIN_DB of the recordings of wav_dir: per band, the median of how much codec_audio
    changes the filterbank energy, in dB, over the energies above the recipe's floor (what the features see); in a
    band with none there, over all of them."""
    feature = feature_settings()
    clean, coded = [], []
    for path in recordings(wav_dir, files):
        audio = read_audio(path, feature['sample_rate']).astype(np.float64)
        clean.append(fbank_energies(audio, feature))
        coded.append(fbank_energies(codec_audio(audio, feature['sample_rate']), feature))
    clean, coded = np.concatenate(clean), np.concatenate(coded)
    gains = 10 * np.log10(np.maximum(coded, 1e-30) / np.maximum(clean, 1e-30))
    seen = clean > FLOOR
    return np.array([np.median(g[s] if s.any() else g) for g, s in zip(gains.T, seen.T)])


def plot_examples(wav_path, path, seconds=3.0):
    """A PNG of the same utterance's features: clean, and degraded on the features (noise, telephone, room), with
    the same degradation of the audio under each."""
    from matplotlib.figure import Figure

    from dvector.plots import save_figure
    sample_rate = feature_settings()['sample_rate']
    audio = read_audio(wav_path, sample_rate).astype(np.float64)[:int((seconds + 1) * sample_rate)]
    rng = np.random.default_rng(0)
    chosen = {k: v for k, v in conditions(audio, audio[::-1].copy(), sample_rate, rng).items()
              if k in ('white noise 5 dB', 'telephone band', f'reverberation {RT60} s')}
    clean = features_of(audio)
    fig = Figure(figsize=(14, 5))
    axes = fig.subplots(2, 1 + len(chosen), sharex=True, sharey=True)
    rows = [('clean', clean, clean)] + [(name, to_features(on_e(to_energies(clean)), clean),
                                         features_of(degraded)) for name, (degraded, on_e) in chosen.items()]
    for col, (name, on_features, on_audio) in enumerate(rows):
        for row, (feat, made) in enumerate(((on_features, 'on the features'), (on_audio, 'from the audio'))):
            ax = axes[row, col]
            if row == 1 and col == 0:  # clean has no second way
                ax.axis('off')
                continue
            ax.imshow(feat.T, origin='lower', aspect='auto', vmin=-10, vmax=30, cmap='magma')
            ax.set_title(f'{name}, {made}' if col else f'{name}' if row == 0 else '', fontsize=9)
            ax.set_xlabel('frame (10 ms)' if row == 1 else '')
            ax.set_ylabel('Mel filter' if col == 0 else '')
    fig.tight_layout()
    save_figure(fig, path)


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument('--wav-dir', default='../shared/etri/test_wavs', help='<speaker>/<utterance> audio')
    p.add_argument('--band-mean', action='store_true', help="print the reference levels of --wav-dir's recordings")
    p.add_argument('--codec-gains', action='store_true', help="print the codec's band gains on --wav-dir's recordings")
    p.add_argument('--files', default='*', help='--band-mean and --codec-gains: only the files of this name pattern')
    p.add_argument('--plot', metavar='PNG', help="also draw one recording's features clean and degraded both ways")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.band_mean:
        means, ratio = reference_levels(args.wav_dir, args.files)
        print('band mean (dB):', np.array2string(np.round(means, 1), separator=', '))
        print(f'filterbank energy per unit raw power (median): {ratio:.1f}')
        return means, ratio
    if args.codec_gains:
        gains = codec_gains(args.wav_dir, args.files)
        print('codec gains (dB):', np.array2string(np.round(gains, 1), separator=', '))
        return gains
    if args.plot:
        plot_examples(find_files(args.wav_dir, AUDIO_SUFFIXES)['filename'][0], args.plot)
        print(f'Examples: {args.plot}')
    errors = compare(args.wav_dir)
    print('| condition | feature-domain vs audio, mean abs. dB | clean vs audio (nothing done) |\n|---|---:|---:|')
    for name, (approx, nothing) in errors.items():
        print(f'| {name} | {approx:.2f} | {nothing:.2f} |')
    return errors


if __name__ == '__main__':
    cli.run(main)
