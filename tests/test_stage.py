"""The scoring settings a stage uses, resolved by one rule (stage.resolve_scoring), the flags it reads, the
precision 'auto' runs in (stage.bfloat16_units), and the backend 'auto' embeds with (stage.resolve_backend)."""
import os
import re
import sys

import numpy as np
import pytest
import torch

import configure
import verification
from bench import throughput
from dvector import cli, stage
from dvector.stage import resolve_scoring
from dvector.training import autocast_dtype
from model.model import BackgroundResNet

from conftest import copy_checkpoint, embed_arrays

ASKED = {'enroll_frames': 200, 'test_frames': 200, 'score_norm': 'asnorm', 'cohort': 'speakers', 'cohort_utts': 20,
         'vad': 'no', 'level': 'no'}  # the flags' values: configure.py's where none is given
RECOMMENDS = {'scoring': {'enroll_frames': 0, 'test_frames': 0, 'score_norm': 'asnorm', 'cohort': 'utterances',
                          'cohort_utts': 50}}
PUBLISHED = {**RECOMMENDS, 'cohort': object(), 'cohort_source': {'kind': 'speakers', 'utts_per_speaker': 30}}
ENROLLED = {'speaker': 'spk', 'enroll_frames': 300, 'vad': 'energy', 'level': -44.0}

# (setting, flags given, checkpoint, enrollment) -> (value, source): each source wins over those below it
PRECEDENCE = [
    ('enroll_frames', set(), {}, None, (200, 'configure.py')),
    ('enroll_frames', set(), RECOMMENDS, None, (0, 'checkpoint')),
    ('enroll_frames', {'enroll_frames'}, RECOMMENDS, None, (200, 'flag')),  # a flag wins even at configure's value
    ('enroll_frames', set(), RECOMMENDS, ENROLLED, (300, 'enrollment')),
    ('vad', set(), RECOMMENDS, ENROLLED, ('energy', 'enrollment')),
    ('test_frames', set(), RECOMMENDS, ENROLLED, (0, 'checkpoint')),  # the test side is not the enrollment's
    ('cohort', set(), RECOMMENDS, None, ('utterances', 'checkpoint')),
    ('cohort', {'cohort'}, RECOMMENDS, None, ('speakers', 'flag')),
    ('cohort', {'cohort'}, PUBLISHED, None, ('speakers', 'published cohort')),  # it carries that cohort
    ('cohort_utts', set(), PUBLISHED, None, (30, 'published cohort')),
    ('score_norm', {'score_norm'}, PUBLISHED, None, ('asnorm', 'flag')),
]


@pytest.mark.parametrize('name, given, ckpt, enrollment, expected', PRECEDENCE)
def test_each_scoring_setting_comes_from_the_first_source_that_has_it(name, given, ckpt, enrollment, expected):
    assert resolve_scoring(ASKED, given, ckpt, enrollment)[name] == expected


def test_a_published_cohort_counts_under_asnorm_only():
    cosine = {**ASKED, 'score_norm': 'none'}
    assert resolve_scoring(cosine, {'score_norm', 'cohort'}, PUBLISHED)['cohort'] == ('speakers', 'flag')


def test_a_flag_that_contradicts_the_enrollment_is_refused_and_one_that_agrees_is_not():
    with pytest.raises(ValueError, match='--vad no: spk was enrolled with --enroll-frames 300 --vad energy'):
        resolve_scoring(ASKED, {'vad'}, RECOMMENDS, ENROLLED)
    agreeing = {**ASKED, 'vad': 'energy'}
    assert resolve_scoring(agreeing, {'vad'}, RECOMMENDS, ENROLLED)['vad'] == ('energy', 'enrollment')


@pytest.mark.parametrize('argv, given', [
    ([], set()),
    (['--enroll-frames', '200'], {'enroll_frames'}),  # configure.py's value, given: it counts as given
    (['--vad=energy', '--json', '--trials', 'x.txt'], {'vad', 'json', 'trials'}),
    (['--level'], {'level'}),  # a flag with an optional value
])
def test_the_parser_says_which_settings_the_command_line_gave(argv, given):
    assert verification.parse_args(argv).given == given


def test_a_parser_without_defaults_in_the_given_parse_keeps_its_defaults():
    p = cli.parser('x')
    cli.setting(p, 'ENROLL_FRAMES', type=cli.non_negative_int)
    p.set_defaults(enroll_frames=7)
    args = p.parse_args([])
    assert args.enroll_frames == 7 and args.given == set()
    assert p.parse_args([]).enroll_frames == 7  # the defaults are put back after each parse


# (AVX512-BF16, AMX, environment) -> whether 'auto' runs in bfloat16, and the reason it prints
CPU_BFLOAT16 = [
    (True, False, {}, True, 'this CPU has bfloat16 units'),
    (False, True, {}, True, 'this CPU has bfloat16 units'),
    (False, False, {}, False, 'this CPU has no bfloat16 units'),  # even where oneDNN would emulate it
    (True, False, {'ONEDNN_MAX_CPU_ISA': 'AVX512_CORE_VNNI'}, False,
     "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI keeps oneDNN off this CPU's bfloat16 units"),
    (True, True, {'DNNL_MAX_CPU_ISA': 'avx2'}, False, "DNNL_MAX_CPU_ISA=AVX2 keeps oneDNN off"),
    (True, False, {'ONEDNN_MAX_CPU_ISA': 'AVX512_CORE_BF16', 'DNNL_MAX_CPU_ISA': 'AVX2'}, True, 'has bfloat16 units'),
    (False, True, {'ONEDNN_MAX_CPU_ISA': 'AVX512_CORE_AMX'}, True, 'this CPU has bfloat16 units'),
]


@pytest.mark.parametrize('avx512_bf16, amx, environment, native, why', CPU_BFLOAT16)
def test_auto_precision_is_bfloat16_only_on_bfloat16_units_for_training_embedding_and_bench(
        avx512_bf16, amx, environment, native, why, monkeypatch):
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: amx)
    monkeypatch.setattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', lambda: True)  # oneDNN emulates it anywhere
    for name in ('ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA'):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    cpu = torch.device('cpu')
    units = stage.bfloat16_units(cpu)
    assert units.native == native and why in units.why
    dtype = torch.bfloat16 if native else torch.float32
    assert stage.embedding_dtype('auto', cpu) == dtype
    assert stage.embedding_description('auto', cpu, 'torch') == f"{str(dtype)[6:]} ({units.why})"
    assert autocast_dtype('auto', cpu) == (torch.bfloat16 if native else None)
    model = BackgroundResNet(8, 2, 'resnet18', base_channels=16)
    assert throughput.training_settings('fast', cpu, model)[0] == autocast_dtype(configure.PRECISION, cpu)
    assert throughput.embedding_settings('fast', 'torch', cpu) == ('torch', stage.embedding_dtype(
        configure.EMBED_PRECISION, cpu))
    assert throughput.embedding_settings('fast', 'auto', cpu) == (('torch' if native else 'onnx'), dtype)


def test_an_unknown_onednn_limit_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: True)
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX512_BF16')
    with pytest.raises(ValueError, match="ONEDNN_MAX_CPU_ISA='AVX512_BF16' is not an instruction set oneDNN knows"):
        stage.bfloat16_units(torch.device('cpu'))


# (device, EMBED_PRECISION, bfloat16 units, onnxruntime installed, random weights) -> what EMBED_BACKEND 'auto' is,
# and why: ONNX Runtime where it makes torch's float32 d-vectors, faster (2x on an AVX2 CPU), torch elsewhere
AUTO_BACKEND = [
    ('cpu', 'auto', False, True, False, 'onnx', "ONNX Runtime, faster than torch's float32 on this CPU"),
    ('cpu', 'fp32', True, True, False, 'onnx', "ONNX Runtime, faster than torch's float32 on this CPU"),
    ('cpu', 'auto', True, True, False, 'torch', 'ONNX Runtime embeds in float32 only'),  # bfloat16 is faster still
    ('cpu', 'bf16', False, True, False, 'torch', 'ONNX Runtime embeds in float32 only'),
    ('cuda', 'fp32', False, True, False, 'torch', 'the onnx backend runs on the CPU only'),
    ('cpu', 'auto', False, True, True, 'torch', 'random weights, not exported'),  # plot_dvectors.py --untrained
    ('cpu', 'auto', False, False, False, 'torch', 'onnxruntime not installed'),
]


@pytest.mark.parametrize('device, precision, units, installed, random_weights, name, why', AUTO_BACKEND)
def test_the_auto_backend_is_onnx_runtime_only_where_it_embeds_torch_s_float32_faster(
        device, precision, units, installed, random_weights, name, why, monkeypatch):
    monkeypatch.setattr(stage, 'bfloat16_units', lambda device: stage.Bfloat16Units(units, 'the units say'))
    if not installed:
        monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # as where it is not installed: importing it fails
    device = torch.device(device)
    assert stage.resolve_backend('auto', precision, device, random_weights) == (name, why)
    assert stage.embedding_description(precision, device, 'auto', random_weights).endswith(f"{name}: {why})")
    for asked in ('torch', 'onnx'):  # a backend asked for by name is itself, whatever the machine
        assert stage.resolve_backend(asked, precision, device, random_weights) == (asked, '')


def test_the_default_backend_on_a_cpu_without_bfloat16_units_is_onnx_runtime_and_says_why(monkeypatch):
    monkeypatch.setattr(stage, 'bfloat16_units', lambda device: stage.Bfloat16Units(False, 'no units'))
    cpu = torch.device('cpu')
    assert stage.embedding_description(configure.EMBED_PRECISION, cpu, configure.EMBED_BACKEND) == (
        "float32 (onnx: ONNX Runtime, faster than torch's float32 on this CPU)")
    assert stage.embedding_description('auto', cpu, 'torch') == 'float32 (no units)'  # as before 'auto'
    assert stage.embedding_description('auto', cpu, 'onnx') == 'float32 (onnx)'


def utterances():
    """Trimmed features of made-up utterances [(n_frames, n_filters)] of two lengths."""
    rng = np.random.default_rng(0)
    return [rng.normal(0, 3, (frames, 40)).astype(np.float32) for frames in (150, 230)]


def test_auto_embeds_with_torch_float32_where_the_onnx_export_fails_and_onnx_stops(trained, tmp_path, monkeypatch,
                                                                                   capsys):
    from dvector import onnx_backend
    monkeypatch.setattr(stage, 'bfloat16_units', lambda device: stage.Bfloat16Units(False, 'no units'))

    def broken(*args):
        raise RuntimeError('the exporter broke\n(and a long traceback of it)')
    monkeypatch.setattr(onnx_backend, 'export_checkpoint', broken)
    checkpoint = copy_checkpoint(trained, tmp_path)
    model, _ = stage.load_model(checkpoint, 'cpu', 'auto', 'auto')
    assert capsys.readouterr().err.splitlines() == [  # what it chose, then one line: why it does not
        "Embedding in float32 (onnx: ONNX Runtime, faster than torch's float32 on this CPU)",
        'Note: embedding with torch in float32: the ONNX export failed (the exporter broke)']
    exact = stage.load_model(checkpoint, 'cpu', 'fp32', 'torch')[0]  # the tutorial's d-vectors
    assert torch.equal(embed_arrays(model, utterances(), 100), embed_arrays(exact, utterances(), 100))
    with pytest.raises(RuntimeError, match='the exporter broke'):  # asked for by name: no fallback
        stage.load_model(checkpoint, 'cpu', 'auto', 'onnx')


def test_a_checkpoint_folder_that_cannot_hold_the_export_is_refused_before_exporting(trained, tmp_path, monkeypatch,
                                                                                    capsys):
    from dvector import onnx_backend
    monkeypatch.setattr(stage, 'bfloat16_units', lambda device: stage.Bfloat16Units(False, 'no units'))
    monkeypatch.setattr(onnx_backend, 'export_checkpoint', lambda *args: pytest.fail('exported, then not written'))
    checkpoint = copy_checkpoint(trained, tmp_path)
    folder = checkpoint.parent
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip('this user writes into read-only folders (root): nothing to test')
        model, _ = stage.load_model(checkpoint, 'cpu', 'auto', 'auto')
        assert isinstance(model, torch.nn.Module)
        assert (f'Note: embedding with torch in float32: the ONNX export failed (cannot write {folder}'
                f'/checkpoint_best.') in capsys.readouterr().err
        with pytest.raises(PermissionError, match=re.escape(f'cannot write {folder}/checkpoint_best.')
                           + r'[0-9a-f]{12}\.onnx: Permission denied'):
            stage.load_model(checkpoint, 'cpu', 'auto', 'onnx')
        assert sorted(p.name for p in folder.iterdir()) == ['checkpoint_best.pth']
    finally:
        folder.chmod(0o755)
