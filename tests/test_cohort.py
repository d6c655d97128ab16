"""AS-norm on hand-made d-vectors and cohorts, and the cohort a checkpoint keeps."""
import pytest
import torch
import torch.nn.functional as F

import enroll
import identification
import make_trials
import verification
from dvector import cohort, embedding, scoring
from dvector.atomic import atomic_save
from dvector.checkpoint import load_checkpoint
from dvector.records import load_threshold, threshold_path
from dvector.stage import load_model, settle_scoring

from conftest import copy_checkpoint, embed_arrays, write_feature_tree


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_cohort_stats_take_the_top_scores_of_each_vector():
    cohort = unit([1, 0], [0, 1], [-1, 0])
    vectors = unit([1, 0], [0, 1])
    mean, std = scoring.cohort_stats(vectors, cohort, top=2)
    # [1, 0] scores 1, 0, -1 against the cohort: its best two are 1 and 0
    assert mean.tolist() == pytest.approx([0.5, 0.5])
    assert std.tolist() == pytest.approx([2 ** -0.5] * 2)
    mean_all, _ = scoring.cohort_stats(vectors, cohort, top=10)  # more than the cohort: all of it
    assert mean_all.tolist() == pytest.approx([0.0, 1 / 3], abs=1e-7)  # 1, 0, -1 and 0, 1, 0


def test_as_norm_needs_two_top_scores_for_a_standard_deviation(capsys):
    cohort, vectors = unit([1, 0], [0, 1], [-1, 0]), unit([1, 0])
    with pytest.raises(ValueError, match='needs 2 or more, not the top 1 of a cohort of 3 d-vectors'):
        scoring.cohort_stats(vectors, cohort, top=1)  # the std of one score: NaN scores
    with pytest.raises(ValueError, match='not the top 100 of a cohort of 1 d-vectors'):
        scoring.cohort_stats(vectors, cohort[:1], top=100)
    for script in (verification, identification):
        with pytest.raises(SystemExit):
            script.parse_args(['--cohort-top', '1'])
        assert '--cohort-top: must be 2 or more' in capsys.readouterr().err
        assert script.parse_args(['--cohort-top', '2']).cohort_top == 2


def test_as_norm_is_the_mean_of_both_sides_z_scores():
    scores = torch.tensor([0.8, 0.2])
    normed = scoring.as_norm(scores, (torch.tensor(0.5), torch.tensor(0.1)), (torch.tensor(0.2), torch.tensor(0.2)))
    assert normed.tolist() == pytest.approx([((0.8 - 0.5) / 0.1 + (0.8 - 0.2) / 0.2) / 2,
                                             ((0.2 - 0.5) / 0.1 + 0) / 2])


def test_as_norm_lowers_a_voice_that_scores_high_against_everyone():
    """Two test voices with the same raw score against an enrollment: the one close to the whole cohort (a
    'lamb', typical of everyone) gets the lower normalised score."""
    cohort = unit([1, 0.1, 0], [1, -0.1, 0], [1, 0, 0.1], [1, 0, -0.1])
    enrolled = unit([0, 1, 1])
    typical, distinct = unit([1, 0.3, 0.3]), unit([-1, 0.3, 0.3])
    tested = torch.cat([typical, distinct])
    raw = (enrolled @ tested.T)[0]
    assert raw[0] == pytest.approx(raw[1])
    normed = scoring.score(enrolled, tested, torch.tensor([[0, 0], [0, 1]]), cohort, top=4)
    assert normed[0] < normed[1]


def test_cosine_scores_are_the_pairs_dot_products():
    enrolled, tested = unit([1, 0], [0.6, 0.8]), unit([0, 1], [1, 1])
    scores = scoring.score(enrolled, tested, torch.tensor([[0, 0], [1, 0], [1, 1]]))
    assert scores.tolist() == pytest.approx([0, 0.8, 1.4 * 2 ** -0.5])


def test_as_norm_scores_each_pair_once():
    torch.manual_seed(0)
    enrolled, tested, cohort = (F.normalize(torch.randn(n, 8), dim=1) for n in (3, 5, 20))
    pairs = torch.tensor([[e, t] for e in range(3) for t in range(5)])
    normed = scoring.score(enrolled, tested, pairs, cohort, top=5)
    me, se = scoring.cohort_stats(enrolled, cohort, 5)
    mt, st = scoring.cohort_stats(tested, cohort, 5)
    for k, (e, t) in enumerate(pairs.tolist()):
        raw = float(enrolled[e] @ tested[t])
        assert normed[k].item() == pytest.approx(((raw - me[e]) / se[e] + (raw - mt[t]) / st[t]).item() / 2, rel=1e-5)


def test_a_checkpoints_cohort_is_built_once_and_stored_beside_it(trained, feature_tree, capsys):
    checkpoint = trained / 'checkpoint_best.pth'
    model, ckpt = load_model(checkpoint, 'cpu', 'fp32')
    vectors = cohort.load_cohort(checkpoint, ckpt, model, 'cpu', feature_tree / 'train', 3)
    assert vectors.shape == (4, 128) and torch.allclose(vectors.norm(dim=1), torch.ones(4))
    assert 'Building the AS-norm cohort' in capsys.readouterr().err
    assert cohort.cohort_path(checkpoint).is_file()
    again = cohort.load_cohort(checkpoint, ckpt, model, 'cpu', utts_per_speaker=3)  # the run's folder: stored
    assert torch.equal(again, vectors) and 'Building' not in capsys.readouterr().err
    other = {**ckpt, 'epoch': ckpt['epoch'] + 1}  # another model: the stored cohort is not its own
    with pytest.raises(FileNotFoundError, match='AS-norm needs a cohort'):
        cohort.load_cohort(checkpoint, other, model, 'cpu', '/nowhere', 3)
    cohort.cohort_path(checkpoint).unlink()


def test_a_stored_cohort_is_built_again_from_another_folder_or_number_of_utterances(trained, feature_tree, tmp_path,
                                                                                   capsys):
    checkpoint = trained / 'checkpoint_best.pth'
    model, ckpt = load_model(checkpoint, 'cpu', 'fp32')
    try:
        first = cohort.load_cohort(checkpoint, ckpt, model, 'cpu', feature_tree / 'train', 3)
        fewer = cohort.load_cohort(checkpoint, ckpt, model, 'cpu', feature_tree / 'train', 2)
        err = capsys.readouterr().err
        assert 'built from' in err and f"{(feature_tree / 'train').resolve()} (3 utterances a speaker, speakers)" in err
        assert err.count('Building the AS-norm cohort') == 2 and not torch.equal(first, fewer)
        assert torch.load(cohort.cohort_path(checkpoint), weights_only=True)['utts_per_speaker'] == 2
        other = write_feature_tree(tmp_path / 'other', n_train_speakers=3, n_utts=2, n_test_speakers=0, seed=3)
        assert cohort.load_cohort(checkpoint, ckpt, model, 'cpu', other / 'train', 2).shape == (3, 128)
        assert 'Building the AS-norm cohort' in capsys.readouterr().err
        each = cohort.load_cohort(checkpoint, ckpt, model, 'cpu', other / 'train', 2, 'utterances')
        assert each.shape == (6, 128) and '(2 utterances a speaker, utterances)' in capsys.readouterr().err
    finally:
        cohort.cohort_path(checkpoint).unlink(missing_ok=True)


def test_an_utterance_cohort_holds_each_utterances_d_vector_and_a_speaker_cohort_their_means(trained, feature_tree):
    model, ckpt = load_model(trained / 'checkpoint_best.pth', 'cpu', 'fp32')
    each = cohort.build_cohort(model, ckpt, feature_tree / 'train', 3, 'cpu', 'utterances')
    means = cohort.build_cohort(model, ckpt, feature_tree / 'train', 3, 'cpu', 'speakers')
    assert each.shape == (12, 128) and means.shape == (4, 128)  # 4 speakers, their first 3 utterances
    for speaker in range(4):
        assert torch.allclose(means[speaker], embedding.mean_dvector(each[3 * speaker:3 * speaker + 3]), atol=1e-6)


def test_a_published_checkpoint_uses_its_own_cohort(trained, tmp_path):
    own = unit(*torch.eye(4, 128).tolist())
    checkpoint = copy_checkpoint(trained, tmp_path, cohort=own.half())
    model, ckpt = load_model(checkpoint, 'cpu', 'fp32')
    assert torch.equal(cohort.load_cohort(checkpoint, ckpt, model, 'cpu'), own)
    assert torch.equal(cohort.load_cohort(checkpoint, ckpt, model, 'cpu', 'my_feats/train'), own)


def test_a_stored_cohort_that_cannot_be_read_is_built_again(trained, feature_tree, capsys):
    checkpoint = trained / 'checkpoint_best.pth'
    model, ckpt = load_model(checkpoint, 'cpu', 'fp32')
    path = cohort.cohort_path(checkpoint)
    try:
        for damaged in (b'not a torch file', b''):
            path.write_bytes(damaged)
            vectors = cohort.load_cohort(checkpoint, ckpt, model, 'cpu', feature_tree / 'train', 3)
            assert 'Cannot read the stored cohort' in capsys.readouterr().err
            assert vectors.shape == (4, 128)
            repaired = cohort.load_cohort(checkpoint, ckpt, model, 'cpu', utts_per_speaker=3)
            assert torch.equal(repaired, vectors)
            assert 'Building' not in capsys.readouterr().err
    finally:
        path.unlink(missing_ok=True)


# ---- The stages with AS-norm, whole utterances and a checkpoint's recommended scoring ----------

def scored(tmp_path, checkpoint, feature_tree, *flags):
    trials = tmp_path / 'trials.txt'
    if not trials.exists():
        make_trials.main(['--test-dir', str(feature_tree / 'test'), '--out', str(trials)])
    return verification.main(['--trials', str(trials), '--checkpoint', str(checkpoint), '--device', 'cpu',
                              '--results-dir', str(tmp_path / 'results'), '--scores', str(tmp_path / 's.txt'),
                              '--cohort-dir', str(feature_tree / 'train'), *flags])


def read_scores(tmp_path):
    return [float(line.split()[0]) for line in (tmp_path / 's.txt').read_text().splitlines()]


@pytest.mark.slow
def test_asnorm_scores_a_trial_list_and_keeps_its_own_threshold(trained, feature_tree, tmp_path):
    checkpoint = copy_checkpoint(trained, tmp_path)
    raw = scored(tmp_path, checkpoint, feature_tree, '--calibrate')
    raw_scores = read_scores(tmp_path)
    normed = scored(tmp_path, checkpoint, feature_tree, '--score-norm', 'asnorm', '--cohort-top', '2', '--calibrate')
    assert normed['score_norm'] == 'asnorm' and normed['trials'] == raw['trials']
    assert read_scores(tmp_path) != pytest.approx(raw_scores)  # other numbers, on another scale
    assert threshold_path(checkpoint).is_file() and threshold_path(checkpoint, 'asnorm').is_file()
    assert raw['calibrated'] != normed['calibrated']
    stored = load_threshold(checkpoint, load_checkpoint(checkpoint),
                            {'enroll_frames': 200, 'test_frames': 100, 'score_norm': 'asnorm', 'cohort': 'speakers',
                             'cohort_utts': 20, 'cohort_top': 2})
    assert stored['threshold'] == normed['eer_threshold']
    with pytest.raises(ValueError, match='was calibrated for scoring'):  # the same norm, another cohort size
        load_threshold(checkpoint, load_checkpoint(checkpoint),
                               {'enroll_frames': 200, 'test_frames': 100, 'score_norm': 'asnorm', 'cohort': 'speakers',
                                'cohort_utts': 20, 'cohort_top': 3})


@pytest.mark.slow
def test_whole_utterances_are_one_segment_each(trained, feature_tree, tmp_path):
    model, _ = load_model(trained / 'checkpoint_best.pth', 'cpu', 'fp32')
    feat = torch.randn(330, 40).numpy()
    whole = embed_arrays(model, [feat], 0)[0]
    assert torch.allclose(whole, F.normalize(model.embed(torch.from_numpy(feat.T.copy())[None, None])[0], dim=0),
                          atol=1e-5)
    assert not torch.allclose(whole, embed_arrays(model, [feat], 100)[0], atol=1e-3)
    summary = scored(tmp_path, copy_checkpoint(trained, tmp_path), feature_tree, '--test-frames', '0',
                     '--enroll-frames', '0')
    assert (summary['test_frames'], summary['enroll_frames']) == (0, 0) and summary['eer_percent'] == 0


@pytest.mark.slow
def test_the_stages_score_as_the_checkpoint_recommends_unless_a_flag_says_otherwise(trained, feature_tree, tmp_path,
                                                                                     capsys):
    checkpoint = copy_checkpoint(trained, tmp_path, scoring={'test_frames': 0, 'score_norm': 'asnorm'})
    summary = scored(tmp_path, checkpoint, feature_tree)
    assert (summary['test_frames'], summary['score_norm'], summary['enroll_frames']) == (0, 'asnorm', 200)
    assert 'Scoring as the checkpoint recommends: --test-frames 0, --score-norm asnorm' in capsys.readouterr().err
    assert scored(tmp_path, checkpoint, feature_tree, '--score-norm', 'none')['score_norm'] == 'none'

    embeddings = tmp_path / 'emb'
    flags = ['--checkpoint', str(checkpoint), '--test-feat-dir', str(feature_tree / 'test'), '--embedding-dir',
             str(embeddings), '--device', 'cpu']
    enroll.main(flags)
    accuracy = identification.main(flags + ['--all', '--results-dir', str(tmp_path / 'results'), '--cohort-dir',
                                            str(feature_tree / 'train')])
    assert accuracy[1] == 100
    with pytest.raises(ValueError, match='no calibrated threshold .* for --score-norm asnorm'):
        verification.main(flags + ['--enroll-speaker', 'tst0', '--test-speaker', 'tst0'])
    score, result = verification.main(flags + ['--enroll-speaker', 'tst0', '--test-speaker', 'tst0', '--threshold',
                                               '1.0'])
    assert result == ('Accept' if score > 1.0 else 'Reject') and score > 1  # a z-score, not a cosine


def test_asnorm_can_change_the_identification_ranking():
    # two enrolled speakers; the test scores higher against A, but A scores high against the whole cohort
    cohort = unit([1, 0, 0.2], [1, 0, -0.2], [1, 0.2, 0])
    enrolled = {'A': unit([1, 0.5, 0])[0], 'B': unit([0, 1, 0.5])[0]}
    test = unit([0.7, 0.8, 0.3])[0]
    assert scoring.rank_speakers(enrolled, test)[0][0] == 'A'
    assert scoring.rank_speakers(enrolled, test, cohort, 3)[0][0] == 'B'


def test_a_published_checkpoint_scores_with_the_cohort_it_carries_whatever_the_flags_say(trained, tmp_path, capsys):
    checkpoint = copy_checkpoint(trained, tmp_path, cohort=unit(*torch.eye(4, 128).tolist()).half(),
                                 cohort_source={'utts_per_speaker': 50, 'kind': 'utterances'})
    ckpt = load_checkpoint(checkpoint)
    argv = ['--checkpoint', str(checkpoint), '--score-norm', 'asnorm', '--cohort', 'speakers', '--cohort-dir', 'x']
    args = verification.parse_args(argv)
    settle_scoring(args, ckpt)
    assert (args.cohort, args.cohort_utts, args.cohort_dir) == ('utterances', 50, None)  # as its thresholds say
    assert (f'Note: --cohort speakers --cohort-dir x is not used: {checkpoint} carries its own cohort '
            '(--cohort utterances --cohort-utts 50)') in capsys.readouterr().err
    cosine = verification.parse_args(['--checkpoint', str(checkpoint), '--cohort', 'speakers'])
    settle_scoring(cosine, ckpt)  # no AS-norm: nothing to say
    assert cosine.cohort == 'speakers' and capsys.readouterr().err == ''
    unsaid = {k: v for k, v in ckpt.items() if k != 'cohort_source'}  # a cohort that does not say what it is
    with pytest.raises(ValueError, match='without saying what it was built from.*python -m tools.make_pretrained'):
        settle_scoring(identification.parse_args(argv), unsaid)


def test_a_cohort_that_is_not_finite_is_refused_where_built_and_built_again_where_stored(trained, tmp_path,
                                                                                        monkeypatch, capsys):
    checkpoint = copy_checkpoint(trained, tmp_path)
    model, ckpt = load_model(checkpoint, 'cpu', 'fp32')
    train = write_feature_tree(tmp_path / 'feat', n_test_speakers=0) / 'train'
    with monkeypatch.context() as m:
        m.setattr(cohort, 'build_cohort', lambda *args: torch.full((4, 128), float('nan')))
        with pytest.raises(ValueError, match=r'the cohort built from .*feat/train \(3 utterances a speaker, '
                                             r'speakers\): NaN or infinite values'):
            cohort.load_cohort(checkpoint, ckpt, model, 'cpu', train, 3)
    assert not cohort.cohort_path(checkpoint).exists()
    stored = cohort.load_cohort(checkpoint, ckpt, model, 'cpu', train, 3)
    record = torch.load(cohort.cohort_path(checkpoint), weights_only=True)
    atomic_save({**record, 'cohort': record['cohort'] * float('inf')}, cohort.cohort_path(checkpoint))
    capsys.readouterr()
    assert torch.equal(cohort.load_cohort(checkpoint, ckpt, model, 'cpu', train, 3), stored)  # built again
    assert f'Cannot read the stored cohort {cohort.cohort_path(checkpoint)} (NaN or infinite values); building it ' \
           'again' in capsys.readouterr().err


def test_a_published_cohort_that_is_not_finite_is_refused(trained, tmp_path):
    checkpoint = copy_checkpoint(trained, tmp_path, cohort=torch.full((4, 128), float('nan')).half())
    model, ckpt = load_model(checkpoint, 'cpu', 'fp32')
    with pytest.raises(ValueError, match=f'the cohort of {checkpoint}: NaN or infinite values'):
        cohort.load_cohort(checkpoint, ckpt, model, 'cpu')
