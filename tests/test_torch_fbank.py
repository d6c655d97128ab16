"""The recipe's log-fbank in torch (torch_fbank.fbank_batch) against python_speech_features' numbers, the recipe's:
real ETRI recordings and generated audio of awkward lengths, at both sample rates, on the CPU (and CUDA when here)."""
import numpy as np
import pytest
import soundfile
import torch

from DB_wav_reader import read_DB_structure
from dvector.audio import read_audio
from dvector.fbank import fbank, feature_settings, frame_count, frame_geometry
from dvector.frontend import reading_settings
from dvector.torch_fbank import fbank_batch, log_fbank_batch, torch_fbank
from dvector.utterance import log_fbank_frames
from SR_Dataset import DvectorDataset

from conftest import ETRI, needs_etri

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
FLOAT64_DB, FLOAT32_DB = 1e-9, 1e-3  # dB: measured 6e-13 and 3e-4 at worst here


def settings_at(rate):
    return reading_settings({**feature_settings(), 'sample_rate': rate})


def generated(n_samples, seed):
    """Test audio (n_samples,) float32: a gliding tone at -20 dBFS in noise 20 dB below it, with a stretch of
    digital silence whose frames meet the -100 dB floor."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / 8000
    tone = np.sin(2 * np.pi * rng.uniform(100, 300) * t * (1 + 0.3 * np.sin(3 * t)))
    audio = 0.1 * tone + rng.normal(0, 0.01, n_samples)
    audio[n_samples // 3:n_samples // 2] = 0
    return audio.astype(np.float32)


def awkward_lengths(rate):
    """Lengths in samples at rate: shorter than a frame, one frame, a frame and a sample, whole steps after a frame
    (no padding), and lengths whose last frame is padded with zeros, one of them longer than FRAMES_AT_ONCE frames."""
    length, step = frame_geometry(settings_at(rate))
    return [length // 3, length, length + 1, length + 7 * step, 3 * rate + 1, 3 * rate + step - 1, 31 * rate + 5]


@pytest.fixture(scope='module')
def recipe_features():
    """{rate: (audios, their features by python_speech_features, settings)} of the generated audio (and, at 16 kHz,
    the 20 ETRI test wavs after them when the ETRI data is here), made once for the module."""
    made = {}
    for rate in (16000, 8000):
        audios = [generated(n, seed) for seed, n in enumerate(awkward_lengths(rate))]
        if rate == 16000 and ETRI.is_dir():
            audios += [read_audio(path, rate) for path in sorted((ETRI / 'test_wavs').glob('*/*.wav'))]
        settings = settings_at(rate)
        made[rate] = audios, [log_fbank_frames(audio, settings)[0] for audio in audios], settings
    return made


def assert_same_features(audios, expected, settings, device, dtype, atol):
    made = log_fbank_batch(audios, settings, device, dtype)  # all at once: each must be framed as if alone
    for got, recipe_feat in zip(made, expected, strict=True):
        assert got.device.type == device and got.dtype == dtype
        assert got.shape == recipe_feat.shape
        np.testing.assert_allclose(got.cpu().double().numpy(), recipe_feat, rtol=0, atol=atol)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype, atol', [(torch.float64, FLOAT64_DB), (torch.float32, FLOAT32_DB)])
@pytest.mark.parametrize('rate', [16000, 8000])
def test_generated_audio_of_awkward_lengths_gives_the_recipes_features(recipe_features, rate, dtype, atol, device):
    audios, expected, settings = recipe_features[rate]
    n = len(awkward_lengths(rate))
    assert_same_features(audios[:n], expected[:n], settings, device, dtype, atol)


@needs_etri
@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('dtype, atol', [(torch.float64, FLOAT64_DB), (torch.float32, FLOAT32_DB)])
def test_the_etri_test_wavs_give_the_recipes_features(recipe_features, dtype, atol, device):
    audios, expected, settings = recipe_features[16000]
    n = len(awkward_lengths(16000))
    assert len(audios) == n + 20
    assert_same_features(audios[n:], expected[n:], settings, device, dtype, atol)


@pytest.mark.parametrize('rate', [16000, 8000])
def test_the_energies_are_python_speech_features_own(rate):
    settings = settings_at(rate)
    for n in awkward_lengths(rate):
        audio = generated(n, n)
        expected = fbank(audio, settings)
        assert len(expected) == frame_count(n, *frame_geometry(settings))
        np.testing.assert_allclose(torch_fbank(audio, settings), expected, rtol=1e-11, atol=0)


@pytest.mark.parametrize('front_end', [{'vad': 'energy'}, {'level': -44.0}, {'vad': 'energy', 'level': -30.0}])
def test_vad_and_level_give_the_same_frames_with_the_torch_fbank(front_end):
    settings = reading_settings(feature_settings(), **front_end)
    audio = generated(4 * 16000 + 77, 3)
    numpy_feat, numpy_kept = log_fbank_frames(audio, settings)
    torch_feat, torch_kept = log_fbank_frames(audio, settings, device='cpu')
    np.testing.assert_array_equal(torch_kept, numpy_kept)
    assert numpy_kept.all() == ('vad' not in front_end)  # the energy vad drops the silence
    np.testing.assert_allclose(torch_feat, numpy_feat, rtol=0, atol=FLOAT64_DB)


@pytest.mark.parametrize('audios', [[], [np.zeros(0, np.float32)], [np.zeros((2, 800), np.float32)]],
                         ids=['no utterances', 'empty', 'two channels'])
def test_bad_input_is_refused(audios):
    with pytest.raises(ValueError, match='one or more utterances, each a non-empty 1-D array'):
        fbank_batch(audios, settings_at(16000), 'cpu')


def test_the_batch_refuses_a_front_end_it_does_not_make():
    with pytest.raises(ValueError, match="vad 'no', level 'no'.*use log_fbank_frames"):
        log_fbank_batch([generated(16000, 0)], reading_settings(feature_settings(), vad='energy'), 'cpu')


def test_training_from_audio_with_the_torch_fbank_gives_the_same_windows(tmp_path):
    for speaker in ('a', 'b'):
        (tmp_path / speaker).mkdir()
        for utt in range(2):
            soundfile.write(tmp_path / speaker / f'{utt}.wav', generated(2 * 16000 + 123 * utt, utt), 16000)
    DB = read_DB_structure(tmp_path)
    items = {}
    for fbank_device in (None, 'cpu'):
        dataset = DvectorDataset(DB, {'a': 0, 'b': 1}, feature_settings(), fbank_device=fbank_device)
        torch.manual_seed(0)
        items[fbank_device] = [dataset[i] for i in range(len(dataset))]
    for (recipe_input, label), (torch_input, torch_label) in zip(items[None], items['cpu'], strict=True):
        assert label == torch_label and recipe_input.shape == torch_input.shape == (1, 40, 100)
        torch.testing.assert_close(torch_input, recipe_input, rtol=0, atol=1e-5)  # float32 inputs: to rounding
