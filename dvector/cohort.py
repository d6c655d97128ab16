"""The AS-norm cohort of a checkpoint: d-vectors of its training speakers (scoring.py normalises scores with it).

The cohort is made of the d-vectors of each training speaker's first COHORT_UTTS training utterances:
their normalised mean, one per speaker (COHORT = 'speakers'), or all of them ('utterances'). It is computed
once per checkpoint and stored beside it (`<name>_cohort.pth`, with what it was built from: asking for
another folder, kind or number of utterances builds it again), or inside a published checkpoint
(pretrained/), so that AS-norm works where the training data is absent.
"""
import pickle
import sys
from pathlib import Path

import torch

import configure as c
from DB_wav_reader import read_training_structure
from dvector.atomic import atomic_save
from dvector.checkpoint import load_problem, model_id
from dvector.embedding import embed_files, enroll_speakers
from dvector.feature_files import require_finite
from dvector.frontend import reading_settings


def cohort_path(checkpoint):
    """Where the cohort of a checkpoint is stored: beside it, <name>_cohort.pth."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f'{checkpoint.stem}_cohort.pth')


def build_cohort(model, ckpt, train_feat_dir, utts_per_speaker, device, kind='speakers'):
    """The cohort d-vectors (n, embedding_size) of the training speakers' first `utts_per_speaker` utterances (by
    name), embedded as the checkpoint recommends for enrollment (ENROLL_FRAMES otherwise): the mean_dvector of each
    speaker's (kind 'speakers'), or every one ('utterances')."""
    segment_frames = ckpt.get('scoring', {}).get('enroll_frames', c.ENROLL_FRAMES)
    DB = read_training_structure(train_feat_dir)
    files = DB.groupby('speaker_id')['filename'].apply(lambda f: sorted(f)[:utts_per_speaker])
    reading = reading_settings(ckpt['feature'])
    if kind == 'speakers':
        return torch.stack(list(enroll_speakers(model, reading, files.to_dict(), segment_frames, device,
                                                'cohort').values()))
    names = [f for fs in files for f in fs]
    vectors = embed_files(model, reading, names, segment_frames, device, 'cohort')
    return torch.stack([vectors[f] for f in names])


def read_stored_cohort(path, device):
    """The record stored at `path`, or None when there is none or it cannot be read (it is then built again)."""
    if not path.is_file():
        return None
    try:
        record = torch.load(path, map_location=device, weights_only=True)
        if isinstance(record, dict) and torch.is_tensor(record.get('cohort')):
            if torch.isfinite(record['cohort']).all():
                return record
            problem = 'NaN or infinite values'
        else:
            problem = 'not a cohort record'
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:  # truncated or foreign
        problem = f'{type(e).__name__}: {load_problem(e)}'
    print(f"Cannot read the stored cohort {path} ({problem}); building it again", file=sys.stderr)
    return None


def cohort_source(train_feat_dir, utts_per_speaker, kind='speakers'):
    """What a cohort is built from, as its stored record keeps it: the training folder (absolute), utterances
    per speaker, and its kind (COHORT)."""
    return {'train_feat_dir': str(Path(train_feat_dir).resolve()), 'utts_per_speaker': utts_per_speaker, 'kind': kind}


def stored_cohort(path, ckpt, source, device):
    """The cohort stored at `path` when it is the checkpoint's model's and was built from `source` (cohort_source),
    else None."""
    record = read_stored_cohort(path, device)
    if not record or record.get('model_id') != model_id(ckpt):
        return None
    built_from = {k: record.get(k) for k in source}
    if built_from != source:
        print(f"The stored cohort {path} was built from {described(built_from)}, not from {described(source)}",
              file=sys.stderr)
        return None
    return record['cohort']


def described(source):
    """A cohort_source in words: 'feats/train (20 utterances a speaker, speakers)'."""
    return f"{source['train_feat_dir']} ({source['utts_per_speaker']} utterances a speaker, {source['kind']})"


def scoring_cohort(args, ckpt, model, device):
    """The cohort of the scoring flags args (--checkpoint, --cohort-dir, --cohort-utts, --cohort), by load_cohort;
    None unless they score with AS-norm (--score-norm asnorm)."""
    if args.score_norm != 'asnorm':
        return None
    return load_cohort(args.checkpoint, ckpt, model, device, args.cohort_dir, args.cohort_utts, args.cohort)


def load_cohort(checkpoint, ckpt, model, device, train_feat_dir=None, utts_per_speaker=c.COHORT_UTTS, kind=c.COHORT):
    """The checkpoint's cohort (n, embedding_size): inside it, stored beside it, or built now and stored.

    A cohort is built from the run's training folder (train_feat_dir, default the one it was trained on); a stored
    one is built again when it came from another folder, utts_per_speaker or kind, or cannot be read. A published
    checkpoint's own cohort is always used (stage.resolve_scoring sets the scoring settings to it, and says
    when that overrules a flag).
    """
    if 'cohort' in ckpt:  # a published checkpoint's, stored in float16
        return require_finite(ckpt['cohort'].float().to(device), f"the cohort of {checkpoint}")
    path = cohort_path(checkpoint)
    train_feat_dir = train_feat_dir or ckpt.get('train_args', {}).get('train_feat_dir')
    if not train_feat_dir:
        raise FileNotFoundError(f"AS-norm needs a cohort of training speakers: {checkpoint} holds none and names no "
                                "training folder (pass --cohort-dir, or --score-norm none)")
    source = cohort_source(train_feat_dir, utts_per_speaker, kind)
    cohort = stored_cohort(path, ckpt, source, device)
    if cohort is not None:
        return cohort
    if not Path(train_feat_dir).exists():  # a folder, or a list file (DB_wav_reader.read_training_structure)
        raise FileNotFoundError(f"AS-norm needs a cohort of training speakers: {checkpoint} holds none, and its "
                                f"training folder {train_feat_dir} is not here "
                                "(pass --cohort-dir, or --score-norm none)")
    print(f"Building the AS-norm cohort of {checkpoint} from {described(source)}; stored in {path}",
          file=sys.stderr)  # stderr: stdout may be --json
    cohort = require_finite(build_cohort(model, ckpt, train_feat_dir, utts_per_speaker, device, kind),
                            f"the cohort built from {described(source)}")
    atomic_save({'cohort': cohort.cpu(), 'model_id': model_id(ckpt), **source}, path)
    return cohort
