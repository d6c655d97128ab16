"""Stage 0: wav tree -> feature tree, with resampling, downmixing, skipping and failures."""
import pickle

import numpy as np
import pytest
import soundfile as sf

import configure as c
import feature_extraction
from dvector.fbank import feature_settings
from dvector.feature_files import load_feature_file, load_feature_record
from dvector.frontend import reading_settings
from dvector.utterance import log_fbank

from conftest import voice, write_feature


def write_wav_tree(root):
    for s, pitch in enumerate([120, 220]):
        for u in range(2):
            path = root / f'spk{s}' / f'utt{u}.wav'
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, voice(pitch=pitch, seed=u), 16000)
    return root


def test_extracts_a_wav_tree_into_a_feature_tree(tmp_path):
    wavs = write_wav_tree(tmp_path / 'wavs')
    assert feature_extraction.extract_tree(wavs, tmp_path / 'feat') == {}
    files = sorted(p.relative_to(tmp_path / 'feat').as_posix() for p in (tmp_path / 'feat').rglob('*.p'))
    assert files == ['spk0/utt0.p', 'spk0/utt1.p', 'spk1/utt0.p', 'spk1/utt1.p']
    feat, label = load_feature_file(tmp_path / 'feat' / 'spk1' / 'utt0.p')
    assert label == 'spk1' and feat.shape == (149, 40)  # 1.5 s: one frame per 10 ms
    np.testing.assert_allclose(feat.mean(axis=0), 0, atol=1e-9)  # mean-normalised
    assert load_feature_record(tmp_path / 'feat' / 'spk1' / 'utt0.p')['settings'] == {  # how it was made
        'sample_rate': 16000, 'n_filters': 40, 'win_len': 0.025, 'win_step': 0.01, 'vad': 'no', 'level': 'no'}
    assert -60 < load_feature_record(tmp_path / 'feat' / 'spk1' / 'utt0.p')['speech_dbfs'] < 0  # and at what level


def test_skips_files_made_with_the_same_settings_unless_overwrite(tmp_path, capsys):
    wavs = write_wav_tree(tmp_path / 'wavs')
    feature_extraction.extract_tree(wavs, tmp_path / 'feat')
    done, older = tmp_path / 'feat' / 'spk0' / 'utt0.p', tmp_path / 'feat' / 'spk1' / 'utt0.p'
    done.write_bytes(pickle.dumps({**load_feature_record(done), 'label': 'kept'}))  # made with these settings
    write_feature(older, np.zeros((149, 40)), 'older')  # an older feature_extraction.py's: no level, made again
    (tmp_path / 'feat' / 'spk0' / 'utt1.p').write_bytes(b'stale')  # unreadable: extracted again
    capsys.readouterr()
    feature_extraction.extract_tree(wavs, tmp_path / 'feat')
    assert '2 written, 2 already there' in capsys.readouterr().out
    assert load_feature_file(done)[1] == 'kept' and load_feature_file(older)[1] == 'spk1'
    feature_extraction.main(['--wav-dir', str(wavs), '--feat-dir', str(tmp_path / 'feat'), '--overwrite'])
    assert load_feature_file(done)[1] == 'spk0'
    feature_extraction.main(['--wav-dir', str(wavs), '--feat-dir', str(tmp_path / 'feat'), '--vad', 'energy'])
    assert '4 written, 0 already there' in capsys.readouterr().out  # made with other settings: extracted again
    assert load_feature_record(done)['settings']['vad'] == 'energy'


def test_stereo_is_downmixed_and_other_rates_resampled(tmp_path):
    left, right = voice(pitch=120, seed=1), voice(pitch=200, seed=2)
    sf.write(tmp_path / 'stereo.wav', np.stack([left, right], axis=1), 16000, subtype='FLOAT')
    sf.write(tmp_path / 'mean.wav', (left + right) / 2, 16000, subtype='FLOAT')
    np.testing.assert_allclose(log_fbank(tmp_path / 'stereo.wav'),
                               log_fbank(tmp_path / 'mean.wav'), atol=1e-4)
    sf.write(tmp_path / 'mono.wav', voice(), 16000)
    reference = log_fbank(tmp_path / 'mono.wav')
    for rate in (8000, 44100):
        sf.write(tmp_path / f'{rate}.wav', voice(sample_rate=rate), rate)
        feat = log_fbank(tmp_path / f'{rate}.wav')
        assert feat.shape == reference.shape
        # the same sound: the features agree below 4 kHz (above it an 8 kHz file has nothing)
        low = slice(0, 25)
        assert np.corrcoef(feat[:, low].ravel(), reference[:, low].ravel())[0, 1] > 0.9


def test_a_bad_file_is_reported_and_the_others_are_written(tmp_path):
    wavs = write_wav_tree(tmp_path / 'wavs')
    (wavs / 'spk0' / 'broken.wav').write_bytes(b'RIFF but not really a wav file')
    sf.write(wavs / 'spk1' / 'empty.wav', np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(SystemExit) as error:
        feature_extraction.main(['--wav-dir', str(wavs), '--feat-dir', str(tmp_path / 'feat')])
    assert 'error: 2 file(s) failed' in str(error.value)
    assert 'broken.wav: not a readable audio file' in str(error.value)
    assert 'empty.wav: no audio samples' in str(error.value)
    assert len(list((tmp_path / 'feat').rglob('*.p'))) == 4
    assert not list((tmp_path / 'feat').rglob('*.tmp'))


def test_every_audio_format_is_extracted_and_a_silent_file_is_refused_by_name(tmp_path):
    wavs = write_wav_tree(tmp_path / 'wavs')
    sf.write(wavs / 'spk0' / 'utt2.flac', voice(pitch=130), 16000)
    sf.write(wavs / 'spk1' / 'utt2.ogg', voice(pitch=230), 16000)
    sf.write(wavs / 'spk1' / 'silent.wav', np.zeros(24000, np.float32), 16000)
    with pytest.raises(SystemExit) as error:
        feature_extraction.main(['--wav-dir', str(wavs), '--feat-dir', str(tmp_path / 'feat')])
    assert str(error.value) == f"error: 1 file(s) failed:\n  {wavs / 'spk1' / 'silent.wav'}: silent: every sample is 0"
    written = sorted(p.relative_to(tmp_path / 'feat').as_posix() for p in (tmp_path / 'feat').rglob('*.p'))
    assert written == ['spk0/utt0.p', 'spk0/utt1.p', 'spk0/utt2.p', 'spk1/utt0.p', 'spk1/utt1.p', 'spk1/utt2.p']
    np.testing.assert_array_equal(load_feature_file(tmp_path / 'feat' / 'spk1' / 'utt2.p')[0],
                                  log_fbank(wavs / 'spk1' / 'utt2.ogg'))


def test_features_record_the_speech_detection_and_level_they_were_made_with(tmp_path):
    wavs = write_wav_tree(tmp_path / 'wavs')
    feature_extraction.main(['--wav-dir', str(wavs), '--feat-dir', str(tmp_path / 'feat'), '--vad', 'energy',
                             '--level', '-30'])
    record = load_feature_record(tmp_path / 'feat' / 'spk0' / 'utt0.p')
    assert (record['settings']['vad'], record['settings']['level']) == ('energy', -30.0)
    settings = reading_settings(feature_settings(), 'energy', -30.0)
    np.testing.assert_array_equal(record['feat'], log_fbank(wavs / 'spk0' / 'utt0.wav', settings))


def test_missing_or_empty_wav_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='folder not found: .*nowhere'):
        feature_extraction.extract_tree(tmp_path / 'nowhere', tmp_path / 'feat')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match=r'no \.wav/\.flac/\.ogg/.* files under'):
        feature_extraction.extract_tree(tmp_path / 'empty', tmp_path / 'feat')


def test_no_arguments_extracts_both_configured_trees_even_if_one_is_missing(tmp_path, monkeypatch):
    write_wav_tree(tmp_path / c.TEST_WAV_DIR)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as error:
        feature_extraction.main([])
    assert f'{c.TRAIN_WAV_DIR}: folder not found' in str(error.value)
    assert len(list((tmp_path / c.TEST_FEAT_DIR).rglob('*.p'))) == 4


def test_wav_dir_needs_feat_dir():
    with pytest.raises(SystemExit):
        feature_extraction.parse_args(['--wav-dir', 'x'])
