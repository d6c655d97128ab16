"""Command-line plumbing shared by the entry scripts: flags, the device, and clean error exits."""
import argparse
import sys

import torch

import configure as c
import features

PRECISIONS = ('auto', 'fp32', 'bf16', 'fp16')  # training's PRECISION
EMBED_PRECISIONS = ('auto', 'fp32', 'bf16')
SCORE_NORMS = ('none', 'asnorm')
EMBED_BACKENDS = ('torch', 'onnx')


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that keeps the script's docstring as written and shows each flag's default."""


def parser(description):
    """An ArgumentParser for an entry script; its defaults come from configure.py."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter, allow_abbrev=False)


def positive_int(text):
    """argparse type: an integer above 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def non_negative_int(text):
    """argparse type: an integer of 0 or more."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, not {text}")
    return value


def add_device_arg(p):
    p.add_argument('--device', default=c.DEVICE, help="'auto' (CUDA when there is a GPU), 'cpu' or 'cuda'")


def add_backend_arg(p, role='what runs the embedding network'):
    p.add_argument('--backend', choices=EMBED_BACKENDS, default=c.EMBED_BACKEND,
                   help=f"{role}: 'torch', or 'onnx' (ONNX Runtime on the CPU, float32 only; the stages export the "
                   "model once, to a cache beside the checkpoint)")


def add_model_args(p, embedding_dir=True):
    """Flags of the scripts that use a trained model: checkpoint, enrolled d-vectors (unless not embedding_dir),
    test data, precision, backend, device."""
    p.add_argument('--checkpoint', default=c.CHECKPOINT, help='trained model (train.py writes it)')
    if embedding_dir:
        p.add_argument('--embedding-dir', default=c.EMBEDDING_DIR, help='enrolled d-vectors, <speaker>.pth')
    p.add_argument('--test-feat-dir', default=c.TEST_FEAT_DIR,
                   help="<speaker>/<name> tree of .p features or audio (.wav, .flac, ...; a .p wins over audio of "
                   "the same name); files whose name contains 'enroll' enroll the speaker")
    p.add_argument('--precision', choices=EMBED_PRECISIONS, default=c.EMBED_PRECISION,
                   help="the backbone's precision: 'auto' (bfloat16 where the device has bfloat16 units), 'fp32' "
                   "(the tutorial's d-vectors, to float precision) or 'bf16'")
    add_backend_arg(p)
    add_device_arg(p)
    return add_audio_args(p)


def level(text):
    """argparse type: 'no', or a target speech level in dBFS."""
    try:
        return features.check_level(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_audio_args(p):
    """Flags of the scripts that read audio: speech detection and level normalisation (features.py)."""
    p.add_argument('--vad', choices=features.VADS, default=c.VAD,
                   help="speech detection in audio: 'no' (every frame, the tutorial) or 'energy' (frames more than "
                   f"{features.VAD_DB:.0f} dB below the utterance's loud frames are dropped)")
    p.add_argument('--level', type=level, nargs='?', const=c.TRAIN_LEVEL, default=c.LEVEL, metavar='DBFS',
                   help="gain on audio before the fbank, bringing its speech level to DBFS ('no': none, the "
                   f"tutorial); --level alone: TRAIN_LEVEL, the training data's {c.TRAIN_LEVEL:g} dBFS")
    return p


def add_test_args(p):
    """Flags of the scripts that score test utterances."""
    p.add_argument('--test-speaker', default=c.TEST_SPEAKER, help='the speaker whose test utterance is scored')
    p.add_argument('--test-file', help='score this file (.p features or audio) instead of the test speaker\'s')
    return p


def add_scoring_args(p, sides=('enroll', 'test'), score_norm=True):
    """Flags of how d-vectors are made and scored: segment lengths of the given sides, score normalisation.

    A checkpoint may recommend other values (its 'scoring'): recommended_scoring applies them.
    """
    for side in sides:
        p.add_argument(f'--{side}-frames', type=non_negative_int, default=getattr(c, f'{side.upper()}_FRAMES'),
                       help=f'frames per {side} segment; 0: the whole utterance in one pass')
    if score_norm:
        p.add_argument('--score-norm', choices=SCORE_NORMS, default=c.SCORE_NORM,
                       help="'none': cosine scores (the tutorial); 'asnorm': normalised against a cohort of "
                       "training speakers")
        p.add_argument('--cohort-top', type=positive_int, default=c.COHORT_TOP,
                       help='asnorm: the highest cohort scores each side is normalised by')
        p.add_argument('--cohort-dir', help='asnorm: training feature tree to build the cohort from when the '
                       'checkpoint has none (default: the one it was trained on)')
    return p


def recommended_scoring(args, argv, ckpt):
    """Set the scoring settings the checkpoint recommends (ckpt['scoring']) that no flag on argv gives; print them."""
    recommended = {k: v for k, v in ckpt.get('scoring', {}).items() if hasattr(args, k)}
    given = flags_given(argv, recommended)
    applied = {k: v for k, v in recommended.items() if k not in given and getattr(args, k) != v}
    for k, v in applied.items():
        setattr(args, k, v)
    if applied:
        print("Scoring as the checkpoint recommends: " + ", ".join(f"--{k.replace('_', '-')} {v}"
                                                                  for k, v in applied.items()), file=sys.stderr)
    return args


def scoring_record(args):
    """The scoring settings in args that scores depend on: a calibrated threshold is valid for these only."""
    return {k: getattr(args, k) for k in ('enroll_frames', 'test_frames', 'score_norm', 'cohort_top')
            if hasattr(args, k)}


def flags_given(argv, names):
    """Which of the flags --<name> (names as argparse dests) appear on the command line argv."""
    tokens = sys.argv[1:] if argv is None else argv
    flags = {name: '--' + name.replace('_', '-') for name in names}
    return [n for n, flag in flags.items() if any(t == flag or t.startswith(flag + '=') for t in tokens)]


def select_device(name):
    """The torch.device for 'auto' (CUDA when there is a GPU), 'cpu' or 'cuda[:N]'."""
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ('cpu', 'cuda'):
        raise ValueError(f"unknown device {name!r}; use 'auto', 'cpu' or 'cuda'")
    if device.type == 'cuda' and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA GPU(s); "
                         "use 'auto' or 'cpu'")
    return device


def bfloat16_is_fast(device):
    """Whether the device has bfloat16 units: a CPU with AVX512-BF16 or AMX, a GPU with native bfloat16.

    Emulated bfloat16 would be slower than float32.
    """
    if device.type == 'cuda':
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def autocast_dtype(precision, device):
    """The autocast dtype of a training PRECISION on a device (None: float32); 'auto' picks the fastest safe one."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (PRECISION of configure.py or --precision); "
                         f"choose one of {', '.join(PRECISIONS)}")
    if precision == 'auto':
        precision = 'bf16' if bfloat16_is_fast(device) else 'fp16' if device.type == 'cuda' else 'fp32'
    if precision == 'fp16' and device.type != 'cuda':
        raise ValueError("precision 'fp16' needs a CUDA GPU; on the CPU use 'bf16' or 'fp32'")
    return {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[precision]


def embedding_dtype(precision, device, backend='torch'):
    """The dtype the backbone embeds in for an EMBED_PRECISION and EMBED_BACKEND.

    'auto' is bfloat16 where it is fast, else float32. The 'onnx' backend (ONNX Runtime's CPU build)
    embeds on the CPU in float32 only, so it resolves 'auto' to float32 and refuses 'bf16' or a GPU
    rather than ignore them.
    """
    if precision not in EMBED_PRECISIONS:
        raise ValueError(f"unknown embedding precision {precision!r} (EMBED_PRECISION of configure.py or "
                         f"--precision); choose one of {', '.join(EMBED_PRECISIONS)}")
    if backend not in EMBED_BACKENDS:
        raise ValueError(f"unknown embedding backend {backend!r} (EMBED_BACKEND of configure.py or --backend); "
                         f"choose one of {', '.join(EMBED_BACKENDS)}")
    if backend == 'onnx':
        if precision == 'bf16':
            raise ValueError("precision 'bf16' cannot run on the 'onnx' backend, which embeds in float32 only; "
                             "use --precision fp32 (or auto) with --backend onnx, or --backend torch for bfloat16")
        if device.type != 'cpu':
            raise ValueError(f"the 'onnx' backend runs on the CPU, not on {device}: pass --device cpu with "
                             "--backend onnx, or use --backend torch")
        return torch.float32
    if precision == 'auto':
        precision = 'bf16' if bfloat16_is_fast(device) else 'fp32'
    return {'fp32': torch.float32, 'bf16': torch.bfloat16}[precision]


def embedding_description(precision, device, backend):
    """What the backbone embeds in, as reports say it: 'bfloat16', 'float32', or 'float32 (onnx)'."""
    dtype = str(embedding_dtype(precision, device, backend)).removeprefix('torch.')
    return dtype if backend == 'torch' else f"{dtype} ({backend})"


def run(main):
    """Run an entry script's main(); a bad input ends it with an error message instead of a traceback."""
    try:
        main()
    except (OSError, ValueError) as e:  # bad paths, files, names or settings
        sys.exit(f"error: {e}")
