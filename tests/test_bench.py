"""bench.py runs every path and reports them side by side (no stopwatch is asserted: only what it prints of its
measurements)."""
import re

import pytest
import torch

from bench import throughput
from dvector.feature_files import read_MFB

pytestmark = pytest.mark.slow  # the fast lane leaves these out (README, Tests)


def test_the_benchmark_reports_every_path(feature_tree, capsys):
    results = throughput.main(['--train-feat-dir', str(feature_tree / 'train'), '--utts', '40', '--batches', '1',
                          '--batch-size', '8', '--embed-utts', '4', '--device', 'cpu'])
    assert set(results['training']) == {'tutorial', 'fast fp32', 'fast', 'fast + aug'}
    assert set(results['embedding']) == {'tutorial', 'fast fp32', 'fast', 'onnx fp32'}  # ONNX Runtime: the CPU only
    for part, rate in (('training', 'samples_per_s'), ('embedding', 'utts_per_s')):
        assert all(r[rate] > 0 and r['peak_mb'] > 0 for r in results[part].values())
    assert results['train_gflop'] == pytest.approx(0.83, abs=0.01)  # resnet18 on 40 x 100: forward + backward
    out = capsys.readouterr().out
    assert out.count('speed-up') == 2 and 'GFLOP per training sample' in out
    assert out.count('% peak') == 3 and re.search(r'[\d.]+ GFLOP/s in float32, [\d.]+ GFLOP/s in bfloat16', out)
    for path in results['training']:  # every path's row, its speed-up against the tutorial's
        assert re.search(rf'^  {re.escape(path)} +[\d.]+ +[\d.]+x', out, re.MULTILINE)


@pytest.mark.parametrize('path, tolerance', [('fast fp32', 1e-4), ('onnx fp32', 1e-4), ('fast', 0.05)])
def test_the_paths_compared_make_the_same_d_vectors(feature_tree, path, tolerance):
    """A speed-up means something only if the paths compute the same thing: the fast paths' d-vectors are the
    tutorial's (to float precision in float32; bfloat16 rounds)."""
    args = throughput.parse_args(['--backend', 'torch'])
    cpu = torch.device('cpu')
    files = sorted((feature_tree / 'train').rglob('*.p'))[:5]
    feats = {f: read_MFB(f) for f in files}
    expected = throughput.embed_by_path(throughput.embedding_model('tutorial', args, cpu), 'tutorial', feats, cpu)
    found = throughput.embed_by_path(throughput.embedding_model(path, args, cpu), path, feats, cpu)
    for f in files:
        assert (found[f] - expected[f]).abs().max() < tolerance, f


def test_a_speed_up_is_a_path_rate_over_the_baselines():
    rates = {'tutorial': {'utts_per_s': 4.0}, 'fast': {'utts_per_s': 10.0}}
    assert throughput.speed_up(rates, 'fast', 'utts_per_s') == 2.5 and throughput.speed_up(rates, 'tutorial', 'utts_per_s') == 1


def test_the_fast_path_follows_the_backend_flag():
    cpu = torch.device('cpu')
    assert throughput.embedding_settings('fast', 'onnx', cpu) == ('onnx', torch.float32)  # 'auto' is float32 there
    assert throughput.embedding_settings('onnx fp32', 'torch', cpu) == ('onnx', torch.float32)
    assert throughput.embedding_settings('fast fp32', 'onnx', cpu) == ('torch', torch.float32)
