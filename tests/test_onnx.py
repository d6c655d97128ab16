"""ONNX export and the ONNX Runtime backend: the graph against PyTorch, the scores of both backends (ONNX Runtime
the default on a CPU without bfloat16 units), the export cache, float32 only, and the standalone example that
docs/onnx.md quotes.

Exports and ONNX Runtime run in child processes (the scripts, as a user runs them), so that a crash in native
code fails one test instead of ending the suite.
"""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import soundfile
import torch

import enroll
from dvector.atomic import atomic_save
from dvector.checkpoint import load_checkpoint
from dvector.fbank import feature_settings
from dvector.onnx_backend import weights_hash
from dvector.stage import embedding_dtype
from model.model import BackgroundResNet

from conftest import REPO, model_args, run_ok, run_script

pytestmark = pytest.mark.slow  # the fast lane leaves these out (README, Tests)


def write_checkpoint(path, **model_settings):
    """A checkpoint of an untrained model with these settings, its batch norms given non-trivial statistics."""
    torch.manual_seed(0)
    settings = {'embedding_size': 32, 'num_classes': 5, **model_settings}
    model = BackgroundResNet(**settings)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # so that folding them into the convolutions is tested
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2)
    atomic_save({'state_dict': model.state_dict(), 'model_args': settings, 'speakers': [f's{i}' for i in range(5)],
                 'feature': {**feature_settings(), 'win_size': 100}, 'run_id': 'test', 'epoch': 1}, path)
    return path


def copy_checkpoint(trained, folder):
    """The tiny run's best checkpoint copied into `folder`, so that the export cache beside it is the test's own."""
    folder.mkdir(parents=True, exist_ok=True)
    return shutil.copy(trained / 'checkpoint_best.pth', folder / 'checkpoint_best.pth')


def onnx_cache(folder):
    return sorted(p.name for p in folder.glob('*.onnx'))


@pytest.mark.parametrize('settings', [{'pooling': 'avg'}, {'pooling': 'asp'},
                                      {'backbone': 'resnet50', 'base_channels': 8, 'pooling': 'asp'}],
                         ids=['avg', 'asp', 'resnet50-width8-asp'])
def test_export_matches_pytorch_for_each_pooling_and_width(settings, tmp_path):
    checkpoint = write_checkpoint(tmp_path / 'ckpt.pth', **settings)
    out = run_ok(tmp_path, 'tools/export_onnx.py', '--checkpoint', str(checkpoint), '--out', 'model.onnx')
    difference = float(re.search(r'largest d-vector difference ([\d.e+-]+)', out)[1])
    assert difference < 1e-5
    model = onnx.load(tmp_path / 'model.onnx')
    dims = [[d.dim_param or d.dim_value for d in io.type.tensor_type.shape.dim]
            for io in (model.graph.input[0], model.graph.output[0])]
    assert dims == [['batch', 1, 40, 'frames'], ['batch', 32]]
    metadata = {p.key: p.value for p in model.metadata_props}
    assert json.loads(metadata['feature']) == {**feature_settings(), 'win_size': 100}
    assert json.loads(metadata['model_args'])['pooling'] == settings['pooling']
    assert metadata['weights_sha256'] == weights_hash(load_checkpoint(checkpoint))


def test_an_export_that_differs_from_pytorch_is_not_written(tmp_path):
    checkpoint = write_checkpoint(tmp_path / 'ckpt.pth')
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from dvector import cli, onnx_backend; "
            "from tools import export_onnx; "
            "onnx_backend.TOLERANCE = -1; cli.run(lambda: export_onnx.main(sys.argv[2:]))")  # every graph fails
    result = subprocess.run([sys.executable, '-c', code, str(REPO), '--checkpoint', str(checkpoint), '--out', 'x.onnx'],
                            check=False, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    assert "error: the exported ONNX graph's d-vectors differ from PyTorch's by" in result.stderr
    assert not (tmp_path / 'x.onnx').exists()


def test_the_default_on_a_cpu_without_bfloat16_units_is_onnx_runtime_and_scores_as_pytorch_float32(
        trained, feature_tree, tmp_path, monkeypatch):
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX2')  # the scripts see a CPU without bfloat16 units, whatever this is
    checkpoint = copy_checkpoint(trained, tmp_path / 'model')
    run_ok(tmp_path, 'make_trials.py', '--test-dir', str(feature_tree / 'test'), '--out', 'trials.txt')
    summaries, scores, enrolled = {}, {}, {}
    for run, chosen in (('torch', ['--backend', 'torch', '--embed-precision', 'fp32']), ('default', [])):
        flags = ['--checkpoint', str(checkpoint), '--device', 'cpu', *chosen]
        result = run_script(tmp_path, 'verification.py', '--trials', 'trials.txt', '--json', '--scores', f'{run}.txt',
                            *flags)
        assert result.returncode == 0, result.stderr
        summaries[run] = json.loads(result.stdout)
        scores[run] = np.loadtxt(tmp_path / f'{run}.txt', usecols=0)
        run_ok(tmp_path, 'enroll.py', '--test-feat-dir', str(feature_tree / 'test'), '--embedding-dir', run, *flags)
        enrolled[run] = torch.stack([torch.load(p, weights_only=True)['embedding']
                                     for p in sorted((tmp_path / run).glob('*.pth'))])
    assert "Embedding in float32 (onnx: ONNX Runtime, faster than torch's float32 on this CPU)" in result.stderr
    assert summaries['torch']['embedding_dtype'] == 'float32'
    assert summaries['default']['embedding_dtype'] == 'float32 (onnx)'  # as it embedded: 'auto' settled
    assert onnx_cache(checkpoint.parent) == [f"checkpoint_best.{weights_hash(load_checkpoint(checkpoint))[:12]}.onnx"]
    assert len(scores['default']) == 9 and np.abs(scores['default'] - scores['torch']).max() < 1e-4
    assert summaries['default']['eer_percent'] == summaries['torch']['eer_percent']  # the same decisions
    assert summaries['default']['eer_threshold'] == pytest.approx(summaries['torch']['eer_threshold'], abs=1e-4)
    assert (enrolled['default'] - enrolled['torch']).abs().max() < 1e-5
    out = run_ok(tmp_path, 'identification.py', '--all', '--test-feat-dir', str(feature_tree / 'test'),
                 '--embedding-dir', 'default', '--results-dir', 'results', '--checkpoint', str(checkpoint),
                 '--backend', 'onnx', '--device', 'cpu')
    assert 'Top-1 identification accuracy: 100.00%' in out


def test_the_export_cache_is_reused_and_refreshed_when_the_weights_change(trained, feature_tree, tmp_path):
    folder = tmp_path / 'model'
    checkpoint = copy_checkpoint(trained, folder)
    others = ['checkpoint_1.0123456789ab.onnx', 'checkpoint_best.mine.onnx']  # another checkpoint's, the user's
    for name in others:
        (folder / name).write_bytes(b'not ours')
    flags = model_args(trained, feature_tree, tmp_path / 'emb') + ['--checkpoint', str(checkpoint), '--backend', 'onnx']
    run_ok(tmp_path, 'enroll.py', *flags)
    ckpt = load_checkpoint(checkpoint)
    cached = f"checkpoint_best.{weights_hash(ckpt)[:12]}.onnx"
    assert onnx_cache(folder) == sorted(others + [cached])
    written = (folder / cached).stat().st_mtime_ns
    run_ok(tmp_path, 'enroll.py', *flags)
    assert (folder / cached).stat().st_mtime_ns == written  # reused, not exported again

    ckpt['state_dict']['fc0.weight'] += 0.01  # as when train.py writes a better checkpoint_best.pth
    atomic_save(ckpt, checkpoint)
    run_ok(tmp_path, 'enroll.py', *flags)
    refreshed = f"checkpoint_best.{weights_hash(ckpt)[:12]}.onnx"
    assert refreshed != cached and onnx_cache(folder) == sorted(others + [refreshed])


def test_a_cached_export_of_other_weights_or_cut_off_is_exported_again(trained, feature_tree, tmp_path):
    folder = tmp_path / 'model'
    checkpoint = copy_checkpoint(trained, folder)
    flags = model_args(trained, feature_tree, tmp_path / 'emb') + ['--checkpoint', str(checkpoint), '--backend', 'onnx',
                                                                    '--replace']
    run_ok(tmp_path, 'enroll.py', *flags)
    ckpt = load_checkpoint(checkpoint)
    theirs = folder / f"checkpoint_best.{weights_hash(ckpt)[:12]}.onnx"  # another model's export ...
    ckpt['state_dict']['fc0.weight'] += 0.5
    atomic_save(ckpt, checkpoint)
    ours = folder / f"checkpoint_best.{weights_hash(ckpt)[:12]}.onnx"
    for planted in (theirs.read_bytes(), theirs.read_bytes()[:len(theirs.read_bytes()) // 2]):  # ... or cut off
        ours.write_bytes(planted)
        result = run_script(tmp_path, 'enroll.py', *flags)
        assert result.returncode == 0, result.stderr
        assert f"Note: {ours} is not the export of {checkpoint}'s weights" in result.stderr
        metadata = {p.key: p.value for p in onnx.load(ours).metadata_props}
        assert metadata['weights_sha256'] == weights_hash(ckpt)


def test_the_cache_key_is_the_weights_not_the_run(trained):
    ckpt = load_checkpoint(trained / 'checkpoint_best.pth')
    assert weights_hash({**ckpt, 'run_id': 'another', 'epoch': 99}) == weights_hash(ckpt)
    changed = {**ckpt, 'state_dict': {**ckpt['state_dict'], 'fc0.bias': ckpt['state_dict']['fc0.bias'] + 1}}
    assert weights_hash(changed) != weights_hash(ckpt)


def test_the_onnx_backend_is_float32_on_the_cpu_only(trained, feature_tree, tmp_path):
    cpu = torch.device('cpu')
    assert embedding_dtype('auto', cpu, 'onnx') == embedding_dtype('fp32', cpu, 'onnx') == torch.float32
    with pytest.raises(ValueError, match="precision 'bf16' cannot run on the 'onnx' backend, which embeds in float32"):
        enroll.main(model_args(trained, feature_tree, tmp_path / 'emb')
                    + ['--backend', 'onnx', '--embed-precision', 'bf16'])
    with pytest.raises(ValueError, match="the 'onnx' backend runs on the CPU, not on cuda: pass --device cpu"):
        embedding_dtype('fp32', torch.device('cuda'), 'onnx')
    with pytest.raises(ValueError, match="unknown embedding backend 'tf'"):
        embedding_dtype('fp32', cpu, 'tf')


def write_voice(path, seconds, seed):
    """A wav of a made-up voiced sound: harmonics of a gliding pitch, and a little noise (16 kHz)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    phase = 2 * np.pi * np.cumsum(120 + 20 * np.sin(2 * np.pi * 0.7 * t)) / 16000
    audio = 0.1 * sum(np.sin(k * phase) / k for k in range(1, 15)) + 0.01 * rng.normal(size=t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio, 16000)


def test_the_excerpts_in_docs_onnx_md_are_the_example_s_code():
    code = (REPO / 'examples' / 'onnx_dvector.py').read_text()
    excerpts = re.findall(r'```python\n(.*?)```', (REPO / 'docs' / 'onnx.md').read_text(), re.DOTALL)
    assert excerpts
    for excerpt in excerpts:
        assert excerpt in code  # quoted as it is


@pytest.mark.parametrize('segment_frames', [200, 0], ids=['segments', 'whole-utterances'])
def test_the_example_reproduces_an_enrolled_d_vector(segment_frames, trained, tmp_path):
    example = tmp_path / 'onnx_dvector.py'  # with SEGMENT_FRAMES set as its docstring says
    code = (REPO / 'examples' / 'onnx_dvector.py').read_text()
    assert 'SEGMENT_FRAMES = 200  #' in code
    example.write_text(code.replace('SEGMENT_FRAMES = 200  #', f'SEGMENT_FRAMES = {segment_frames}  #'))
    wavs = [tmp_path / 'wavs' / 'spk' / 'enroll1.wav', tmp_path / 'wavs' / 'spk' / 'enroll2.wav']
    for seed, (wav, seconds) in enumerate(zip(wavs, (3.3, 2.7))):  # a segment and a piece of one each
        write_voice(wav, seconds, seed)
    checkpoint = trained / 'checkpoint_best.pth'
    run_ok(tmp_path, 'feature_extraction.py', '--wav-dir', 'wavs', '--feat-dir', 'feats')
    run_ok(tmp_path, 'enroll.py', '--test-feat-dir', 'feats', '--embedding-dir', 'emb', '--checkpoint', str(checkpoint),
           '--embed-precision', 'fp32', '--enroll-frames', str(segment_frames), '--device', 'cpu')
    run_ok(tmp_path, 'tools/export_onnx.py', '--checkpoint', str(checkpoint), '--out', 'dvector.onnx')
    out = run_ok(tmp_path, str(example), 'dvector.onnx', *map(str, wavs))
    enrolled = torch.load(tmp_path / 'emb' / 'spk.pth', weights_only=True)['embedding'].numpy()
    assert np.abs(np.array(out.split(), dtype=float) - enrolled).max() < 1e-5
