"""Write the trial list of a test folder: every enrollment against every test utterance.

In <test-dir>/<speaker>/, files whose name contains 'enroll' enroll the speaker (one file: that
file; several: the speaker folder, `<speaker>/`, whose enrollment files are averaged) and every
other file is a test utterance, scored against every enrolled speaker. Paths in the list are
relative to the list's folder, the default root of `verification.py --trials`.

    python make_trials.py                                   # TEST_FEAT_DIR -> trials/trials.txt
    python make_trials.py --test-dir ../shared/etri/test_wavs --suffix .wav --piece-seconds 3 \\
        --out trials/etri_official10_3s.txt                 # 3-s pieces of every test.wav

With --piece-seconds S, each test file becomes its non-overlapping S-second pieces, taken after
the TRIM_FRAMES trimmed at its start and up to the trimmed end (a shorter rest is left out).

A path holding white space (a speaker folder "Jane Doe") is written in double quotes (trials.py).
A list that could measure nothing, all target or all non-target trials, is refused.
"""
import os
from pathlib import Path

import soundfile

import configure as c
from DB_wav_reader import find_files, is_enroll_file
from dvector import cli
from dvector.audio import SUFFIXES, is_audio
from dvector.feature_files import FEATURE_SUFFIX, TRIM_SECONDS, FeatureFileError, load_feature_file
from dvector.trials import Trial, write_trials


def parse_args(argv=None):
    p = cli.parser(__doc__)
    cli.setting(p, 'TEST_FEAT_DIR', '--test-dir')
    p.add_argument('--suffix', default=FEATURE_SUFFIX, choices=SUFFIXES, help='the kind of file to take')
    cli.setting(p, 'TRIALS', '--out')
    p.add_argument('--piece-seconds', type=cli.finite_float,
                   help='cut every test file into pieces of this many seconds')
    return p.parse_args(argv)


def duration(path):
    """Seconds of an audio file, or of the frames of a .p feature file."""
    if is_audio(path):
        try:
            return soundfile.info(path).duration
        except (RuntimeError, soundfile.SoundFileError) as e:
            raise FeatureFileError(f"{path}: not a readable audio file ({e})") from e
    return len(load_feature_file(path)[0]) * c.WIN_STEP


def pieces(path, name, seconds):
    """`<name>@<start>-<end>` of the non-overlapping pieces between the trimmed edges of the file at path.

    The edges are configure.py's TRIM_SECONDS: score with a model trained with the same.
    """
    n = int((duration(path) - 2 * TRIM_SECONDS) // seconds)
    return [f"{name}@{TRIM_SECONDS + i * seconds:.2f}-{TRIM_SECONDS + (i + 1) * seconds:.2f}" for i in range(n)]


def enrollments_and_tests(DB, test_dir, base, piece_seconds):
    """({speaker: enroll path}, [(speaker, test path)]), paths relative to `base`."""
    enroll, tests = {}, []
    for speaker, files in DB.groupby('speaker_id')['filename']:
        named = {Path(f): os.path.relpath(f, base) for f in sorted(files)}
        enroll_files = [name for f, name in named.items() if is_enroll_file(f)]
        if len(enroll_files) == 1:
            enroll[speaker] = enroll_files[0]
        elif enroll_files:
            enroll[speaker] = os.path.relpath(Path(test_dir, speaker), base) + '/'
        for f, name in named.items():
            if not is_enroll_file(f):
                tests.extend((speaker, n) for n in (pieces(f, name, piece_seconds) if piece_seconds else [name]))
    return enroll, tests


def make_trials(test_dir, suffix, out, piece_seconds=None):
    """Write every enrollment-against-test trial of test_dir to `out`; returns the trials."""
    base = Path(out).resolve().parent
    enroll, tests = enrollments_and_tests(find_files(test_dir, (suffix,)), test_dir, base, piece_seconds)
    if not enroll or not tests:
        raise ValueError(f"{test_dir}: need files named like 'enroll*' and test files, found {len(enroll)} "
                         f"enrolled speakers and {len(tests)} test utterances")
    trials = [Trial(int(enroll_speaker == speaker), enroll_path, test)
              for speaker, test in tests for enroll_speaker, enroll_path in sorted(enroll.items())]
    n_target = sum(t.label for t in trials)
    if n_target in (0, len(trials)):
        raise ValueError(f"{test_dir}: its list would hold {'no' if n_target == 0 else 'only'} target trials "
                         f"({len(enroll)} enrolled speaker(s): {', '.join(sorted(enroll))}; test utterances of "
                         f"{', '.join(sorted({s for s, _ in tests}))}): EER and minDCF compare target with "
                         "non-target trials, so a list needs both; add speakers with enrollment and test files")
    write_trials(out, trials)
    print(f"{out}: {len(trials)} trials ({n_target} target, {len(trials) - n_target} non-target): "
          f"{len(tests)} test utterances against {len(enroll)} enrolled speakers")
    return trials


def main(argv=None):
    args = parse_args(argv)
    if args.piece_seconds is not None and args.piece_seconds <= 0:
        raise ValueError(f"--piece-seconds must be positive, got {args.piece_seconds}")
    make_trials(args.test_dir, args.suffix, args.out, args.piece_seconds)


if __name__ == '__main__':
    cli.run(main)
