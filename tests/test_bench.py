"""bench.py runs every path and reports them side by side (a smoke test: no stopwatch is asserted)."""
import pytest

import bench


def test_the_benchmark_reports_every_path(feature_tree, capsys):
    results = bench.main(['--train-feat-dir', str(feature_tree / 'train'), '--utts', '40', '--batches', '1',
                          '--batch-size', '8', '--embed-utts', '4', '--device', 'cpu'])
    for part, rate in (('training', 'samples_per_s'), ('embedding', 'utts_per_s')):
        assert set(results[part]) == {'tutorial', 'fast fp32', 'fast'}
        assert all(r[rate] > 0 and r['peak_mb'] > 0 for r in results[part].values())
    assert results['train_gflop'] == pytest.approx(0.83, abs=0.01)  # resnet18 on 40 x 100: forward + backward
    out = capsys.readouterr().out
    assert out.count('speed-up') == 2 and out.count('1.00x') >= 2 and 'GFLOP per training sample' in out
