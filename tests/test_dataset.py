"""Network inputs: random training windows, looping of short utterances, padded validation batches."""
import numpy as np
import torch

from DB_wav_reader import read_feats_structure
from dvector.fbank import feature_settings
from SR_Dataset import DvectorDataset, collate_fn_feat_padded, random_window, spec_augment, to_input

from conftest import write_feature


def frames(n):
    """(n, 40) features whose frame i holds the value i, so that a window shows where it came from."""
    return np.arange(n, dtype=float)[:, None].repeat(40, axis=1)


def test_window_is_a_contiguous_slice_within_the_utterance():
    torch.manual_seed(0)
    starts = set()
    for _ in range(1000):
        window = random_window(frames(150), 100)
        assert window.shape == (100, 40)
        start = int(window[0, 0])
        np.testing.assert_array_equal(window[:, 0], np.arange(start, start + 100))
        starts.add(start)
    assert starts == set(range(50))  # every start in [0, n - win), as the tutorial draws them


def test_short_utterances_are_looped():
    window = random_window(frames(30), 100)  # looped to 240 frames: 0..29, 0..29, ...
    assert window.shape == (100, 40)
    np.testing.assert_array_equal(window[:, 0], (int(window[0, 0]) + np.arange(100)) % 30)
    window = random_window(frames(100), 100)  # an utterance of exactly one window is looped too
    assert window.shape == (100, 40)


def test_windows_are_reproducible_with_a_seed():
    torch.manual_seed(3)
    first = [random_window(frames(500), 100)[0, 0] for _ in range(5)]
    torch.manual_seed(3)
    assert first == [random_window(frames(500), 100)[0, 0] for _ in range(5)]


def test_network_input_is_channel_frequency_time():
    x = to_input(frames(7))
    assert x.shape == (1, 40, 7) and x.dtype == torch.float32
    assert x[0, 5, 3] == 3


def test_dataset_items(tmp_path):
    write_feature(tmp_path / 'a' / 'u.p', frames(300), 'a')
    write_feature(tmp_path / 'b' / 'u.p', frames(260), 'b')
    DB = read_feats_structure(tmp_path)
    train_set = DvectorDataset(DB, {'a': 0, 'b': 1}, feature_settings(), random_windows=True)
    x, label = train_set[1]
    assert x.shape == (1, 40, 100) and label == 1
    whole = DvectorDataset(DB, {'a': 0, 'b': 1}, feature_settings(), random_windows=False)
    assert whole[0][0].shape == (1, 40, 200) and whole[1][0].shape == (1, 40, 160)  # trimmed, uncut


def test_validation_batches_are_padded_by_repetition():
    batch = [(to_input(frames(5)), 0), (to_input(frames(2)), 1), (to_input(frames(3)), 2)]
    inputs, labels = collate_fn_feat_padded(batch)
    assert inputs.shape == (3, 1, 40, 5) and labels.tolist() == [0, 1, 2]
    assert inputs[0, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert inputs[1, 0, 0].tolist() == [0, 1, 0, 1, 0]
    assert inputs[2, 0, 0].tolist() == [0, 1, 2, 0, 1]


def test_spec_augment_masks_one_band_and_one_run_of_frames():
    torch.manual_seed(0)
    feat = np.random.default_rng(0).normal(size=(200, 40)) + 5  # no zeros of its own
    widths = set()
    for _ in range(300):
        masked = spec_augment(feat, max_bins=8, max_frames=10)
        zero_bins = np.flatnonzero((masked == 0).all(axis=0))
        zero_frames = np.flatnonzero((masked == 0).all(axis=1))
        assert len(zero_bins) <= 8 and len(zero_frames) <= 10
        for run in (zero_bins, zero_frames):  # contiguous
            assert len(run) == 0 or run[-1] - run[0] == len(run) - 1
        kept = masked != 0
        np.testing.assert_array_equal(masked[kept], feat[kept])
        assert kept.sum() == (40 - len(zero_bins)) * (200 - len(zero_frames))  # nothing else touched
        widths.add((len(zero_bins), len(zero_frames)))
    assert {w for w, _ in widths} == set(range(9)) and {t for _, t in widths} == set(range(11))
    assert (feat != 0).all()  # the input is left alone


def test_training_items_are_masked_only_when_asked(tmp_path):
    write_feature(tmp_path / 'a' / 'u.p', frames(300) + 1, 'a')
    DB = read_feats_structure(tmp_path)
    plain = DvectorDataset(DB, {'a': 0}, feature_settings(), random_windows=True)
    augmented = DvectorDataset(DB, {'a': 0}, feature_settings(), random_windows=True, spec_augment=(8, 10))
    assert all((plain[0][0] != 0).all() for _ in range(20))
    assert any((augmented[0][0] == 0).any() for _ in range(20))
