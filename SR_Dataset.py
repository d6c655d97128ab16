"""The training data: a Dataset of network inputs cut from feature files, and how to batch them.

Training reads random windows of NUM_WIN_SIZE frames of each utterance (masked by SpecAugment when
asked), validation whole utterances, looped to the longest of a batch. The feature files are read
by feature_files.read_MFB, from disk for every item as the tutorial does, or once into memory (load_features).
"""
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

import configure as c
from dvector.audio import is_audio, read_audio
from dvector.augment_audio import resample_speed
from dvector.augment_features import band_centres, warp_speed
from dvector.embedding import to_input
from dvector.feature_files import FeatureFileError, read_MFB, trim_edges
from dvector.frontend import edge_frames, reading_settings
from dvector.utterance import audio_features, check_audio_header


def load_features(files, feature, keep=True, fbank_device=None):
    """Read every feature file once (audio: made into features, with fbank_device as read_training_utterance):
    their trimmed features as float32 arrays (None unless keep). Audio that is not kept is checked from its
    header alone (utterance.check_audio_header).

    All unusable files are reported together in one error, so that a bad file cannot stop a long
    training run hours in.
    """
    feats, problems = [], []
    for filename in tqdm(files, desc='reading features', leave=False, disable=None):
        try:
            if not keep and is_audio(filename):
                check_audio_header(filename, reading_settings(feature))
                continue
            feat = read_training_utterance(filename, feature, fbank_device=fbank_device)
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


def speed_window(feat, win_size, speed):
    """A random window of `win_size` frames of feat as if played `speed` times as fast (augment_features.warp_speed)."""
    longer = random_window(feat, int(np.ceil(win_size * speed)) + 1)
    return warp_speed(longer, speed, band_centres(feat.shape[1]))[:win_size]


def read_training_utterance(filename, feature, wave_augmenter=None, speed=1.0, others=None, fbank_device=None):
    """Trimmed features (n_frames, n_filters) of a training utterance: a feature file's, or an audio file's made
    by the recipe as it is read (utterance.read_utterance's numbers), after its waveform is played `speed` times as
    fast and degraded by wave_augmenter (augment_audio.WaveAugmenter; others: its babble voices) when given.
    fbank_device: None, the fbank by python_speech_features; a torch device, by torch there (torch_fbank.py)."""
    if not is_audio(filename):
        return read_MFB(filename, feature)
    settings = reading_settings(feature)

    def prepare(audio):
        if speed != 1.0:
            audio = resample_speed(audio, speed).astype(np.float32)
        return wave_augmenter(audio, others) if wave_augmenter else audio
    feat, _ = audio_features(filename, settings, fbank_device, prepare)
    return trim_edges(feat, filename, edge_frames(settings), settings['min_frames'])


class DvectorDataset(Dataset):
    """(input (1, n_filters, frames), speaker index) pairs from a DataFrame of feature or audio files.

    With random_windows, each item is a random window of feature['win_size'] frames (training): at a random
    one of `speeds` or 1 when speeds are given (speed perturbation; speed k's windows are labelled as
    speakers of their own, index + k * n_speakers), degraded by `augmenter` (augment_features.Augmenter) when given,
    then masked by SpecAugment when `spec_augment` = (max_bins, max_frames) is given. Without random_windows,
    the whole trimmed utterance (validation).
    Features come from `feats` when given (the files' features, preloaded in memory), else from the
    file, read for every item as the tutorial does; audio files are made into features as they are read, and
    then speed perturbation and `wave_augmenter` (augment_audio.WaveAugmenter) act on their waveform instead. Their
    fbank is python_speech_features', or torch's on fbank_device when given ('cpu' in worker processes: the same
    numbers to 1e-12 dB, faster; torch_fbank.fbank_batch).
    """

    def __init__(self, DB, spk_to_idx, feature, random_windows=True, feats=None, spec_augment=None, augmenter=None,
                 speeds=(), wave_augmenter=None, fbank_device=None):
        self.files = list(DB['filename'])
        self.labels = [spk_to_idx[s] for s in DB['speaker_id']]
        self.n_speakers = len(spk_to_idx)
        self.feature = feature
        self.random_windows = random_windows
        self.feats = feats
        self.spec_augment = spec_augment
        self.augmenter = augmenter
        self.speeds = tuple(speeds)
        self.wave_augmenter = wave_augmenter
        self.fbank_device = fbank_device

    def __len__(self):
        return len(self.files)

    def utterance(self, index):
        if self.feats is not None:
            return self.feats[index]
        return read_training_utterance(self.files[index], self.feature, fbank_device=self.fbank_device)

    def other_windows(self, k, win_size):
        """k random windows of random training utterances (babble voices)."""
        return [random_window(self.utterance(int(i)), win_size) for i in torch.randint(len(self), (k,))]

    def other_waveforms(self, k):
        """The waveforms of k random training utterances (babble voices, training from audio)."""
        return [read_audio(self.files[int(i)], self.feature['sample_rate']) for i in torch.randint(len(self), (k,))]

    def __getitem__(self, index):
        label = self.labels[index]
        if not self.random_windows:
            return to_input(self.utterance(index)), label
        win_size = self.feature['win_size']
        k = int(torch.randint(len(self.speeds) + 1, ())) if self.speeds else 0
        if self.feats is None and is_audio(self.files[index]):  # speed and augmentation on the waveform
            feat = read_training_utterance(self.files[index], self.feature, self.wave_augmenter,
                                           self.speeds[k - 1] if k else 1.0, self.other_waveforms, self.fbank_device)
            feat = random_window(feat, win_size)
        else:
            feat = self.utterance(index)
            feat = speed_window(feat, win_size, self.speeds[k - 1]) if k else random_window(feat, win_size)
        if self.augmenter:
            feat = self.augmenter(feat, lambda voices: self.other_windows(voices, win_size))
        if self.spec_augment:
            feat = spec_augment(feat, *self.spec_augment)
        return to_input(feat), label + k * self.n_speakers


def collate_fn_feat_padded(batch):
    """Batch variable-length inputs: each is looped (repeated) up to the longest one.

    batch: list of (input (1, n_filters, T_i), label) -> ((B, 1, n_filters, max T_i), labels (B,)).
    """
    max_len = max(x.shape[-1] for x, _ in batch)
    padded = [x.repeat(1, 1, -(-max_len // x.shape[-1]))[..., :max_len] for x, _ in batch]
    return torch.stack(padded), torch.tensor([label for _, label in batch])
