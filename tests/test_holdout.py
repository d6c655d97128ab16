"""tools/holdout.py: speakers taken out of a training tree and laid out for enrollment and testing."""
import pytest

from DB_wav_reader import split_enroll_and_test
from tools import holdout

from conftest import write_feature_tree


def test_held_out_speakers_leave_training_and_become_test_speakers(tmp_path):
    tree = write_feature_tree(tmp_path / 'feat', n_train_speakers=5, n_utts=6, n_test_speakers=0)
    holdout.main(['--train-feat-dir', str(tree / 'train'), '--out', str(tmp_path / 'out'), '--speakers', '2',
                  '--enroll-utts', '2'])
    assert sorted(p.name for p in (tmp_path / 'out' / 'train').iterdir()) == ['spk1', 'spk3', 'spk4']
    assert len(list((tmp_path / 'out' / 'train' / 'spk1').iterdir())) == 6
    enroll_DB, test_DB = split_enroll_and_test(tmp_path / 'out' / 'test')
    assert sorted(set(enroll_DB['speaker_id'])) == sorted(set(test_DB['speaker_id'])) == ['spk0', 'spk2']
    assert sorted(p.name for p in (tmp_path / 'out' / 'test' / 'spk0').iterdir()) == [
        'enroll_u00.p', 'enroll_u01.p', 'u02.p', 'u03.p', 'u04.p', 'u05.p']
    assert (tree / 'train' / 'spk0' / 'u00.p').is_file()  # the source tree is left as it was


def test_picks_are_spread_over_the_sorted_speakers():
    assert holdout.pick_held_out([f's{i:02d}' for i in range(10)][::-1], 3) == ['s00', 's03', 's06']
    with pytest.raises(ValueError, match='cannot hold out 3 of 3 speakers'):
        holdout.pick_held_out(['a', 'b', 'c'], 3)


def test_refuses_a_non_empty_output_and_speakers_with_too_few_files(tmp_path):
    tree = write_feature_tree(tmp_path / 'feat', n_train_speakers=3, n_utts=3, n_test_speakers=0)
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'keep.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='is not empty'):
        holdout.main(['--train-feat-dir', str(tree / 'train'), '--out', str(tmp_path / 'out')])
    with pytest.raises(ValueError, match='spk0 has 3 files: too few to enroll with 3'):
        holdout.main(['--train-feat-dir', str(tree / 'train'), '--out', str(tmp_path / 'new'), '--speakers', '1',
                      '--enroll-utts', '3'])
