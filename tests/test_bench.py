"""bench.py runs every path and reports them side by side (no stopwatch is asserted: only what it prints of its
measurements)."""
import re

import pytest
import torch

import bench

pytestmark = pytest.mark.slow  # the fast lane leaves these out (README, Tests)


def test_the_benchmark_reports_every_path(feature_tree, capsys):
    results = bench.main(['--train-feat-dir', str(feature_tree / 'train'), '--utts', '40', '--batches', '1',
                          '--batch-size', '8', '--embed-utts', '4', '--device', 'cpu'])
    assert set(results['training']) == {'tutorial', 'fast fp32', 'fast', 'fast + aug'}
    assert set(results['embedding']) == {'tutorial', 'fast fp32', 'fast', 'onnx fp32'}  # ONNX Runtime: the CPU only
    for part, rate in (('training', 'samples_per_s'), ('embedding', 'utts_per_s')):
        assert all(r[rate] > 0 and r['peak_mb'] > 0 for r in results[part].values())
    assert results['train_gflop'] == pytest.approx(0.83, abs=0.01)  # resnet18 on 40 x 100: forward + backward
    out = capsys.readouterr().out
    assert out.count('speed-up') == 2 and 'GFLOP per training sample' in out
    training, embedding = out.split('\nEmbedding:')
    for part, text, rate in (('training', training, 'samples_per_s'), ('embedding', embedding, 'utts_per_s')):
        rows = printed_rows(text)
        assert list(rows) == list(results[part])
        for path, (printed_rate, printed_speed_up) in rows.items():  # each speed-up: the path's rate / tutorial's
            measured = results[part][path][rate]
            assert printed_rate == f"{measured:.1f}"
            assert printed_speed_up == f"{measured / results[part]['tutorial'][rate]:.2f}"
    onnx_vs_torch = results['embedding']['onnx fp32']['utts_per_s'] / results['embedding']['fast fp32']['utts_per_s']
    assert f"ONNX Runtime float32 embeds {onnx_vs_torch:.2f}x as fast as PyTorch float32" in out


def printed_rows(table):
    """{path: (rate, speed-up)} of the rows of a table bench.py prints, as printed."""
    return {path: (rate, speed_up) for path, rate, speed_up in
            re.findall(r'^  (tutorial|fast fp32|fast \+ aug|fast|onnx fp32) +([\d.]+) +([\d.]+)x', table, re.MULTILINE)}


def test_the_fast_path_follows_the_backend_flag():
    cpu = torch.device('cpu')
    assert bench.embedding_settings('fast', 'onnx', cpu) == ('onnx', torch.float32)  # 'auto' is float32 there
    assert bench.embedding_settings('onnx fp32', 'torch', cpu) == ('onnx', torch.float32)
    assert bench.embedding_settings('fast fp32', 'onnx', cpu) == ('torch', torch.float32)
