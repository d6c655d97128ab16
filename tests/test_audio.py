"""The audio front end (audio.py, frontend.py, utterance.py): every format, refusing silent or broken audio, speech
detection, level."""
import argparse
import pickle
import warnings
from pathlib import Path

import librosa
import numpy as np
import pytest
import python_speech_features
import soundfile as sf
from threadpoolctl import threadpool_limits

import configure as c
import feature_extraction
from DB_wav_reader import read_DB_structure, read_utterances
from dvector import cli, fbank, utterance
from dvector.audio import AUDIO_SUFFIXES, AudioNote, collect_notes, read_audio, require_utterance_file, without_dc
from dvector.fbank import feature_settings
from dvector.feature_files import FeatureFileError, load_feature_record
from dvector.frontend import frame_levels, heard_level, level_gain, reading_settings, speech_level
from dvector.trials import utterance_features
from dvector.utterance import file_features, log_fbank, log_fbank_frames

from conftest import ETRI, needs_etri, padded, voice, write_audio, write_feature

TUTORIAL = reading_settings(feature_settings())
VAD = reading_settings(feature_settings(), vad='energy')


def test_the_formats_soundfile_reads_here_are_accepted():
    assert {'.wav', '.flac', '.ogg'} <= set(AUDIO_SUFFIXES)
    assert ('.mp3' in AUDIO_SUFFIXES) == ('MP3' in sf.available_formats())  # libsndfile 1.1 and later


@pytest.mark.parametrize('suffix', AUDIO_SUFFIXES)
def test_every_accepted_format_gives_the_features_of_the_same_sound(tmp_path, suffix):
    audio = voice(seconds=3.0)
    reference = log_fbank(write_audio(tmp_path / 'reference.wav', audio, subtype='FLOAT'))
    feat = log_fbank(write_audio(tmp_path / f'voice{suffix}', audio))
    assert feat.shape == reference.shape == (299, 40)
    lossless = sf.info(tmp_path / f'voice{suffix}').subtype.startswith('PCM')
    # 16-bit samples move the features by hundredths of a dB; vorbis, opus and mp3 by more, but little overall
    if lossless:
        assert np.abs(feat - reference).max() < 0.05
    else:
        assert np.corrcoef(feat.ravel(), reference.ravel())[0, 1] > 0.95


def test_the_tutorial_recipe_is_librosa_load_and_fbank_bit_for_bit(tmp_path):
    stereo = np.stack([voice(seed=1), voice(pitch=230, seed=2)], axis=1)
    for path, rate in ((tmp_path / 'mono.wav', 16000), (tmp_path / 'stereo44.flac', 44100)):
        write_audio(path, stereo[:, 0] if rate == 16000 else librosa.resample(stereo.T, orig_sr=16000,
                                                                               target_sr=rate).T, rate)
        samples, _ = librosa.load(path, sr=16000, mono=True)  # the tutorial's code, verbatim, on one BLAS thread
        with threadpool_limits(1):  # as fbank.fbank runs it: on several, the last bits change with their number
            fb, _ = python_speech_features.fbank(samples, samplerate=16000, nfilt=40, winlen=0.025)
        fb = 20 * np.log10(np.maximum(fb, 1e-5))
        assert np.array_equal(read_audio(path, 16000), samples)
        assert np.array_equal(log_fbank(path), fb - fb.mean(axis=0))


def test_the_features_are_the_same_on_any_number_of_blas_threads():
    audio = np.concatenate([voice(seed=s) for s in range(4)])
    settings = reading_settings(feature_settings())
    with threadpool_limits(1):
        one = utterance.log_fbank_frames(audio.copy(), settings)[0]
    with threadpool_limits(4):
        assert np.array_equal(utterance.log_fbank_frames(audio.copy(), settings)[0], one)


@pytest.mark.parametrize('name, samples, subtype, message', [
    ('bad.flac', np.zeros(16000), 'PCM_16', 'silent: every sample is 0'),
    ('bad.wav', np.random.default_rng(0).uniform(-1, 1, 16000) * 10 ** (-95 / 20), 'FLOAT',
     r'silent: peak -9[56]\.\d dBFS, below -90 dBFS'),
    ('bad.flac', np.random.default_rng(0).choice([-1, 0, 1], 16000) / 32768, 'PCM_16',
     r'silent: peak -90\.3 dBFS'),  # one 16-bit step: dither
    ('bad.wav', np.r_[voice(), np.nan], 'FLOAT', 'NaN or infinite samples'),
    ('bad.wav', np.r_[voice(), np.inf], 'FLOAT', 'NaN or infinite samples'),
    ('bad.wav', np.zeros(0), 'PCM_16', 'no audio samples'),
    ('bad.wav', np.full(8 * 16000, 0.5), 'PCM_16', 'silent: a DC offset only, every sample of a channel the same'),
    ('bad.wav', 0.5 + np.random.default_rng(0).uniform(-1, 1, 16000) * 10 ** (-95 / 20), 'FLOAT',
     r'silent: peak -9[56]\.\d dBFS, below -90 dBFS'),
], ids=['zeros', 'peak-95dBFS', 'one-16-bit-step', 'NaN', 'inf', 'empty', 'dc-offset', 'dc-offset-and-95dBFS'])
def test_silent_empty_or_non_finite_audio_is_refused_by_name(tmp_path, name, samples, subtype, message):
    path = write_audio(tmp_path / name, samples, subtype=subtype)
    with pytest.raises(FeatureFileError, match=f'{path}: {message}'):
        read_audio(path, 16000)


def test_a_dc_offset_alone_is_silent_with_level_normalisation_too(tmp_path):
    path = write_audio(tmp_path / 'dc.wav', np.full(8 * 16000, 0.5), subtype='PCM_16')
    with pytest.raises(FeatureFileError, match=f'{path}: silent: a DC offset only'):  # was: NaN or infinite values
        log_fbank(path, reading_settings(feature_settings(), vad='energy', level=-44.0))


def test_quiet_speech_is_not_silence(tmp_path):
    from dvector.demo_corpus import random_voice, synthesize_utterance
    rng = np.random.default_rng(0)
    demo = synthesize_utterance(random_voice(rng), 3.0, rng)
    for audio in (voice(), demo):
        for gain in (1, 0.05, 0.05 * 10 ** (-26 / 20)):  # down to -70 dBFS and more below the voice's level
            path = write_audio(tmp_path / 'quiet.wav', audio * gain, subtype='PCM_16')
            assert read_audio(path, 16000).any()
            assert np.isfinite(log_fbank(path)).all()


def test_an_unreadable_audio_file_is_refused_by_name(tmp_path):
    (tmp_path / 'broken.ogg').write_bytes(b'OggS but no more')
    with pytest.raises(FeatureFileError, match=r'broken\.ogg: not a readable audio file'):
        read_audio(tmp_path / 'broken.ogg', 16000)


def test_speech_detection_drops_the_silence_around_the_speech(tmp_path):
    speech = voice(seconds=2.0)
    alone = log_fbank_frames(speech, VAD)[0]
    for noise_db in (None, -80):  # digital silence, and a quiet room
        audio = padded(speech, 1.0, noise_db)
        tutorial, all_frames = log_fbank_frames(audio, TUTORIAL)
        feat, kept = log_fbank_frames(audio, VAD)
        assert all_frames.all() and len(tutorial) == len(kept) == 399  # 4 s: the fbank's frames
        assert len(feat) == kept.sum() and abs(len(feat) - len(alone)) <= 3  # only the speech is kept
        assert not kept[:95].any() and not kept[-95:].any()
        # the kept frames are the tutorial's rows, mean-normalised over themselves
        difference = tutorial[kept] - feat
        assert np.ptp(difference, axis=0).max() < 1e-9 and np.abs(feat.mean(axis=0)).max() < 1e-9


def test_speech_detection_keeps_continuous_speech_and_follows_the_model_settings():
    speech = voice(seconds=2.0)
    feat, kept = log_fbank_frames(speech, VAD)
    assert kept.mean() > 0.95  # the voice's quietest syllable parts are within 15 dB of its loud ones
    settings = reading_settings({**feature_settings(), 'win_step': 0.02}, vad='energy')
    assert len(log_fbank_frames(speech, settings)[1]) == 100  # 20-ms steps


def test_a_piece_holds_the_kept_frames_of_its_stretch_of_the_recording():
    feat = np.arange(6, dtype=float)[:, None].repeat(40, axis=1)  # the kept frames 0..5
    kept = np.array([0, 1, 1, 0, 0, 1, 1, 1, 0, 1], bool)  # of 10 frames of the recording
    piece = utterance_features((feat, kept), 'x.wav', (0.02, 0.08), {**feature_settings(), 'min_frames': 2})
    np.testing.assert_array_equal(piece[:, 0], [1, 2, 3, 4])  # frames 2-7 of the recording, 3 and 4 dropped
    with pytest.raises(FeatureFileError, match=r'x\.wav: piece 0\.03-0\.05 s is too short: 0 frames of speech '
                                               r'\(of 2\), more than 2 are needed'):
        utterance_features((feat, kept), 'x.wav', (0.03, 0.05), {**feature_settings(), 'min_frames': 2})


def test_level_normalisation_makes_quiet_speech_give_the_features_of_loud_speech():
    speech = voice(seconds=3.0)
    target = reading_settings(feature_settings(), level=-30.0)
    loud = log_fbank_frames(speech, target)[0]
    quiet = log_fbank_frames(speech * np.float32(0.001), target)[0]  # -60 dB
    assert np.abs(loud - quiet).max() < 1e-3
    floored = log_fbank_frames(speech * np.float32(0.001), TUTORIAL)[0]
    assert np.abs(loud - floored).mean() > 5  # without it the floor swallows the quiet copy
    # the gain brings the loud frames' RMS to the target (of the samples without their DC offset)
    centred = without_dc(speech)
    gained = centred * np.float32(10 ** ((-30 - speech_level(frame_levels(centred, TUTORIAL))) / 20))
    assert speech_level(frame_levels(gained, TUTORIAL)) == pytest.approx(-30, abs=1e-3)
    np.testing.assert_allclose(loud, log_fbank_frames(gained, TUTORIAL)[0], atol=1e-6)


def test_speech_level_is_that_of_the_speech_not_of_the_silences():
    speech = voice(seconds=2.0)
    level = speech_level(frame_levels(speech, TUTORIAL))
    assert speech_level(frame_levels(padded(speech, 3.0), TUTORIAL)) == pytest.approx(level, abs=0.5)
    whole_file = 10 * np.log10(np.mean(np.square(padded(speech, 3.0), dtype=np.float64)))
    assert whole_file < level - 4  # 2 s of speech in 8 s


def test_front_end_settings_are_checked():
    with pytest.raises(ValueError, match="unknown vad 'yes'"):
        reading_settings(feature_settings(), vad='yes')
    for level in ('loud', 3, 0):
        with pytest.raises(ValueError, match='level'):
            reading_settings(feature_settings(), level=level)
    p = cli.add_audio_args(argparse.ArgumentParser())
    assert (p.parse_args([]).vad, p.parse_args([]).level) == (c.VAD, c.LEVEL) == ('no', 'auto')
    assert p.parse_args(['--level']).level == c.TRAIN_LEVEL
    assert p.parse_args(['--level', '-30']).level == -30.0 and p.parse_args(['--level=no']).level == 'no'
    with pytest.raises(SystemExit):
        p.parse_args(['--level', '6'])


def test_features_are_used_only_with_the_front_end_they_were_made_with(tmp_path):
    old = write_feature(tmp_path / 'old.p', np.zeros((200, 40)), 'x')  # records nothing: the tutorial's
    assert file_features(old, TUTORIAL)[0].shape == (200, 40)
    with pytest.raises(FeatureFileError, match=r"old\.p: features made with vad 'no' and level 'no', but vad "
                                               r"'energy' and level 'no' are asked for"):
        file_features(old, VAD)


def test_audio_trees_list_every_format_and_a_p_wins_over_audio_of_the_same_name(tmp_path):
    for name in ('a/u1.flac', 'a/u2.OGG', 'b/u1.wav', 'b/u1.p', 'b/notes.txt'):
        write_audio(tmp_path / name, voice()) if not name.endswith(('.p', '.txt')) else \
            (tmp_path / name).write_bytes(b'')
    def listed(DB):
        return [str(Path(f).relative_to(tmp_path)) for f in DB['filename']]

    assert listed(read_DB_structure(tmp_path)) == ['a/u1.flac', 'a/u2.OGG', 'b/u1.wav']
    assert listed(read_utterances(tmp_path)) == ['a/u1.flac', 'a/u2.OGG', 'b/u1.p']
    write_audio(tmp_path / 'a' / 'u1.wav', voice())
    with pytest.raises(ValueError, match=r'two audio files of one utterance, .*a/u1\.flac, .*a/u1\.wav: keep one'):
        read_DB_structure(tmp_path)
    (tmp_path / 'a' / 'u1.wav').unlink()
    (tmp_path / 'b' / 'phone.m4a').write_bytes(b'')  # audio that libsndfile cannot read: never skipped silently
    for read in (read_DB_structure, read_utterances):
        with pytest.raises(ValueError, match=r'audio that soundfile cannot read here \(formats: \.wav, \.flac.*\): '
                                             r'.*b/phone\.m4a; convert it, e\.g\. ffmpeg -i phone\.m4a phone\.wav'):
            read(tmp_path)
    with pytest.raises(ValueError, match=r'phone\.m4a; convert it'):
        require_utterance_file(tmp_path / 'b' / 'phone.m4a')


@pytest.mark.slow
@needs_etri
def test_etri_speech_passes_at_its_level_and_at_minus_70_dBFS(tmp_path):
    levels, dropped = [], []
    for path in sorted((ETRI / 'test_wavs').glob('*/*.wav')):
        audio = read_audio(path, 16000)
        levels.append(speech_level(frame_levels(audio, TUTORIAL)))
        dropped.append(1 - log_fbank_frames(audio, VAD)[1].mean())
    assert np.median(levels) == pytest.approx(c.TRAIN_LEVEL, abs=0.5)  # where TRAIN_LEVEL comes from
    assert 0.05 < np.median(dropped) < 0.25  # the pauses and the silence at the ends
    quiet = write_audio(tmp_path / 'quiet.wav', audio * np.float32(0.05), subtype='FLOAT')  # ~ -70 dBFS
    floored = log_fbank(quiet)
    assert (floored == floored.min(axis=0)).mean() > 0.9  # the tutorial's recipe: nearly all at the floor
    level = reading_settings(feature_settings(), level=c.TRAIN_LEVEL)
    np.testing.assert_allclose(log_fbank(quiet, level), log_fbank_frames(audio, level)[0], atol=1e-3)


@pytest.mark.slow
@needs_etri
def test_level_auto_leaves_the_etri_recordings_as_they_are_and_lifts_quiet_ones(tmp_path):
    """LEVEL 'auto' (the default): the tutorial's features exactly at the training data's level, and quiet speech
    brought out of the floor as --level brings it."""
    auto = reading_settings(feature_settings(), level='auto')
    for path in sorted((ETRI / 'test_wavs').glob('*/*.wav')):
        assert np.array_equal(log_fbank(path, auto), log_fbank(path))
    audio = read_audio(path, 16000)
    quiet = write_audio(tmp_path / 'quiet.wav', audio * np.float32(0.05), subtype='FLOAT')  # 26 dB below
    level = reading_settings(feature_settings(), level=c.TRAIN_LEVEL)
    np.testing.assert_array_equal(log_fbank(quiet, auto), log_fbank(quiet, level))
    assert not np.array_equal(log_fbank(quiet, auto), log_fbank(quiet))


@pytest.mark.parametrize('offset_db, gain_db', [(0, 0), (-14.9, 0), (14.9, 0), (-15.1, 15.1), (30, 0), (-40, 40)])
def test_level_auto_lifts_speech_only_far_below_the_training_level(offset_db, gain_db):
    assert c.AUTO_LEVEL_DB == 15.0
    assert level_gain('auto', c.TRAIN_LEVEL + offset_db) == pytest.approx(gain_db)
    assert level_gain(-30.0, -50.0) == pytest.approx(20)  # a target: always


@pytest.mark.parametrize('offset_db, gain_db', [(0, 0), (-14.9, 0), (7.9, 0), (-15.1, 15.1), (8.1, -8.1), (30, -30)])
def test_level_auto_brings_speech_far_from_a_recorded_training_level_to_it_both_ways(offset_db, gain_db, monkeypatch):
    monkeypatch.setattr(c, 'AUTO_LEVEL_ABOVE_DB', 8.0)
    assert level_gain('auto', -20.0 + offset_db, train_level=-20.0) == pytest.approx(gain_db)


def test_a_models_recorded_training_level_turns_loud_speech_down_to_it(tmp_path):
    audio = np.concatenate([np.zeros(8000), voice(seconds=2.0), np.zeros(8000)])
    loud = write_audio(tmp_path / 'loud.wav', audio / np.abs(audio).max() * 0.9, subtype='FLOAT')
    recorded = reading_settings({**feature_settings(), 'train_level': -40.0}, level='auto')
    np.testing.assert_array_equal(log_fbank(loud, recorded), log_fbank(loud, reading_settings(feature_settings(),
                                                                                                level=-40.0)))
    assert np.array_equal(log_fbank(loud, reading_settings(feature_settings(), level='auto')), log_fbank(loud))


def test_the_level_heard_is_the_speech_level_after_the_gain(tmp_path):
    audio = np.concatenate([np.zeros(8000), voice(seconds=2.0), np.zeros(8000)]).astype(np.float32)
    plain = reading_settings(feature_settings())
    level = heard_level(audio, plain)
    assert heard_level(audio * np.float32(10), plain) == pytest.approx(level + 20, abs=0.01)
    assert heard_level(audio, reading_settings(feature_settings(), level=-30.0)) == pytest.approx(-30)
    loud = {**reading_settings(feature_settings(), level='auto'), 'train_level': level - 20}
    assert heard_level(audio, loud) == pytest.approx(level - 20)  # turned down to the training level
    for settings in (plain, loud):  # what feature files record: the features' own measure
        assert utterance.heard_fbank_frames(audio, settings)[2] == heard_level(audio, settings)


def test_feature_files_record_their_level_and_training_takes_the_median(tmp_path):
    settings = reading_settings(feature_settings())
    for k, gain in enumerate((1, 2, 4)):  # 0, 6 and 12 dB up
        wav = write_audio(tmp_path / 'wavs' / f'u{k}.wav', voice() * 0.1 * gain, subtype='FLOAT')
        assert utterance.write_feature_file((wav, 'spk', tmp_path / 'feat' / f'u{k}.p'), settings, False) == 'written'
    feats = sorted((tmp_path / 'feat').glob('*.p'))
    levels = [load_feature_record(f)['speech_dbfs'] for f in feats]
    assert np.diff(levels) == pytest.approx([6.02, 6.02], abs=0.01)
    assert utterance.training_level(feats, settings)[0] == round(levels[1], 1)
    wavs = sorted((tmp_path / 'wavs').glob('*.wav'))
    assert utterance.training_level(wavs, settings)[0] == round(levels[1], 1)  # audio: measured as it is read
    for name, value in (('old', None), ('nan', float('nan')), ('text', 'loud')):  # recorded none, or no level
        record = {'feat': np.zeros((200, 40)), 'label': 'spk', **({} if value is None else {'speech_dbfs': value})}
        (tmp_path / f'{name}.p').write_bytes(pickle.dumps(record))
        assert utterance.training_level([tmp_path / f'{name}.p'], settings) == (
            c.TRAIN_LEVEL, 'TRAIN_LEVEL of configure.py: the feature files record none')


# ---- What the model hears: finite, honest, in bounded memory (issue 22) ----------------------------

def cancelling_stereo(tmp_path, rate=16000):
    """A stereo wav whose channels cancel (right = -left): loud on each channel, silent once down-mixed."""
    left = voice(seconds=2.0)
    return write_audio(tmp_path / 'cancel.wav', np.stack([left, -left], axis=1), rate, subtype='FLOAT')


@pytest.mark.parametrize('rate', [16000, 44100])
def test_stereo_channels_that_cancel_are_silent_as_the_model_hears_them(tmp_path, rate):
    path = cancelling_stereo(tmp_path, rate)
    with pytest.raises(FeatureFileError, match=rf'{path}: silent as the model hears it \(mono, 16000 Hz\): '
                                               r'(every sample is 0|peak -\d+\.\d dBFS)'):
        read_audio(path, 16000)


def test_level_on_cancelling_channels_is_refused_without_an_overflow_warning(tmp_path):
    path = cancelling_stereo(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with pytest.raises(FeatureFileError, match='silent as the model hears it'):
            log_fbank(path, reading_settings(feature_settings(), vad='energy', level=-44.0))
    assert [str(w.message) for w in caught] == []  # numpy's 'overflow encountered in cast' was one, then NaN features


def test_feature_extraction_writes_no_feature_file_of_cancelling_channels(tmp_path):
    cancelling_stereo(tmp_path / 'wavs' / 'spk')
    write_audio(tmp_path / 'wavs' / 'spk' / 'fine.wav', voice())
    failures = feature_extraction.extract_tree(tmp_path / 'wavs', tmp_path / 'feats',
                                               settings=reading_settings(feature_settings(), level=-44.0))
    assert list(failures.values()) == [f"{tmp_path / 'wavs' / 'spk' / 'cancel.wav'}: silent as the model hears it "
                                       "(mono, 16000 Hz): every sample is 0"]
    assert sorted(p.name for p in (tmp_path / 'feats').rglob('*.p')) == ['fine.p']


def test_features_that_are_not_finite_are_never_written(tmp_path, monkeypatch):
    write_audio(tmp_path / 'wavs' / 'spk' / 'a.wav', voice())
    monkeypatch.setattr(utterance, 'fbank', lambda audio, settings: np.full((150, 40), np.nan))
    failures = feature_extraction.extract_tree(tmp_path / 'wavs', tmp_path / 'feats')
    assert list(failures.values()) == [f"{tmp_path / 'wavs' / 'spk' / 'a.wav'}: features: NaN or infinite values"]
    assert not list((tmp_path / 'feats').rglob('*.p'))


def test_a_dc_offset_does_not_fool_level_or_speech_detection():
    speech = padded(voice(seconds=3.0) * np.float32(0.1), 1.0)  # speech near -40 dBFS between silences
    own_recordings = reading_settings(feature_settings(), vad='energy', level=-44.0)  # the README's
    clean, kept = log_fbank_frames(speech, own_recordings)
    offset, kept_offset = log_fbank_frames(speech + np.float32(0.05), own_recordings)
    np.testing.assert_array_equal(kept_offset, kept)  # the silences, at -26 dBFS with the offset, are still dropped
    assert np.abs(offset - clean).max() < 0.01  # dB
    assert speech_level(frame_levels(without_dc(speech + np.float32(0.05)), TUTORIAL)) == pytest.approx(
        speech_level(frame_levels(speech, TUTORIAL)), abs=0.01)


def truncated_wav(tmp_path):
    """A 16-bit wav cut off halfway through its data, as a copy interrupted midway leaves it."""
    whole = write_audio(tmp_path / 'whole.wav', voice(seconds=3.0), subtype='PCM_16').read_bytes()
    (tmp_path / 'cut.wav').write_bytes(whole[:len(whole) // 2])
    return tmp_path / 'cut.wav'


def clipped_wav(tmp_path):
    """Speech amplified until 16 % of its samples are at full scale."""
    speech = voice(seconds=3.0)
    gain = 1 / np.quantile(np.abs(speech), 0.84)
    return write_audio(tmp_path / 'clipped.wav', np.clip(speech * gain, -1, 1), subtype='PCM_16')


@pytest.mark.parametrize('make, kind, message', [
    (truncated_wav, 'truncated', r'cut\.wav: truncated: its header declares 48022 more bytes of audio than the file '
                                 r'holds \(cut off after 1\.50 s\)'),
    (clipped_wav, 'clipped', r'clipped\.wav: clipped: 16\.\d % of its samples are at full scale'),
    (lambda tmp_path: write_audio(tmp_path / 'phone.wav', librosa.resample(voice(3.0), orig_sr=16000,
                                                                           target_sr=8000), 8000),
     'low sample rate', r'phone\.wav: recorded at 8000 Hz: it holds nothing above 4000 Hz, and the model was '
                        r'trained on 16000 Hz audio'),
], ids=['truncated', 'clipped', '8kHz'])
def test_damaged_or_narrowband_audio_is_used_with_a_note_naming_the_file(tmp_path, make, kind, message):
    path = make(tmp_path)
    with pytest.warns(AudioNote, match=message) as noted:
        assert np.isfinite(log_fbank(path)).all()
    assert [w.message.kind for w in noted if isinstance(w.message, AudioNote)] == [kind]


def test_clean_audio_gives_no_note(tmp_path):
    path = write_audio(tmp_path / 'clean.wav', voice(seconds=3.0), subtype='PCM_16')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        log_fbank(path)
    assert [str(w.message) for w in caught] == []


def test_notes_are_collected_once_each_by_kind(tmp_path):
    path = clipped_wav(tmp_path)
    with collect_notes() as notes:
        log_fbank(path)
        log_fbank(path)
    assert list(notes) == ['clipped'] and len(notes['clipped']) == 1


def test_a_long_recording_is_made_into_features_a_chunk_at_a_time(monkeypatch):
    audio = voice(seconds=3.0)
    whole = log_fbank_frames(audio, VAD)
    sizes = []
    real = python_speech_features.fbank
    monkeypatch.setattr(python_speech_features, 'fbank', lambda chunk, **kw: sizes.append(len(chunk)) or
                        real(chunk, **kw))
    monkeypatch.setattr(fbank, 'FRAMES_AT_ONCE', 70)
    chunked = log_fbank_frames(audio, VAD)
    assert max(sizes) == 69 * 160 + 400 and len(sizes) == 5  # 299 frames, 70 at a time
    np.testing.assert_array_equal(chunked[1], whole[1])  # the same frames kept: frame levels are exact
    np.testing.assert_allclose(chunked[0], whole[0], rtol=0, atol=1e-12)  # the fbank to float precision


@pytest.mark.parametrize('rate', [1, 3000])
def test_a_sample_rate_too_low_for_speech_is_refused_before_resampling(tmp_path, rate):
    path = write_audio(tmp_path / 'odd.wav', voice(seconds=1.0)[:max(rate, 100)], rate)  # 1 Hz: 100 s of 16 kHz audio
    message = rf'odd\.wav: recorded at {rate} Hz, below 4000 Hz: it holds no speech band \(or its header is wrong\)'
    with pytest.raises(FeatureFileError, match=message):
        read_audio(path, 16000)
    with pytest.raises(FeatureFileError, match=message):  # training checks every file's header before it starts
        utterance.check_audio_header(path, TUTORIAL)


def test_a_recording_longer_than_max_seconds_is_refused_without_reading_it_all(tmp_path, monkeypatch):
    path = write_audio(tmp_path / 'long.wav', voice(seconds=3.0))
    settings = reading_settings(feature_settings(), max_seconds=2)
    message = (r'long\.wav: longer than 2 s \(3 s or more\), the most a recording may be \(MAX_SECONDS, '
               r'--max-seconds\): cut it into shorter recordings, or raise --max-seconds')
    for read in (lambda: file_features(path, settings), lambda: utterance.check_audio_header(path, settings)):
        with pytest.raises(FeatureFileError, match=message):
            read()
    assert log_fbank(path, reading_settings(feature_settings(), max_seconds=3)).shape == (299, 40)
    monkeypatch.setattr(sf.SoundFile, 'read', lambda *_, **__: pytest.fail('decoded'))  # refused from the header
    with pytest.raises(FeatureFileError, match=message):
        read_audio(path, 16000, max_seconds=2)
