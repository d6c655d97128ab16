"""Feature files (.p), read safely, and the trimming of an utterance's ends.

Feature files are pickles of {'feat': float array (n_frames, n_filters), 'label': speaker id},
and of 'settings', how they were made, when feature_extraction.py wrote them. They are read with a
restricted unpickler, so that a hostile file cannot run code. read_MFB (the tutorial's name) gives
a file's features trimmed at both ends, as the model is trained on them.

FeatureFileError is the error of every input that cannot be used, feature file or audio; its message names the file.
Features that are not finite are never returned (require_finite).
"""
import codecs
import pickle

import numpy as np
import torch
from numpy._core.multiarray import _reconstruct, scalar
from numpy._core.numeric import _frombuffer

import configure as c
from dvector.fbank import feature_settings

FEATURE_SUFFIX = '.p'
TRIM_SECONDS = c.TRIM_FRAMES * c.WIN_STEP  # seconds trimmed at each end of every utterance (configure.py's)


class FeatureFileError(ValueError):
    """A feature file that cannot be used; the message names the file."""


def require_finite(values, what):
    """values (a numpy array, tensor or number) when every one is finite; else a ValueError naming `what` (the file,
    or what they are). Every feature array, d-vector, cohort, threshold and score is checked where it is made."""
    finite = torch.isfinite(values).all() if torch.is_tensor(values) else np.isfinite(values).all()
    if not finite:
        raise FeatureFileError(f"{what}: NaN or infinite values")
    return values


class _Array:
    """What a feature pickle's `numpy.ndarray` stands for: only an argument of _empty_array, never called (calling
    ndarray itself would allocate an array of any shape whose data is not in the file)."""


def _empty_array(subtype, shape, dtype):
    """numpy's _reconstruct as numpy's own pickles use it: an empty array, which the state that follows in the file
    fills with the file's own bytes. Any other shape would be an array of leftover memory, not the file's."""
    if subtype is not _Array or shape != (0,):
        raise pickle.UnpicklingError(f"an array of shape {shape} whose values are not in the file")
    return _reconstruct(np.ndarray, shape, dtype)


def _latin1(text, encoding):
    """codecs.encode as protocol-2 pickles use it for bytes: latin1, one byte per character of the file. Other
    codecs could make bytes far larger than the file ('hex', again and again)."""
    if encoding != 'latin1' or not isinstance(text, str):
        raise pickle.UnpicklingError(f"bytes encoded as {encoding!r}: not what numpy writes")
    return codecs.encode(text, encoding)


# The only globals a feature pickle may name: what numpy 1.x and 2.x write for arrays. Each array's bytes are bytes
# of the file, so its frame count is bounded by the file's size.
_SAFE_GLOBALS = {('numpy', 'ndarray'): _Array, ('numpy', 'dtype'): np.dtype,
                 ('_codecs', 'encode'): _latin1}  # bytes in protocol-2 pickles
for _core in ('numpy.core', 'numpy._core'):
    _SAFE_GLOBALS.update({(f'{_core}.multiarray', '_reconstruct'): _empty_array,
                          (f'{_core}.multiarray', 'scalar'): scalar,
                          (f'{_core}.numeric', '_frombuffer'): _frombuffer})


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data (dicts, lists, strings, numbers) and numpy arrays of the file's own bytes; refuses
    anything else."""

    def find_class(self, module, name):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden object {module}.{name}") from None


def is_level(value):
    """Whether value is a speech level in dBFS as train.py and feature_extraction.py record them: a finite number in
    (-200, 50)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and -200 < value < 50


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
