"""The scoring settings a stage uses, resolved by one rule (stage.resolve_scoring), the flags it reads, and the
precision 'auto' runs in (stage.bfloat16_units)."""
import pytest
import torch

import configure
import verification
from bench import throughput
from dvector import cli, stage
from dvector.stage import resolve_scoring
from dvector.training import autocast_dtype
from model.model import BackgroundResNet

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


def test_an_unknown_onednn_limit_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: True)
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX512_BF16')
    with pytest.raises(ValueError, match="ONEDNN_MAX_CPU_ISA='AVX512_BF16' is not an instruction set oneDNN knows"):
        stage.bfloat16_units(torch.device('cpu'))
