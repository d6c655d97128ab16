"""docs/voxceleb.md's commands, run on a miniature VoxCeleb: <speaker>/<video>/<utterance>.wav of synthetic
voices, a VoxCeleb1-format trial list, MUSAN- and RIRS_NOISES-shaped folders; tiny epochs appended."""
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from dvector import demo_corpus

from conftest import REPO

# What the test adds to each command so that it runs in seconds (a flag given twice: the last wins)
TINY_TRAINING = ['--epochs', '2', '--warmup-epochs', '1', '--finetune-epochs', '1', '--win-size', '100',
                 '--finetune-win-size', '120', '--batch-size', '8', '--valid-batch-size', '4', '--num-workers', '0',
                 '--device', 'cpu']
TINY_SCORING = ['--cohort-utts', '2', '--cohort-top', '4', '--device', 'cpu']


def three_levels(flat, out):
    """<flat>/<speaker>/<name>.wav laid out as VoxCeleb's <out>/<speaker>/<video>/<name>.wav (two videos each)."""
    for i, wav in enumerate(sorted(flat.rglob('*.wav'))):
        target = out / wav.parent.name / f'vid{i % 2}' / wav.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(wav, target)


def miniature(root):
    """{variable: path} of the doc's folders, made under root."""
    voices = root / 'voices'
    demo_corpus.write_corpus(voices, n_train_speakers=4, n_train_utts=6, n_test_speakers=3, seed=0)
    vox2, vox1 = root / 'voxceleb2' / 'dev' / 'wav', root / 'voxceleb1' / 'test' / 'wav'
    three_levels(voices / 'train', vox2)
    three_levels(voices / 'test', vox1)
    utterances = sorted(str(p.relative_to(vox1)) for p in vox1.rglob('*.wav'))
    speaker = lambda path: path.split('/')[0]  # noqa: E731
    lines = [f"{int(speaker(a) == speaker(b))} {a} {b}" for a in utterances for b in utterances if a < b]
    (vox1.parent / 'veri_test2.txt').write_text('\n'.join(lines) + '\n')
    rng = np.random.default_rng(0)
    musan, rirs = root / 'musan', root / 'RIRS_NOISES' / 'simulated_rirs'
    for sub in ('noise/free-sound', 'music/jamendo', 'speech/librivox', 'rooms'):
        folder = (rirs if sub == 'rooms' else musan) / sub
        folder.mkdir(parents=True)
        audio = rng.normal(size=16000) * np.exp(-np.arange(16000) / 2000) if sub == 'rooms' else rng.normal(size=32000)
        soundfile.write(folder / 'a.wav', (0.1 * audio).astype(np.float32), 16000)
    return {'VOX2': vox2, 'VOX1': vox1, 'MUSAN': musan, 'RIRS': rirs}


def recipe_commands():
    """The command lines of docs/voxceleb.md's first sh block (the variables' lines apart)."""
    text = (REPO / 'docs' / 'voxceleb.md').read_text()
    block = re.search(r'```sh\n(.*?)```', text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not re.match(r'[A-Z0-9_]+=', line)]


@pytest.mark.slow
def test_the_voxceleb_recipe_runs_on_a_miniature_voxceleb(tmp_path):
    folders = miniature(tmp_path)
    commands = recipe_commands()
    assert [c.split()[0] for c in commands] == ['python', 'torchrun', 'python']
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'GLOO_SOCKET_IFNAME': 'lo'}
    for line in commands:
        for name, path in folders.items():
            line = line.replace(f'${name}', str(path))
        words = shlex.split(line.replace('runs/', f'{tmp_path}/runs/'))
        if words[0] == 'torchrun':
            words = [sys.executable, '-m', 'torch.distributed.run'] + words[1:]
            words[words.index('--nproc_per_node') + 1] = '1'
        else:
            words[0] = sys.executable
        script = next(w for w in words if w.endswith('.py'))
        words += TINY_TRAINING if script == 'train.py' else TINY_SCORING
        done = subprocess.run(words, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert 'EER' in done.stdout
