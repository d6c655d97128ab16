"""tools/make_pretrained.py: what a published checkpoint holds, and the validation accuracy of its own epoch."""
import json

import pytest
import torch

from dvector.atomic import atomic_save
from dvector.checkpoint import load_checkpoint
from dvector.records import save_threshold, threshold_path
from tools import make_pretrained


@pytest.mark.slow
def test_it_publishes_the_model_and_the_validation_accuracy_of_its_own_epoch(trained, tmp_path):
    ckpt = load_checkpoint(trained / 'checkpoint_2.pth')
    assert [h['epoch'] for h in ckpt['history']] == [1, 2]
    ckpt['history'][0].update(valid_loss=-1.0, valid_acc=12.5)  # epoch 1 made the lowest validation loss ...
    ckpt['history'][1].update(valid_acc=87.5)                     # ... but this is epoch 2's model
    atomic_save(ckpt, tmp_path / 'checkpoint_2.pth')
    make_pretrained.main(['--checkpoint', str(tmp_path / 'checkpoint_2.pth'), '--out', str(tmp_path / 'pub.pth')])
    published = load_checkpoint(tmp_path / 'pub.pth')
    assert set(published) == {'state_dict', 'model_args', 'speakers', 'feature', 'run_id', 'epoch', 'scoring',
                              'cohort', 'cohort_source', 'thresholds', 'train_args', 'valid_acc',
                              'float16_score_change'}
    # the tutorial recipe recommends no scoring: configure.py's cohort, a mean d-vector for each of the 4 speakers
    assert published['cohort'].shape == (4, 128) and published['cohort_source'] == {'utts_per_speaker': 20,
                                                                                    'kind': 'speakers'}
    assert published['epoch'] == 2 and published['valid_acc'] == 87.5
    assert all(v.dtype == torch.float16 for v in published['state_dict'].values() if v.is_floating_point())
    assert published['thresholds'] == {}  # no --twin


@pytest.mark.slow
def test_it_keeps_the_cohort_its_recipe_recommends(trained, tmp_path):
    ckpt = load_checkpoint(trained / 'checkpoint_2.pth')
    ckpt['train_args']['recipe'] = 'improved'  # whose scoring: every d-vector of 50 utterances a speaker
    atomic_save(ckpt, tmp_path / 'checkpoint_2.pth')
    make_pretrained.main(['--checkpoint', str(tmp_path / 'checkpoint_2.pth'), '--out', str(tmp_path / 'pub.pth')])
    published = load_checkpoint(tmp_path / 'pub.pth')
    assert published['cohort_source'] == {'utts_per_speaker': 50, 'kind': 'utterances'}
    assert published['cohort'].shape == (40, 128)  # 4 speakers with 10 training utterances each, all of them


@pytest.mark.slow
def test_it_takes_the_twins_thresholds_calibrated_with_the_recommended_scoring(trained, tmp_path):
    twin = tmp_path / 'twin' / 'checkpoint_best.pth'
    twin.parent.mkdir()
    atomic_save(load_checkpoint(trained / 'checkpoint_best.pth'), twin)
    ckpt = load_checkpoint(twin)
    clean = {'vad': 'no', 'level': 'no'}
    # the tutorial recipe recommends nothing: configure.py's segments, and under AS-norm its cohort
    save_threshold(twin, ckpt, {'threshold': 0.4, 'trials': 'holdout20.txt'},
                           {'enroll_frames': 200, 'test_frames': 100, 'score_norm': 'none'}, clean)
    save_threshold(twin, ckpt, {'threshold': 2.0, 'trials': 'holdout20.txt'},
                           {'enroll_frames': 200, 'test_frames': 100, 'score_norm': 'asnorm', 'cohort': 'utterances',
                            'cohort_utts': 20, 'cohort_top': 100}, clean)  # another cohort than configure.py's
    make_pretrained.main(['--checkpoint', str(trained / 'checkpoint_2.pth'), '--twin', str(twin),
                          '--out', str(tmp_path / 'pub.pth')])
    thresholds = load_checkpoint(tmp_path / 'pub.pth')['thresholds']
    assert set(thresholds) == {'none'} and thresholds['none']['threshold'] == 0.4


def test_it_refuses_to_write_over_the_checkpoint_it_reads(trained, tmp_path):
    ckpt = tmp_path / 'run' / 'checkpoint_2.pth'
    atomic_save(load_checkpoint(trained / 'checkpoint_2.pth'), ckpt)
    before = ckpt.read_bytes()
    with pytest.raises(ValueError, match="is also an input"):
        make_pretrained.main(['--checkpoint', str(ckpt), '--out', str(tmp_path / 'run' / '..' / 'run' / ckpt.name)])
    assert ckpt.read_bytes() == before


@pytest.mark.slow
@pytest.mark.parametrize('change, message', [
    ({'threshold': float('nan')}, 'its threshold: NaN or infinite values'),
    ({'model_id': 'another/epoch9'}, 'was calibrated for model another/epoch9'),
])
def test_it_refuses_a_twins_threshold_that_is_nan_or_of_another_model(trained, tmp_path, change, message):
    twin = tmp_path / 'twin' / 'checkpoint_best.pth'
    atomic_save(load_checkpoint(trained / 'checkpoint_best.pth'), twin)
    save_threshold(twin, load_checkpoint(twin), {'threshold': 0.4, 'trials': 'holdout20.txt'},
                   {'enroll_frames': 200, 'test_frames': 100, 'score_norm': 'none'}, {'vad': 'no', 'level': 'no'})
    path = threshold_path(twin)
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(ValueError, match=message):
        make_pretrained.main(['--checkpoint', str(trained / 'checkpoint_2.pth'), '--twin', str(twin),
                              '--out', str(tmp_path / 'pub.pth')])
    assert not (tmp_path / 'pub.pth').exists()
