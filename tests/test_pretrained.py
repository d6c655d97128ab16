"""The published model in pretrained/: small, loadable with weights_only, and complete for every stage."""
import pytest
import soundfile as sf
import torch

import configure
from dvector.checkpoint import load_checkpoint
from dvector.stage import load_model

from conftest import REPO, decision_is_right, embed_arrays, run_ok, voice

PRETRAINED = REPO / 'pretrained' / 'dvector_etri200_improved.pth'


def test_it_is_small_enough_for_git():
    assert PRETRAINED.stat().st_size < 8 * 2 ** 20


def test_it_holds_what_the_stages_need_and_no_training_state():
    ckpt = load_checkpoint(PRETRAINED)  # torch.load(..., weights_only=True)
    assert 'optimizer' not in ckpt and 'rng_state' not in ckpt
    assert ckpt['model_args']['num_classes'] == len(ckpt['speakers']) == 200
    assert ckpt['scoring'] == configure.SCORINGS['improved']  # the recipe's, with its AS-norm cohort:
    assert ckpt['cohort_source'] == {'utts_per_speaker': 50, 'kind': 'utterances'}  # 50 utterances of each speaker
    assert ckpt['cohort'].shape == (200 * 50, ckpt['model_args']['embedding_size'])
    assert set(ckpt['thresholds']) == {'none', 'asnorm'}
    for record in ckpt['thresholds'].values():  # calibrated on the twin's held-out speakers, for these settings
        assert 'holdout20' in record['trials'] and record['scoring']['test_frames'] == 0
        assert record['front_end'] == {'vad': 'no', 'level': 'no'}  # the holdout20 features: clean, as extracted
    assert ckpt['float16_score_change'] < 1e-3


def test_it_embeds_and_tells_two_made_up_voices_apart():
    model, _ = load_model(PRETRAINED, 'cpu', 'fp32')
    torch.manual_seed(0)
    a, b = torch.randn(2, 1, 40, 1).repeat(1, 1, 1, 300) + 0.3 * torch.randn(2, 1, 40, 300)
    va, vb, va2 = embed_arrays(model, [a[0].T.numpy(), b[0].T.numpy(),
                                       (a[0] + 0.1 * torch.randn_like(a[0])).T.numpy()], 0)
    assert va.shape == (128,) and torch.isfinite(va).all()
    assert float(va @ va2) > float(va @ vb)


@pytest.mark.slow
def test_enroll_from_audio_and_verify_a_file_with_it(tmp_path):
    """A new user's first minutes: enroll from a folder of flac and wav files, verify a clip, no training."""
    me = tmp_path / 'my_voice' / 'me'
    me.mkdir(parents=True)
    sf.write(me / 'enroll_1.flac', voice(4.0, pitch=140, seed=1), 16000)
    sf.write(me / 'enroll_2.wav', voice(4.0, pitch=145, seed=2), 16000)
    sf.write(tmp_path / 'clip.wav', voice(3.0, pitch=142, seed=3), 16000)
    flags = ['--checkpoint', str(PRETRAINED), '--embedding-dir', str(tmp_path / 'emb'), '--device', 'cpu']
    assert 'Enrolled 1 speakers from 2 files' in run_ok(tmp_path, 'enroll.py', *flags, '--test-feat-dir',
                                                           str(tmp_path / 'my_voice'))
    out = run_ok(tmp_path, 'verification.py', *flags, '--enroll-speaker', 'me',
                 '--test-file', str(tmp_path / 'clip.wav'))
    assert f'(of the checkpoint, {PRETRAINED})' in out and decision_is_right(out)
