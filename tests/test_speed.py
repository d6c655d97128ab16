"""Channels-last safety: the probe of oneDNN's convolutions on this machine, and the policy that keeps clear of them."""
import pytest
import torch

from dvector import speed
from tools import probe_layout
from dvector.stage import for_inference
from model.model import BackgroundResNet
from conftest import run_script, write_feature_tree

CPU = torch.device('cpu')


def model(width, backbone='resnet18'):
    return BackgroundResNet(128, 4, backbone, base_channels=width)


@pytest.mark.parametrize('width, risky', [(4, 2), (8, 1), (12, 1), (16, 0), (32, 0)])
def test_narrow_resnets_have_risky_shortcuts(width, risky):
    # resnet18's strided 1x1 shortcuts see width, 2 width and 4 width input channels
    assert len(speed.risky_convolutions(model(width))) == risky


def test_the_policy_keeps_risky_models_contiguous_and_refuses_to_force_them(capsys):
    assert speed.use_channels_last('auto', CPU, model(16))
    assert not speed.use_channels_last('auto', CPU, model(8))
    assert 'Channels-last off: 1 strided 1x1 convolution(s)' in capsys.readouterr().out
    assert not speed.use_channels_last('no', CPU, model(16))
    with pytest.raises(ValueError, match='channels-last is unsafe for this model'):
        speed.use_channels_last('yes', CPU, model(8))
    with pytest.raises(ValueError, match="unknown channels-last setting 'maybe'"):
        speed.use_channels_last('maybe', CPU, model(16))


def test_embedding_models_follow_the_policy():
    assert for_inference(model(16).eval(), CPU).backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    narrow = for_inference(model(8).eval(), CPU)
    assert narrow.backbone.conv1.weight.is_contiguous()
    assert narrow.embed(torch.randn(2, 1, 40, 120)).shape == (2, 128)


def test_the_probe_reports_a_crash_as_a_finding():
    # a child that dies on its first case: that case is a crash, the next one runs in a new child
    shapes = [probe_layout.ConvShape(4, 8, 1, 2, 40, 200), probe_layout.ConvShape(16, 32, 3, 1, 10, 25)]
    found = probe_layout.probe(shapes, dtypes=('fp32',), code='import os; os.abort()')
    assert [(s, result) for s, _, result, _ in found] == [(shapes[0], 'crash'), (shapes[1], 'crash')]


def test_the_probe_compares_layouts_of_the_same_convolution():
    shape = probe_layout.ConvShape(16, 32, 3, 2, 20, 50)
    assert probe_layout.compare_layouts(shape, 'fp32') < 1e-5
    [(_, _, result, error)] = probe_layout.probe([shape], dtypes=('fp32',))
    assert result == 'ok' and error < 1e-5


@pytest.mark.slow
def test_no_shape_the_probe_finds_bad_runs_channels_last():
    """The automatic policy against what this machine does: every shape that crashes or computes other
    gradients in channels-last must belong only to models that the policy keeps contiguous."""
    shapes = probe_layout.probe_shapes()
    findings = probe_layout.probe(shapes)
    assert {shape for shape, *_ in findings} == set(shapes)  # every shape probed, on every machine
    assert all(result in ('ok', 'mismatch', 'crash') and (error is None) == (result == 'crash')
               for _, _, result, error in findings)
    bad = {shape for shape, _, result, _ in findings if result != 'ok'}
    print('\n'.join(f"{s}: {d} {r}" for s, d, r, _ in findings if r != 'ok'))
    for width in probe_layout.PROBE_WIDTHS:
        for frames in probe_layout.PROBE_FRAMES:
            if bad & set(probe_layout.conv_shapes('resnet18', width, frames)):
                assert not speed.use_channels_last('auto', CPU, model(width)), (width, frames)


@pytest.mark.slow
def test_a_narrow_resnet_trains_under_the_default_settings(tmp_path):
    """train.py --base-channels 8 with CHANNELS_LAST 'auto' (a crash in oneDNN would kill the child, not the suite)."""
    tree = write_feature_tree(tmp_path / 'feat', n_train_speakers=4, n_utts=12, seed=2)
    result = run_script(tmp_path, 'train.py', '--train-feat-dir', str(tree / 'train'), '--log-dir',
                        str(tmp_path / 'log'), '--epochs', '2', '--batch-size', '8', '--valid-batch-size', '4',
                        '--base-channels', '8', '--precision', 'fp32', '--device', 'cpu')
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert 'Channels-last off' in result.stdout and 'channels-last no' in result.stdout


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason='no bfloat16 units on this CPU')
def test_bfloat16_embedding_of_short_segments_is_finite_and_close_to_float32():
    """Strided 3x3 convolutions on 1-2 frames give garbage in bfloat16 here: segments that short run in float32."""
    torch.manual_seed(1)
    exact = model(16).eval()
    torch.manual_seed(1)
    fast = for_inference(model(16).eval(), CPU, torch.bfloat16)
    for frames in (1, 2, 3, 4, 6, 8, 9, 12, 40):
        x = torch.randn(4, 1, 40, frames)
        with torch.no_grad():
            got, want = fast.embed(x), exact.embed(x)
        assert torch.isfinite(got).all(), frames
        assert torch.nn.functional.cosine_similarity(got, want).min() > 0.999, frames
