"""Shared fixtures and helpers: tiny generated feature trees and sounds (no ../shared needed), a model trained on
them, and running the scripts as a user does."""
import io
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ETRI = REPO.parent / 'shared' / 'etri'

needs_etri = pytest.mark.skipif(not ETRI.is_dir(), reason=f'{ETRI} (the ETRI data) is not here')
RATE = 16000


# ---- Sounds ----------------------------------------------------------------------------------------------------

def voice(seconds=1.5, sample_rate=RATE, pitch=150, seed=0):
    """A made-up voiced sound: harmonics of a gliding pitch, a syllable-like loudness, a little noise."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    phase = 2 * np.pi * np.cumsum(pitch * (1 + 0.3 * np.sin(2 * np.pi * 1.5 * t))) / sample_rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 20)) * (0.2 + np.abs(np.sin(2 * np.pi * 2 * t)))
    return (0.1 * wave + 0.01 * np.random.default_rng(seed).normal(size=len(t))).astype(np.float32)


def padded(audio, seconds, level_db=None, sample_rate=RATE):
    """audio with `seconds` of silence before and after: zeros, or white noise of RMS level_db dBFS."""
    n = int(seconds * sample_rate)
    edges = [np.zeros(n, np.float32) if level_db is None else
             np.random.default_rng(i).normal(0, 10 ** (level_db / 20), n).astype(np.float32) for i in (1, 2)]
    return np.concatenate([edges[0], audio, edges[1]])


def write_audio(path, audio, sample_rate=RATE, subtype=None):
    """Write audio in the format its suffix names (as dvector/audio.py maps suffixes to libsndfile formats)."""
    from dvector.audio import _AUDIO_FORMATS  # here: the repository is on sys.path once this module has run
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = _AUDIO_FORMATS[path.suffix.lower()]
    sf.write(path, audio, sample_rate, format=fmt, subtype=subtype or ('OPUS' if path.suffix == '.opus' else None))
    return path


def demo_speech(seed, seconds=4.0, speaker=1):
    """Samples (n,) of a synthetic voice (demo_corpus): the speaker's, saying something new for each seed."""
    from dvector.demo_corpus import random_voice, synthesize_utterance
    return synthesize_utterance(random_voice(np.random.default_rng(speaker)), seconds, np.random.default_rng(seed))


def wav_bytes(audio, rate=RATE):
    """audio as the bytes of a 16-bit wav file."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format='WAV', subtype='PCM_16')
    return buffer.getvalue()


def demo_wav(seed, seconds=4.0, speaker=1):
    """A recording of demo_speech(...) as 16-bit wav bytes."""
    return wav_bytes(demo_speech(seed, seconds, speaker))


# ---- Features and a model trained on them ------------------------------------------------------------------------


def write_feature(path, feat, label):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'wb') as f:
        pickle.dump({'feat': feat, 'label': label}, f)
    return path


def speaker_utterances(rng, n_utts, n_frames, n_filters=40):
    """Utterances of one made-up speaker: a speaker-specific spectral profile plus noise."""
    profile = rng.normal(0, 3, n_filters)
    return [profile + rng.normal(0, 1, (n_frames, n_filters)) for _ in range(n_utts)]


def write_feature_tree(root, n_train_speakers=4, n_utts=10, n_test_speakers=3, n_frames=220, seed=0):
    """root/train/<spk>/uNN.p and root/test/<spk>/{enroll,test}.p of separable made-up speakers."""
    rng = np.random.default_rng(seed)
    for s in range(n_train_speakers):
        for u, feat in enumerate(speaker_utterances(rng, n_utts, n_frames)):
            write_feature(root / 'train' / f'spk{s}' / f'u{u:02d}.p', feat, f'spk{s}')
    for s in range(n_test_speakers):
        enroll, test = speaker_utterances(rng, 2, 2 * n_frames)
        write_feature(root / 'test' / f'tst{s}' / 'enroll.p', enroll, f'tst{s}')
        write_feature(root / 'test' / f'tst{s}' / 'test.p', test, f'tst{s}')
    return root


@pytest.fixture(scope='session')
def feature_tree(tmp_path_factory):
    return write_feature_tree(tmp_path_factory.mktemp('feat'))


@pytest.fixture(scope='session')
def trained(feature_tree, tmp_path_factory):
    """The log dir of a 2-epoch training run on the tiny feature tree."""
    import train
    log_dir = tmp_path_factory.mktemp('model_saved')
    train.main(['--train-feat-dir', str(feature_tree / 'train'), '--log-dir', str(log_dir), '--epochs', '2',
                '--batch-size', '8', '--valid-batch-size', '4', '--device', 'cpu',
                # SGD at lr 0.1 blows up in 8 steps (validation loss in the thousands); Adam learns, as in the demo
                '--optimizer', 'adam', '--lr', '0.001'])
    return log_dir


# ---- Running the scripts -----------------------------------------------------------------------------------------

def model_args(trained, feature_tree, embedding_dir):
    """The flags that point enroll/verification/identification at the tiny run."""
    return ['--checkpoint', str(trained / 'checkpoint_best.pth'), '--test-feat-dir', str(feature_tree / 'test'),
            '--embedding-dir', str(embedding_dir), '--device', 'cpu']


def copy_checkpoint(trained, tmp_path, **extra):
    """A copy of the tiny run's best checkpoint in its own folder (its cohort and thresholds go beside it)."""
    ckpt = torch.load(trained / 'checkpoint_best.pth', weights_only=True)
    path = tmp_path / 'model' / 'checkpoint_best.pth'
    path.parent.mkdir()
    torch.save({**ckpt, **extra}, path)
    return path


def embed_arrays(model, feats, segment_frames):
    """d-vectors (n, embedding_size) of trimmed features in memory [(n_frames, n_filters)], on the CPU, by the stages'
    embedding.embed_all."""
    from dvector.embedding import embed_all
    vectors = embed_all(model, range(len(feats)), feats.__getitem__, segment_frames, 'cpu')
    return torch.stack([vectors[i] for i in range(len(feats))])


def script_command(script):
    """The command that runs a script as the README does: `python train.py` (a root script, or another file:
    model/model.py, an example), `python -m tools.holdout` for 'tools/holdout.py', a tool or a benchmark (the
    repository put on the path, so that it runs from any folder)."""
    if Path(script).parts[0] not in ('tools', 'bench'):
        return [sys.executable, str(REPO / script)], None
    module = script.removesuffix('.py').replace('/', '.')
    return [sys.executable, '-m', module], {**os.environ, 'PYTHONPATH': str(REPO)}


def run_script(cwd, script, *flags):
    """Run an entry script as a user would, from `cwd`; returns the CompletedProcess (output captured)."""
    command, env = script_command(script)
    return subprocess.run([*command, *flags], cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          check=False)


def run_ok(cwd, script, *flags):
    """The standard output of an entry script run from `cwd`, which must succeed."""
    result = run_script(cwd, script, *flags)
    assert result.returncode == 0, result.stderr
    return result.stdout


def trains_as_the_plain_loop(cwd, feat_dir, log_dir, *flags):
    """train.py's output for one epoch of the tutorial's path (float32, contiguous, features read per item) on
    feat_dir, after checking that its weights are bit for bit those of tests/tutorial_loop.py, the tutorial's
    loop written plainly, run beside it on the same CPU (so on any CPU, whatever its kernels round to)."""
    out = run_ok(cwd, 'train.py', '--train-feat-dir', str(feat_dir), '--log-dir', str(log_dir), '--epochs', '1',
                 '--precision', 'fp32', '--channels-last', 'no', '--preload', 'no', '--device', 'cpu', *flags)
    run_ok(cwd, 'tests/tutorial_loop.py', str(feat_dir), str(log_dir / 'plain.pth'), *flags)  # on the CPU
    ours = torch.load(log_dir / 'checkpoint_1.pth', weights_only=True, map_location='cpu')['state_dict']
    plain = torch.load(log_dir / 'plain.pth', weights_only=True, map_location='cpu')
    assert ours.keys() == plain.keys()
    different = [name for name in ours if not torch.equal(ours[name], plain[name])]
    assert not different, f'train.py rounds otherwise than the plain loop: {len(different)} tensors, {different[:3]}...'
    return out


def decision_is_right(out):
    """Whether verification.py's printed result is the right one for its printed score and threshold: Accept
    exactly when the score is above the threshold (a test that cannot know the true speaker checks this)."""
    score, threshold, result = re.search(r'Score: ([-\d.]+) +Threshold: ([-\d.]+).*\nResult: (\w+)', out).groups()
    return result == ('Accept' if float(score) > float(threshold) else 'Reject')
