"""A trained model put to use by a stage: on which device, in which precision, scored how.

Read it after dvector.py. Every stage that uses a model (enroll, verification, identification,
plot_dvectors) starts with open_stage: the device, the model loaded from its checkpoint and made fast
to embed with, and the scoring settings resolved once, by one rule (resolve_scoring):

    1. an enrollment's own settings, for a single trial (its stored d-vector was made with them)
    2. the cohort a published checkpoint carries, under AS-norm
    3. a flag given on the command line
    4. what the checkpoint's recipe recommends (configure.SCORINGS)
    5. configure.py
"""
import importlib.util
import os
import sys
from typing import NamedTuple

import torch

import configure as c
from dvector import cli
from dvector.checkpoint import load_checkpoint, model_from_checkpoint
from dvector.embedding import require_enrolled
from dvector.frontend import front_end, reading_settings, same_front_end
from dvector.records import ENROLLMENT_SETTINGS, load_enrollment, load_threshold
from dvector.speed import LowPrecision, use_channels_last
from model.model import BackgroundResNet
from model.resnet import fold_batch_norms

EMBED_PRECISIONS = ('auto', 'fp32', 'bf16')
EMBED_BACKENDS = ('auto', 'torch', 'onnx')
ONNX_MODULES = ('onnxruntime', 'onnx', 'onnxscript')  # what the 'onnx' backend needs: ONNX Runtime, torch's exporter
SCORE_NORMS = ('none', 'asnorm')
COHORTS = ('speakers', 'utterances')
# The settings a stage's scores depend on (a calibrated threshold is valid for these only) ...
SCORING_SETTINGS = ('enroll_frames', 'test_frames', 'score_norm')
# ... and under AS-norm, those of its cohort
COHORT_SETTINGS = ('cohort', 'cohort_utts', 'cohort_top')


# ---- The device and the precision ----------------------------------------------------------------

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


# oneDNN's limits on the instructions it uses (ONEDNN_MAX_CPU_ISA, or the older DNNL_MAX_CPU_ISA) that keep it off
# bfloat16 units: the CPU then runs as one without them (docs/speed.md measures the slow path this way)
ISAS_WITHOUT_BF16 = ('SSE41', 'AVX', 'AVX2', 'AVX2_VNNI', 'AVX2_VNNI_2', 'AVX512_CORE', 'AVX512_CORE_VNNI')
ISAS_WITH_BF16 = ('AVX512_CORE_BF16', 'AVX10_1_512', 'AVX512_CORE_FP16', 'AVX10_1_512_AMX', 'AVX512_CORE_AMX',
                  'AVX10_1_512_AMX_FP16', 'AVX512_CORE_AMX_FP16', 'AVX10_2_512', 'AVX10_2_512_AMX_2', 'ALL', 'DEFAULT')


class Bfloat16Units(NamedTuple):
    """Whether a device computes in bfloat16 in hardware, and why, as the precision lines say it."""
    native: bool
    why: str


def bfloat16_units(device):
    """The Bfloat16Units of a device: the one decision behind PRECISION and EMBED_PRECISION 'auto'.

    bfloat16 is faster than float32 only where the hardware has it: a CPU with AVX512-BF16 or AMX (and oneDNN
    allowed to use them), a CUDA GPU with native bfloat16. Elsewhere oneDNN emulates it, slower than float32
    (torch.ops.mkldnn._is_mkldnn_bf16_supported() says True there, so it is not the question to ask).
    """
    if device.type == 'cuda':
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return Bfloat16Units(True, 'this GPU has bfloat16 units')
        return Bfloat16Units(False, 'this GPU has no bfloat16 units')
    if not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return Bfloat16Units(False, 'this CPU has no bfloat16 units')
    name = next((n for n in ('ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA') if os.environ.get(n)), None)  # oneDNN's order
    limit = os.environ.get(name, '').upper() if name else 'DEFAULT'
    if limit in ISAS_WITHOUT_BF16:
        return Bfloat16Units(False, f"{name}={limit} keeps oneDNN off this CPU's bfloat16 units")
    if limit not in ISAS_WITH_BF16:
        raise ValueError(f"{name}={limit!r} is not an instruction set oneDNN knows; use one of "
                         f"{', '.join(ISAS_WITHOUT_BF16 + ISAS_WITH_BF16)}, or unset it")
    return Bfloat16Units(True, 'this CPU has bfloat16 units')


def embedding_dtype(precision, device, backend='torch'):
    """The dtype the backbone embeds in for an EMBED_PRECISION and EMBED_BACKEND.

    'auto' is bfloat16 where the device has bfloat16 units (bfloat16_units), else float32. The 'onnx' backend
    (ONNX Runtime's CPU build) embeds on the CPU in float32 only, so it resolves 'auto' to float32 and refuses
    'bf16' or a GPU rather than ignore them. The backend 'auto' embeds as 'torch' would: it is 'onnx' only where
    that is float32 (resolve_backend).
    """
    if precision not in EMBED_PRECISIONS:
        raise ValueError(f"unknown embedding precision {precision!r} (EMBED_PRECISION of configure.py or "
                         f"--embed-precision); choose one of {', '.join(EMBED_PRECISIONS)}")
    if backend not in EMBED_BACKENDS:
        raise ValueError(f"unknown embedding backend {backend!r} (EMBED_BACKEND of configure.py or --backend); "
                         f"choose one of {', '.join(EMBED_BACKENDS)}")
    if backend == 'onnx':
        if precision == 'bf16':
            raise ValueError("precision 'bf16' cannot run on the 'onnx' backend, which embeds in float32 only; "
                             "use --embed-precision fp32 (or auto) with --backend onnx, or --backend torch for "
                             "bfloat16")
        if device.type != 'cpu':
            raise ValueError(f"the 'onnx' backend runs on the CPU, not on {device}: pass --device cpu with "
                             "--backend onnx, or use --backend torch")
        return torch.float32
    if precision == 'auto':
        precision = 'bf16' if bfloat16_units(device).native else 'fp32'
    return {'fp32': torch.float32, 'bf16': torch.bfloat16}[precision]


class Backend(NamedTuple):
    """What runs the embedding network ('torch' or 'onnx'), and why, as the precision lines say it ('' where the
    backend was asked for by name)."""
    name: str
    why: str = ''


def resolve_backend(backend, precision, device, random_weights=False):
    """The Backend of an EMBED_BACKEND: the one decision behind EMBED_BACKEND 'auto'.

    'auto' is 'onnx' where ONNX Runtime makes torch's d-vectors faster: on the CPU, in float32 (EMBED_PRECISION
    'fp32', or 'auto' without bfloat16 units), of trained weights, with onnxruntime, onnx and onnxscript installed
    (2x torch's float32 on an AVX2 CPU: docs/speed.md). Elsewhere 'torch': on a GPU, in bfloat16 (faster still
    where the CPU has bfloat16 units), of random weights. 'torch' and 'onnx' are themselves.
    """
    if backend != 'auto':
        return Backend(backend)
    if device.type != 'cpu':
        return Backend('torch', 'the onnx backend runs on the CPU only')
    if embedding_dtype(precision, device) != torch.float32:
        return Backend('torch', 'ONNX Runtime embeds in float32 only')
    if random_weights:
        return Backend('torch', 'random weights, not exported')
    missing = [name for name in ONNX_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        return Backend('torch', f"{', '.join(missing)} not installed")
    return Backend('onnx', "ONNX Runtime, faster than torch's float32 on this CPU")


def embedding_description(precision, device, backend, random_weights=False):
    """What the backbone embeds in, as reports say it: 'bfloat16', 'float32', or 'float32 (onnx)'; where 'auto'
    chose, why (e.g. 'float32 (this CPU has no bfloat16 units)', "float32 (onnx: ONNX Runtime, faster than torch's
    float32 on this CPU)", 'bfloat16 (this CPU has bfloat16 units; torch: ONNX Runtime embeds in float32 only)')."""
    chosen = resolve_backend(backend, precision, device, random_weights)
    dtype = str(embedding_dtype(precision, device, chosen.name)).removeprefix('torch.')
    whys = [bfloat16_units(device).why] if precision == 'auto' and chosen.name == 'torch' else []
    if chosen != Backend('torch'):
        whys.append(': '.join(filter(None, chosen)))  # 'onnx', or the backend 'auto' chose and why
    return f"{dtype} ({'; '.join(whys)})" if whys else dtype


# ---- The model --------------------------------------------------------------------------------------

def for_inference(model, device, dtype=torch.float32):
    """The eval-mode model made faster to embed with.

    Each batch norm of the backbone is folded into the convolution before it, which gives the same
    d-vectors to float precision; on the CPU the convolutions run channels-last (oneDNN's fast
    layout) where that is safe (speed.use_channels_last). With dtype bfloat16 the backbone runs in it
    (pooling and projection stay float32).
    """
    fold_batch_norms(model.backbone)
    if use_channels_last('auto', torch.device(device), model):
        model = model.to(memory_format=torch.channels_last)
    if dtype != torch.float32:
        model.backbone = LowPrecision(model.backbone, dtype)
    return model


def load_model(path, device, precision='fp32', backend='torch', random_weights_seed=None):
    """(model for embedding, checkpoint dict) of the checkpoint at `path`.

    precision: an EMBED_PRECISION; backend: an EMBED_BACKEND ('auto' says on stderr what it chose, and why). With
    'onnx' the model is an onnx_backend.OnnxEmbedder, which has the model's `.embed` and runs on the CPU in
    float32; where 'auto' chose it and the export fails, the model is torch's in float32, with a note.
    random_weights_seed: if given, the model has fresh random weights (seeded), as training starts from.
    """
    device = torch.device(device)
    random_weights = random_weights_seed is not None
    chosen = resolve_backend(backend, precision, device, random_weights).name
    dtype = embedding_dtype(precision, device, chosen)  # refuses what the backend cannot do, before any work
    ckpt = load_checkpoint(path, device)
    if random_weights:
        if chosen != 'torch':
            raise ValueError("random weights embed with the 'torch' backend only (the 'onnx' one exports the "
                             "trained weights): drop --backend onnx")
        torch.manual_seed(random_weights_seed)
        ckpt = {**ckpt, 'state_dict': BackgroundResNet(**ckpt['model_args']).state_dict()}
    if backend == 'auto':
        print(f"Embedding in {embedding_description(precision, device, backend, random_weights)}", file=sys.stderr)
    if chosen == 'onnx':
        try:
            from dvector import onnx_backend  # onnxruntime is imported only when it is used
            return onnx_backend.cached_embedder(path, ckpt), ckpt
        except Exception as error:  # an export fails in many ways; torch's float32 makes the same d-vectors
            if backend != 'auto':
                raise
            reason = next(iter(str(error).splitlines()), '') or type(error).__name__  # one line
            print(f"Note: embedding with torch in float32: the ONNX export failed ({reason})", file=sys.stderr)
    return for_inference(model_from_checkpoint(ckpt, device), device, dtype), ckpt


# ---- The flags of a stage that uses a model -------------------------------------------------------

def add_model_args(p, embedding_dir=True):
    """Flags of the scripts that use a trained model: checkpoint, enrolled d-vectors (unless not embedding_dir),
    test data, embedding precision, backend, device, and how audio is read."""
    cli.setting(p, 'CHECKPOINT')
    if embedding_dir:
        cli.setting(p, 'EMBEDDING_DIR')
    cli.setting(p, 'TEST_FEAT_DIR')
    cli.setting(p, 'EMBED_PRECISION', choices=EMBED_PRECISIONS)
    add_backend_arg(p)
    cli.add_device_arg(p)
    return cli.add_audio_args(p)


def add_backend_arg(p):
    cli.setting(p, 'EMBED_BACKEND', '--backend', choices=EMBED_BACKENDS)


def add_scoring_args(p, sides=('enroll', 'test'), score_norm=True):
    """Flags of how d-vectors are made and scored: segment lengths of the given sides, score normalisation.

    open_stage resolves them with what the checkpoint recommends (resolve_scoring).
    """
    for side in sides:
        cli.setting(p, f'{side.upper()}_FRAMES', type=cli.non_negative_int)
    if score_norm:
        cli.setting(p, 'SCORE_NORM', choices=SCORE_NORMS)
        cli.setting(p, 'COHORT', choices=COHORTS)
        cli.setting(p, 'COHORT_UTTS', type=cli.positive_int)
        cli.setting(p, 'COHORT_TOP', type=cli.cohort_size)
        p.add_argument('--cohort-dir', help='asnorm: training feature tree to build the cohort from when the '
                       'checkpoint has none (default: the one it was trained on)')
    return p


# ---- The scoring settings ---------------------------------------------------------------------------

def published_cohort(ckpt):
    """{'cohort', 'cohort_utts'} of the AS-norm cohort a published checkpoint carries; None when it carries none."""
    if 'cohort' not in ckpt:
        return None
    if 'cohort_source' not in ckpt:
        raise ValueError("the checkpoint carries an AS-norm cohort without saying what it was built from (an older "
                         "tools/make_pretrained.py wrote it): write it again with python -m tools.make_pretrained")
    return {'cohort': ckpt['cohort_source']['kind'], 'cohort_utts': ckpt['cohort_source']['utts_per_speaker']}


def resolve_scoring(asked, given, ckpt, enrollment=None):
    """{setting: (value, source)} of each scoring setting in `asked`, by the rule of this module's docstring.

    asked: {setting: value} of the flags (configure.py's value where no flag was given); given: the settings
    given on the command line; enrollment: the enrollment record (records.read_enrollment) of the speaker a single
    trial is scored against, with its name under 'speaker', or None. A flag
    that gives an enrolled setting another value than the enrollment's is refused: it could not change the
    stored d-vector. source: 'enrollment', 'published cohort', 'flag', 'checkpoint' or 'configure.py'.
    """
    recommended = ckpt.get('scoring', {})
    resolved = {}
    for name, value in asked.items():
        if enrollment is not None and name in ENROLLMENT_SETTINGS:
            resolved[name] = (enrollment[name], 'enrollment')
        elif name in given:
            resolved[name] = (value, 'flag')
        elif name in recommended:
            resolved[name] = (recommended[name], 'checkpoint')
        else:
            resolved[name] = (value, 'configure.py')
    if enrollment is not None:
        refuse_other_enrollment_settings(asked, given, enrollment)
    own = published_cohort(ckpt) if resolved.get('score_norm', (None,))[0] == 'asnorm' else None
    if own:
        resolved.update({name: (value, 'published cohort') for name, value in own.items() if name in resolved})
    return resolved


def refuse_other_enrollment_settings(asked, given, enrollment):
    """Refuse flags that give an enrolled setting another value than the enrollment record's."""
    enrolled = {name: enrollment[name] for name in ENROLLMENT_SETTINGS}
    differ = {name: asked[name] for name in ENROLLMENT_SETTINGS
              if name in given and name in asked and asked[name] != enrollment[name]}
    if differ:
        raise ValueError(f"{cli.flags_text(differ)}: {enrollment['speaker']} was enrolled with "
                         f"{cli.flags_text(enrolled)}, and a single trial is scored as its enrollment was made; "
                         "enroll again with these flags (enroll.py), or leave them out")


def settle_scoring(args, ckpt, enrollment=None):
    """Set args' scoring settings as resolve_scoring decides; say what the checkpoint and its cohort changed."""
    names = tuple(dict.fromkeys(SCORING_SETTINGS + COHORT_SETTINGS + ENROLLMENT_SETTINGS))
    asked = {name: getattr(args, name) for name in names if hasattr(args, name)}
    resolved = resolve_scoring(asked, args.given, ckpt, enrollment)
    recommends = ('checkpoint', 'published cohort')  # a checkpoint's own cohort is its recommendation too
    recommended = {k: v for k, (v, source) in resolved.items()
                   if source in recommends and k not in args.given and v != asked[k]}
    if recommended:
        print("Scoring as the checkpoint recommends: " + ", ".join(cli.flag_text(k, v) for k, v in recommended.items()),
              file=sys.stderr)
    own = {k: v for k, (v, source) in resolved.items() if source == 'published cohort'}
    if own:
        overruled = {k: getattr(args, k) for k in own if k in args.given and asked[k] != own[k]}
        if getattr(args, 'cohort_dir', None) is not None:
            overruled['cohort_dir'], args.cohort_dir = args.cohort_dir, None
        if overruled:
            print(f"Note: {cli.flags_text(overruled)} is not used: {args.checkpoint} carries its own cohort "
                  f"({cli.flags_text(own)})", file=sys.stderr)
    for name, (value, _) in resolved.items():
        setattr(args, name, value)


def scoring_settings(args):
    """The scoring settings in args that scores depend on: a calibrated threshold is valid for these only (the
    cohort's under AS-norm alone)."""
    names = SCORING_SETTINGS + (COHORT_SETTINGS if getattr(args, 'score_norm', 'none') == 'asnorm' else ())
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def note_other_front_end(record, used):
    """Say so when a threshold was calibrated on features made with another --vad/--level than `used`."""
    if not same_front_end(record['front_end'], used):
        print(f"Note: the threshold ({record['source']}) was calibrated with {cli.flags_text(record['front_end'])}, "
              f"this trial is scored with {cli.flags_text(used)}: its scores may lie elsewhere. Calibrate with these "
              "flags (--trials LIST --calibrate), or pass --threshold", file=sys.stderr)


def verification_threshold(args, ckpt):
    """(threshold, where it comes from) for a single trial (verification.py, the app)."""
    if args.threshold is not None:
        return args.threshold, '--threshold'
    record = load_threshold(args.checkpoint, ckpt, scoring_settings(args))
    if record is not None:
        note_other_front_end(record, front_end(vars(args)))
        return float(record['threshold']), record['source']
    if args.score_norm != 'none':
        raise ValueError(f"no calibrated threshold of {args.checkpoint} for --score-norm {args.score_norm} "
                         "(THRESHOLD of configure.py is a cosine score): calibrate one with --trials LIST "
                         "--calibrate, or pass --threshold")
    return c.THRESHOLD, 'THRESHOLD of configure.py'


# ---- The start of every stage ---------------------------------------------------------------------

class Stage(NamedTuple):
    """What a stage works with: the model, its checkpoint, the device, how utterances are read (a
    frontend.reading_settings()) and, for a single trial, the claimed speaker's enrollment record."""
    model: object
    ckpt: dict
    device: torch.device
    reading: dict
    enrollment: dict | None = None


def open_stage(args, claimed=None, random_weights_seed=None):
    """The Stage of args (--device, --checkpoint, --embed-precision, --backend), its backend and scoring settings
    settled.

    claimed: the enrolled speaker a single trial is scored against (its enrollment is read from
    --embedding-dir, and it decides the enrollment settings); random_weights_seed: see load_model.
    """
    device = select_device(args.device)
    model, ckpt = load_model(args.checkpoint, device, args.embed_precision, args.backend, random_weights_seed)
    args.backend = 'torch' if isinstance(model, torch.nn.Module) else 'onnx'  # as it embeds: 'auto' settled
    enrollment = None
    if claimed is not None:
        enrolled = load_enrollment(args.embedding_dir, ckpt, device, args.checkpoint)
        enrollment = {**require_enrolled(enrolled, claimed), 'speaker': claimed}
    settle_scoring(args, ckpt, enrollment)
    reading = reading_settings(ckpt['feature'], args.vad, args.level, args.max_seconds)
    return Stage(model, ckpt, device, reading, enrollment)
