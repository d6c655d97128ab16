"""The stages on audio: enrollment and test trees of audio files, --test-file, trial lists of audio, --vad/--level."""
import json
import re

import numpy as np
import pytest
import torch

import configure as c
import enroll
import feature_extraction
import identification
import verification
from dvector.audio import AUDIO_SUFFIXES, AudioNote
from dvector.embedding import embed_file
from dvector.feature_files import FeatureFileError
from dvector.frontend import reading_settings
from dvector.stage import load_model

from conftest import decision_is_right, model_args, padded, run_ok, voice, write_audio

PITCHES = (110, 170, 260)
# each speaker's enrollment and test in other formats; mp3 where this libsndfile has it
FORMATS = (('.wav', '.flac'), ('.flac', '.ogg'), ('.ogg', '.mp3' if '.mp3' in AUDIO_SUFFIXES else '.wav'))


@pytest.fixture(scope='module')
def audio_tree(tmp_path_factory):
    """<root>/test/v<N>/enroll.<suffix> (4 s of voice between 0.5 s of silence) and test.<suffix> (3 s)."""
    root = tmp_path_factory.mktemp('audio')
    for s, (pitch, (enroll_suffix, test_suffix)) in enumerate(zip(PITCHES, FORMATS)):
        write_audio(root / 'test' / f'v{s}' / f'enroll{enroll_suffix}', padded(voice(4.0, pitch=pitch, seed=s), 0.5))
        write_audio(root / 'test' / f'v{s}' / f'test{test_suffix}', voice(3.0, pitch=pitch, seed=10 + s))
    return root


@pytest.fixture(scope='module')
def extracted(audio_tree, tmp_path_factory):
    """The features of audio_tree written by feature_extraction.py: <root>/test/v<N>/{enroll,test}.p."""
    root = tmp_path_factory.mktemp('extracted')
    assert feature_extraction.extract_tree(audio_tree / 'test', root / 'test') == {}
    return root


def embeddings(folder):
    return {p.stem: torch.load(p, weights_only=True) for p in sorted(folder.glob('*.pth'))}


@pytest.mark.slow
def test_an_audio_tree_enrolls_as_its_extracted_features_do(trained, audio_tree, extracted, tmp_path):
    enroll.main(model_args(trained, audio_tree, tmp_path / 'audio') + ['--level', 'no'])
    enroll.main(model_args(trained, extracted, tmp_path / 'features') + ['--level', 'no'])
    from_audio, from_features = embeddings(tmp_path / 'audio'), embeddings(tmp_path / 'features')
    assert sorted(from_audio) == ['v0', 'v1', 'v2']
    assert from_audio['v1']['files'][0].endswith('v1/enroll.flac')
    for speaker in from_audio:
        torch.testing.assert_close(from_audio[speaker]['embedding'], from_features[speaker]['embedding'])
    # with the defaults, the model records its training level (TRAIN_LEVEL: its feature files record none), and its
    # loud audio is turned down to it when read; features extracted without a model were not: enrolling them says so
    assert torch.load(trained / 'checkpoint_best.pth', weights_only=True)['feature']['train_level'] == c.TRAIN_LEVEL
    with pytest.warns(AudioNote, match=r"enroll.p: features made at -\d+ dBFS, far from the model's training level "
                                       r"\(-44 dBFS\)"):
        enroll.main(model_args(trained, extracted, tmp_path / 'loud'))


@pytest.mark.slow
def test_test_file_scores_one_audio_file_from_the_command_line(trained, audio_tree, extracted, tmp_path):
    args = model_args(trained, audio_tree, tmp_path / 'emb') + ['--level', 'no']  # the features' level (above)
    enroll.main(args)
    test = audio_tree / 'test' / 'v1' / f'test{FORMATS[1][1]}'
    out = run_ok(tmp_path, 'verification.py', *args, '--enroll-speaker', 'v1', '--test-file', str(test))
    assert f'Test utterance:             {test}\n' in out and decision_is_right(out)
    score = float(re.search(r'Score: ([-\d.]+)', out)[1])
    same, _ = verification.main(args + ['--enroll-speaker', 'v1', '--test-file', str(extracted / 'test' / 'v1' /
                                                                                      'test.p')])
    assert score == pytest.approx(same, abs=1e-4)  # the audio and its extracted features score alike
    out = run_ok(tmp_path, 'identification.py', *args, '--test-file', str(test))
    assert 'Predicted speaker: v' in out and 'True speaker' not in out and 'Best scores: v' in out


@pytest.mark.slow
def test_test_file_that_is_missing_or_not_audio(trained, audio_tree, tmp_path):
    args = model_args(trained, audio_tree, tmp_path / 'emb')
    enroll.main(args)
    with pytest.raises(FileNotFoundError, match='file not found: .*nothere.wav'):
        identification.main(args + ['--test-file', str(tmp_path / 'nothere.wav')])
    (tmp_path / 'notes.txt').write_text('hello')
    with pytest.raises(ValueError, match=r'notes\.txt: neither features \(\.p\) nor audio \(\.wav, \.flac'):
        verification.main(args + ['--enroll-speaker', 'v0', '--test-file', str(tmp_path / 'notes.txt')])
    with pytest.raises(SystemExit):
        identification.parse_args(['--all', '--test-file', 'a.wav'])
    with pytest.raises(SystemExit):
        verification.parse_args(['--trials', 'list.txt', '--test-file', 'a.wav'])


def test_a_p_file_wins_over_audio_of_the_same_name(trained, audio_tree, extracted, tmp_path):
    folder = tmp_path / 'test' / 'v0'
    folder.mkdir(parents=True)
    for name in ('enroll.wav', 'test.flac'):
        (folder / name).write_bytes((audio_tree / 'test' / 'v0' / name).read_bytes())
    (folder / 'enroll.p').write_bytes((extracted / 'test' / 'v0' / 'enroll.p').read_bytes())
    enroll.main(model_args(trained, tmp_path, tmp_path / 'emb'))
    assert [f.rsplit('/', 1)[1] for f in embeddings(tmp_path / 'emb')['v0']['files']] == ['enroll.p']


def test_a_silent_enrollment_file_is_refused_by_name_and_nothing_is_written(trained, audio_tree, tmp_path):
    write_audio(tmp_path / 'test' / 'quiet' / 'enroll.wav', np.zeros(48000))
    with pytest.raises(FeatureFileError, match=r'quiet/enroll\.wav: silent: every sample is 0'):
        enroll.main(model_args(trained, tmp_path, tmp_path / 'emb'))
    assert not (tmp_path / 'emb').exists()


@pytest.mark.slow
def test_speech_detection_and_level_in_enrollment(trained, audio_tree, extracted, tmp_path):
    enroll.main(model_args(trained, audio_tree, tmp_path / 'plain'))
    enroll.main(model_args(trained, audio_tree, tmp_path / 'vad') + ['--vad', 'energy'])
    plain, detected = embeddings(tmp_path / 'plain'), embeddings(tmp_path / 'vad')
    for speaker in plain:  # 0.5 s of silence at each end: trimmed without vad, dropped (and 0.5 s of speech
        #                    trimmed) with it; similar d-vectors, not the same
        assert 0.9 < float(plain[speaker]['embedding'] @ detected[speaker]['embedding']) < 1 - 1e-6
    enroll.main(model_args(trained, audio_tree, tmp_path / 'level') + ['--level', '-30'])
    assert embeddings(tmp_path / 'level').keys() == plain.keys()
    with pytest.raises(FeatureFileError, match=r"enroll\.p: features made with vad 'no' and level 'no', but vad "
                                               r"'energy'"):  # features made without it cannot get it
        enroll.main(model_args(trained, extracted, tmp_path / 'vad') + ['--vad', 'energy'])


def test_a_single_trial_reads_the_test_side_as_its_speaker_was_enrolled(trained, audio_tree, tmp_path):
    args = model_args(trained, audio_tree, tmp_path / 'emb')
    enroll.main(args + ['--vad', 'energy', '--level'])
    record = embeddings(tmp_path / 'emb')['v1']
    assert (record['enroll_frames'], record['vad'], record['level']) == (c.ENROLL_FRAMES, 'energy', c.TRAIN_LEVEL)
    test = audio_tree / 'test' / 'v1' / f'test{FORMATS[1][1]}'
    score, _ = verification.main(args + ['--enroll-speaker', 'v1', '--test-file', str(test)])  # no --vad, --level
    model, ckpt = load_model(trained / 'checkpoint_best.pth', 'cpu', c.EMBED_PRECISION)  # as the scripts embed
    tested = embed_file(model, reading_settings(ckpt['feature'], 'energy', c.TRAIN_LEVEL), test, c.TEST_FRAMES, 'cpu')
    assert score == pytest.approx(float(record['embedding'] @ tested), abs=1e-5)
    with pytest.raises(ValueError, match=f"--vad no: v1 was enrolled with --enroll-frames {c.ENROLL_FRAMES} --vad "
                                         f"energy --level {c.TRAIN_LEVEL}, and a single trial"):
        verification.main(args + ['--enroll-speaker', 'v1', '--test-file', str(test), '--vad', 'no'])


def test_identification_notes_test_audio_read_otherwise_than_the_speakers_were_enrolled(trained, audio_tree, tmp_path,
                                                                                        capsys):
    args = model_args(trained, audio_tree, tmp_path / 'emb')
    enroll.main(args + ['--vad', 'energy'])
    test = str(audio_tree / 'test' / 'v1' / f'test{FORMATS[1][1]}')
    capsys.readouterr()
    identification.main(args + ['--test-file', test, '--vad', 'energy'])
    assert 'Note:' not in capsys.readouterr().err
    identification.main(args + ['--test-file', test])
    assert ("Note: the speakers were enrolled with --vad energy --level auto, the test side is read with --vad no "
            "--level auto") in capsys.readouterr().err


@pytest.mark.slow
def test_trial_lists_of_audio_pieces_with_speech_detection_and_level(trained, audio_tree, tmp_path, capsys):
    lines = [f"{int(e == t)} test/v{e}/enroll{FORMATS[e][0]} test/v{t}/test{FORMATS[t][1]}{piece}"
             for e in range(3) for t in range(3) for piece in ('', '@0.50-2.50')]
    (audio_tree / 'list.txt').write_text('\n'.join(lines) + '\n')
    base = ['--trials', str(audio_tree / 'list.txt'), '--checkpoint', str(trained / 'checkpoint_best.pth'),
            '--device', 'cpu', '--results-dir', str(tmp_path / 'results'), '--json']
    for front_end in ([], ['--vad', 'energy'], ['--vad', 'energy', '--level']):
        capsys.readouterr()
        verification.main(base + front_end)
        summary = json.loads(capsys.readouterr().out)
        assert summary['trials'] == 18 and summary['target_trials'] == 6
    assert (summary['vad'], summary['level']) == ('energy', c.TRAIN_LEVEL)
    write_audio(audio_tree / 'silent.wav', np.zeros(48000))
    (audio_tree / 'list.txt').write_text(f"1 test/v0/enroll{FORMATS[0][0]} silent.wav\n" + '\n'.join(lines))
    with pytest.raises(FeatureFileError, match=r'silent\.wav: silent: every sample is 0'):
        verification.main(base)
