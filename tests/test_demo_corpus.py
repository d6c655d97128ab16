"""The synthetic demo corpus: layout, wav format, silent edges, determinism and the completion marker."""
import numpy as np
import pytest
import soundfile as sf

from dvector import demo_corpus

SIZES = {'n_train_speakers': 3, 'n_train_utts': 2, 'n_test_speakers': 2}


def corpus_bytes(root):
    """{relative path: bytes} of every file under root."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def rms_db(x):
    return 10 * np.log10(np.mean(np.square(x, dtype=np.float64)))


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp('corpus') / 'wavs'  # missing: write_corpus makes it
    return root, demo_corpus.write_corpus(root, **SIZES, seed=0)


def test_layout_and_summary(corpus):
    root, summary = corpus
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob('*.wav'))
    assert files == ['test/tst000/enroll.wav', 'test/tst000/test.wav', 'test/tst001/enroll.wav', 'test/tst001/test.wav',
                     'train/trn000/u00.wav', 'train/trn000/u01.wav', 'train/trn001/u00.wav', 'train/trn001/u01.wav',
                     'train/trn002/u00.wav', 'train/trn002/u01.wav']
    assert {p.name for p in (root / 'train').iterdir()}.isdisjoint(p.name for p in (root / 'test').iterdir())
    assert {k: summary[k] for k in ('train_speakers', 'train_utterances', 'test_speakers', 'test_utterances')} == \
        {'train_speakers': 3, 'train_utterances': 6, 'test_speakers': 2, 'test_utterances': 4}
    seconds = sum(sf.info(p).frames for p in root.rglob('*.wav')) / 16000
    assert summary['seconds'] == pytest.approx(seconds, abs=0.1)


def test_wavs_are_16k_mono_with_quiet_edges(corpus):
    root, _ = corpus
    for path in root.rglob('*.wav'):
        audio, rate = sf.read(path)
        assert rate == 16000 and audio.ndim == 1, path
        low, high = (8, 10) if path.parent.parent.name == 'test' else (2.5, 4)
        assert low <= len(audio) / rate <= high, path
        edge = int(0.4 * rate)
        middle = rms_db(audio[rate:-rate])
        assert rms_db(audio[:edge]) < middle - 20 and rms_db(audio[-edge:]) < middle - 20, path
        assert np.abs(audio[:edge]).max() > 0, f"{path}: digital silence, not faint noise"
        assert np.abs(audio).max() == pytest.approx(0.5, abs=0.01), path


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_bytes(corpus, tmp_path):
    root, _ = corpus
    demo_corpus.write_corpus(tmp_path / 'same', **SIZES, seed=0)
    demo_corpus.write_corpus(tmp_path / 'other', **SIZES, seed=1)
    assert corpus_bytes(tmp_path / 'same') == corpus_bytes(root)
    same, other = corpus_bytes(tmp_path / 'same'), corpus_bytes(tmp_path / 'other')
    assert same.keys() == other.keys()
    assert all(same[k] != other[k] for k in same if k.endswith('.wav'))


def test_complete_corpus_is_reused_and_other_folders_refused(corpus, tmp_path, monkeypatch):
    root, summary = corpus
    monkeypatch.setattr(demo_corpus, 'synthesize_utterance', lambda *a: pytest.fail('the corpus was written again'))
    assert demo_corpus.write_corpus(root, **SIZES, seed=0) == summary
    with pytest.raises(FileExistsError, match='other parameters'):
        demo_corpus.write_corpus(root, **SIZES, seed=1)
    (tmp_path / 'notes.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='not empty'):
        demo_corpus.write_corpus(tmp_path, **SIZES)
    assert [p.name for p in tmp_path.iterdir()] == ['notes.txt']


def test_an_utterance_has_the_asked_length_and_differs_between_voices():
    rng = np.random.default_rng(0)
    first, second = demo_corpus.random_voice(rng), demo_corpus.random_voice(rng)
    audio = demo_corpus.synthesize_utterance(first, 2.5, np.random.default_rng(1))
    assert audio.dtype == np.float32 and audio.shape == (40000,)
    assert not np.array_equal(audio, demo_corpus.synthesize_utterance(second, 2.5, np.random.default_rng(1)))
    with pytest.raises(ValueError, match='too short'):
        demo_corpus.synthesize_utterance(first, 1.0, rng)


def test_command_line(tmp_path, capsys):
    summary = demo_corpus.main(['--out', str(tmp_path / 'wavs'), '--train-speakers', '1', '--train-utts', '1',
                                '--test-speakers', '1', '--seed', '3'])
    assert summary['train_utterances'] == 1 and summary['test_utterances'] == 2
    assert '1 training voices x 1 utterances' in capsys.readouterr().out
    assert (tmp_path / 'wavs' / 'corpus.json').is_file()
