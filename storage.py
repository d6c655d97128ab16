"""What the stages write and read back: atomic writes, checkpoints, enrolled d-vectors."""
import fcntl
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from features import require_finite
from model.model import BackgroundResNet
from speed import embedding_dtype, for_inference

# What every checkpoint holds: all that the stages need to use its model (training_checkpoint says what each is) ...
CHECKPOINT_KEYS = {'state_dict', 'model_args', 'speakers', 'feature', 'run_id', 'epoch'}
# ... and what train.py's checkpoints hold besides, to continue the run (make_pretrained.py keeps scoring, train_args)
TRAINING_KEYS = {'scoring', 'history', 'optimizer', 'scheduler', 'scaler', 'rng_state', 'train_args', 'resolved',
                 'train_files'}
# How an enrollment's d-vectors were made (enroll.py's flags): each enrollment records them, and a single trial
# is scored with them
ENROLLMENT_SETTINGS = ('enroll_frames', 'vad', 'level')
# The scoring settings of the AS-norm cohort (recorded with a threshold under AS-norm only)
COHORT_SETTINGS = ('cohort', 'cohort_utts', 'cohort_top')
# The cohort that records written before cohorts had kinds (COHORT) meant: each speaker's mean of 20 utterances
OLDER_COHORT = {'cohort': 'speakers', 'cohort_utts': 20}


def atomic_write(path, write):
    """Call write(binary file) on a temporary file beside `path`, then rename it to `path`.

    A crash or Ctrl-C midway leaves the old file (or none), never a half-written one.
    """
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}{TMP_SUFFIX}')
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # name the file asked for, not the hidden temporary one
        tmp.unlink(missing_ok=True)
        raise cannot_write(path, e) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def cannot_write(path, e):
    """The OSError e, about writing `path`, as an error of its kind naming `path` (not a temporary file beside it)."""
    return type(e)(f"cannot write {path}: {e.strerror or e}")


def check_writable(path):
    """Refuse now, before any work, an output file that could not be written later: its folder is made, and a
    file is tried there (and removed)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as e:
        raise cannot_write(path, e) from e


TMP_SUFFIX = '.tmp'  # atomic_write's temporary files: '.<name>.<pid>.tmp' beside the file


def atomic_save(obj, path):
    """torch.save(obj, path), atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path, device='cpu', to_resume=False):
    """The checkpoint dict saved by train.py, with tensors on `device`.

    to_resume: it must hold the training state that --resume continues from (TRAINING_KEYS).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (train one with train.py, or pass --checkpoint)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable checkpoint ({load_problem(e)})") from e
    if not isinstance(ckpt, dict) or not CHECKPOINT_KEYS <= set(ckpt):
        raise ValueError(f"{path}: not a checkpoint written by this project's train.py")
    if to_resume and not TRAINING_KEYS <= set(ckpt):
        missing = ', '.join(sorted(TRAINING_KEYS - set(ckpt)))
        raise ValueError(f"{path}: holds no training state to resume from (it lacks {missing}: a published "
                         "checkpoint keeps only what the stages need, and an older train.py wrote fewer keys); "
                         "start a new run from its weights with --init-from")
    return ckpt


def load_problem(e):
    """What torch.load(weights_only=True) found wrong with a file, in a line, without its advice to load it with
    weights_only=False: that runs whatever code the file holds, never to be done with a file of unknown origin."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip() and 'weights_only' not in line]
    return ' '.join(lines).removeprefix('WeightsUnpickler error:').strip() or type(e).__name__


def training_checkpoint(*, epoch, history, model, optimizer, scheduler, scaler, run_id, speakers, model_args,
                        feature, scoring, train_args, resolved, train_files):
    """The checkpoint train.py writes after each epoch: the model, and the state of the run to resume it."""
    return {
        # to use the model (CHECKPOINT_KEYS): model_from_checkpoint rebuilds it from these alone
        'state_dict': model.state_dict(),
        'model_args': model_args,  # BackgroundResNet(**model_args)
        'speakers': speakers,      # the training speakers, in the order of the classifier's outputs
        'feature': feature,        # the features it was trained on (features.feature_settings) and 'win_size'
        'run_id': run_id,          # the training run and the epoch name the model: enrollments record them
        'epoch': epoch,
        'scoring': scoring,        # the scoring settings its recipe recommends (configure.SCORINGS)
        # to resume the run (TRAINING_KEYS)
        'history': history,        # one record per epoch: losses, accuracies, lr, seconds
        'optimizer': optimizer.state_dict(),
        'scheduler': scheduler.state_dict(),
        'scaler': scaler.state_dict() if scaler else None,  # float16's gradient scaler, if it has one
        'rng_state': torch.get_rng_state(),  # the random windows (and the workers' seeds) go on from here
        'train_args': train_args,  # the settings as asked for: configure.py, then the flags
        'resolved': resolved,      # what the run made of them where 'auto' may choose: {'precision', 'channels_last'}
        'train_files': train_files,  # files_fingerprint of the training files: a resumed run needs the same ones
    }


def files_fingerprint(filenames):
    """A digest of a set of training files: a resumed run must see the same files (and so the same split)."""
    return hashlib.sha1('\n'.join(sorted(map(str, filenames))).encode()).hexdigest()


def check_resume(ckpt, given, train_files):
    """Refuse to continue the run of checkpoint ckpt with other settings or other training files than its own.

    given: {setting: value} of the flags given on the command line that a resumed run takes from its
    checkpoint; each must be the run's ('auto', or what the run resolved it to, passes too). Among them
    'epochs' under a fixed schedule (cosine, exponential), which its epoch count sets, and under any schedule
    once the fine-tuning epochs (numbered after them) have begun.
    train_files: the names of the training files now.
    """
    asked, resolved = ckpt['train_args'], ckpt['resolved']
    if given.get('epochs', asked['epochs']) != asked['epochs']:
        if asked['schedule'] == 'plateau':  # only once fine-tuning has begun is 'epochs' checked then
            raise ValueError(f"--epochs {given['epochs']}: the run's fine-tuning epochs have begun after its epoch "
                             f"{asked['epochs']}, so resuming cannot change that count; resume without --epochs")
        raise ValueError(f"--epochs {given['epochs']}: the run's {asked['schedule']} schedule is set by its epoch "
                         f"count, {asked['epochs']} (the learning rate of every step depends on it), so resuming "
                         f"cannot change it; resume without --epochs, or start a new run from its weights "
                         f"(--init-from) to train on. A plateau schedule may be resumed with more epochs")
    changed = [f"--{k.replace('_', '-')}" for k, v in given.items()
               if v not in ('auto', asked[k], resolved.get(k, 'auto'))]
    if changed:
        raise ValueError(f"{', '.join(changed)} cannot change when resuming a run (it continues with its own "
                         f"settings); start a new run in another --log-dir to change them")
    if files_fingerprint(train_files) != ckpt['train_files']:
        raise ValueError(f"the files in {asked['train_feat_dir']} changed since the run started, and with them the "
                         "train/validation split; resume needs the same files")


def model_from_checkpoint(ckpt, device):
    """The model rebuilt from a checkpoint's own settings and weights, in eval mode."""
    try:
        model = BackgroundResNet(**ckpt['model_args'])
        model.load_state_dict(ckpt['state_dict'])
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"the checkpoint's weights do not fit its model settings ({e})") from e
    model.eval()
    try:  # its features' settings must fit its model's: the filters it was built for, and one tiny input of them
        n_filters = ckpt['feature']['n_filters']
        if ckpt['model_args'].get('n_filters', n_filters) != n_filters:
            raise ValueError(f"{ckpt['model_args']['n_filters']} filters, not {n_filters}")
        with torch.no_grad():
            model.embed(torch.zeros(1, 1, n_filters, 100))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"the checkpoint's settings do not fit together: its model {ckpt['model_args']} does not "
                         f"take its features {ckpt.get('feature')} ({str(e).splitlines()[0]})") from e
    return model.to(device)


def load_model(path, device, precision='fp32', backend='torch', random_weights_seed=None):
    """(model for embedding, checkpoint dict) of the checkpoint at `path`.

    precision: an EMBED_PRECISION; backend: an EMBED_BACKEND. With 'onnx' the model is an
    onnx_backend.OnnxEmbedder, which has the model's `.embed` and runs on the CPU in float32.
    random_weights_seed: if given, the model has fresh random weights (seeded), as training starts from.
    """
    device = torch.device(device)
    dtype = embedding_dtype(precision, device, backend)  # refuses what the backend cannot do, before any work
    ckpt = load_checkpoint(path, device)
    if random_weights_seed is not None:
        if backend != 'torch':
            raise ValueError("random weights embed with the 'torch' backend only (the 'onnx' one exports the "
                             "trained weights): drop --backend onnx")
        torch.manual_seed(random_weights_seed)
        ckpt = {**ckpt, 'state_dict': BackgroundResNet(**ckpt['model_args']).state_dict()}
    if backend == 'onnx':
        import onnx_backend  # imported here: onnx_backend needs this module, and onnxruntime only when it is used
        return onnx_backend.cached_embedder(path, ckpt), ckpt
    return for_inference(model_from_checkpoint(ckpt, device), device, dtype), ckpt


def model_id(ckpt):
    """Which trained model a checkpoint holds: its training run and epoch."""
    return f"{ckpt['run_id']}/epoch{ckpt['epoch']}"


SWITCH_JOURNAL = '.enroll-switch.json'  # the renames and removals that switch a folder to a run's enrollments


@contextmanager
def enrollment_lock(embedding_dir):
    """Hold the enrollment folder's lock (fcntl.flock on the folder itself, let go when the process ends, however it
    ends); refuse when another enroll.py holds it: two writers would mix their speakers. Holding it, a switch that a
    killed run left midway is completed (finish_switch) and the temporary files of killed runs are removed."""
    folder = Path(embedding_dir)
    made = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot_write(folder, e) from e
    lock = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{folder}: another enroll.py is enrolling into it now (it holds the folder's lock); "
                             "wait until it ends, or enroll into another --embedding-dir") from None
        try:
            finish_switch(folder)
            for stale in folder.glob(f'.*{TMP_SUFFIX}'):
                stale.unlink()
        except OSError as e:
            raise cannot_write(folder, e) from e
        yield
    finally:
        os.close(lock)
        if made and not any(folder.iterdir()):  # a run that enrolled nobody leaves no folder behind
            folder.rmdir()


def finish_switch(folder):
    """Make the switch recorded in the folder's SWITCH_JOURNAL, when one is there: the new enrollment files, written
    whole under temporary names, take their names, and the removed ones go; steps made already are skipped."""
    folder = Path(folder)
    journal = folder / SWITCH_JOURNAL
    if not journal.is_file():
        return
    steps = json.loads(journal.read_text())
    for staged, name in steps['write'].items():
        if (folder / staged).exists():
            os.replace(folder / staged, folder / name)
    for name in steps['remove']:
        (folder / name).unlink(missing_ok=True)
    journal.unlink()


def save_enrollment(embedding_dir, enrolled, ckpt, test_dir, settings, replace=False):
    """Write <embedding_dir>/<speaker>.pth for each of `enrolled`, {speaker: (d-vector (embedding_size,), files)}, all
    or nothing, under enrollment_lock.

    An earlier enrollment of these speakers is replaced, whichever model made it; the other
    speakers' enrollments stay, unless `replace`: then they are removed, and the folder enrolls
    exactly `enrolled`. Files that are not enrollment files are left alone. test_dir: the folder
    the files came from, recorded to say how to enroll them again. settings: {ENROLLMENT_SETTINGS:
    value}, how the d-vectors were made. Returns the removed speakers.

    All or nothing: every record is written whole under a temporary name first, then a journal of
    the switch (renames, removals), then the switch; a run killed before the journal leaves the
    folder as it was (its temporary files are removed by the next run), one killed after it is
    completed by the next run or read of the folder.
    """
    folder = Path(embedding_dir)
    for speaker, (embedding, _) in enrolled.items():
        require_finite(embedding, f"the d-vector of {speaker}")
    steps = {'write': {}, 'remove': []}
    for speaker, (embedding, files) in enrolled.items():
        record = {'embedding': embedding.cpu(), 'files': list(files), 'model_id': model_id(ckpt),
                  'test_dir': str(test_dir), **{k: settings[k] for k in ENROLLMENT_SETTINGS}}
        staged = f'.{speaker}.pth.{os.getpid()}.new{TMP_SUFFIX}'
        atomic_save(record, folder / staged)
        steps['write'][staged] = f'{speaker}.pth'
    if replace:
        steps['remove'] = [p.name for p in sorted(folder.glob('*.pth')) if p.stem not in enrolled and is_enrollment(p)]
    atomic_write(folder / SWITCH_JOURNAL, lambda f: f.write(json.dumps(steps).encode()))
    finish_switch(folder)
    return [Path(name).stem for name in steps['remove']]


def read_enrollment(path, device='cpu'):
    """The record of one enrolled speaker: {'embedding', 'files', 'model_id', 'test_dir', and ENROLLMENT_SETTINGS};
    enroll.py wrote fewer of them before (load_enrollment refuses those)."""
    try:
        record = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a readable enrollment file ({load_problem(e)}); move it out of the "
                         "folder") from e
    if not isinstance(record, dict) or not {'embedding', 'model_id'} <= set(record):
        raise ValueError(f"{path}: not an enrollment file written by enroll.py; move it out of the folder")
    return record


def is_enrollment(path):
    """Whether `path` holds an enrollment record."""
    try:
        read_enrollment(path)
    except ValueError:
        return False
    return True


def enroll_command(embedding_dir, checkpoint, folder):
    """The enroll.py command that enrolls the speakers of `folder` into embedding_dir with the checkpoint."""
    return f"python enroll.py --checkpoint {checkpoint} --embedding-dir {embedding_dir} --test-feat-dir {folder}"


def enroll_again(embedding_dir, records, checkpoint):
    """The enroll.py commands that enroll the speakers of `records`, {speaker: record}, again, one per folder."""
    folders = sorted({r.get('test_dir', '<the folder of their enrollment files>') for r in records.values()})
    return '; '.join(enroll_command(embedding_dir, checkpoint, f) for f in folders)


def other_model_error(embedding_dir, others, ckpt, checkpoint):
    """The message refusing enrollments `others`, {speaker: record}, made by another model: who, and how to fix it."""
    models = ', '.join(sorted({r['model_id'] for r in others.values()}))
    return (f"{embedding_dir} holds d-vectors of another model than {checkpoint} ({model_id(ckpt)}), whose scores "
            f"would be noise: {', '.join(sorted(others))} (model {models}). Enroll them again with this checkpoint: "
            f"{enroll_again(embedding_dir, others, checkpoint)}; or enroll only the speakers you want, dropping all "
            f"others: {enroll_command(embedding_dir, checkpoint, '<folder>')} --replace")


def finish_interrupted_switch(embedding_dir):
    """Complete the switch to new enrollments that a killed enroll.py left midway, before the folder is read: its
    speakers would otherwise be a mix of two runs."""
    if not (Path(embedding_dir) / SWITCH_JOURNAL).is_file():
        return
    try:
        with enrollment_lock(embedding_dir):
            pass
    except OSError as e:
        raise ValueError(f"{embedding_dir}: an enroll.py run was cut off while it switched the folder to its new "
                         f"enrollments, and the switch cannot be completed here ({e}); run enroll.py into it again"
                         ) from e
    except ValueError:
        raise ValueError(f"{embedding_dir}: enroll.py is switching it to new enrollments now; try again when it "
                         "ends") from None


def load_enrollment(embedding_dir, ckpt, device='cpu', checkpoint='<checkpoint>'):
    """{speaker: enrollment record (read_enrollment)} of the speakers enrolled in `embedding_dir`.

    Refuses d-vectors made by another model than the checkpoint's (at `checkpoint`, named in the
    message): their scores would be noise; and records that do not say how they were made.
    """
    finish_interrupted_switch(embedding_dir)
    paths = sorted(Path(embedding_dir).glob('*.pth'))
    if not paths:
        raise FileNotFoundError(f"no enrolled speakers in {embedding_dir} (run enroll.py first)")
    records = {p.stem: read_enrollment(p, device) for p in paths}
    others = {speaker: r for speaker, r in records.items() if r['model_id'] != model_id(ckpt)}
    if others:
        raise ValueError(other_model_error(embedding_dir, others, ckpt, checkpoint))
    broken = [speaker for speaker, r in records.items()
              if not torch.is_tensor(r['embedding']) or not torch.isfinite(r['embedding']).all()]
    if broken:
        raise ValueError(f"{embedding_dir}: the d-vectors of {', '.join(broken)} are not finite (NaN or infinite: an "
                         f"older enroll.py let them through); enroll them again: "
                         f"{enroll_again(embedding_dir, {s: records[s] for s in broken}, checkpoint)}")
    older = {speaker: r for speaker, r in records.items() if not set(ENROLLMENT_SETTINGS) <= set(r)}
    if older:
        raise ValueError(f"{embedding_dir}: an older enroll.py enrolled {', '.join(sorted(older))}, without recording "
                         f"how (--enroll-frames, --vad, --level); re-run enroll.py: "
                         f"{enroll_again(embedding_dir, older, checkpoint)}")
    return records


def threshold_path(checkpoint, score_norm='none'):
    """Where a calibrated threshold of a checkpoint is stored: beside it, <name>_threshold.json for cosine scores,
    <name>_<score_norm>_threshold.json for normalised ones (their scales differ)."""
    checkpoint = Path(checkpoint)
    infix = '' if score_norm == 'none' else f'_{score_norm}'
    return checkpoint.with_name(f'{checkpoint.stem}{infix}_threshold.json')


def save_threshold(checkpoint, ckpt, record, scoring, front_end):
    """Store a calibrated threshold of the model in `checkpoint` for the scoring settings `scoring`
    (cli.scoring_record), calibrated on features made with `front_end` ({'vad', 'level'}); record holds
    'threshold' and how it was found."""
    path = threshold_path(checkpoint, scoring['score_norm'])
    require_finite(record['threshold'], f"the threshold to store in {path}")
    text = json.dumps({**record, 'scoring': scoring, 'front_end': front_end, 'model_id': model_id(ckpt)}, indent=2)
    atomic_write(path, lambda f: f.write(text.encode()))


def comparable_scoring(scoring):
    """A threshold record's scoring settings as they are recorded now: the cohort's under AS-norm only, and for an
    older AS-norm record, which did not say, its cohort: the means of 20 utterances of each speaker."""
    if scoring.get('score_norm') != 'asnorm':
        return {k: v for k, v in scoring.items() if k not in COHORT_SETTINGS}
    return {**OLDER_COHORT, **scoring}


def load_threshold(checkpoint, ckpt, scoring):
    """The calibration record of the checkpoint's model for these scoring settings, or None when there is none.

    Looked for beside the checkpoint, then inside it (a published checkpoint's 'thresholds'); its 'source'
    says which, its 'front_end' the --vad and --level of the features it was calibrated on. A threshold
    calibrated for other scoring settings is refused: it would not fit these scores.
    """
    path = threshold_path(checkpoint, scoring['score_norm'])
    if path.is_file():
        try:
            record = json.loads(path.read_text())
            require_finite(float(record['threshold']), 'its threshold')
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a calibrated threshold ({e}); delete it or calibrate again") from e
        if record.get('model_id') != model_id(ckpt):
            raise ValueError(f"{path} was calibrated for model {record.get('model_id')}, not this checkpoint's "
                             f"{model_id(ckpt)}: calibrate again (verification.py --trials LIST --calibrate), "
                             "delete it, or pass --threshold")
        record = {**record, 'source': f'calibrated, {path}'}
    elif scoring['score_norm'] in ckpt.get('thresholds', {}):
        record = {**ckpt['thresholds'][scoring['score_norm']], 'source': f'of the checkpoint, {checkpoint}'}
        require_finite(float(record['threshold']), f"the threshold {record['source']}")
    else:
        return None
    if 'front_end' not in record:
        raise ValueError(f"the threshold {record['source']} does not record the --vad and --level it was calibrated "
                         "with (an older verification.py wrote it): calibrate again (verification.py --trials LIST "
                         "--calibrate), or pass --threshold")
    calibrated = comparable_scoring(record.get('scoring', scoring))
    if calibrated != comparable_scoring(scoring):
        raise ValueError(f"the threshold {record['source']} was calibrated for scoring {calibrated}, not {scoring}: "
                         "calibrate again with these settings, score with those, or pass --threshold")
    return record
