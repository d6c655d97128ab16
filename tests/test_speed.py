"""Channels-last safety: the policy that keeps clear of oneDNN's bugs, and the probe of its convolutions on this
machine (the second half of this file)."""
import sys

import pytest
import torch

from dvector import speed
from dvector.stage import for_inference
from model.model import BackgroundResNet
from tools import probe_layout

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


def test_the_policy_decides_as_documented(capsys):
    """'auto': channels-last on the CPU unless the model has a risky convolution; 'yes' and 'no' as they say
    (the risky convolutions are the CPU's: oneDNN's bugs)."""
    cuda = torch.device('cuda')  # a device object only: nothing runs on it
    decisions = {(setting, device.type, width): speed.use_channels_last(setting, device, model(width))
                 for setting in ('auto', 'yes', 'no') for device in (CPU, cuda) for width in (8, 16)
                 if (setting, device.type, width) != ('yes', 'cpu', 8)}  # refused, above
    assert decisions == {('auto', 'cpu', 8): False, ('auto', 'cpu', 16): True, ('auto', 'cuda', 8): False,
                         ('auto', 'cuda', 16): False, ('yes', 'cpu', 16): True, ('yes', 'cuda', 8): True,
                         ('yes', 'cuda', 16): True, ('no', 'cpu', 8): False, ('no', 'cpu', 16): False,
                         ('no', 'cuda', 8): False, ('no', 'cuda', 16): False}
    assert capsys.readouterr().out.count('Channels-last off') == 1  # said once: 'auto' on the CPU, width 8


def test_embedding_models_follow_the_policy():
    assert for_inference(model(16).eval(), CPU).backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    narrow = for_inference(model(8).eval(), CPU)
    assert narrow.backbone.conv1.weight.is_contiguous()
    assert narrow.embed(torch.randn(2, 1, 40, 120)).shape == (2, 128)


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


# ---- The layout probe (probe_layout): a crash, a hang or a mismatch of the layouts is reported, never fatal -----

NARROW, WIDE, WIDER = (probe_layout.ConvShape(c, 2 * c, 1, 2, 40, 100) for c in (4, 16, 32))
# Children that stand in for the probe's: each is given the cases as JSON in argv[1], as the real one is
CRASH_ON_NARROW = ('import json, os, sys\n'
                   'for shape, dtype in json.loads(sys.argv[1]):\n'
                   '    if shape["in_channels"] < 16:\n'
                   '        os.abort()\n'
                   '    print(json.dumps({"error": 0.0}), flush=True)')
ERROR_OF_1E_3 = 'import json, sys\nfor _ in json.loads(sys.argv[1]): print(json.dumps({"error": 1e-3}), flush=True)'


def test_a_case_that_kills_the_child_is_a_crash_and_the_rest_run_in_a_new_child():
    found = probe_layout.probe([WIDE, NARROW, WIDER], dtypes=('fp32',), code=CRASH_ON_NARROW)
    assert found == [(WIDE, 'fp32', 'ok', 0.0), (NARROW, 'fp32', 'crash', None), (WIDER, 'fp32', 'ok', 0.0)]


@pytest.mark.slow
def test_a_case_that_hangs_is_a_crash():
    found = probe_layout.probe([WIDE], dtypes=('fp32', 'bf16'), case_timeout=0.5, code='import time; time.sleep(60)')
    assert found == [(WIDE, 'fp32', 'crash', None), (WIDE, 'bf16', 'crash', None)]


def test_a_difference_beyond_the_dtypes_tolerance_is_a_mismatch():
    """1e-3: a mismatch in float32 (tolerance 1e-4), rounding in bfloat16 (2e-2)."""
    found = probe_layout.probe([WIDE], dtypes=('fp32', 'bf16'), code=ERROR_OF_1E_3)
    assert found == [(WIDE, 'fp32', 'mismatch', 1e-3), (WIDE, 'bf16', 'ok', 1e-3)]


@pytest.mark.slow
def test_the_probe_compares_layouts_of_the_same_convolution():
    shape = probe_layout.ConvShape(16, 32, 3, 2, 20, 50)
    assert probe_layout.compare_layouts(shape, 'fp32') < 1e-5
    [(_, _, result, error)] = probe_layout.probe([shape], dtypes=('fp32',))
    assert result == 'ok' and error < 1e-5


@pytest.mark.slow
def test_every_convolution_of_a_model_the_policy_runs_channels_last_is_ok_here():
    """The automatic policy against what this machine does: each shape of each width that 'auto' runs
    channels-last, in each dtype, computes the same in both layouts (no crash, no mismatch); the shapes that fail
    here, if any, belong to widths it keeps contiguous."""
    findings = {(shape, dtype): (result, error)
                for shape, dtype, result, error in probe_layout.probe(probe_layout.probe_shapes())}
    print('\n'.join(f"{s}: {d} {r}" for (s, d), (r, _) in findings.items() if r != 'ok'))
    checked = 0
    for width in probe_layout.PROBE_WIDTHS:
        if not speed.use_channels_last('auto', CPU, model(width)):
            continue
        for frames in probe_layout.PROBE_FRAMES:
            for shape in probe_layout.conv_shapes('resnet18', width, frames):
                for dtype in ('fp32', 'bf16'):
                    assert findings[shape, dtype][0] == 'ok', (width, frames, shape, dtype, findings[shape, dtype])
                    checked += 1
    assert checked > 0  # the wide ResNets run channels-last: there is something to check


def test_kept_memory_asks_glibc_to_serve_every_block_from_the_heap_and_keep_its_top(monkeypatch):
    calls = []

    class Libc:
        def mallopt(self, parameter, value):
            calls.append((parameter, value))
            return 1
    monkeypatch.setattr(sys, 'platform', 'linux')
    monkeypatch.setattr(speed.ctypes, 'CDLL', lambda name: Libc())
    assert speed.keep_freed_memory() is True
    assert calls == [(-4, 0), (-1, 1 << 30)]  # M_MMAP_MAX 0, M_TRIM_THRESHOLD 1 GiB


def test_memory_is_left_as_it_is_where_the_c_library_has_no_mallopt(monkeypatch):
    monkeypatch.setattr(sys, 'platform', 'linux')
    monkeypatch.setattr(speed.ctypes, 'CDLL', lambda name: object())  # a C library without mallopt
    assert speed.keep_freed_memory() is False


def test_memory_is_left_alone_off_linux(monkeypatch):
    monkeypatch.setattr(sys, 'platform', 'win32')
    assert speed.keep_freed_memory() is False
