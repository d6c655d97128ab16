"""The training data: a Dataset of network inputs cut from feature files, and how to batch them.

Training reads random windows of NUM_WIN_SIZE frames of each utterance (masked by SpecAugment when
asked), validation whole utterances, looped to the longest of a batch. The feature files are read
by features.read_MFB, from disk for every item as the tutorial does, or once into memory (load_features).
"""
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

import configure as c
from features import FeatureFileError, read_MFB


def load_features(files, feature, keep=True):
    """Read every feature file once: their trimmed features as float32 arrays (None unless keep).

    All unusable files are reported together in one error, so that a bad file cannot stop a long
    training run hours in.
    """
    feats, problems = [], []
    for filename in tqdm(files, desc='reading features', leave=False, disable=None):
        try:
            feat = read_MFB(filename, feature)
        except (OSError, FeatureFileError) as e:
            problems.append(str(e))
            continue
        if keep:
            feats.append(feat.astype(np.float32))
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise FeatureFileError(f"{len(problems)} unusable feature file(s):\n  " + "\n  ".join(shown))
    return feats if keep else None


def random_window(feat, win_size=c.NUM_WIN_SIZE):
    """A random window of `win_size` frames; shorter utterances are first looped (repeated).

    As the tutorial's TruncatedInputfromMFB: the start is drawn from [0, n_frames - win_size),
    with torch's random generator so that torch.manual_seed makes it reproducible.
    """
    while len(feat) <= win_size:
        feat = np.concatenate([feat, feat])
    start = int(torch.randint(len(feat) - win_size, ()))
    return feat[start:start + win_size]


def spec_augment(feat, max_bins, max_frames):
    """A copy of feat (n_frames, n_filters) with SpecAugment's masks (Park et al., 2019), without time warping.

    One band of up to `max_bins` filters and one run of up to `max_frames` frames, of random widths
    and places (drawn with torch's generator), are set to 0: the utterance's mean, as the features
    are mean-normalised.
    """
    feat = feat.copy()
    for axis, max_width in ((1, max_bins), (0, max_frames)):
        width = int(torch.randint(min(max_width, feat.shape[axis]) + 1, ()))
        start = int(torch.randint(feat.shape[axis] - width + 1, ()))
        feat[(slice(None),) * axis + (slice(start, start + width),)] = 0
    return feat


def to_input(feat):
    """Network input (1, n_filters, n_frames) float32 of a feature array (n_frames, n_filters)."""
    return torch.from_numpy(np.ascontiguousarray(feat.T)).float().unsqueeze(0)


class DvectorDataset(Dataset):
    """(input (1, n_filters, frames), speaker index) pairs from a DataFrame of feature files.

    With random_windows, each item is a random window of feature['win_size'] frames (training),
    masked by spec_augment when `augment` = (max_bins, max_frames) is given; without, the whole trimmed
    utterance (validation).
    Features come from `feats` when given (the files' features, preloaded in memory), else from the
    file, read for every item as the tutorial does.
    """

    def __init__(self, DB, spk_to_idx, feature, random_windows=True, feats=None, augment=None):
        self.files = list(DB['filename'])
        self.labels = [spk_to_idx[s] for s in DB['speaker_id']]
        self.feature = feature
        self.random_windows = random_windows
        self.feats = feats
        self.augment = augment

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        feat = self.feats[index] if self.feats is not None else read_MFB(self.files[index], self.feature)
        if self.random_windows:
            feat = random_window(feat, self.feature['win_size'])
            if self.augment:
                feat = spec_augment(feat, *self.augment)
        return to_input(feat), self.labels[index]


def collate_fn_feat_padded(batch):
    """Batch variable-length inputs: each is looped (repeated) up to the longest one.

    batch: list of (input (1, n_filters, T_i), label) -> ((B, 1, n_filters, max T_i), labels (B,)).
    """
    max_len = max(x.shape[-1] for x, _ in batch)
    padded = [x.repeat(1, 1, -(-max_len // x.shape[-1]))[..., :max_len] for x, _ in batch]
    return torch.stack(padded), torch.tensor([label for _, label in batch])
