"""plot_dvectors.py: a map of every speaker's test d-vectors is drawn, speakers apart; bad input ends with one line."""
import shutil

import numpy as np
import pytest

import plot_dvectors
from dvector import cli

from conftest import ETRI, REPO, needs_etri, run_ok, run_script

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
PRETRAINED = REPO / 'pretrained' / 'dvector_etri200_improved.pth'


def flags(checkpoint, test_dir, out):
    return ['--checkpoint', str(checkpoint), '--test-feat-dir', str(test_dir), '--out', str(out), '--device', 'cpu']


def mean_distances(points):
    """(mean distance between two points of one speaker, mean distance between points of two speakers)."""
    xy = np.concatenate(list(points.values()))
    labels = np.concatenate([[s] * len(p) for s, p in points.items()])
    distance = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    same = labels[:, None] == labels[None]
    return distance[same & ~np.eye(len(xy), dtype=bool)].mean(), distance[~same].mean()


def test_a_pca_map_of_pieces_draws_every_speaker_and_keeps_them_apart(trained, feature_tree, tmp_path):
    out = tmp_path / 'maps' / 'map.png'
    result = plot_dvectors.main(flags(trained / 'checkpoint_best.pth', feature_tree / 'test', out)
                                + ['--method', 'pca', '--segments', '100'])
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert [p.name for p in out.parent.iterdir()] == ['map.png']  # written atomically: no temporary file left
    assert set(result['points']) == set(result['centres']) == {'tst0', 'tst1', 'tst2'}
    # each test.p: 440 frames, 340 after trimming 50 at each end: 3 whole 100-frame pieces (the rest is left out)
    assert all(xy.shape == (3, 2) for xy in result['points'].values())
    assert all(xy.shape == (2,) for xy in result['centres'].values())
    same, different = mean_distances(result['points'])
    assert same < different, (same, different)
    assert result['silhouette'] > 0


@pytest.mark.slow
def test_the_script_draws_a_seeded_tsne_map_and_an_untrained_one(trained, feature_tree, tmp_path):
    args = flags(trained / 'checkpoint_best.pth', feature_tree / 'test', tmp_path / 'map.png')
    out = run_ok(tmp_path, 'plot_dvectors.py', *args)
    assert f"Mapped 3 test utterances of 3 speakers and 3 enrollments (t-SNE): {tmp_path / 'map.png'}" in out
    first = plot_dvectors.main(args + ['--segments', '100'])
    again = plot_dvectors.main(args + ['--segments', '100'])
    for speaker, xy in first['points'].items():  # t-SNE is seeded
        np.testing.assert_allclose(again['points'][speaker], xy)
    untrained = plot_dvectors.main(args + ['--segments', '100', '--untrained', '--out', str(tmp_path / 'u.png')])
    assert (tmp_path / 'u.png').read_bytes().startswith(PNG_MAGIC)
    assert set(untrained['points']) == {'tst0', 'tst1', 'tst2'}
    assert untrained['silhouette'] != first['silhouette']  # other weights, other d-vectors


def test_the_sex_is_read_from_etri_ids_only():
    assert [plot_dvectors.speaker_sex(s) for s in ('230M4087', '103F3021', 'tst0', 'M12', '1F2x')] == \
        ['M', 'F', None, None, None]


@pytest.mark.slow
def test_a_missing_checkpoint_ends_with_a_one_line_error(tmp_path):
    result = run_script(tmp_path, 'plot_dvectors.py')
    assert result.returncode == 1
    assert result.stderr.strip() == ('error: checkpoint not found: model_saved/checkpoint_best.pth '
                                     '(train one with train.py, or pass --checkpoint)')


def error_line(argv):
    """The line cli.run ends plot_dvectors.main(argv) with (as `python plot_dvectors.py ARGV` prints it)."""
    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: plot_dvectors.main(argv))
    return str(exit_.value.code)


def test_bad_test_folders_end_with_a_one_line_error(trained, feature_tree, tmp_path):
    checkpoint = trained / 'checkpoint_best.pth'
    missing = tmp_path / 'nowhere'
    assert error_line(flags(checkpoint, missing, tmp_path / 'm.png')) == f'error: folder not found: {missing}'
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert error_line(flags(checkpoint, empty, tmp_path / 'm.png')).startswith('error: no .p/.wav/')
    one = tmp_path / 'one'
    shutil.copytree(feature_tree / 'test' / 'tst0', one / 'tst0')
    assert error_line(flags(checkpoint, one, tmp_path / 'm.png')) == \
        f'error: test files of 1 speaker(s) under {one} (tst0): a map needs at least 2'
    assert error_line(flags(checkpoint, feature_tree / 'test', tmp_path / 'm.png') + ['--segments', '400']) == \
        'error: the test files of tst0, tst1, tst2 have no whole 400-frame pieces and a map needs 2 speakers: ' \
        'give --segments fewer frames'
    assert error_line(flags(checkpoint, feature_tree / 'test', tmp_path / 'm.png') + ['--untrained', '--backend',
                                                                                     'onnx']).startswith(
        "error: random weights embed with the 'torch' backend only")
    assert not (tmp_path / 'm.png').exists()


@pytest.mark.slow
@needs_etri
def test_the_published_model_separates_the_etri_test_speakers_and_random_weights_do_not(tmp_path):
    """The 10 official test speakers, unseen in training, as 3-s pieces of their 15-s test.p."""
    args = flags(PRETRAINED, ETRI / 'test_feat', tmp_path / 'map.png') + ['--segments', '300', '--method', 'pca']
    trained = plot_dvectors.main(args)
    untrained = plot_dvectors.main(args + ['--untrained'])
    assert len(trained['points']) == 10 and sum(len(xy) for xy in trained['points'].values()) >= 40
    assert trained['silhouette'] > 0.5, trained['silhouette']  # this model: 0.84
    assert untrained['silhouette'] < 0.2, untrained['silhouette']  # random weights: -0.06
    same, different = mean_distances(trained['points'])
    assert same < 0.5 * different
