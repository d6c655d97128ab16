"""tools/robustness.py: the degraded copies of test recordings, and the table of their scores."""
import numpy as np
import pytest
import soundfile as sf

from tools import robustness

from conftest import voice


def write_recordings(root, pitches=(110, 170, 260)):
    for s, pitch in enumerate(pitches):
        folder = root / f'spk{s}'
        folder.mkdir(parents=True)
        sf.write(folder / 'enroll.wav', voice(6.0, pitch=pitch, seed=s), 16000)
        sf.write(folder / 'test.wav', voice(4.2, pitch=pitch * 1.05, seed=10 + s), 16000)
    return root


def test_noise_is_mixed_at_the_asked_signal_to_noise_ratio():
    rng = np.random.default_rng(0)
    speech, noise = rng.normal(0, 0.1, 16000), rng.normal(0, 3, 16000)
    mixed = robustness.at_snr(speech, noise, 10)
    assert 20 * np.log10(robustness.rms(speech) / robustness.rms(mixed - speech)) == pytest.approx(10)


@pytest.mark.slow
def test_every_condition_is_written_beside_a_clean_enrollment(tmp_path):
    names = robustness.write_conditions(write_recordings(tmp_path / 'wavs'), tmp_path / 'out')
    assert len(names) == 16 and names[0] == 'clean'
    clean = tmp_path / 'out' / 'clean' / 'spk0'
    assert sorted(p.name for p in clean.iterdir()) == ['enroll.wav', 'test_0.wav']  # one 3-s piece (+2 x 0.5 s)
    assert sf.info(clean / 'test_0.wav').duration == pytest.approx(4.0)
    assert sf.info(tmp_path / 'out' / 'telephone_8_kHz' / 'spk0' / 'test_0.wav').samplerate == 8000
    for silences in ('long_silences', 'long_silences_room_tone_-60_dBFS'):
        assert sf.info(tmp_path / 'out' / silences / 'spk0' / 'test_0.wav').duration == pytest.approx(9.0)
    room, _ = sf.read(tmp_path / 'out' / 'reverberation_05_s' / 'spk0' / 'test_0.wav')
    assert len(room) == 64000 and not np.allclose(room, sf.read(clean / 'test_0.wav')[0], atol=1e-3)
    quiet, _ = sf.read(tmp_path / 'out' / 'low_gain_x005' / 'spk0' / 'test_0.wav')
    loud, _ = sf.read(clean / 'test_0.wav')
    assert np.allclose(quiet, 0.05 * loud, atol=1e-7)
    assert np.array_equal(sf.read(clean / 'enroll.wav')[0], sf.read(tmp_path / 'out' / 'babble_5_dB' / 'spk0' /
                                                                   'enroll.wav')[0])


@pytest.mark.slow
def test_only_wav_files_are_taken(tmp_path):
    wavs = write_recordings(tmp_path / 'wavs')
    (wavs / 'spk0' / 'NOTES').write_text('recorded at home')  # no suffix: not a recording
    assert len(robustness.write_conditions(wavs, tmp_path / 'out')) == 16
    assert sorted(p.name for p in (tmp_path / 'out' / 'clean' / 'spk0').iterdir()) == ['enroll.wav', 'test_0.wav']


def test_one_speaker_is_refused_babble_needs_others(tmp_path):
    with pytest.raises(ValueError, match="wavs: one speaker; the babble conditions mix other speakers'"):
        robustness.write_conditions(write_recordings(tmp_path / 'wavs', pitches=(110,)), tmp_path / 'out')


def test_an_enrollment_shorter_than_a_piece_is_refused(tmp_path):
    wavs = write_recordings(tmp_path / 'wavs')
    sf.write(wavs / 'spk1' / 'enroll.wav', voice(3.0, pitch=170, seed=1), 16000)
    with pytest.raises(ValueError, match=r'enrollment recordings must be longer than a test piece with its margins '
                                         r'\(4.0 s; .*\): .*spk1/enroll.wav \(3.0 s\)'):
        robustness.write_conditions(wavs, tmp_path / 'out')


@pytest.mark.parametrize('enroll_files, found', [
    (['enroll.wav', 'enroll_2.wav'], r'found 2 \(enroll.wav, enroll_2.wav\)'),
    ([], 'found none')])
def test_one_enrollment_recording_a_speaker(tmp_path, enroll_files, found):
    wavs = write_recordings(tmp_path / 'wavs')
    (wavs / 'spk2' / 'enroll.wav').unlink()
    for name in enroll_files:
        sf.write(wavs / 'spk2' / name, voice(6.0, pitch=260, seed=2), 16000)
    with pytest.raises(ValueError, match=f"spk2: robustness.py takes one enrollment recording a speaker .*, {found}"):
        robustness.write_conditions(wavs, tmp_path / 'out')


@pytest.mark.slow
def test_the_table_scores_each_condition_with_and_without_vad_and_level(trained, tmp_path):
    results = robustness.main(['--checkpoint', str(trained / 'checkpoint_best.pth'), '--wav-dir',
                               str(write_recordings(tmp_path / 'wavs')), '--out', str(tmp_path / 'out'),
                               '--device', 'cpu', '--variants', 'defaults', '--vad energy --level'])
    assert len(results) == 16 * 2
    text = (tmp_path / 'out' / 'robustness.md').read_text()
    assert text.count("\n") == 2 + 16 and '| long silences |' in text and '--vad energy --level: EER / top-1' in text
    assert '--vad silero' not in text
    assert all(r['trials'] == 9 and r['target_trials'] == 3 for r in results.values())


def test_the_codec_keeps_the_length_and_changes_the_sound():
    speech = voice(3.0, pitch=150, seed=0)
    coded = robustness.codec_audio(speech, 16000)
    assert len(coded) == len(speech)
    assert 0.01 < robustness.rms(coded - speech) / robustness.rms(speech) < 1  # lossy, but the same sound


@pytest.mark.slow
def test_the_dev_set_tests_on_the_enrollment_recordings_alone(tmp_path):
    wavs = write_recordings(tmp_path / 'wavs')
    for s in range(3):  # long enough enrollments: 7 s enrolled, 4 s left for one piece
        sf.write(wavs / f'spk{s}' / 'enroll.wav', voice(11.5, pitch=110 + 60 * s, seed=s), 16000)
    robustness.write_conditions(wavs, tmp_path / 'out', dev=True)
    clean = tmp_path / 'out' / 'clean' / 'spk0'
    assert sorted(p.name for p in clean.iterdir()) == ['dev_0.wav', 'enroll.wav']
    assert sf.info(clean / 'enroll.wav').duration == pytest.approx(robustness.DEV_ENROLL_SECONDS)
    enroll, _ = sf.read(wavs / 'spk0' / 'enroll.wav', dtype='float32')
    piece, _ = sf.read(clean / 'dev_0.wav', dtype='float32')
    start = int(robustness.DEV_ENROLL_SECONDS * 16000)
    assert np.array_equal(piece, enroll[start:start + len(piece)])  # a piece of the enrollment's rest, not the test
