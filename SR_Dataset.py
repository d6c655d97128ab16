"""Reading log-fbank feature pickles, cutting network inputs from them, and the Dataset.

A feature file is a pickle of {'feat': float array (n_frames, n_filters), 'label': speaker id}, and of
'settings', how it was made, when feature_extraction.py wrote it.
It is read with a restricted unpickler, so a hostile file cannot run code.
"""
import codecs
import os
import pickle

import numpy as np
import torch
from numpy._core.multiarray import _reconstruct, scalar
from numpy._core.numeric import _frombuffer
from torch.utils.data import Dataset
from tqdm import tqdm

import configure as c


class FeatureFileError(ValueError):
    """A feature file that cannot be used; the message names the file."""


# The only globals a feature pickle may name: what numpy 1.x and 2.x write for arrays.
_SAFE_GLOBALS = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype,
                 ('_codecs', 'encode'): codecs.encode}  # bytes in protocol-2 pickles
for _core in ('numpy.core', 'numpy._core'):
    _SAFE_GLOBALS.update({(f'{_core}.multiarray', '_reconstruct'): _reconstruct,
                          (f'{_core}.multiarray', 'scalar'): scalar,
                          (f'{_core}.numeric', '_frombuffer'): _frombuffer})


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data (dicts, lists, strings, numbers) and numpy arrays; refuses anything else."""

    def find_class(self, module, name):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden object {module}.{name}") from None


def feature_settings():
    """configure.py's feature settings, as a checkpoint records them for the stages that use the model."""
    return {'sample_rate': c.SAMPLE_RATE, 'n_filters': c.FILTER_BANK, 'win_len': c.WIN_LEN, 'win_step': c.WIN_STEP,
            'trim_frames': c.TRIM_FRAMES, 'min_frames': c.MIN_FRAMES, 'win_size': c.NUM_WIN_SIZE}


def load_feature_record(filename, n_filters=c.FILTER_BANK):
    """The checked dict of a feature pickle: 'feat' float64 (n_frames, n_filters), 'label' str, and 'settings'
    (a dict of plain values) when the file records how it was made (feature_extraction.py writes it)."""
    try:
        with open(filename, 'rb') as f:
            data = RestrictedUnpickler(f).load()
    except OSError:  # missing or unreadable: the error already names the file
        raise
    except Exception as e:  # truncated, corrupt or hostile: all unusable the same way
        raise FeatureFileError(f"{filename}: not a readable feature pickle ({e})") from e
    if not isinstance(data, dict) or 'feat' not in data:
        raise FeatureFileError(f"{filename}: expected a dict with 'feat' and 'label', got {type(data).__name__}")
    feat = data['feat']
    if not isinstance(feat, np.ndarray) or feat.ndim != 2 or feat.dtype.kind not in 'fiu':
        raise FeatureFileError(f"{filename}: 'feat' must be a 2-D numeric array (n_frames, {n_filters})")
    if feat.shape[1] != n_filters:
        raise FeatureFileError(f"{filename}: feature dimension {feat.shape[1]}, expected {n_filters}")
    if not np.isfinite(feat).all():
        raise FeatureFileError(f"{filename}: 'feat' contains NaN or infinite values")
    if not isinstance(data.get('settings', {}), dict):
        raise FeatureFileError(f"{filename}: 'settings' must be a dict")
    return {**data, 'feat': feat.astype(np.float64, copy=False), 'label': str(data.get('label', ''))}


def load_feature_file(filename, n_filters=c.FILTER_BANK):
    """(feat float64 (n_frames, n_filters), label str) of a feature pickle, checked."""
    record = load_feature_record(filename, n_filters)
    return record['feat'], record['label']


def trim_edges(feat, filename, trim_frames, min_frames):
    """feat without `trim_frames` frames at each end: the tutorial's 0.5 s silence trimming.

    As the tutorial, more than `min_frames` frames must remain.
    """
    trimmed = feat[trim_frames:len(feat) - trim_frames]
    if len(trimmed) <= min_frames:
        raise FeatureFileError(
            f"{filename}: too short: {len(feat)} frames, {len(trimmed)} after trimming {trim_frames} "
            f"at each end; more than {min_frames} are needed")
    return trimmed


def read_MFB(filename, feature=None):
    """Trimmed features (n_frames, n_filters) of a feature file; `feature`: settings, default configure.py's."""
    feature = feature or feature_settings()
    feat, _ = load_feature_file(filename, feature['n_filters'])
    return trim_edges(feat, filename, feature['trim_frames'], feature['min_frames'])


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


def available_memory():
    """Bytes of memory this process can still get: MemAvailable, or the container's limit if lower (Linux)."""
    with open('/proc/meminfo') as f:
        available = next(int(line.split()[1]) * 1024 for line in f if line.startswith('MemAvailable:'))
    try:
        with open('/sys/fs/cgroup/memory.max') as f:
            limit = f.read().strip()
        with open('/sys/fs/cgroup/memory.current') as f:
            used = int(f.read())
        if limit != 'max':
            available = min(available, int(limit) - used)
    except OSError:  # no cgroup v2 limits here
        pass
    return available


def preload_fits(files, fraction=0.5):
    """Whether the features of these files fit in memory as float32: under `fraction` of the available memory.

    The size is estimated from the pickles, which hold float64 (the float32 copy is half of it); every
    process on this machine (torchrun's LOCAL_WORLD_SIZE) keeps a copy.
    """
    needed = sum(os.path.getsize(f) for f in files) / 2 * int(os.environ.get('LOCAL_WORLD_SIZE', '1'))
    try:
        return needed < fraction * available_memory()
    except (OSError, StopIteration, ValueError):  # not Linux: no cheap way to ask
        return False


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
