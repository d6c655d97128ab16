"""Stage 0: log Mel-filterbank features of a wav tree, written as the feature tree the other stages read.

<wav-dir>/<speaker>/<name>.wav -> <feat-dir>/<speaker>/<name>.p, a pickle of
{'feat': float64 (n_frames, FILTER_BANK), 'label': speaker}. The tutorial's recipe (settings in
configure.py): load at 16 kHz mono (other rates are resampled, stereo is downmixed),
python_speech_features fbank with 40 filters and 25 ms windows every 10 ms, 20*log10, and the
utterance's mean subtracted from every frame.

    python feature_extraction.py            # TRAIN_WAV_DIR -> TRAIN_FEAT_DIR and TEST_WAV_DIR -> TEST_FEAT_DIR
    python feature_extraction.py --wav-dir my_wavs/train --feat-dir feat_logfbank_nfilt40/train

Files already extracted are skipped unless --overwrite. A file that fails is reported by name
and the others are still written.
"""
import pickle
import sys
from functools import partial
from pathlib import Path

import librosa
import numpy as np
import python_speech_features
import soundfile
from tqdm import tqdm

import cli
import configure as c
from DB_wav_reader import read_DB_structure
from storage import atomic_write


def log_fbank(path, sample_rate=c.SAMPLE_RATE, n_filters=c.FILTER_BANK, win_len=c.WIN_LEN, win_step=c.WIN_STEP):
    """Mean-normalised log Mel-filterbank energies (n_frames, n_filters) float64 of a wav file, in dB."""
    with soundfile.SoundFile(path) as f:  # soundfile only: no slow, deprecated audioread fallback
        audio, _ = librosa.load(f, sr=sample_rate, mono=True)
    if audio.size == 0:
        raise ValueError("no audio samples")
    fb, _ = python_speech_features.fbank(audio, samplerate=sample_rate, nfilt=n_filters, winlen=win_len,
                                         winstep=win_step)
    fb = 20 * np.log10(np.maximum(fb, 1e-5))
    return fb - fb.mean(axis=0)


def extract_tree(wav_dir, feat_dir, overwrite=False):
    """Write the features of every wav under wav_dir into feat_dir; returns {wav path: error} of the failures."""
    DB = read_DB_structure(wav_dir)
    failures = {}
    done = 0
    for wav, speaker in tqdm(zip(DB['filename'], DB['speaker_id']), total=len(DB), desc=str(wav_dir), disable=None):
        out = Path(feat_dir) / Path(wav).relative_to(wav_dir).with_suffix('.p')
        if out.exists() and not overwrite:
            continue
        try:
            record = {'feat': log_fbank(wav), 'label': speaker}
            atomic_write(out, partial(pickle.dump, record))
        except Exception as e:  # a bad file must not stop the others
            failures[wav] = e
            tqdm.write(f"failed: {wav}: {e}")
            continue
        done += 1
    print(f"{wav_dir} -> {feat_dir}: {done} written, {len(DB) - done - len(failures)} already there, "
          f"{len(failures)} failed")
    return failures


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument('--wav-dir', help='wav tree to extract (default: TRAIN_WAV_DIR and TEST_WAV_DIR)')
    p.add_argument('--feat-dir', help='where its features go (required with --wav-dir)')
    p.add_argument('--overwrite', action='store_true', help='extract again files that already have features')
    args = p.parse_args(argv)
    if (args.wav_dir is None) != (args.feat_dir is None):
        p.error('--wav-dir and --feat-dir go together')
    return args


def main(argv=None):
    args = parse_args(argv)
    pairs = [(args.wav_dir, args.feat_dir)] if args.wav_dir else [(c.TRAIN_WAV_DIR, c.TRAIN_FEAT_DIR),
                                                                 (c.TEST_WAV_DIR, c.TEST_FEAT_DIR)]
    failures = {}
    for wav_dir, feat_dir in pairs:
        try:
            failures.update(extract_tree(wav_dir, feat_dir, args.overwrite))
        except (OSError, ValueError) as e:  # a missing tree must not stop the other one
            failures[wav_dir] = e
            print(f"skipped {wav_dir}: {e}")
    if failures:
        sys.exit(f"error: {len(failures)} file(s) failed:\n" + "\n".join(f"  {w}: {e}" for w, e in failures.items()))


if __name__ == '__main__':
    cli.run(main)
