"""Reading feature files: the restricted unpickler, validation, trimming, and the DB listing."""
import codecs
import os
import pickle

import numpy as np
import pytest
from numpy._core.multiarray import _reconstruct

from DB_wav_reader import read_feats_structure, speaker_test_file, split_enroll_and_test
from dvector.fbank import feature_settings
from dvector.feature_files import FeatureFileError, load_feature_file, read_MFB
from SR_Dataset import load_features

from conftest import write_feature


class RunsCode:
    """An object whose unpickling would create a file: what a hostile feature file does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_reads_a_feature_pickle_as_float64(tmp_path):
    feat = np.arange(200 * 40, dtype=np.float32).reshape(200, 40)
    path = write_feature(tmp_path / 'a.p', feat, 'spk')
    loaded, label = load_feature_file(path)
    assert label == 'spk' and loaded.dtype == np.float64
    np.testing.assert_array_equal(loaded, feat)


@pytest.mark.parametrize('protocol', [2, 3, 4, 5])
def test_reads_every_pickle_protocol(tmp_path, protocol):
    feat = np.random.default_rng(0).normal(size=(120, 40))
    path = tmp_path / 'a.p'
    path.write_bytes(pickle.dumps({'feat': feat, 'label': 'x'}, protocol=protocol))
    np.testing.assert_array_equal(load_feature_file(path)[0], feat)


def test_hostile_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.p'
    path.write_bytes(pickle.dumps({'feat': RunsCode(marker), 'label': 'x'}))
    with pytest.raises(FeatureFileError, match=r'evil\.p.*forbidden object .*system'):
        load_feature_file(path)
    assert not marker.exists()


class Reduces:
    """An object that unpickles as func(*args): what a hostile file can ask of the globals a feature pickle may name."""

    def __init__(self, func, *args):
        self.reduced = (func, args)

    def __reduce__(self):
        return self.reduced


@pytest.mark.parametrize('feat, message', [
    (Reduces(_reconstruct, np.ndarray, (1000, 40), np.dtype('f8')),  # 116 bytes -> 320 kB of leftover memory
     r'an array of shape \(1000, 40\) whose values are not in the file'),
    (Reduces(np.ndarray, (1000, 40)), r"'_Array' object is not callable|takes no arguments"),
    (Reduces(codecs.encode, Reduces(codecs.encode, b'\0' * 8, 'hex'), 'hex'), r"bytes encoded as 'hex'"),
], ids=['reconstruct', 'ndarray', 'hex'])
def test_an_array_whose_values_are_not_in_the_file_is_refused(tmp_path, feat, message):
    path = tmp_path / 'leftover.p'
    path.write_bytes(pickle.dumps({'feat': feat, 'label': 'x'}, protocol=2))
    with pytest.raises(FeatureFileError, match=r'^\S*leftover\.p: not a readable feature pickle \(' + message):
        load_feature_file(path)


@pytest.mark.parametrize('content, message', [
    (b'', 'not a readable feature pickle'),
    (pickle.dumps({'feat': np.zeros((100, 40))})[:-20], 'not a readable feature pickle'),
    (b'this is not a pickle at all', 'not a readable feature pickle'),
    (pickle.dumps([1, 2, 3]), "expected a dict with 'feat'"),
    (pickle.dumps({'feat': 'text', 'label': 'x'}), '2-D numeric array'),
    (pickle.dumps({'feat': np.zeros(100), 'label': 'x'}), '2-D numeric array'),
    (pickle.dumps({'feat': np.zeros((100, 13)), 'label': 'x'}), 'feature dimension 13, expected 40'),
    (pickle.dumps({'feat': np.full((100, 40), np.nan), 'label': 'x'}), 'NaN'),
], ids=['empty', 'truncated', 'not-a-pickle', 'not-a-dict', 'text', '1-D', 'wrong-dimension', 'NaN'])
def test_bad_feature_files_get_an_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / 'bad.p'
    path.write_bytes(content)
    with pytest.raises(FeatureFileError, match=message) as error:
        load_feature_file(path)
    assert 'bad.p' in str(error.value)


def test_missing_feature_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothere.p'):
        load_feature_file(tmp_path / 'nothere.p')


def test_trims_half_a_second_at_each_end(tmp_path):
    feat = np.arange(300, dtype=float)[:, None].repeat(40, axis=1)
    trimmed = read_MFB(write_feature(tmp_path / 'a.p', feat, 'x'))
    assert len(trimmed) == 200
    np.testing.assert_array_equal(trimmed[:, 0], np.arange(50, 250))


def test_too_short_utterance_is_an_error_naming_the_file(tmp_path):
    path = write_feature(tmp_path / 'short.p', np.zeros((140, 40)), 'x')  # 40 frames after trimming
    with pytest.raises(FeatureFileError, match=r'short\.p: too short: 140 frames, 40 after trimming 50 at each '
                                               r'end; more than 40 are needed'):
        read_MFB(path)
    assert len(read_MFB(write_feature(tmp_path / 'ok.p', np.zeros((141, 40)), 'x'))) == 41


def test_training_files_are_all_checked_before_training(tmp_path):
    good = write_feature(tmp_path / 'a' / 'good.p', np.zeros((300, 40)), 'a')
    short = write_feature(tmp_path / 'a' / 'short.p', np.zeros((100, 40)), 'a')
    wrong = write_feature(tmp_path / 'a' / 'wrong.p', np.zeros((300, 13)), 'a')
    load_features([good], feature_settings())
    with pytest.raises(FeatureFileError, match=r'2 unusable feature file\(s\):\n  .*short.p: too short.*\n  .*wrong.p'):
        load_features([good, short, wrong], feature_settings())


def test_feature_tree_listing(tmp_path):
    for spk, name in [('b', 'enroll.p'), ('b', 'test.p'), ('a', 'enroll.p'), ('a', 'test.p'), ('a', 'test2.p')]:
        write_feature(tmp_path / 'test' / spk / name, np.zeros((200, 40)), spk)
    DB = read_feats_structure(tmp_path / 'test')
    assert list(DB.columns) == ['filename', 'speaker_id', 'dataset_id']
    assert list(DB['speaker_id']) == ['a', 'a', 'a', 'b', 'b'] and set(DB['dataset_id']) == {'test'}
    enroll, test = split_enroll_and_test(tmp_path / 'test')
    assert [os.path.basename(f) for f in enroll['filename']] == ['enroll.p', 'enroll.p']
    assert len(test) == 3
    assert speaker_test_file(tmp_path / 'test', 'a').endswith('a/test.p')
    with pytest.raises(ValueError, match="speaker 'zz'.*speakers with test files: a, b"):
        speaker_test_file(tmp_path / 'test', 'zz')


def test_speaker_is_the_first_folder_under_the_root(tmp_path):
    write_feature(tmp_path / 'train' / 'spk' / 'session1' / 'u.p', np.zeros((200, 40)), 'spk')
    write_feature(tmp_path / 'train' / 'spk' / 'u.p', np.zeros((200, 40)), 'spk')
    DB = read_feats_structure(tmp_path / 'train')
    assert list(DB['speaker_id']) == ['spk', 'spk'] and list(DB['dataset_id']) == ['train', 'train']
    write_feature(tmp_path / 'train' / 'loose.p', np.zeros((200, 40)), 'x')
    with pytest.raises(ValueError, match=r'files must be in speaker folders.*loose\.p'):
        read_feats_structure(tmp_path / 'train')


def test_symlinked_speaker_folders_count_and_hidden_folders_do_not(tmp_path):
    write_feature(tmp_path / 'elsewhere' / 'u.p', np.zeros((200, 40)), 'b')
    write_feature(tmp_path / 'train' / 'a' / 'u.p', np.zeros((200, 40)), 'a')
    write_feature(tmp_path / 'train' / '.ipynb_checkpoints' / 'u.p', np.zeros((200, 40)), 'x')
    (tmp_path / 'train' / 'b').symlink_to(tmp_path / 'elsewhere', target_is_directory=True)
    assert list(read_feats_structure(tmp_path / 'train')['speaker_id']) == ['a', 'b']


def test_links_that_loop_are_not_followed_and_no_file_is_listed_twice(tmp_path):
    write_feature(tmp_path / 'test' / 'spk' / 'enroll.p', np.zeros((200, 40)), 'spk')
    (tmp_path / 'test' / 'spk' / 'loop').symlink_to(tmp_path / 'test', target_is_directory=True)
    (tmp_path / 'test' / 'spk' / 'enroll_again.p').symlink_to('enroll.p')  # the same file by another name
    enroll_DB, _ = split_enroll_and_test(tmp_path / 'test')
    assert list(enroll_DB['filename']) == [str(tmp_path / 'test' / 'spk' / 'enroll.p')]


@pytest.mark.parametrize('link, target', [('other/enroll.p', 'spk/enroll.p'), ('other', 'spk')],
                         ids=['file', 'speaker folder'])
def test_a_recording_linked_under_two_speaker_folders_is_refused(tmp_path, link, target):
    write_feature(tmp_path / 'test' / 'spk' / 'enroll.p', np.zeros((200, 40)), 'spk')
    (tmp_path / 'test' / link).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / 'test' / link).symlink_to(tmp_path / 'test' / target)
    first, second = ((tmp_path / 'test' / p) for p in sorted((link, target)))
    with pytest.raises(ValueError, match=rf'^{first} and {second} are one \(a link to it\): a recording under two '
                                         r'speaker folders; remove the link, or copy it$'):
        split_enroll_and_test(tmp_path / 'test')


def test_missing_and_empty_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='folder not found: .*nowhere'):
        read_feats_structure(tmp_path / 'nowhere')
    (tmp_path / 'empty' / 'spk').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r'no \.p files under .*empty'):
        read_feats_structure(tmp_path / 'empty')
