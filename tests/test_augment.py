"""augment_features.py: each transform on hand-made energies, the tutorial path untouched, and the check against
audio."""
import argparse

import numpy as np
import pandas as pd
import pytest
import torch

import configure as c
import train
from dvector.augment_features import (
    ETRI_BAND_MEAN,
    FLOOR_TOLERANCE_DB,
    SPEECH_FBANK_PER_POWER,
    Augmenter,
    add_at_snr,
    band_centres,
    band_offsets,
    band_response,
    codec,
    filter_gains,
    folder_noises,
    reverberate,
    reverberate_with,
    telephone,
    to_energies,
    to_features,
    warp_speed,
)
from dvector.augmentation import (
    AUGMENT_SETTINGS,
    EARLY_MS,
    KINDS,
    TELEPHONE_BAND,
    augment_settings,
    room_impulse_response,
)
from dvector.fbank import FLOOR, feature_settings
from SR_Dataset import DvectorDataset, random_window

from conftest import ETRI, needs_etri, write_audio

N_FILTERS = 40


def recipe_features(energies):
    """What the recipe makes of energies (T, n_filters): floored log, mean-normalised."""
    feat = 20 * np.log10(np.maximum(energies, FLOOR))
    return feat - feat.mean(axis=0)


def quiet_energies(rng, frames=200):
    """Energies like ETRI's: mostly near the floor, some frames of every band below it."""
    energies = FLOOR * 10 ** rng.uniform(-1, 1.5, (frames, N_FILTERS))
    energies[::7] = FLOOR / 10  # below the floor in every band
    return energies


def settings(**changes):
    off = {name.lower(): getattr(c, name) for name in AUGMENT_SETTINGS}
    off.update({k: 0.0 for k in off if k.endswith('_prob')}, noise_dir='', rir_dir='')
    return augment_settings(argparse.Namespace(**{**off, **changes}))


@pytest.mark.parametrize('flag', ['--aug-gain-db', '--aug-noise-snr', '--aug-pause-dbfs'])
def test_decibels_that_would_overflow_are_refused_when_parsed(flag, capsys):
    with pytest.raises(SystemExit):
        train.parse_args([flag, '1000,1000'])
    assert f'argument {flag}: must be decibels from -100 to 100, not 1000,1000' in capsys.readouterr().err
    assert train.parse_args([f'{flag}=-80,10']) is not None


def test_the_floor_gives_back_each_bands_absolute_level():
    energies = quiet_energies(np.random.default_rng(0))
    recovered = to_energies(recipe_features(energies))
    above = energies > FLOOR * 10 ** (FLOOR_TOLERANCE_DB / 20)  # within the tolerance: floor
    np.testing.assert_allclose(recovered[above], energies[above], rtol=1e-9)
    assert (recovered[~above] == 0).all()  # unknown below the floor


def test_bands_without_a_floor_take_the_etri_mean():
    feat = np.random.default_rng(0).normal(0, 3, (200, N_FILTERS))
    offset, floored = band_offsets(feat)
    np.testing.assert_array_equal(offset, ETRI_BAND_MEAN)
    assert not floored.any()
    with pytest.raises(ValueError, match='absolute level of each band'):
        band_offsets(feat[:, :20])


def test_undegraded_energies_give_back_the_window():
    window = recipe_features(quiet_energies(np.random.default_rng(1)))[20:120]  # a window: not of mean 0
    back = to_features(to_energies(window), window)
    np.testing.assert_allclose(back, window, atol=FLOOR_TOLERANCE_DB)  # values that close: at the floor


def test_noise_is_added_at_the_asked_snr_of_raw_power():
    rng = np.random.default_rng(2)
    speech, noise = quiet_energies(rng), rng.uniform(0, 1, (200, N_FILTERS))
    noisy = add_at_snr(speech, noise, 10, noise_per_power=3.0)
    added = noisy - speech
    speech_power, noise_power = speech.sum() / SPEECH_FBANK_PER_POWER, added.sum() / 3.0
    assert 10 * np.log10(speech_power / noise_power) == pytest.approx(10)
    np.testing.assert_allclose(added / noise, added[0, 0] / noise[0, 0])  # one gain for the whole clip


def test_telephone_keeps_the_voice_band_and_floors_what_is_above_4_khz():
    centres = band_centres(N_FILTERS)
    gains = filter_gains(*TELEPHONE_BAND, N_FILTERS)
    above = centres > 4300  # the whole triangle above 4 kHz
    assert (gains[above] == 0).all()
    assert np.all(np.abs(10 * np.log10(gains[(centres > 600) & (centres < 3000)])) < 0.5)
    assert (gains[centres < 150] < 0.1).all()
    feat = recipe_features(quiet_energies(np.random.default_rng(3)))
    out = to_features(telephone(to_energies(feat)), feat)
    assert np.ptp(out[:, above], axis=0).max() == 0  # every frame at the floor: one value a band


def test_the_channel_draw_shares_telephone_codec_and_eq():
    feat = recipe_features(quiet_energies(np.random.default_rng(4)))
    energies = to_energies(feat)
    for telephone_share, codec_share, expected in ((1.0, 0.0, telephone(energies)), (0.0, 1.0, codec(energies))):
        augmenter = Augmenter(settings(aug_channel_prob=1.0, aug_telephone_share=telephone_share,
                                       aug_codec_share=codec_share), feature_settings())
        np.testing.assert_array_equal(augmenter(feat), to_features(expected, feat))
    equalised = Augmenter(settings(aug_channel_prob=1.0, aug_telephone_share=0.0, aug_codec_share=0.0),
                          feature_settings())(feat)  # the rest of the draws: a random EQ of at most AUG_EQ_DB a band
    assert not np.array_equal(equalised, feat) and np.abs(equalised - feat).max() <= 2 * c.AUG_EQ_DB
    with pytest.raises(ValueError, match='together at most 1'):
        settings(aug_telephone_share=0.6, aug_codec_share=0.5)


@pytest.mark.parametrize('n_filters', [N_FILTERS, 64])  # measured at 40 filters' centres, read at any filters'
def test_the_codec_cuts_above_4_khz_and_keeps_the_voice_band_within_5_db(n_filters):
    centres = band_centres(n_filters)
    gains_db = 10 * np.log10(codec(np.ones((1, n_filters)))[0])
    assert (gains_db[centres > 4500] < -15).all()
    assert (np.abs(gains_db[centres < 3500]) < 5).all()


def test_a_low_gain_sinks_quiet_speech_into_the_floor():
    energies = FLOOR * 10 ** np.random.default_rng(4).uniform(0.1, 3, (200, N_FILTERS))
    energies[::5] = 0  # frames at the floor in every band
    feat = recipe_features(energies)
    quiet = to_features(to_energies(feat) * 0.05 ** 2, feat)  # x0.05: -26 dB of amplitude
    np.testing.assert_allclose(quiet, recipe_features(energies * 0.05 ** 2) + feat.mean(axis=0), atol=1e-9)
    assert (quiet == quiet.min(axis=0)).mean() > 0.3


def test_reverberation_is_an_exponential_tail_of_the_asked_length_and_energy():
    impulse = np.zeros((200, 1))
    impulse[0] = 1
    response = reverberate(impulse, rt60=0.5, drr_db=3)[:, 0]
    assert response[0] == pytest.approx(1)
    assert response[1:].sum() == pytest.approx(10 ** -0.3, rel=1e-6)
    assert 10 * np.log10(response[1] / response[51]) == pytest.approx(60, rel=1e-6)  # 50 frames = 0.5 s


def test_a_drawn_rooms_band_response_is_its_energy_at_each_step():
    feature = feature_settings()
    impulse = np.zeros(480)
    impulse[0] = 1.0
    np.testing.assert_allclose(band_response(impulse, feature), [[1.0] * N_FILTERS, [0.0] * N_FILTERS,
                                                                 [0.0] * N_FILTERS], atol=1e-12)
    echo = impulse.copy()
    echo[330] = 0.5  # two steps (and a bit) later, a quarter of the energy
    response = band_response(echo, feature)
    np.testing.assert_allclose(response[[0, 2]], [[1.0] * N_FILTERS, [0.25] * N_FILTERS], atol=1e-12)
    energies = quiet_energies(np.random.default_rng(6))
    np.testing.assert_allclose(reverberate_with(energies, response)[2:], energies[2:] + 0.25 * energies[:-2])


def test_a_synthetic_room_with_early_reflections_keeps_its_direct_to_reverberant_ratio():
    rng = np.random.default_rng(0)
    for reflections in (0, 8):
        rir = room_impulse_response(rng, 16000, 0.5, 3.0, reflections)
        assert rir[0] == 1.0 and 10 * np.log10(1 / np.sum(rir[1:] ** 2)) == pytest.approx(3.0)
    early = np.abs(rir[1:EARLY_MS * 16])
    assert np.sum(early > 5 * np.median(early)) >= 6  # discrete reflections stand out of the diffuse start


def test_drawn_rooms_on_features_repeat_with_the_seed_and_take_room_files(tmp_path):
    feat = recipe_features(quiet_energies(np.random.default_rng(7)))
    drawn = Augmenter(settings(aug_reverb_prob=1.0, aug_rooms='drawn'), feature_settings())
    torch.manual_seed(0)
    first = drawn(feat)
    torch.manual_seed(0)
    np.testing.assert_array_equal(drawn(feat), first)
    assert np.abs(first - feat).mean() > 0.3
    rir = np.zeros(800)
    rir[0], rir[400] = 1.0, 0.7
    write_audio(tmp_path / 'rirs' / 'room.wav', rir, subtype='FLOAT')
    from_files = Augmenter(settings(aug_reverb_prob=1.0, aug_rooms='drawn', rir_dir=str(tmp_path / 'rirs')),
                           feature_settings())
    response = band_response(rir / np.sqrt(1.49), feature_settings())
    np.testing.assert_allclose(from_files(feat), to_features(reverberate_with(to_energies(feat), response), feat),
                               atol=1e-4)  # dB: the file holds the response in float32
    with pytest.raises(ValueError, match="AUG_ROOMS .* 'echo': choose one of decay, drawn"):
        settings(aug_rooms='echo')


def test_speed_moves_the_spectrum_and_the_length():
    centres = band_centres(N_FILTERS)
    window = np.zeros((110, N_FILTERS))
    window[:, 20] = 10  # a peak at one band
    fast = warp_speed(window, 1.1, centres)
    assert len(fast) == 100
    assert abs(centres[fast[50].argmax()] - 1.1 * centres[20]) < np.diff(centres)[20:22].max()


@pytest.mark.slow
def test_each_kind_degrades_and_the_same_seed_repeats_it():
    feat = recipe_features(quiet_energies(np.random.default_rng(5)))
    others = lambda k: [feat[::-1]] * k  # noqa: E731
    strong = {'aug_noise_snr': (0, 0), 'aug_music_snr': (0, 0), 'aug_babble_snr': (0, 0), 'aug_gain_db': (-26, -26)}
    for kind in KINDS:
        augmenter = Augmenter(settings(**{f'aug_{kind}_prob': 1.0}, **strong), feature_settings())
        changes = []
        for seed in range(4):  # hum and brown noise hardly reach the (pre-emphasised) filterbank: other draws do
            torch.manual_seed(seed)
            first = augmenter(feat, others)
            torch.manual_seed(seed)
            np.testing.assert_array_equal(augmenter(feat, others), first)
            assert first.shape == feat.shape and np.isfinite(first).all()
            changes.append(np.abs(first - feat).mean())
        assert max(changes) > 0.3, (kind, changes)


def test_with_every_probability_0_the_window_is_returned_untouched():
    feat = recipe_features(quiet_energies(np.random.default_rng(6)))
    assert Augmenter(settings(), feature_settings())(feat) is feat


def test_the_tutorial_path_draws_and_returns_exactly_what_it_did(tmp_path):
    feats = [np.random.default_rng(i).normal(size=(300, N_FILTERS)).astype(np.float32) for i in range(3)]
    DB = pd.DataFrame({'filename': ['a', 'b', 'c'], 'speaker_id': ['x', 'y', 'x']})
    dataset = DvectorDataset(DB, {'x': 0, 'y': 1}, feature_settings(), feats=feats)
    torch.manual_seed(0)
    items = [dataset[i] for i in range(3)]
    after = torch.get_rng_state()
    torch.manual_seed(0)
    for i, (x, label) in enumerate(items):  # the tutorial's item: one draw, the window, nothing else
        np.testing.assert_array_equal(x[0].numpy().T, random_window(feats[i], c.NUM_WIN_SIZE))
        assert label == [0, 1, 0][i]
    assert torch.equal(torch.get_rng_state(), after)


def test_speed_perturbation_labels_each_speed_as_its_own_speaker():
    feats = [np.random.default_rng(i).normal(size=(300, N_FILTERS)).astype(np.float32) for i in range(2)]
    DB = pd.DataFrame({'filename': ['a', 'b'], 'speaker_id': ['x', 'y']})
    dataset = DvectorDataset(DB, {'x': 0, 'y': 1}, feature_settings(), feats=feats, speeds=(0.9, 1.1))
    torch.manual_seed(0)
    labels = {dataset[1][1] for _ in range(60)}
    assert labels == {1, 3, 5}
    assert all(dataset[0][0].shape == (1, N_FILTERS, c.NUM_WIN_SIZE) for _ in range(10))


def test_noise_dir_files_join_the_sources_by_musans_folders(tmp_path):
    import soundfile
    rng = np.random.default_rng(0)
    for sub in ('noise/free-sound', 'music/jamendo', 'speech/librivox'):
        (tmp_path / sub).mkdir(parents=True)
        soundfile.write(tmp_path / sub / 'x.wav', 0.1 * rng.normal(size=16000).astype(np.float32), 16000)
    sources = folder_noises(tmp_path, feature_settings())
    assert [len(sources[k]) for k in ('noise', 'music', 'babble')] == [1, 1, 1]
    with pytest.raises(FileNotFoundError, match='no audio files'):
        folder_noises(tmp_path / 'noise' / 'free-sound' / 'x.wav', feature_settings())


@needs_etri
@pytest.mark.slow
def test_feature_domain_degradations_are_close_to_degraded_audio():
    from tools import augment_check
    errors = augment_check.compare(ETRI / 'test_wavs')
    assert len(errors) == 11
    for name, (approx, nothing) in errors.items():
        assert approx < 1.0 and approx < 0.7 * nothing, (name, approx, nothing)
