"""Work spread over worker processes (parallel.process_map): the same results, in order, as in one process."""
import multiprocessing
import os

import pytest
import soundfile as sf

import feature_extraction
from dvector import demo_corpus, parallel

from conftest import voice


def pid_and_square(x):
    return os.getpid(), x * x


def same_files(one, other, pattern='*'):
    """The files matching pattern under folder `one` (relative paths), after checking that `other` holds the same
    bytes under each."""
    files = sorted(p.relative_to(one) for p in one.rglob(pattern) if p.is_file())
    for f in files:
        assert (one / f).read_bytes() == (other / f).read_bytes(), f
    return files


def test_few_items_run_in_this_process(monkeypatch):
    monkeypatch.setattr(os, 'cpu_count', lambda: 8)
    results = list(parallel.process_map(pid_and_square, range(2 * parallel.ITEMS_PER_PROCESS - 1), desc='few'))
    assert {pid for pid, _ in results} == {os.getpid()}


@pytest.mark.parametrize('platform', ['linux', 'darwin'])  # forked on Linux, spawned elsewhere
@pytest.mark.slow
def test_many_items_run_in_worker_processes_and_come_back_in_order(monkeypatch, platform):
    started = []
    real_context = multiprocessing.get_context
    monkeypatch.setattr(parallel.multiprocessing, 'get_context', lambda method: started.append(method)
                        or real_context(method))
    monkeypatch.setattr(parallel.sys, 'platform', platform)
    monkeypatch.setattr(parallel, 'ITEMS_PER_PROCESS', 5)
    monkeypatch.setattr(os, 'cpu_count', lambda: 2)
    results = list(parallel.process_map(pid_and_square, range(23), desc='many'))
    assert [square for _, square in results] == [x * x for x in range(23)]
    pids = {pid for pid, _ in results}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids  # two workers (a fast one may take every chunk)
    assert started == ['fork' if platform == 'linux' else 'spawn']


@pytest.mark.slow
def test_the_demo_voices_written_by_workers_are_those_written_in_one_process(tmp_path, monkeypatch):
    sizes = {'n_train_speakers': 3, 'n_train_utts': 4, 'n_test_speakers': 2, 'seed': 0}
    demo_corpus.write_corpus(tmp_path / 'one', **sizes)
    monkeypatch.setattr(parallel, 'ITEMS_PER_PROCESS', 4)
    monkeypatch.setattr(os, 'cpu_count', lambda: 2)
    demo_corpus.write_corpus(tmp_path / 'workers', **sizes)
    assert len(same_files(tmp_path / 'one', tmp_path / 'workers')) == 3 * 4 + 2 * 2 + 1  # and corpus.json


@pytest.mark.slow
def test_features_extracted_by_workers_are_those_of_one_process_and_failures_are_reported(tmp_path, monkeypatch):
    for s in range(2):
        for u in range(4):
            path = tmp_path / 'wavs' / f'spk{s}' / f'utt{u}.wav'
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, voice(pitch=120 + 100 * s, seed=u), 16000)
    (tmp_path / 'wavs' / 'spk1' / 'broken.wav').write_bytes(b'not audio')
    one = feature_extraction.extract_tree(tmp_path / 'wavs', tmp_path / 'one')
    monkeypatch.setattr(parallel, 'ITEMS_PER_PROCESS', 3)
    monkeypatch.setattr(os, 'cpu_count', lambda: 2)
    workers = feature_extraction.extract_tree(tmp_path / 'wavs', tmp_path / 'workers')
    assert list(one) == list(workers) == [str(tmp_path / 'wavs' / 'spk1' / 'broken.wav')]
    assert len(same_files(tmp_path / 'one', tmp_path / 'workers', '*.p')) == 8
