"""bench/throughput.py runs every path and reports them side by side (no stopwatch is asserted: only what it
prints of its measurements)."""
import re

import pytest
import torch

from bench import throughput
from dvector.feature_files import read_MFB
from dvector.stage import bfloat16_units

pytestmark = pytest.mark.slow  # the fast lane leaves these out (README, Tests)
PRINTED = 0.0051  # what rounding to 2 decimals moves a ratio by (and float noise)


def table(out, title):
    """[(path, rate, speed-up)] of the rows of the table printed under a line starting with `title`, in order."""
    lines = out.split(f'\n{title}', 1)[1].splitlines()[2:]  # below its title and its column headings
    rows = [re.match(r'  (.{10}) +([\d.]+) +([\d.]+)x ', line) for line in lines]
    rows = rows[:rows.index(None)] if None in rows else rows  # the table ends at the first other line
    return [(m.group(1).strip(), float(m.group(2)), float(m.group(3))) for m in rows]


def test_the_benchmark_reports_every_path_side_by_side_against_the_tutorials(feature_tree, capsys):
    results = throughput.main(['--train-feat-dir', str(feature_tree / 'train'), '--utts', '40', '--batches', '1',
                               '--batch-size', '8', '--embed-utts', '4', '--device', 'cpu'])
    out = capsys.readouterr().out
    assert results['train_gflop'] == pytest.approx(0.83, abs=0.01)  # resnet18 on 40 x 100: forward + backward
    assert 'GFLOP per training sample' in out and out.count('% peak') == 3
    assert re.search(r'[\d.]+ GFLOP/s in float32, [\d.]+ GFLOP/s in bfloat16', out)
    for title, part, rate, paths in (
            ('Training:', 'training', 'samples_per_s', ['tutorial', 'fast fp32', 'fast', 'fast + aug']),
            ('Embedding:', 'embedding', 'utts_per_s', ['tutorial', 'fast fp32', 'fast', 'onnx fp32'])):  # ONNX: CPU
        measured = results[part]
        assert all(r[rate] > 0 and r['peak_mb'] > 0 for r in measured.values())
        rows = table(out, title)
        assert [path for path, _, _ in rows] == paths  # every path in one table, the tutorial's (the baseline) first
        for path, printed_rate, speed_up in rows:  # each row's rate is its measurement, its speed-up the ratio
            assert printed_rate == pytest.approx(measured[path][rate], abs=0.051), path
            assert speed_up == pytest.approx(measured[path][rate] / measured['tutorial'][rate], abs=PRINTED), path
    training, embedding = results['training'], results['embedding']
    floor = results['convolution_floor']
    ceiling = re.search(r'a float32 step is at most ([\d.]+)x the tutorial', out).group(1)
    tutorial_step = 8 / training['tutorial']['samples_per_s']
    assert float(ceiling) == pytest.approx(tutorial_step / floor['best'], abs=PRINTED)
    aug = re.search(r'with augmentation takes ([\d.]+)x as long as without', out).group(1)
    assert float(aug) == pytest.approx(training['fast']['samples_per_s'] / training['fast + aug']['samples_per_s'],
                                       abs=PRINTED)
    marked = re.findall(r'^  (.{10}) .* \*$', out, re.MULTILINE)  # the rows that embed as the stages do
    no_units = not bfloat16_units(torch.device('cpu')).native  # there the default is ONNX Runtime float32
    assert [m.strip() for m in marked] == (['fast', 'onnx fp32'] if no_units else ['fast'])
    assert ("* as the stages embed here (EMBED_PRECISION auto, --backend auto): "
            + ("float32 (onnx: ONNX Runtime" if no_units else "bfloat16 (this CPU has bfloat16 units")) in out
    onnx = re.search(r'ONNX Runtime float32 embeds ([\d.]+)x as fast as PyTorch float32', out).group(1)
    assert float(onnx) == pytest.approx(embedding['onnx fp32']['utts_per_s'] / embedding['fast fp32']['utts_per_s'],
                                        abs=PRINTED)


def test_the_convolution_floor_takes_each_convolution_in_its_faster_format(monkeypatch):
    timed = []
    monkeypatch.setattr(throughput, 'median_seconds', lambda function, device: timed.append(function) or len(timed))
    floor = throughput.convolution_floor('resnet18', 2, torch.device('cpu'))
    assert len(timed) == 2 * 2 * 20  # resnet18: 20 convolutions, forward and backward, in two formats
    # the n-th call takes n "seconds": the contiguous format (timed first) is always the faster one here
    assert floor['contiguous'] == sum(range(1, 81, 4)) + sum(range(2, 81, 4))
    assert floor['channels-last'] == sum(range(3, 81, 4)) + sum(range(4, 81, 4))
    assert floor['best'] == floor['contiguous']


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


def test_the_fast_path_follows_the_backend_flag():
    cpu = torch.device('cpu')
    assert throughput.embedding_settings('fast', 'onnx', cpu) == ('onnx', torch.float32)  # 'auto' is float32 there
    assert throughput.embedding_settings('onnx fp32', 'torch', cpu) == ('onnx', torch.float32)
    assert throughput.embedding_settings('fast fp32', 'onnx', cpu) == ('torch', torch.float32)
