"""Training from audio: exact features made on the fly, list files, augmentation on the waveform, resume."""
import dataclasses
import os

import numpy as np
import pytest
import soundfile
import torch

import SR_Dataset
import train
from DB_wav_reader import read_list_file, read_training_structure
from dvector import demo_corpus, utterance
from dvector.augment_audio import WaveAugmenter, codec_audio
from dvector.augmentation import augment_settings
from dvector.checkpoint import load_checkpoint
from dvector.fbank import feature_settings
from dvector.feature_files import FeatureFileError
from dvector.frontend import reading_settings
from dvector.utterance import read_utterance
from SR_Dataset import DvectorDataset, load_features, random_window

SIZES = {'n_train_speakers': 4, 'n_train_utts': 6, 'n_test_speakers': 2}


@pytest.fixture(scope='module')
def voices(tmp_path_factory):
    """A small corpus of synthetic voices: <root>/train/<speaker>/<utterance>.wav."""
    root = tmp_path_factory.mktemp('voices')
    demo_corpus.write_corpus(root, **SIZES, seed=0)
    return root


def run(data, log_dir, *flags):
    return train.main(['--train-feat-dir', str(data), '--log-dir', str(log_dir), '--batch-size', '8',
                       '--valid-batch-size', '4', '--device', 'cpu', *flags])


def test_a_window_of_audio_is_a_window_of_the_recipes_features(voices):
    DB = read_training_structure(voices / 'train')
    feature = feature_settings()
    dataset = DvectorDataset(DB, {s: i for i, s in enumerate(sorted(set(DB['speaker_id'])))}, feature)
    for index in (0, 5):
        torch.manual_seed(index)
        window = dataset[index][0][0].numpy().T
        torch.manual_seed(index)
        expected = random_window(read_utterance(DB['filename'][index], reading_settings(feature)), feature['win_size'])
        np.testing.assert_array_equal(window, expected.astype(np.float32))


def test_list_files_name_paths_with_spaces_and_kaldi_folders(voices, tmp_path):
    wavs = sorted((voices / 'train').rglob('*.wav'))[:3]
    spaced = tmp_path / 'my voices' / 'a b.wav'
    spaced.parent.mkdir()
    spaced.write_bytes(wavs[0].read_bytes())
    listing = tmp_path / 'train.lst'
    listing.write_text(f"# path speaker\nmy voices/a b.wav alice\n{wavs[1]} bob\n\n")
    DB = read_training_structure(listing)
    assert list(DB['filename']) == [str(spaced), str(wavs[1])] and list(DB['speaker_id']) == ['alice', 'bob']
    kaldi = tmp_path / 'kaldi'
    kaldi.mkdir()
    (kaldi / 'wav.scp').write_text(f"u1 {wavs[1]}\nu2 {wavs[2]}\n")
    (kaldi / 'utt2spk').write_text("u1 bob\nu2 carol\n")
    assert list(read_training_structure(kaldi)['speaker_id']) == ['bob', 'carol']
    (kaldi / 'wav.scp').write_text(f"u1 sox {wavs[1]} -t wav - |\n")
    with pytest.raises(ValueError, match='a command'):
        read_list_file(kaldi)
    listing.write_text(f"{wavs[1]} bob\n{wavs[1]} bob\n")
    with pytest.raises(ValueError, match='line 2: .* listed twice'):
        read_list_file(listing)


def test_a_list_that_is_not_utf8_or_names_a_missing_file_says_where(tmp_path):
    listing = tmp_path / 'train.lst'
    listing.write_bytes('a.wav alice\nb.wav Jos\xe9\n'.encode('latin-1'))
    with pytest.raises(ValueError, match=rf'^{listing}, line 2: not UTF-8 text \(byte 0xe9\): save it as UTF-8, e\.g\. '
                                         r'iconv -f latin1 -t utf-8 train\.lst > train\.lst\.utf8$'):
        read_list_file(listing)
    listing.write_text('gone.wav alice\n')
    missing = read_list_file(listing)['filename'][0]
    with pytest.raises(FeatureFileError, match=rf"{missing}: no such file; correct its path where it is "
                                                        r"given \(a list file's relative paths are from the list's"):
        load_features([missing], feature_settings(), keep=False)


def wave_settings(**changes):
    settings = augment_settings()
    off = {f.name: 0.0 for f in dataclasses.fields(settings) if f.name.endswith('_prob')}
    return dataclasses.replace(settings, **{**off, **changes})


@pytest.mark.slow
def test_each_kind_on_the_waveform_changes_it_and_repeats_with_the_seed(voices):
    audio = soundfile.read(sorted((voices / 'train').rglob('*.wav'))[0], dtype='float32')[0]
    others = lambda k: [audio[::-1].copy()] * k  # noqa: E731
    assert WaveAugmenter(wave_settings(), 16000)(audio) is audio
    for kind in ('noise', 'babble', 'reverb', 'channel', 'gain', 'pause'):
        augmenter = WaveAugmenter(wave_settings(**{f'{kind}_prob': 1.0}), 16000)
        torch.manual_seed(0)
        first = augmenter(audio, others)
        torch.manual_seed(0)
        np.testing.assert_array_equal(augmenter(audio, others), first)
        assert np.isfinite(first).all() and not np.array_equal(first[:len(audio)], audio), kind
    codec = WaveAugmenter(wave_settings(channel_prob=1.0, telephone_share=0.0, codec_share=1.0), 16000)
    np.testing.assert_array_equal(codec(audio, others), codec_audio(audio, 16000))


def test_noise_and_room_folders_are_used_by_musans_layout(voices, tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / 'musan' / 'music' / 'x').mkdir(parents=True)
    soundfile.write(tmp_path / 'musan' / 'music' / 'x' / 'song.wav', rng.normal(size=32000).astype(np.float32), 16000)
    (tmp_path / 'rirs').mkdir()
    rir = np.zeros(4000, np.float32)
    rir[100], rir[2000] = 1.0, 0.5  # a direct path after 100 samples of delay and one echo
    soundfile.write(tmp_path / 'rirs' / 'room.wav', rir, 16000)
    augmenter = WaveAugmenter(wave_settings(noise_dir=str(tmp_path / 'musan'), rir_dir=str(tmp_path / 'rirs'),
                                                    reverb_prob=1.0), 16000)
    assert len(augmenter.files['music']) == 1 and len(augmenter.rirs) == 1
    impulse = np.zeros(3000, np.float32)
    impulse[0] = 1
    out = augmenter(impulse)
    assert out[0] == pytest.approx(1 / np.sqrt(1.25), rel=1e-4) and out[1900] == pytest.approx(0.5 / np.sqrt(1.25),
                                                                                               rel=1e-4)
    with pytest.raises(FileNotFoundError, match='--rir-dir'):
        WaveAugmenter(wave_settings(rir_dir=str(tmp_path / 'musan' / 'nothing')), 16000)


def test_a_silent_stretch_of_a_noise_file_is_never_mixed_in(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / 'musan' / 'noise').mkdir(parents=True)
    long_silence = np.zeros(70 * 16000, np.float32)  # longer than CHECKED_WHOLE_SECONDS: read a stretch at a time
    long_silence[-16000:] = rng.normal(0, 0.1, 16000)
    soundfile.write(tmp_path / 'musan' / 'noise' / 'mostly_silent.wav', long_silence, 16000)
    augmenter = WaveAugmenter(wave_settings(noise_dir=str(tmp_path / 'musan'), noise_prob=1.0), 16000)
    audio = rng.normal(0, 0.1, 16000).astype(np.float32)
    torch.manual_seed(0)
    outputs = [augmenter(audio) for _ in range(20)]
    assert all(np.isfinite(out).all() for out in outputs)  # was: NaN from a silent stretch scaled to an SNR
    assert any(out is audio for out in outputs)            # the silent stretches were left out


@pytest.mark.parametrize('flag', ['noise_dir', 'rir_dir'])
def test_silent_or_unreadable_noise_and_room_files_are_refused_when_training_starts(tmp_path, flag):
    folder = tmp_path / 'files'
    folder.mkdir()
    soundfile.write(folder / 'silent.wav', np.zeros(16000, np.float32), 16000)
    option = '--' + flag.replace('_', '-')
    with pytest.raises(FeatureFileError, match=f"{option}: {folder / 'silent.wav'}: silent: every sample is 0"
                                                        "; remove it"):
        WaveAugmenter(wave_settings(**{flag: str(folder)}), 16000)
    (folder / 'silent.wav').write_bytes(b'RIFF, but not audio')
    with pytest.raises(FeatureFileError, match=f"{option}: {folder / 'silent.wav'}: not a readable audio"):
        WaveAugmenter(wave_settings(**{flag: str(folder)}), 16000)


@pytest.mark.slow
def test_an_audio_tree_trains_with_augmentation_and_resumes_exactly(voices, tmp_path):
    flags = ('--augment', 'yes', '--speed-perturb', 'yes', '--aug-noise-prob', '0.5', '--aug-reverb-prob', '0.5',
             '--aug-babble-prob', '0.5', '--aug-channel-prob', '0.5')
    straight = run(voices / 'train', tmp_path / 'a', '--epochs', '2', *flags)
    run(voices / 'train', tmp_path / 'b', '--epochs', '1', *flags)
    resumed = run(voices / 'train', tmp_path / 'b', '--epochs', '2', '--resume')
    assert [h['train_loss'] for h in resumed] == [h['train_loss'] for h in straight]
    ckpt = load_checkpoint(tmp_path / 'a' / 'checkpoint_2.pth')
    assert ckpt['model_args']['num_classes'] == 3 * SIZES['n_train_speakers']  # each speed its own speakers
    a, b = (load_checkpoint(tmp_path / d / 'checkpoint_2.pth')['state_dict'] for d in 'ab')
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
def test_the_torch_fbank_trains_as_the_recipes(voices, tmp_path, monkeypatch):
    recipe = run(voices / 'train', tmp_path / 'recipe', '--epochs', '1', '--precision', 'fp32',
                 '--fbank', 'python_speech_features')
    calls = []
    real = utterance.torch_fbank
    monkeypatch.setattr(utterance, 'torch_fbank', lambda *args: calls.append(1) or real(*args))
    torch_fbank = run(voices / 'train', tmp_path / 'torch', '--epochs', '1', '--precision', 'fp32', '--fbank', 'torch')
    assert len(calls) > 8  # the items of a batch and the validation utterances
    for name in ('train_loss', 'valid_loss', 'valid_acc'):
        assert torch_fbank[0][name] == pytest.approx(recipe[0][name], rel=1e-5), name


def test_audio_is_checked_from_its_header_before_a_run_not_decoded(voices, tmp_path, monkeypatch):
    wavs = sorted((voices / 'train').rglob('*.wav'))[:2]
    short, broken = tmp_path / 'short.wav', tmp_path / 'broken.wav'
    soundfile.write(short, np.zeros(8000, np.float32), 16000)  # 0.5 s: all trimmed away
    broken.write_bytes(b'RIFF....WAVEfmt nothing')
    monkeypatch.setattr(utterance, 'read_audio', lambda *args: pytest.fail('decoded at start-up'))
    assert load_features(wavs, feature_settings(), keep=False) is None
    with pytest.raises(FeatureFileError) as refused:
        load_features(wavs + [short, broken], feature_settings(), keep=False)
    assert '2 unusable' in str(refused.value) and f'{short}: too short' in str(refused.value)
    assert f'{broken}: not a readable audio file' in str(refused.value)


def test_validation_features_made_from_audio_are_kept_not_made_again_every_epoch(voices):
    args = train.parse_args(['--train-feat-dir', str(voices / 'train')])
    data = train.read_data(args, feature_settings())
    assert data.train_feats is None  # training windows: made per item (augmentation, speed)
    for name, feat in zip(data.valid_DB['filename'], data.valid_feats):
        expected = SR_Dataset.read_training_utterance(name, feature_settings()).astype(np.float32)  # as preloaded
        np.testing.assert_array_equal(feat, expected)
    kept = train.read_data(train.parse_args(['--train-feat-dir', str(voices / 'train'), '--preload', 'no']),
                           feature_settings())
    assert kept.valid_feats is None  # --preload no: nothing kept


def test_one_file_named_twice_by_other_paths_is_refused(voices, tmp_path):
    wav = sorted((voices / 'train').rglob('*.wav'))[0]
    listing = tmp_path / 'train.lst'  # relative paths in it are from its folder
    for lines in ([f"{wav.parent}/./{wav.name} alice", f"{wav} alice"],
                  [f"{os.path.relpath(wav, tmp_path)} alice", f"{wav} bob"]):
        listing.write_text('\n'.join(lines) + '\n')
        with pytest.raises(ValueError, match=f"{listing}: .* and .* are the same file; list it once"):
            read_training_structure(listing)
    tree = tmp_path / 'tree'
    (tree / 'alice').mkdir(parents=True)
    (tree / 'alice' / 'u.wav').write_bytes(wav.read_bytes())
    (tree / 'bob').symlink_to(tree / 'alice')  # the same recordings under two speakers
    with pytest.raises(ValueError, match=r"alice and .*bob are one \(a link to it\): a recording under two speaker"):
        read_training_structure(tree)  # the walk finds it first (DB_wav_reader.first_met)


@pytest.mark.slow
@pytest.mark.parametrize('workers', ['0', '1'])
def test_a_bad_recording_found_by_a_worker_is_one_line_naming_it(voices, tmp_path, workers):
    tree = tmp_path / 'train'
    for wav in sorted((voices / 'train').rglob('*.wav')):
        (tree / wav.parent.name).mkdir(parents=True, exist_ok=True)
        (tree / wav.parent.name / wav.name).write_bytes(wav.read_bytes())
    bad = sorted(tree.rglob('*.wav'))[0]
    soundfile.write(bad, np.zeros(len(soundfile.read(bad)[0]), np.float32), 16000)  # its header is fine
    with pytest.raises(FeatureFileError) as error:
        run(tree, tmp_path / 'log', '--epochs', '1', '--num-workers', workers, '--preload', 'no', '--batch-size', '4',
            '--val-ratio', '50')
    assert str(error.value) == f"{bad}: silent: every sample is 0"  # was: Caught FeatureFileError ... Traceback
