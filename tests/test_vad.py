"""--vad silero: silero-vad's trained detector keeps the speech, drops room tone, and is not trimmed after."""
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from dvector.audio import AudioNote
from dvector.fbank import feature_settings
from dvector.frontend import edge_frames, reading_settings
from dvector.utterance import read_utterance

from conftest import ETRI, REPO, needs_etri


@needs_etri
def test_silero_drops_room_tone_that_the_energy_detector_keeps(tmp_path):
    speech, rate = soundfile.read(ETRI / 'test_wavs' / '230M4087' / 'test.wav', dtype='float32')
    speech = speech[:4 * rate]
    tone = np.random.default_rng(0).normal(0, 10 ** (-60 / 20), 2 * rate).astype(np.float32)
    path = tmp_path / 'spk' / 'padded.wav'
    path.parent.mkdir()
    soundfile.write(path, np.concatenate([tone, speech, tone]), rate)
    frames = {vad: len(read_utterance(path, reading_settings(feature_settings(), vad)))
              for vad in ('no', 'energy', 'silero')}
    # 8 s: 128 000 samples make 1 + ceil((128 000 - 400) / 160) = 799 frames of 400 samples every 160 (the last
    # padded), 50 trimmed at each end; integer arithmetic on a sample count: the same on every machine
    assert frames['no'] == 799 - 2 * 50
    assert frames['silero'] < 450  # the 4 s of tone are gone: at most the speech (4 s) and its pauses are kept
    assert frames['silero'] > 250  # and most of the speech is there
    assert frames['energy'] > 600  # room tone at -60 dBFS is within 30 dB of quiet ETRI speech: kept as speech


def test_silero_speech_is_not_trimmed_again():
    settings = feature_settings()
    assert edge_frames(reading_settings(settings, 'silero')) == 0
    assert (edge_frames(reading_settings(settings, 'energy')) == edge_frames(reading_settings(settings))
            == settings['trim_frames'])


def test_where_silero_finds_too_little_speech_every_frame_is_used_with_a_note(tmp_path):
    """A detector never discards a speaker: noise can hide speech from it, and then the recording is scored whole."""
    path = tmp_path / 'spk' / 'tone.wav'
    path.parent.mkdir()
    soundfile.write(path, np.random.default_rng(0).normal(0, 0.01, 32000).astype(np.float32), 16000)
    with pytest.warns(AudioNote, match=r'tone.wav: silero-vad found 0.00 s of speech in 1.99 s: every frame is used'):
        feat = read_utterance(path, reading_settings(feature_settings(), 'silero'))
    assert len(feat) == 199  # 2 s of frames, none dropped and none trimmed (silero's edges)


@pytest.mark.slow
def test_silero_leaves_torch_on_as_many_cores_as_it_had():
    """Importing silero_vad sets torch's threads to 1 for the whole process: after it, every d-vector would be
    computed on one core. In a fresh process, since an earlier test may have imported it already."""
    code = ('import torch; from dvector import fbank, frontend; torch.set_num_threads(3); frontend.silero_model(); '
            'frontend.silero_frames(torch.zeros(16000).numpy(), fbank.feature_settings(), 98); '
            'print(torch.get_num_threads())')
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == '3', result.stderr
