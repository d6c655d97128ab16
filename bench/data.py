"""The training data path at scale: start-up on a corpus of a million utterances, and the loader's throughput.

    python -m bench.data --startup 1000000 --speakers 6000   # a VoxCeleb2-sized list file: start-up time, peak RSS
    python -m bench.data --audio-dir demo/wavs/train         # windows/s: preloaded features against audio made
                                                             # per item; utterances/s: python_speech_features, torch

Start-up: train.py's steps before the first batch that grow with the corpus (reading the list, the
train/validation split, the fingerprint a resumed run checks, the dataset), timed on a list file of N
utterances (`<path> <speaker>` lines, of files that need not exist), in a fresh process, so that its peak
resident memory is its own. Not timed here: train.py's check of each audio file's header before training
(utterance.check_audio_header; docs/results.md gives its rate on real files).

Loader: training windows per second that a DataLoader delivers (no model), for the same utterances as
features preloaded in memory, and as audio made into features per item (the recipe's exact features; and the
same by torch's fbank on the CPU), with and without augmentation, for 0 to --workers worker processes. A GPU
needs its training steps' rate of windows from the loader: this says how many workers give it.

Features: utterances per second made into the recipe's features from their waveforms in memory (no reading):
by python_speech_features one at a time (the recipe's path), and by the same fbank in torch (torch_fbank.fbank_batch),
--batch-size utterances at once, in float64 and float32, on the CPU and on --device when it is a GPU; reading the
files is timed on its own row.
"""
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader

import configure as c
from bench.measure import in_fresh_process, peak_memory_mb, synchronize
from DB_wav_reader import read_training_structure
from dvector import cli
from dvector.audio import read_audio
from dvector.augment_audio import WaveAugmenter
from dvector.augment_features import Augmenter
from dvector.augmentation import augment_settings
from dvector.fbank import feature_settings
from dvector.frontend import reading_settings
from dvector.stage import select_device
from dvector.torch_fbank import log_fbank_batch
from dvector.training_run import files_fingerprint, split_train_valid
from dvector.utterance import log_fbank_frames
from SR_Dataset import DvectorDataset, load_features


def write_list(path, n_utterances, n_speakers):
    """A list file of n_utterances made-up VoxCeleb-style paths of n_speakers speakers."""
    with open(path, 'w') as f:
        for i in range(n_utterances):
            speaker = f'id{i % n_speakers:05d}'
            f.write(f'wav/{speaker}/vid{i // n_speakers % 50:04d}/{i:08d}.wav {speaker}\n')


def startup(list_path):
    """{step: seconds} of train.py's start-up steps on a list file, and the process's peak RSS in MiB."""
    times, start = {}, time.perf_counter()
    DB = read_training_structure(list_path)
    times['read the list'] = time.perf_counter() - start
    start = time.perf_counter()
    train_DB, valid_DB = split_train_valid(DB, c.VAL_RATIO, c.SEED)
    times['split'] = time.perf_counter() - start
    start = time.perf_counter()
    files_fingerprint(list(train_DB['filename']) + list(valid_DB['filename']))
    times['fingerprint'] = time.perf_counter() - start
    start = time.perf_counter()
    speakers = sorted(DB['speaker_id'].unique())
    DvectorDataset(train_DB, {s: i for i, s in enumerate(speakers)}, feature_settings())
    times['dataset'] = time.perf_counter() - start
    return times, peak_memory_mb()


LOADER_SOURCES = ('features', 'features + aug', 'audio', 'audio, torch fbank', 'audio + aug')


def loader_rate(DB, source, workers, batches, batch_size):
    """Training windows per second from a DataLoader over DB: source 'features' (preloaded), 'features + aug',
    'audio' (made per item), 'audio, torch fbank' (the same by torch's fbank on the CPU) or 'audio + aug' (on the
    waveform)."""
    torch.manual_seed(0)
    feature = feature_settings()
    feats = load_features(DB['filename'], feature) if source.startswith('features') else None
    extra = {}
    if source == 'features + aug':
        extra['augmenter'] = Augmenter(augment_settings(), feature)
    elif source == 'audio + aug':
        extra['wave_augmenter'] = WaveAugmenter(augment_settings(), feature['sample_rate'])
    elif source == 'audio, torch fbank':
        extra['fbank_device'] = 'cpu'
    speakers = sorted(DB['speaker_id'].unique())
    dataset = DvectorDataset(DB, {s: i for i, s in enumerate(speakers)}, feature, feats=feats, **extra)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0)
    seen, start = 0, None
    while seen < batches:
        for _ in loader:
            if start is None:  # the first batch waits for the workers to start
                start = time.perf_counter()
                continue
            seen += 1
            if seen == batches:
                break
    return batches * batch_size / (time.perf_counter() - start)


def fastest(function, device, repeats):
    """The shortest of `repeats` timings of function() in seconds, after one untimed call (FFT plans, CUDA's
    start-up); device: where it computes, waited for before the clock stops."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def feature_paths(device):
    """{name: (device, dtype)} of the torch fbank's paths timed: the CPU's, and device's too when it is a GPU."""
    devices = [torch.device('cpu')] + ([device] if device.type == 'cuda' else [])
    return {f'torch {name} {d.type}': (d, dtype) for d in devices
            for name, dtype in (('fp64', torch.float64), ('fp32', torch.float32))}


@contextmanager
def one_thread():
    """torch and numpy's BLAS on one thread inside: one core for each path, as each DataLoader worker should have
    (torch limits its workers to one thread; numpy's OpenBLAS, which python_speech_features' product runs on, keeps
    one per core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)


def feature_rates(files, device, batch_size, repeats):
    """{path: utterances per second}: reading files ('read audio'), and making the recipe's features of their
    waveforms by python_speech_features ('python_speech_features', one at a time) and by torch (feature_paths,
    batch_size at a time)."""
    settings = reading_settings(feature_settings())
    audios = [read_audio(f, settings['sample_rate']) for f in files]
    batches = [audios[i:i + batch_size] for i in range(0, len(audios), batch_size)]
    cpu = torch.device('cpu')
    with one_thread():
        seconds = {'read audio': fastest(lambda: [read_audio(f, settings['sample_rate']) for f in files], cpu, repeats),
                   'python_speech_features': fastest(lambda: [log_fbank_frames(a, settings) for a in audios], cpu,
                                                     repeats)}
        for name, (on, dtype) in feature_paths(device).items():
            seconds[name] = fastest(lambda: [log_fbank_batch(b, settings, on, dtype) for b in batches], on, repeats)
    return {path: len(files) / s for path, s in seconds.items()}, sum(map(len, audios)) / settings['sample_rate']


def parse_args(argv=None):
    p = cli.parser(__doc__)
    p.add_argument('--startup', type=cli.positive_int, metavar='N', help='time the start-up on a list of N utterances')
    p.add_argument('--speakers', type=cli.positive_int, default=6000, help='speakers of --startup')
    p.add_argument('--audio-dir', help='an audio tree <speaker>/.../<utterance>.wav whose loader to time')
    p.add_argument('--workers', type=cli.non_negative_int, default=2, help='time 0 .. this many worker processes')
    p.add_argument('--batches', type=cli.positive_int, default=10, help='timed batches per loader')
    p.add_argument('--repeats', type=cli.positive_int, default=3,
                   help='timings of each feature path: the fastest counts')
    cli.setting(p, 'BATCH_SIZE', type=cli.positive_int)
    cli.add_device_arg(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not args.startup and not args.audio_dir:
        raise ValueError("nothing to time: give --startup N, --audio-dir DIR, or both")
    results = {}
    if args.startup:
        with tempfile.TemporaryDirectory() as tmp:
            listing = Path(tmp) / 'train.lst'
            write_list(listing, args.startup, args.speakers)
            times, peak = in_fresh_process(startup, listing)
        print(f"Start-up on a list of {args.startup} utterances of {args.speakers} speakers: "
              + ', '.join(f'{step} {s:.1f} s' for step, s in times.items())
              + f"; {sum(times.values()):.1f} s in all, peak resident memory {peak:.0f} MiB")
        results['startup'] = {'seconds': times, 'peak_mb': peak}
    if args.audio_dir:
        DB = read_training_structure(args.audio_dir)
        print(f"\nLoader: windows of {c.NUM_WIN_SIZE} frames per second, {args.batches} batches of "
              f"{args.batch_size} from {len(DB)} utterances of {args.audio_dir}")
        print(f"  {'source':18}" + ''.join(f"{f'{w} workers':>11}" for w in range(args.workers + 1)))
        rates = {}
        for source in LOADER_SOURCES:
            rates[source] = [in_fresh_process(loader_rate, DB, source, w, args.batches, args.batch_size)
                             for w in range(args.workers + 1)]
            print(f"  {source:18}" + ''.join(f'{r:11.0f}' for r in rates[source]))
        results['loader'] = rates
        results['features'] = print_feature_rates(DB, select_device(args.device), args.batch_size, args.repeats)
    return results


def print_feature_rates(DB, device, batch_size, repeats):
    """feature_rates of DB's files, printed as a table; returns them."""
    rates, audio_seconds = feature_rates(list(DB['filename']), device, batch_size, repeats)
    print(f"\nFeatures: utterances per second ({len(DB)} utterances, {audio_seconds / len(DB):.1f} s on average; the "
          f"fastest of {repeats}; one CPU thread; torch in batches of {batch_size})")
    for path, rate in rates.items():
        print(f"  {path:24}{rate:9.0f}{rate * audio_seconds / len(DB):11.0f}x real time")
    return rates


if __name__ == '__main__':
    cli.run(main)
