"""make_pretrained.py: what a published checkpoint holds, and the validation accuracy of its own epoch."""
import torch

import make_pretrained
from storage import atomic_save, load_checkpoint


def test_it_publishes_the_model_and_the_validation_accuracy_of_its_own_epoch(trained, tmp_path):
    ckpt = load_checkpoint(trained / 'checkpoint_2.pth')
    assert [h['epoch'] for h in ckpt['history']] == [1, 2]
    ckpt['history'][0].update(valid_loss=-1.0, valid_acc=12.5)  # epoch 1 made the lowest validation loss ...
    ckpt['history'][1].update(valid_acc=87.5)                     # ... but this is epoch 2's model
    atomic_save(ckpt, tmp_path / 'checkpoint_2.pth')
    make_pretrained.main(['--checkpoint', str(tmp_path / 'checkpoint_2.pth'), '--out', str(tmp_path / 'pub.pth')])
    published = load_checkpoint(tmp_path / 'pub.pth')
    assert set(published) == {'state_dict', 'model_args', 'speakers', 'feature', 'run_id', 'epoch', 'scoring',
                              'cohort', 'thresholds', 'train_args', 'valid_acc', 'float16_score_change'}
    assert published['epoch'] == 2 and published['valid_acc'] == 87.5
    assert all(v.dtype == torch.float16 for v in published['state_dict'].values() if v.is_floating_point())
    assert published['thresholds'] == {}  # no --twin
