"""What to expect on real recordings: a model scored on degraded copies of test recordings.

    python -m tools.robustness --checkpoint pretrained/dvector_etri200_improved.pth
    python -m tools.robustness --wav-dir my_wavs --out robustness_mine  # <speaker>/enroll*.wav, <speaker>/test*.wav

Each speaker's test recording is cut into 3-s pieces (as make_trials.py --piece-seconds 3 does);
every piece is degraded in each condition below and written as a wav with 0.5 s more at each end,
which the stages trim off again. Enrollment stays clean. Every condition is scored as a trial list
(every enrollment against every piece) with and without speech detection (--vad energy; --vad silero on request) and
level normalisation (--level), and the EER and top-1 identification of each are printed as a table
and written to <out>/robustness.md.

Conditions: clean; white noise at 20, 10 and 5 dB SNR; babble (four other speakers' enrollment
recordings mixed) at 10 and 5 dB; telephone band (300-3400 Hz, stored at 8 kHz); long silences
(2 s of room tone at -70 dBFS, and again at -60 dBFS, before and after the speech, 1 s in its middle);
pink noise and music-like tones at 10 dB; reverberation (a synthetic room: RT60 0.5 s, direct-to-reverberant ratio
3 dB); far field (RT60 0.6 s, DRR -3 dB, pink noise at 15 dB); a low-bitrate codec (Opus at about 6 kbps); low gain
(x0.05, about -70 dBFS for the ETRI recordings) and high gain (x4, about -32 dBFS, a phone held close).

The folder needs two speakers or more, each with one enrollment recording longer than a piece with
its margins (4 s): babble mixes stretches of the other speakers' enrollment recordings.
"""
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile

import configure as c
from DB_wav_reader import find_files, is_enroll_file
from dvector import cli
from dvector.audio import read_audio
from dvector.augment_audio import TELEPHONE_RATE, at_snr, codec_audio, rms, telephone_audio
from dvector.augmentation import coloured_noise, music, room_impulse_response
from dvector.cli import run_command
from dvector.feature_files import TRIM_SECONDS, FeatureFileError
from tools.rooms import FAR_DRR_DB, FAR_RT60, FAR_SNR_DB, ROOM_DRR_DB, ROOM_RT60

PIECE_SECONDS = 3.0
DEV_ENROLL_SECONDS = 7.0  # --dev: the part of each enrollment recording enrolled with; the rest is cut into pieces
VARIANTS = {'defaults': [], '--level no': ['--level', 'no'],
            '--vad energy': ['--vad', 'energy'], '--vad silero': ['--vad', 'silero'],
            '--level': ['--level', str(c.TRAIN_LEVEL)],
            '--vad energy --level': ['--vad', 'energy', '--level', str(c.TRAIN_LEVEL)],
            '--vad silero --level': ['--vad', 'silero', '--level', str(c.TRAIN_LEVEL)]}
DEFAULT_VARIANTS = ['defaults', '--vad energy', '--level', '--vad energy --level']  # silero: on request (slower)


def babble(others, n_samples, rng, voices=4):
    """The sum of `voices` random stretches of n_samples of the recordings `others`, each at the same level."""
    mixed = np.zeros(n_samples)
    for i in rng.choice(len(others), size=min(voices, len(others)), replace=False):
        start = rng.integers(0, len(others[i]) - n_samples)
        stretch = others[i][start:start + n_samples]
        mixed += stretch / rms(stretch)
    return mixed


def with_silences(audio, sample_rate, rng, tone_dbfs=-70):
    """audio with 2 s of room tone (white noise at tone_dbfs) before and after it and 1 s in its middle."""
    def tone(seconds):
        return rng.normal(0, 10 ** (tone_dbfs / 20), int(seconds * sample_rate))
    middle = len(audio) // 2
    return np.concatenate([tone(2), audio[:middle], tone(1), audio[middle:], tone(2)])


def conditions(piece, others, sample_rate, rng):
    """{name: (degraded piece, its sample rate)} of a piece (n_samples,) of speech."""
    noise = rng.normal(0, 1, len(piece))
    out = {'clean': piece}
    out.update({f'white noise {snr} dB': at_snr(piece, noise, snr) for snr in (20, 10, 5)})
    out.update({f'babble {snr} dB': at_snr(piece, babble(others, len(piece), rng), snr) for snr in (10, 5)})
    out['long silences'] = with_silences(piece, sample_rate, rng)
    out['long silences, room tone -60 dBFS'] = with_silences(piece, sample_rate, rng, -60)
    out['pink noise 10 dB'] = at_snr(piece, coloured_noise(rng, len(piece), 1), 10)
    out['music 10 dB'] = at_snr(piece, music(rng, len(piece), sample_rate), 10)
    room = room_impulse_response(rng, sample_rate, ROOM_RT60, ROOM_DRR_DB)
    out['reverberation 0.5 s'] = scipy.signal.fftconvolve(piece, room)[:len(piece)]
    far = room_impulse_response(rng, sample_rate, FAR_RT60, FAR_DRR_DB)
    out['far field'] = at_snr(scipy.signal.fftconvolve(piece, far)[:len(piece)],
                              coloured_noise(rng, len(piece), 1), FAR_SNR_DB)
    out['codec Opus 6 kbps'] = codec_audio(piece, sample_rate)
    out['low gain x0.05'] = 0.05 * piece
    out['high gain x4'] = 4 * piece
    rates = {name: sample_rate for name in out}
    out['telephone 8 kHz'], rates['telephone 8 kHz'] = telephone_audio(piece, sample_rate), TELEPHONE_RATE
    return {name: (audio, rates[name]) for name, audio in out.items()}


def folder_name(condition):
    return condition.replace(' ', '_').replace('.', '').replace(',', '')


def enrollment_recordings(DB, wav_dir):
    """{speaker: its enrollment recording} of the recordings DB: one per speaker, of two speakers or more (babble
    mixes the other speakers' enrollment recordings)."""
    enroll = {}
    for speaker, files in DB.groupby('speaker_id')['filename']:
        named = [f for f in files if is_enroll_file(f)]
        if len(named) != 1:
            found = f"{len(named)} ({', '.join(Path(f).name for f in named)})" if named else "none"
            raise ValueError(f"{Path(wav_dir) / speaker}: robustness.py takes one enrollment recording a speaker (a "
                             f"wav named like 'enroll*'), found {found}")
        enroll[speaker] = named[0]
    if len(enroll) < 2:
        raise ValueError(f"{wav_dir}: one speaker; the babble conditions mix other speakers' enrollment recordings: "
                         "2 speakers or more are needed")
    return enroll


def check_babble_sources(enroll_audio, enroll, n_samples, sample_rate):
    """Refuse enrollment recordings (n_samples,) no longer than n_samples, the stretches babble takes of them."""
    short = [f"{enroll[s]} ({len(a) / sample_rate:.1f} s)" for s, a in enroll_audio.items() if len(a) <= n_samples]
    if short:
        raise ValueError(f"enrollment recordings must be longer than a test piece with its margins "
                         f"({n_samples / sample_rate:.1f} s; babble mixes stretches of them): {', '.join(short)}")


def recordings(wav_dir, sample_rate, dev):
    """({speaker: enrollment audio}, [(speaker, name, test audio)]) of the speakers of wav_dir.

    dev: a development set from the enrollment recordings alone, to choose settings on without looking at the test
    recordings: each speaker enrolls with the first DEV_ENROLL_SECONDS of its enrollment recording and is tested on
    the rest of it.
    """
    DB = find_files(wav_dir, ('.wav',))
    enroll = enrollment_recordings(DB, wav_dir)
    enroll_audio = {s: read_audio(f, sample_rate) for s, f in enroll.items()}
    check_babble_sources(enroll_audio, enroll, int((PIECE_SECONDS + 2 * TRIM_SECONDS) * sample_rate), sample_rate)
    if dev:
        split = int(DEV_ENROLL_SECONDS * sample_rate)
        return ({s: a[:split] for s, a in enroll_audio.items()},
                [(s, 'dev', a[split:]) for s, a in enroll_audio.items()])
    return enroll_audio, [(s, Path(f).stem, read_audio(f, sample_rate))
                          for f, s in zip(DB['filename'], DB['speaker_id']) if not is_enroll_file(f)]


def write_conditions(wav_dir, out, seed=0, dev=False):
    """Write <out>/<condition>/<speaker>/{enroll.wav, <test>_<k>.wav} of every speaker of wav_dir (dev: see
    recordings); returns the condition names."""
    rng = np.random.default_rng(seed)
    sr = c.SAMPLE_RATE
    step, margin = int(PIECE_SECONDS * sr), int(TRIM_SECONDS * sr)
    enroll_audio, tests = recordings(wav_dir, sr, dev)
    names = None
    for speaker, stem, audio in tests:
        others = [a for s, a in enroll_audio.items() if s != speaker]
        for k in range(int((len(audio) - 2 * margin) // step)):
            piece = audio[k * step:(k + 1) * step + 2 * margin]  # the piece and the margins trimmed again
            degraded_pieces = conditions(piece, others, sr, rng)
            names = list(degraded_pieces)
            for condition, (degraded, rate) in degraded_pieces.items():
                folder = Path(out) / folder_name(condition) / speaker
                folder.mkdir(parents=True, exist_ok=True)
                soundfile.write(folder / f'{stem}_{k}.wav', degraded.astype(np.float32), rate, 'FLOAT')
                if not (folder / 'enroll.wav').exists():
                    soundfile.write(folder / 'enroll.wav', enroll_audio[speaker], sr, 'FLOAT')
    if names is None:
        raise ValueError(f"no test recording under {wav_dir} is longer than {PIECE_SECONDS + 2 * TRIM_SECONDS} s")
    return names


def score_conditions(names, out, checkpoint, device, variants):
    """{(condition, variant): verification summary} of every condition and variant."""
    results = {}
    for condition in names:
        folder = Path(out) / folder_name(condition)
        trials = folder / 'trials.txt'
        run_command('make_trials.py', ['--test-dir', folder, '--suffix', '.wav', '--out', trials])
        for variant in variants:
            flags = VARIANTS[variant]
            print(f"--- {condition}, {variant}")
            try:
                results[condition, variant] = run_command(
                    'verification.py', ['--trials', trials, '--checkpoint', checkpoint, '--device', device, '--json',
                                        '--results-dir', folder / 'results', *flags])
            except FeatureFileError as e:  # e.g. a speech detector that finds too little speech in a piece
                print(f"Not scored: {e}")
                results[condition, variant] = {'error': str(e)}
    return results


def table(results, names, variants):
    """A Markdown table: one row per condition, EER and top-1 of each variant."""
    lines = ['| condition | ' + ' | '.join(f'{v}: EER / top-1' for v in variants) + ' |',
             '|---|' + '---:|' * len(variants)]
    for condition in names:
        cells = ['not scored (a piece: too little speech)' if 'error' in results[condition, v] else
                 f"{results[condition, v]['eer_percent']:.1f} % / {results[condition, v]['top1_percent']:.0f} %"
                 for v in variants]
        lines.append(f'| {condition} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def parse_args(argv=None):
    p = cli.parser(__doc__)
    cli.setting(p, 'CHECKPOINT')
    p.add_argument('--wav-dir', default='../shared/etri/test_wavs', help='<speaker>/{enroll,test}.wav recordings')
    p.add_argument('--out', default='robustness', help='where the degraded recordings, trial lists and table go')
    p.add_argument('--variants', nargs='+', choices=list(VARIANTS), default=DEFAULT_VARIANTS, metavar='VARIANT',
                   help=f"the front ends to score each condition with, of: {', '.join(map(repr, VARIANTS))}")
    p.add_argument('--dev', action='store_true',
                   help=f"a development set: enroll with the first {DEV_ENROLL_SECONDS:.0f} s of each enrollment "
                        "recording and test on pieces of the rest, leaving the test recordings unseen (to choose "
                        "front-end settings on)")
    cli.add_device_arg(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    names = write_conditions(args.wav_dir, args.out, dev=args.dev)
    results = score_conditions(names, args.out, args.checkpoint, args.device, args.variants)
    text = table(results, names, args.variants)
    (Path(args.out) / 'robustness.md').write_text(text + '\n')
    print('\n' + text)
    return results


if __name__ == '__main__':
    cli.run(main)
