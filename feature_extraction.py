"""Stage 0: log Mel-filterbank features of an audio tree, written as the feature tree the other stages read.

<wav-dir>/<speaker>/<name>.wav (or .flac, .ogg, .mp3, ...: audio.AUDIO_SUFFIXES) ->
<feat-dir>/<speaker>/<name>.p, a pickle of {'feat': float64 (n_frames, FILTER_BANK), 'label':
speaker, 'settings': how it was made, 'speech_dbfs': the speech level it was made at}. The tutorial's recipe
(settings in configure.py; the code in dvector/fbank.py and utterance.py): load at 16 kHz mono (other rates are
resampled, stereo is downmixed), python_speech_features fbank with 40 filters and 25 ms windows every 10 ms,
20*log10, and the utterance's mean subtracted from every frame; with --vad energy the frames far below the
utterance's loud frames are dropped first, and with --level a gain brings the speech to a level.

    python feature_extraction.py            # TRAIN_WAV_DIR -> TRAIN_FEAT_DIR and TEST_WAV_DIR -> TEST_FEAT_DIR
    python feature_extraction.py --wav-dir my_wavs/train --feat-dir my_feats/train   # one tree of speaker folders
    python feature_extraction.py --wav-dir my_wavs/train --feat-dir my_feats/train --vad energy --level

Files already extracted with the same --vad and --level are skipped unless --overwrite (the others
are extracted again). A file that fails (unreadable, empty, silent, NaN) is reported by name and
the others are still written. A tree of hundreds of files is shared among worker processes, one per CPU
(dvector/parallel.py); the features are the same as in one process.
"""
import sys
from collections import Counter
from functools import partial
from pathlib import Path

from tqdm import tqdm

import configure as c
from DB_wav_reader import read_DB_structure
from dvector import cli
from dvector.fbank import feature_settings
from dvector.feature_files import FEATURE_SUFFIX
from dvector.frontend import reading_settings
from dvector.parallel import process_map
from dvector.utterance import write_feature_file


def extract_tree(wav_dir, feat_dir, overwrite=False, settings=None):
    """Write the features of every audio file under wav_dir into feat_dir, over the CPUs (parallel.process_map);
    returns {path: message} of the failures.

    settings: a frontend.reading_settings(); default configure.py's feature settings, without vad or level.
    """
    settings = settings or reading_settings(feature_settings())
    DB = read_DB_structure(wav_dir)
    jobs = [(wav, speaker, Path(feat_dir) / Path(wav).relative_to(wav_dir).with_suffix(FEATURE_SUFFIX))
            for wav, speaker in zip(DB['filename'], DB['speaker_id'])]
    outcomes = Counter()
    failures = {}
    write = partial(write_feature_file, settings=settings, overwrite=overwrite)
    for (wav, _, _), outcome in zip(jobs, process_map(write, jobs, desc=str(wav_dir))):
        if outcome in ('written', 'there'):
            outcomes[outcome] += 1
        else:
            failures[wav] = outcome
            tqdm.write(f"failed: {outcome}")
    print(f"{wav_dir} -> {feat_dir}: {outcomes['written']} written, {outcomes['there']} already there, "
          f"{len(failures)} failed")
    return failures


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument('--wav-dir', help='audio tree to extract (default: TRAIN_WAV_DIR and TEST_WAV_DIR)')
    p.add_argument('--feat-dir', help='where its features go (required with --wav-dir)')
    p.add_argument('--overwrite', action='store_true', help='extract again files that already have features')
    cli.add_audio_args(p)
    args = p.parse_args(argv)
    if (args.wav_dir is None) != (args.feat_dir is None):
        p.error('--wav-dir and --feat-dir go together')
    return args


def main(argv=None):
    args = parse_args(argv)
    pairs = [(args.wav_dir, args.feat_dir)] if args.wav_dir else [(c.TRAIN_WAV_DIR, c.TRAIN_FEAT_DIR),
                                                                 (c.TEST_WAV_DIR, c.TEST_FEAT_DIR)]
    settings = reading_settings(feature_settings(), args.vad, args.level, args.max_seconds)
    failures = {}
    for wav_dir, feat_dir in pairs:
        try:
            failures.update(extract_tree(wav_dir, feat_dir, args.overwrite, settings))
        except (OSError, ValueError) as e:  # a missing tree must not stop the other one
            failures[wav_dir] = f"{wav_dir}: {e}"
            print(f"skipped {wav_dir}: {e}")
    if failures:
        sys.exit(f"error: {len(failures)} file(s) failed:\n" + "\n".join(f"  {m}" for m in failures.values()))


if __name__ == '__main__':
    cli.run(main)
