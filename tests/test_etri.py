"""Integration tests on the real ETRI data in ../shared/etri; skipped when it is not there."""
import re
import subprocess
import sys

import numpy as np
import pytest

import feature_extraction
from dvector.feature_files import load_feature_file

from conftest import ETRI, decision_is_right, needs_etri, run_ok

pytestmark = pytest.mark.slow  # the fast lane leaves these out (README, Tests)


@needs_etri
def test_feature_recipe_reproduces_the_published_features(tmp_path):
    assert feature_extraction.extract_tree(ETRI / 'test_wavs', tmp_path) == {}
    published = sorted((ETRI / 'test_feat').rglob('*.p'))
    assert len(published) == 20
    for path in published:
        ours, label = load_feature_file(tmp_path / path.relative_to(ETRI / 'test_feat'))
        theirs, their_label = load_feature_file(path)
        assert label == their_label and ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() < 1e-9, path


@needs_etri
def test_full_pipeline_on_a_real_subset(tmp_path):
    """20 speakers x 20 utterances, 2 epochs, then the 10 official test speakers, all with default settings."""
    subprocess.run([sys.executable, str(ETRI / 'unpack.py'), str(tmp_path / 'feat_logfbank_nfilt40'),
                    '--speakers', '20', '--utts', '20'], check=True, capture_output=True)

    out = run_ok(tmp_path, 'train.py', '--epochs', '2')
    assert 'Training set 360 utts, validation set 40 utts, 20 speakers' in out
    assert 'Enrolled 10 speakers from 10 files' in run_ok(tmp_path, 'enroll.py')
    assert decision_is_right(run_ok(tmp_path, 'verification.py'))
    assert 'True speaker:      230M4087' in run_ok(tmp_path, 'identification.py')
    out = run_ok(tmp_path, 'identification.py', '--all')
    accuracy = float(re.search(r'Top-1 identification accuracy: ([\d.]+)%', out)[1])
    assert accuracy >= 30, accuracy  # 10 unseen speakers: chance is 10%; this run scores 60%
