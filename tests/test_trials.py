"""Trial lists: making them, scoring them (features, wavs, pieces, folders), calibration, and their bad inputs."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

import configure
import enroll
import make_trials
import verification
from dvector.feature_files import FeatureFileError
from dvector.records import load_threshold, save_threshold, threshold_path
from dvector.stage import load_model
from dvector.trials import Trial, quote_path, read_scores, read_trial_list, write_scores
from dvector.utterance import log_fbank

from conftest import embed_arrays, model_args, voice, write_feature, write_feature_tree


def trial_args(trained, trials, tmp_path, *extra):
    return ['--trials', str(trials), '--checkpoint', str(trained / 'checkpoint_best.pth'), '--device', 'cpu',
            '--results-dir', str(tmp_path / 'results'), *extra]


@pytest.fixture
def trial_list(feature_tree, tmp_path):
    """The trial list of the tiny test set: 3 speakers, each test.p against each enroll.p."""
    out = tmp_path / 'lists' / 'trials.txt'
    make_trials.main(['--test-dir', str(feature_tree / 'test'), '--out', str(out)])
    return out


def test_make_trials_writes_every_enrollment_against_every_test(trial_list):
    lines = trial_list.read_text().splitlines()
    assert len(lines) == 9 and sum(line.startswith('1 ') for line in lines) == 3
    assert lines[0].endswith('/test/tst0/enroll.p ../../feat0/test/tst0/test.p') and lines[0].startswith('1 ../')
    assert lines[1].startswith('0 ') and '/tst1/enroll.p' in lines[1] and lines[1].endswith('/tst0/test.p')


def test_scoring_a_trial_list(trained, trial_list, tmp_path, capsys):
    scores_file = tmp_path / 'scores.txt'
    summary = verification.main(trial_args(trained, trial_list, tmp_path, '--scores', str(scores_file)))
    assert (summary['trials'], summary['target_trials'], summary['nontarget_trials']) == (9, 3, 6)
    assert summary['eer_percent'] == 0 and summary['top1_percent'] == 100  # three well-separated voices
    assert 0 <= summary['min_dcf_p0.01'] <= 1 and 0 <= summary['min_dcf_p0.05'] <= 1
    for plot in ('trials_det.png', 'trials_scores.png'):
        assert (tmp_path / 'results' / plot).stat().st_size > 1000
    assert 'EER:               0.00 %' in capsys.readouterr().out
    scored = [line.split() for line in scores_file.read_text().splitlines()]
    assert [s[1:] for s in scored] == [line.split() for line in trial_list.read_text().splitlines()]  # input order
    targets = [float(s[0]) for s in scored if s[1] == '1']
    assert min(targets) > max(float(s[0]) for s in scored if s[1] == '0')


def test_json_output(trained, trial_list, tmp_path, capsys):
    # --precision: the old name of --embed-precision
    verification.main(trial_args(trained, trial_list, tmp_path, '--json', '--embed-precision', 'fp32'))
    summary = json.loads(capsys.readouterr().out)
    assert summary['trials'] == 9 and summary['eer_percent'] == 0 and summary['det_curve'].endswith('trials_det.png')
    assert summary['embedding_dtype'] == 'float32 (onnx)'  # EMBED_BACKEND 'auto' on the CPU, in float32


@pytest.mark.slow
def test_a_trial_scores_as_enrollment_and_single_trial_verification_do(trained, feature_tree, trial_list, tmp_path):
    enroll.main(model_args(trained, feature_tree, tmp_path / 'emb'))
    single, _ = verification.main(model_args(trained, feature_tree, tmp_path / 'emb')
                                  + ['--enroll-speaker', 'tst1', '--test-speaker', 'tst0'])
    scores_file = tmp_path / 'scores.txt'
    verification.main(trial_args(trained, trial_list, tmp_path, '--scores', str(scores_file)))
    line = scores_file.read_text().splitlines()[1]  # tst1's enrollment against tst0's test
    assert '/tst1/enroll.p' in line and float(line.split()[0]) == pytest.approx(single, abs=1e-5)


@pytest.mark.slow
def test_several_enrollment_files_enroll_a_speaker_folder(trained, tmp_path):
    tree = write_feature_tree(tmp_path / 'feat', n_train_speakers=0, n_test_speakers=2)
    write_feature(tree / 'test' / 'tst0' / 'enroll_2.p', np.random.default_rng(5).normal(size=(400, 40)), 'tst0')
    out = tmp_path / 'trials.txt'
    make_trials.main(['--test-dir', str(tree / 'test'), '--out', str(out)])
    assert out.read_text().splitlines()[0] == '1 feat/test/tst0/ feat/test/tst0/test.p'
    enroll.main(model_args(trained, tree, tmp_path / 'emb'))
    enrolled = torch.load(tmp_path / 'emb' / 'tst0.pth', weights_only=True)['embedding']
    single, _ = verification.main(model_args(trained, tree, tmp_path / 'emb')
                                  + ['--enroll-speaker', 'tst0', '--test-speaker', 'tst0'])
    verification.main(trial_args(trained, out, tmp_path, '--scores', str(tmp_path / 'scores.txt')))
    assert float((tmp_path / 'scores.txt').read_text().split()[0]) == pytest.approx(single, abs=1e-5)
    assert enrolled.shape == (128,)


def write_voice(path, pitch, seconds=3.0, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, voice(seconds=seconds, pitch=pitch, seed=seed), 16000)
    return path


@pytest.mark.slow
def test_wavs_and_pieces_are_embedded_from_their_features(trained, tmp_path):
    wav = write_voice(tmp_path / 'a' / 'test.wav', 150)
    write_voice(tmp_path / 'a' / 'enroll.wav', 150, seed=1)
    write_voice(tmp_path / 'b' / 'enroll.wav', 250, seed=2)
    (tmp_path / 'list.txt').write_text('1 a/enroll.wav a/test.wav\n0 b/enroll.wav a/test.wav\n'
                                       '1 a/enroll.wav a/test.wav@0.50-2.00\n0 b/enroll.wav a/test.wav@1.00-2.50\n')
    scores_file = tmp_path / 'scores.txt'
    verification.main(trial_args(trained, tmp_path / 'list.txt', tmp_path, '--scores', str(scores_file),
                                 '--level', 'no'))  # the recipe's features ('auto' turns these loud wavs down)
    scores = [float(line.split()[0]) for line in scores_file.read_text().splitlines()]

    model, _ = load_model(trained / 'checkpoint_best.pth', 'cpu', configure.EMBED_PRECISION)  # as the scripts embed
    feat = log_fbank(wav)
    enrolled = embed_arrays(model, [log_fbank(tmp_path / s / 'enroll.wav')[50:-50] for s in 'ab'], 200)
    tested = embed_arrays(model, [feat[50:-50], feat[50:-50], feat[50:200], feat[100:250]], 100)
    expected = [enrolled[0] @ tested[0], enrolled[1] @ tested[1], enrolled[0] @ tested[2], enrolled[1] @ tested[3]]
    np.testing.assert_allclose(scores, [float(e) for e in expected], atol=1e-5)


def test_make_trials_cuts_test_files_into_pieces(tmp_path):
    write_voice(tmp_path / 'wavs' / 'a' / 'enroll.wav', 150)
    write_voice(tmp_path / 'wavs' / 'a' / 'test.wav', 150, seconds=8.2)
    write_voice(tmp_path / 'wavs' / 'b' / 'enroll.wav', 250)
    out = tmp_path / 'trials.txt'
    make_trials.main(['--test-dir', str(tmp_path / 'wavs'), '--suffix', '.wav', '--piece-seconds', '3',
                      '--out', str(out)])
    # 8.2 s, less 0.5 s at each end: two whole 3-s pieces
    assert out.read_text().splitlines() == ['1 wavs/a/enroll.wav wavs/a/test.wav@0.50-3.50',
                                            '0 wavs/b/enroll.wav wavs/a/test.wav@0.50-3.50',
                                            '1 wavs/a/enroll.wav wavs/a/test.wav@3.50-6.50',
                                            '0 wavs/b/enroll.wav wavs/a/test.wav@3.50-6.50']


def test_a_test_folder_without_enrollments_or_tests_is_refused(tmp_path):
    write_feature(tmp_path / 'test' / 'a' / 'test.p', np.zeros((300, 40)), 'a')
    with pytest.raises(ValueError, match="need files named like 'enroll\\*' and test files, found 0 enrolled"):
        make_trials.main(['--test-dir', str(tmp_path / 'test'), '--out', str(tmp_path / 'trials.txt')])


def test_every_missing_file_is_listed_before_scoring(trained, trial_list, tmp_path):
    lines = trial_list.read_text().splitlines()
    trial_list.write_text('\n'.join(lines + ['1 nothere/enroll.p nothere/test.p', '0 gone/ x/test.wav@0-2']))
    with pytest.raises(FileNotFoundError, match='4 path\\(s\\) of .* not found') as error:
        verification.main(trial_args(trained, trial_list, tmp_path))
    for path in ('nothere/enroll.p', 'nothere/test.p', 'gone', 'x/test.wav'):
        assert path in str(error.value)
    assert not (tmp_path / 'results').exists()


@pytest.mark.parametrize('line, message', [
    ('1 a.p', "line 2: expected '<0|1> <enroll> <test>'"),
    ('2 a.p b.p', "line 2: expected '<0|1> <enroll> <test>'"),
    ('1 a.p spk/', 'line 2: the test side must be a file'),
])
def test_malformed_trial_lines(trained, trial_list, tmp_path, line, message):
    trial_list.write_text(trial_list.read_text().splitlines()[0] + '\n' + line + '\n')
    with pytest.raises(ValueError, match=message):
        verification.main(trial_args(trained, trial_list, tmp_path))


def test_a_piece_past_the_end_or_too_short_is_an_error(trained, feature_tree, tmp_path):
    test = feature_tree / 'test' / 'tst0' / 'test.p'  # 440 frames
    for piece, message in (('@1.00-9.00', 'ends after the last frame'), ('@1.00-1.30', 'too short: 30 frames')):
        (tmp_path / 'list.txt').write_text(f'1 {test.parent}/enroll.p {test}{piece}\n0 {test.parent}/enroll.p '
                                           f'{test}\n')
        with pytest.raises(FeatureFileError, match=message):
            verification.main(trial_args(trained, tmp_path / 'list.txt', tmp_path, '--root', '/'))


@pytest.mark.slow
def test_calibrated_threshold_is_used_by_the_single_trial_mode(trained, feature_tree, trial_list, tmp_path,
                                                              capsys):
    checkpoint = tmp_path / 'model' / 'checkpoint_best.pth'
    checkpoint.parent.mkdir()
    checkpoint.write_bytes((trained / 'checkpoint_best.pth').read_bytes())
    calibrate = trial_args(trained, trial_list, tmp_path, '--calibrate', '--checkpoint', str(checkpoint))
    summary = verification.main(calibrate)
    stored = json.loads(threshold_path(checkpoint).read_text())
    assert stored['threshold'] == summary['eer_threshold'] and stored['trials'] == str(trial_list)

    args = model_args(trained, feature_tree, tmp_path / 'emb') + ['--checkpoint', str(checkpoint)]
    enroll.main(args)
    capsys.readouterr()
    verification.main(args + ['--enroll-speaker', 'tst0', '--test-speaker', 'tst0'])
    assert f"Threshold: {summary['eer_threshold']:.4f} (calibrated, {threshold_path(checkpoint)})" in \
        capsys.readouterr().out
    verification.main(args + ['--enroll-speaker', 'tst0', '--test-speaker', 'tst0', '--threshold', '0.5'])
    assert 'Threshold: 0.5000 (--threshold)' in capsys.readouterr().out

    threshold_path(checkpoint).write_text(json.dumps({**stored, 'model_id': 'old/epoch9'}))  # another model's
    with pytest.raises(ValueError, match='was calibrated for model old/epoch9, not this checkpoint'):
        verification.main(args + ['--enroll-speaker', 'tst0', '--test-speaker', 'tst0'])
    threshold_path(checkpoint).write_text('{not json')
    with pytest.raises(ValueError, match='not a calibrated threshold'):
        verification.main(args + ['--enroll-speaker', 'tst0', '--test-speaker', 'tst0'])


def test_a_corrupt_wav_is_named_when_cutting_pieces(tmp_path):
    write_voice(tmp_path / 'wavs' / 'a' / 'enroll.wav', 150)
    (tmp_path / 'wavs' / 'a' / 'test.wav').write_bytes(b'RIFF but not a wav')
    with pytest.raises(FeatureFileError, match='test.wav: not a readable audio file'):
        make_trials.main(['--test-dir', str(tmp_path / 'wavs'), '--suffix', '.wav', '--piece-seconds', '3',
                          '--out', str(tmp_path / 'trials.txt')])


# ---- Trial lists that say what they hold, outputs checked first, finite scores (issue 22) ----------------------

def test_a_pair_labelled_both_1_and_0_is_refused_with_its_line_numbers(trained, trial_list, tmp_path):
    lines = trial_list.read_text().splitlines()
    flipped = ('0' if lines[0][0] == '1' else '1') + lines[0][1:]
    trial_list.write_text('\n'.join(lines + [flipped]) + '\n')
    with pytest.raises(ValueError, match=rf'{trial_list}: 1 pair\(s\) labelled both 1 and 0, at lines 1 and 10 '):
        verification.main(trial_args(trained, trial_list, tmp_path))


@pytest.mark.slow
def test_repeated_trial_lines_are_scored_once_and_counted(trained, trial_list, tmp_path, capsys):
    once = verification.main(trial_args(trained, trial_list, tmp_path, '--scores', str(tmp_path / 'once.txt')))
    assert once['repeated_lines'] == []
    lines = trial_list.read_text().splitlines()
    trial_list.write_text('\n'.join(lines + lines[:2] + lines[:1]) + '\n')  # line 1 three times, line 2 twice
    capsys.readouterr()
    twice = verification.main(trial_args(trained, trial_list, tmp_path, '--scores', str(tmp_path / 'twice.txt')))
    assert twice['repeated_lines'] == [10, 11, 12]
    for figure in ('trials', 'target_trials', 'eer_percent', 'min_dcf_p0.01', 'top1_percent'):
        assert twice[figure] == once[figure]
    assert (tmp_path / 'twice.txt').read_text() == (tmp_path / 'once.txt').read_text()
    out, err = capsys.readouterr()
    assert 'Trials:            9 (3 target, 6 non-target); 3 repeated line(s) scored once' in out
    assert f'Note: {trial_list}: 3 line(s) repeat an earlier trial (line 10, 11, 12); each pair is scored once' in err


def test_paths_with_spaces_round_trip_through_make_trials_and_verification(trained, tmp_path):
    tree = write_feature_tree(tmp_path / 'feat', n_train_speakers=0, n_test_speakers=2)
    (tree / 'test' / 'tst0').rename(tree / 'test' / 'Jane Doe')
    trials = make_trials.make_trials(tree / 'test', '.p', tmp_path / 'trials.txt')
    assert '1 "feat/test/Jane Doe/enroll.p" "feat/test/Jane Doe/test.p"' in (tmp_path / 'trials.txt').read_text()
    assert read_trial_list(tmp_path / 'trials.txt') == (trials, [])
    summary = verification.main(trial_args(trained, tmp_path / 'trials.txt', tmp_path, '--scores',
                                           str(tmp_path / 'scores.txt')))
    assert summary['trials'] == 4
    assert read_scores(tmp_path / 'scores.txt')[0] == trials


@pytest.mark.parametrize('line, message', [
    ('1 "my speaker/enroll.p test.p', 'line 2: a quote that does not close'),
    ('1 "a b"c.p test.p', 'line 2: a quote that does not close'),
])
def test_a_quote_that_does_not_close_is_refused(trained, trial_list, tmp_path, line, message):
    trial_list.write_text(trial_list.read_text().splitlines()[0] + '\n' + line + '\n')
    with pytest.raises(ValueError, match=message):
        verification.main(trial_args(trained, trial_list, tmp_path))


def test_a_path_that_cannot_be_written_in_a_trial_list_is_refused():
    assert quote_path('a b/c.p') == '"a b/c.p"' and quote_path("o'brien/c.p") == "o'brien/c.p"
    for path in ('"quoted/c.p', 'say "hi" there/c.p', 'two\nlines/c.p'):
        with pytest.raises(ValueError, match='cannot begin with a quote, hold a line break'):
            quote_path(path)


def test_make_trials_refuses_a_list_with_only_target_trials(tmp_path):
    tree = write_feature_tree(tmp_path / 'feat', n_train_speakers=0, n_test_speakers=1)
    with pytest.raises(ValueError, match=r"its list would hold only target trials \(1 enrolled speaker\(s\): tst0;"):
        make_trials.main(['--test-dir', str(tree / 'test'), '--out', str(tmp_path / 'trials.txt')])
    assert not (tmp_path / 'trials.txt').exists()


def test_make_trials_refuses_a_list_with_no_target_trials(tmp_path):
    write_feature(tmp_path / 'test' / 'a' / 'enroll.p', np.zeros((300, 40)), 'a')
    write_feature(tmp_path / 'test' / 'b' / 'test.p', np.zeros((300, 40)), 'b')
    with pytest.raises(ValueError, match='its list would hold no target trials'):
        make_trials.main(['--test-dir', str(tmp_path / 'test'), '--out', str(tmp_path / 'trials.txt')])


def test_a_trial_list_that_is_not_utf8_is_named_with_its_line(trained, trial_list, tmp_path):
    trial_list.write_bytes(trial_list.read_bytes() + b'1 caf\xe9/enroll.p caf\xe9/test.p\n')
    with pytest.raises(ValueError, match=rf'{trial_list}, line 10: not UTF-8 text \(byte 0xe9\)'):
        verification.main(trial_args(trained, trial_list, tmp_path))


@pytest.mark.parametrize('flag, make', [
    ('--results-dir', lambda blocker: blocker / 'results'),
    ('--scores', lambda blocker: blocker / 'scores.txt'),
    ('--scores', lambda blocker: blocker.parent),  # a folder
])
def test_outputs_that_cannot_be_written_are_refused_before_any_scoring(trained, trial_list, tmp_path, monkeypatch,
                                                                       flag, make):
    blocker = tmp_path / 'a_file'
    blocker.write_text('a file where a folder is needed')
    monkeypatch.setattr(verification, 'score_trials', lambda *args: pytest.fail('scored before the check'))
    with pytest.raises(OSError, match=f'cannot write {make(blocker)}'):
        verification.main(trial_args(trained, trial_list, tmp_path, flag, str(make(blocker))))


def test_an_output_that_is_the_trial_list_or_the_checkpoint_is_refused_before_any_scoring(trained, trial_list,
                                                                                         tmp_path, monkeypatch):
    monkeypatch.setattr(verification, 'score_trials', lambda *args: pytest.fail('scored before the check'))
    before = trial_list.read_bytes()
    for out in (trial_list, trial_list.parent / '.' / trial_list.name):
        with pytest.raises(ValueError, match=f"{out} is also an input"):
            verification.main(trial_args(trained, trial_list, tmp_path, '--scores', str(out)))
    assert trial_list.read_bytes() == before


def test_a_file_written_atomically_is_named_when_its_folder_cannot_be_written():
    with pytest.raises(OSError, match=r'^cannot write /proc/scores\.txt: ') as error:
        write_scores('/proc/scores.txt', [], [])  # /proc takes no new files, even from root
    assert '.tmp' not in str(error.value)


def test_scores_and_thresholds_are_finite_or_refused(trained, tmp_path):
    with pytest.raises(ValueError, match=f"the scores to write to {tmp_path / 's.txt'}: NaN or infinite"):
        write_scores(tmp_path / 's.txt', [Trial(1, 'a.p', 'b.p')], [float('nan')])
    assert not (tmp_path / 's.txt').exists()
    (tmp_path / 's.txt').write_text('0.5 1 a.p b.p\nnan 0 a.p c.p\n')
    with pytest.raises(ValueError, match=rf"{tmp_path / 's.txt'}, line 2: the score: NaN or infinite"):
        read_scores(tmp_path / 's.txt')
    ckpt = torch.load(trained / 'checkpoint_best.pth', weights_only=True)
    scoring = {'enroll_frames': 200, 'test_frames': 100, 'score_norm': 'none'}
    checkpoint = tmp_path / 'checkpoint_best.pth'
    with pytest.raises(ValueError, match='the threshold to store in .*checkpoint_best_threshold.json: NaN'):
        save_threshold(checkpoint, ckpt, {'threshold': float('-inf')}, scoring, {'vad': 'no', 'level': 'no'})
    threshold_path(checkpoint).write_text(json.dumps({'threshold': float('nan'), 'model_id': 'x'}))
    with pytest.raises(ValueError, match='checkpoint_best_threshold.json: not a calibrated threshold'):
        load_threshold(checkpoint, ckpt, scoring)


@pytest.mark.parametrize('value', ['nan', 'inf', '-inf'])
def test_a_threshold_of_nan_or_inf_is_refused_by_the_flag(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        verification.parse_args([f'--threshold={value}'])  # =: '-inf' would read as a flag
    assert exit_.value.code == 2
    assert f'argument --threshold: must be a finite number, not {value}' in capsys.readouterr().err


@pytest.mark.slow
def test_a_trial_list_summary_counts_the_audio_notes(trained, tmp_path, capsys):
    for s, pitch in enumerate((120, 220)):
        write_voice(tmp_path / 'wavs' / f'v{s}' / 'enroll.wav', pitch)
        write_voice(tmp_path / 'wavs' / f'v{s}' / 'test.wav', pitch)
    phone = tmp_path / 'wavs' / 'v1' / 'test.wav'
    audio, rate = sf.read(phone)
    sf.write(phone, audio[::2], rate // 2)  # 8 kHz
    make_trials.main(['--test-dir', str(tmp_path / 'wavs'), '--suffix', '.wav', '--out', str(tmp_path / 'trials.txt')])
    capsys.readouterr()
    summary = verification.main(trial_args(trained, tmp_path / 'trials.txt', tmp_path))
    assert summary['audio_notes'] == {'low sample rate': 1}
    out, err = capsys.readouterr()
    assert 'Audio notes:       1 file(s) low sample rate (named above)' in out
    assert err.count(f'Note: {phone}: recorded at 8000 Hz') == 1  # once, though scored against both speakers
