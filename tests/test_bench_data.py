"""bench/data.py's feature rows: every path timed on the same utterances, the GPU's when there is one (no stopwatch
is asserted: only that each path ran and what is printed of it)."""
import re

import numpy as np
import soundfile
import torch

from bench import data as bench_data
from DB_wav_reader import read_DB_structure


def test_the_torch_fbank_is_timed_on_the_cpu_and_on_a_gpu_when_there_is_one():
    assert list(bench_data.feature_paths(torch.device('cpu'))) == ['torch fp64 cpu', 'torch fp32 cpu']
    gpu = torch.device('cuda')
    assert bench_data.feature_paths(gpu) == {'torch fp64 cpu': (torch.device('cpu'), torch.float64),
                                             'torch fp32 cpu': (torch.device('cpu'), torch.float32),
                                             'torch fp64 cuda': (gpu, torch.float64),
                                             'torch fp32 cuda': (gpu, torch.float32)}


def test_every_feature_path_is_timed_and_printed(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for speaker in ('a', 'b'):
        (tmp_path / speaker).mkdir()
        soundfile.write(tmp_path / speaker / 'u.wav', (0.1 * rng.normal(size=24000)).astype(np.float32), 16000)
    threads = torch.get_num_threads()
    rates = bench_data.print_feature_rates(read_DB_structure(tmp_path), torch.device('cpu'), batch_size=2, repeats=1)
    assert torch.get_num_threads() == threads  # timed on one thread, then given back
    assert list(rates) == ['read audio', 'python_speech_features', 'torch fp64 cpu', 'torch fp32 cpu']
    assert all(rate > 0 for rate in rates.values())
    out = capsys.readouterr().out
    assert '(2 utterances, 1.5 s on average; the fastest of 1; one CPU thread; torch in batches of 2)' in out
    printed = dict(re.findall(r'^  (\S.*?) +(\d+) +\d+x real time$', out, re.MULTILINE))
    assert printed == {path: f'{rate:.0f}' for path, rate in rates.items()}
