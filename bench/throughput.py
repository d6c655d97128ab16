"""Throughput benchmark: the tutorial-style path and the fast paths, side by side in one run.

    python -m bench.throughput                    # a sample of TRAIN_FEAT_DIR
    python -m bench.throughput --utts 500 --batches 10 --device cuda  # (no ONNX Runtime row: it runs on the CPU)

Training: samples/s of whole training steps (data, forward, backward, SGD) on batches of random
NUM_WIN_SIZE-frame windows, as train.py runs them:
  tutorial   every pickle read for every item, float32, contiguous memory
  fast fp32  features preloaded as float32, train.py's memory format (CHANNELS_LAST) and freed memory kept for
             the next step (speed.keep_freed_memory), float32
  fast       the same in train.py's automatic precision (PRECISION; bfloat16 autocast on this CPU)
  fast + aug the same with every window augmented as configure.py's AUG_* settings say (augment_features.py)
Embedding: utterances/s of whole utterances cut into TEST_FRAMES-frame segments (features already read):
  tutorial   one segment per forward pass, float32, as the tutorial's enroll and verification scripts
             (dvector.d_vector, the definition)
  fast fp32  the segments of all the utterances in batched forward passes (dvector.embed_all), through
             the model as the stages load it: batch norms folded into the convolutions, channels-last
             on the CPU; the same d-vectors as the tutorial's loop, to float precision
  fast       the same with the backbone in the stages' automatic precision (EMBED_PRECISION) and backend
             (--backend, EMBED_BACKEND: 'auto' is ONNX Runtime where that is float32 on the CPU, so on a CPU
             without bfloat16 units it is onnx fp32 again); * marks the rows that embed as the stages do
  onnx fp32  the same segments and batches through ONNX Runtime (the 'onnx' backend: the model exported to
             ONNX, float32, on the CPU; the same d-vectors to float precision)
Each path runs in a fresh process, so that its peak memory (resident set) is its own. FLOPs per
sample (a NUM_WIN_SIZE-frame training window, a TEST_FRAMES-frame segment) are counted by torch;
GFLOP/s is what was achieved, and % peak its share of a large matrix product's GFLOP/s in the path's dtype
(float32, or bfloat16: emulated, and slow, on a CPU without bfloat16 units).
"""
import math
import time

import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

import configure as c
from bench.measure import in_fresh_process, peak_memory_mb, synchronize
from DB_wav_reader import read_feats_structure
from dvector import cli
from dvector.augment_features import Augmenter
from dvector.augmentation import augment_settings
from dvector.embedding import d_vector, embed_all, split_segments
from dvector.fbank import feature_settings
from dvector.feature_files import read_MFB
from dvector.onnx_backend import OnnxEmbedder, export_bytes
from dvector.speed import keep_freed_memory, use_channels_last
from dvector.stage import (
    add_backend_arg,
    bfloat16_units,
    embedding_description,
    embedding_dtype,
    for_inference,
    resolve_backend,
    select_device,
)
from dvector.training import DeviceSetup, autocast_dtype, train_step
from model.model import BackgroundResNet
from model.resnet import BACKBONES
from SR_Dataset import DvectorDataset, load_features

WARMUP_BATCHES = 3
PATHS = ('tutorial', 'fast fp32', 'fast')
TRAIN_PATHS = PATHS + ('fast + aug',)
CPU_EMBED_PATHS = ('onnx fp32',)  # embedding paths that run on the CPU only
PEAK_DTYPES = {'cpu': (torch.float32, torch.bfloat16), 'cuda': (torch.float32, torch.bfloat16, torch.float16)}


def parse_args(argv=None):
    p = cli.parser(__doc__)
    cli.setting(p, 'TRAIN_FEAT_DIR')
    p.add_argument('--utts', type=cli.positive_int, default=2000, help='utterances sampled from it')
    p.add_argument('--batches', type=cli.positive_int, default=20, help='timed training batches per path')
    cli.setting(p, 'BATCH_SIZE', type=cli.positive_int)
    p.add_argument('--embed-utts', type=cli.positive_int, default=1000, help='utterances embedded per path')
    cli.setting(p, 'BACKBONE', choices=list(BACKBONES))
    add_backend_arg(p)  # the backend of the 'fast' embedding path
    cli.add_device_arg(p)
    return p.parse_args(argv)


def training_settings(path, device, model):
    """(autocast dtype, channels_last) of a training path on this device."""
    if path == 'tutorial':
        return None, False
    amp_dtype = autocast_dtype(c.PRECISION, device) if path.startswith('fast') and path != 'fast fp32' else None
    return amp_dtype, use_channels_last(c.CHANNELS_LAST, device, model)


def embedding_settings(path, backend, device):
    """(backend, dtype) an embedding path runs its backbone with on this device; backend: the 'fast' path's."""
    if path == 'fast':
        backend = resolve_backend(backend, c.EMBED_PRECISION, device).name
        return backend, embedding_dtype(c.EMBED_PRECISION, device, backend)
    return 'onnx' if path == 'onnx fp32' else 'torch', torch.float32


def training_throughput(DB, path, args):
    """{samples_per_s, load_s, peak_mb} of training steps on DB by one of PATHS."""
    torch.manual_seed(0)
    if path != 'tutorial':  # as train.py does (each path runs in a process of its own)
        keep_freed_memory()
    device = select_device(args.device)
    speakers = sorted(DB['speaker_id'].unique())
    model = BackgroundResNet(c.EMBEDDING_SIZE, len(speakers), args.backbone)
    amp_dtype, channels_last = training_settings(path, device, model)
    start = time.perf_counter()
    feats = None if path == 'tutorial' else load_features(DB['filename'], feature_settings())
    load_s = time.perf_counter() - start
    augmenter = Augmenter(augment_settings(), feature_settings()) if path == 'fast + aug' else None
    dataset = DvectorDataset(DB, {s: i for i, s in enumerate(speakers)}, feature_settings(), feats=feats,
                             augmenter=augmenter)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True)
    setup = DeviceSetup(device, amp_dtype, torch.channels_last if channels_last else torch.contiguous_format)
    model = model.to(device, memory_format=setup.memory_format).train()
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    # train.py's optimizer with OPTIMIZER 'sgd', the default
    optimizer = torch.optim.SGD(model.parameters(), lr=c.LR, momentum=c.MOMENTUM, weight_decay=c.WEIGHT_DECAY)
    criterion = torch.nn.CrossEntropyLoss()
    n_batches = 0
    while n_batches < WARMUP_BATCHES + args.batches:
        for inputs, targets in loader:
            if n_batches == WARMUP_BATCHES:
                synchronize(device)
                start = time.perf_counter()
            inputs, targets = inputs.to(device, memory_format=setup.memory_format), targets.to(device)
            train_step(model, inputs, targets, criterion, optimizer, scaler, setup)
            n_batches += 1
            if n_batches == WARMUP_BATCHES + args.batches:
                break
    synchronize(device)
    seconds = time.perf_counter() - start
    return {'samples_per_s': args.batches * args.batch_size / seconds, 'load_s': load_s, 'peak_mb': peak_memory_mb()}


def embedding_model(path, args, device):
    """The model an embedding path embeds with: the same seeded random weights for every path, run as it says."""
    torch.manual_seed(0)
    model = BackgroundResNet(c.EMBEDDING_SIZE, 10, args.backbone).to(device).eval()
    backend, dtype = embedding_settings(path, args.backend, device)
    if backend == 'onnx':
        return OnnxEmbedder(export_bytes(model, c.FILTER_BANK, {})[0])
    return model if path == 'tutorial' else for_inference(model, device, dtype)


def embed_by_path(model, path, feats, device, desc=None):
    """{file: d-vector} of feats, {file: features}, as the path makes them: the tutorial's one segment per forward
    pass (dvector.d_vector), or the stages' batches (dvector.embed_all)."""
    if path == 'tutorial':
        return {f: d_vector(model, feat, c.TEST_FRAMES, device) for f, feat in feats.items()}
    return embed_all(model, list(feats), feats.get, c.TEST_FRAMES, device, desc)


def embedding_throughput(files, path, args):
    """{utts_per_s, frames_per_s, segments, peak_mb} of embedding files (read beforehand) by one of PATHS."""
    device = select_device(args.device)
    feats = {f: read_MFB(f) for f in files}
    model = embedding_model(path, args, device)
    embed_by_path(model, path, dict(list(feats.items())[:8]), device, 'warm-up')
    synchronize(device)
    start = time.perf_counter()
    embed_by_path(model, path, feats, device, 'embedding')
    synchronize(device)
    seconds = time.perf_counter() - start
    n_frames = sum(len(feat) for feat in feats.values())
    n_segments = sum(len(split_segments(feat, c.TEST_FRAMES)) for feat in feats.values())
    return {'utts_per_s': len(files) / seconds, 'frames_per_s': n_frames / seconds, 'segments': n_segments,
            'peak_mb': peak_memory_mb()}


def speed_up(results, path, rate, baseline='tutorial'):
    """How many times the baseline path's rate a path reaches."""
    return results[path][rate] / results[baseline][rate]


def gflops_per_sample(backbone, frames, train_step):
    """GFLOP of one sample of `frames` frames: forward only, or forward + backward (a training step)."""
    model = BackgroundResNet(c.EMBEDDING_SIZE, 200, backbone)
    x = torch.randn(8, 1, c.FILTER_BANK, frames)
    with FlopCounterMode(display=False) as counter:
        if train_step:
            model(x)[1].sum().backward()
        else:
            with torch.no_grad():
                model.embed(x)
    return counter.get_total_flops() / 8 / 1e9


def median_seconds(function, device, repeats=5):
    """The median time of function() over `repeats` calls, after one call of warm-up."""
    function()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2]


def convolution_floor(backbone, batch_size, device):
    """Seconds per training batch of the model's convolutions alone, in float32, forward and backward of each timed
    one at a time: {'contiguous': s, 'channels-last': s, 'best': s (each in its faster format)}.

    Everything else of a step (batch norms, ReLUs, the optimizer, the data) only adds to 'best', so with these
    convolution kernels no float32 step runs faster than it: the ceiling of any speed-up that keeps the model.
    """
    model = BackgroundResNet(c.EMBEDDING_SIZE, 200, backbone)
    convolutions = []
    hooks = [m.register_forward_hook(lambda m, inputs, _: convolutions.append((m, inputs[0].shape)))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.randn(batch_size, 1, c.FILTER_BANK, c.NUM_WIN_SIZE))
    for hook in hooks:
        hook.remove()
    totals = {'contiguous': 0.0, 'channels-last': 0.0, 'best': 0.0}
    for conv, shape in convolutions:
        times = {}
        for name, layout in (('contiguous', torch.contiguous_format), ('channels-last', torch.channels_last)):
            x = torch.randn(shape, device=device).contiguous(memory_format=layout)
            weight = conv.weight.detach().to(device).contiguous(memory_format=layout)
            grad = torch.randn_like(torch.conv2d(x, weight, stride=conv.stride, padding=conv.padding))
            backward = (grad, x, weight, None, conv.stride, conv.padding, conv.dilation, False, [0, 0], conv.groups,
                        [shape[1] > 1, True, False])  # no input gradient for the first convolution, as in training
            times[name] = (median_seconds(lambda: torch.conv2d(x, weight, stride=conv.stride, padding=conv.padding),
                                          device)
                           + median_seconds(lambda: torch.ops.aten.convolution_backward(*backward), device))
            totals[name] += times[name]
        totals['best'] += min(times.values())
    return totals


def matmul_gflops(device, dtype, n=1024, seconds=1.0):
    """GFLOP/s of large square matrix products, repeated for about `seconds`: about the most this device does in
    that dtype in practice (bfloat16 on a CPU without bfloat16 units: oneDNN's emulation, which is slow)."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    synchronize(device)
    repeats, start = 0, time.perf_counter()
    while repeats == 0 or time.perf_counter() - start < seconds:
        a @ b
        synchronize(device)
        repeats += 1
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def main(argv=None):
    args = parse_args(argv)
    device = select_device(args.device)
    DB = read_feats_structure(args.train_feat_dir)
    DB = DB.sample(n=min(args.utts, len(DB)), random_state=0).reset_index(drop=True)
    if len(DB) < args.batch_size:
        raise ValueError(f"{len(DB)} utterances, fewer than one batch of {args.batch_size}: raise --utts")
    model = BackgroundResNet(c.EMBEDDING_SIZE, 1, args.backbone)  # for the paths' settings
    amp_dtype, channels_last = training_settings('fast', device, model)
    print(f"Device {device} ({torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}); {args.backbone}; {len(DB)} utterances of "
          f"{DB['speaker_id'].nunique()} speakers from {args.train_feat_dir}")
    if math.isnan(peak_memory_mb()):
        print("No peak memory on this OS (it has no getrusage): the peak MiB columns say nan")
    print(f"Fast path settings here: training precision {amp_dtype or 'float32'}, channels-last {channels_last}, "
          f"embedding precision {embedding_description(c.EMBED_PRECISION, device, args.backend)}")
    train_flops = gflops_per_sample(args.backbone, c.NUM_WIN_SIZE, train_step=True)
    embed_flops = gflops_per_sample(args.backbone, c.TEST_FRAMES, train_step=False)
    print(f"Model FLOPs: {embed_flops:.2f} GFLOP forward per {c.TEST_FRAMES}-frame sample, {train_flops:.2f} "
          f"GFLOP per training sample (forward + backward)")
    peaks = {dtype: matmul_gflops(device, dtype) for dtype in PEAK_DTYPES[device.type]}
    print("The device's practical limit (the % peak columns), a 1024 x 1024 matrix product: "
          + ', '.join(f"{gflops:.1f} GFLOP/s in {str(dtype)[6:]}" for dtype, gflops in peaks.items())
          + f" ({bfloat16_units(device).why})\n")

    trained = {path: in_fresh_process(training_throughput, DB, path, args) for path in TRAIN_PATHS}
    print(f"Training: {args.batches} batches of {args.batch_size} after {WARMUP_BATCHES} of warm-up")
    print(f"  {'path':10} {'samples/s':>10} {'speed-up':>9} {'GFLOP/s':>8} {'% peak':>7} {'peak MiB':>9} "
          f"{'preload s':>10}")
    for path, r in trained.items():
        gflops = r['samples_per_s'] * train_flops
        dtype = training_settings(path, device, model)[0] or torch.float32
        print(f"  {path:10} {r['samples_per_s']:10.1f} {speed_up(trained, path, 'samples_per_s'):8.2f}x "
              f"{gflops:8.1f} {100 * gflops / peaks[dtype]:7.1f} {r['peak_mb']:9.0f} {r['load_s']:10.1f}")
    floor = convolution_floor(args.backbone, args.batch_size, device)
    tutorial_step = args.batch_size / trained['tutorial']['samples_per_s']
    ms = {name: f"{seconds * 1000:.0f}" for name, seconds in floor.items()}
    print(f"  The convolutions alone (float32, forward + backward, each timed by itself): {ms['contiguous']} ms a "
          f"batch contiguous, {ms['channels-last']} channels-last, {ms['best']} each in its faster format:\n"
          f"  with these kernels a float32 step is at most {tutorial_step / floor['best']:.2f}x the tutorial's "
          f"({tutorial_step * 1000:.0f} ms)")
    print(f"  A training step with augmentation takes "
          f"{trained['fast']['samples_per_s'] / trained['fast + aug']['samples_per_s']:.2f}x as long as without (fast)")

    files = list(DB['filename'][:args.embed_utts])
    embed_paths = PATHS + (CPU_EMBED_PATHS if device.type == 'cpu' else ())
    embedded = {path: in_fresh_process(embedding_throughput, files, path, args) for path in embed_paths}
    print(f"\nEmbedding: {len(files)} utterances, {embedded['fast']['segments']} segments of up to "
          f"{c.TEST_FRAMES} frames")
    print(f"  {'path':10} {'utts/s':>10} {'speed-up':>9} {'GFLOP/s':>8} {'% peak':>7} {'peak MiB':>9}")
    stages = embedding_settings('fast', args.backend, device)
    for path, r in embedded.items():
        gflops = r['frames_per_s'] / c.TEST_FRAMES * embed_flops
        settings = embedding_settings(path, args.backend, device)
        mark = ' *' if path != 'tutorial' and settings == stages else ''  # the tutorial's loop is no stage's
        print(f"  {path:10} {r['utts_per_s']:10.1f} {speed_up(embedded, path, 'utts_per_s'):8.2f}x "
              f"{gflops:8.1f} {100 * gflops / peaks[settings[1]]:7.1f} {r['peak_mb']:9.0f}{mark}")
    print(f"  * as the stages embed here (EMBED_PRECISION {c.EMBED_PRECISION}, --backend {args.backend}): "
          f"{embedding_description(c.EMBED_PRECISION, device, args.backend)}")
    if 'onnx fp32' in embedded:  # the two exact (float32) paths, the one comparison their speed-up columns hide
        print(f"  ONNX Runtime float32 embeds {speed_up(embedded, 'onnx fp32', 'utts_per_s', 'fast fp32'):.2f}x as "
              "fast as PyTorch float32 (fast fp32)")
    return {'training': trained, 'convolution_floor': floor, 'embedding': embedded, 'train_gflop': train_flops,
            'embed_gflop': embed_flops}


if __name__ == '__main__':
    cli.run(main)
