"""What the stages record beside a model: enrolled d-vectors (one file per speaker) and calibrated thresholds.

An enrollment folder is written all or nothing under a lock (save_enrollment), and read only with the
model that made it (load_enrollment); a threshold is stored per scoring setting and refused for others.
"""
import json
import os
from contextlib import contextmanager, suppress
from pathlib import Path

import torch

from dvector import cli
from dvector.atomic import TMP_SUFFIX, atomic_save, atomic_write, cannot_write
from dvector.checkpoint import load_problem, model_id
from dvector.feature_files import require_finite
from dvector.frontend import front_end, same_front_end

# How an enrollment's d-vectors were made (enroll.py's flags): each enrollment records them, and a single trial
# is scored with them
ENROLLMENT_SETTINGS = ('enroll_frames', 'vad', 'level')
SWITCH_JOURNAL = '.enroll-switch.json'  # the renames and removals that switch a folder to a run's enrollments
WINDOWS_LOCK = '.enroll.lock'  # Windows, which cannot lock a folder: the file in it whose lock is the folder's


def lock_folder(folder):
    """A function that lets go of the folder's lock, now held by this process; None when another process holds it.

    The operating system lets go of it when the process ends, however it ends. POSIX: fcntl.flock on the folder
    itself, nothing written in it. Windows has neither fcntl nor locks on folders: msvcrt.locking on WINDOWS_LOCK in
    the folder. Each is imported here, on its own OS, so that this module imports on every OS.
    """
    if os.name == 'nt':
        import msvcrt
        fd = os.open(folder / WINDOWS_LOCK, os.O_RDWR | os.O_CREAT)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:  # held: locking says so by an error, of no one subclass
            os.close(fd)
            return None

        def release():
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
            os.close(fd)
            with suppress(OSError):  # another process has it open: it is left to that one
                (folder / WINDOWS_LOCK).unlink()
        return release
    import fcntl
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return lambda: os.close(fd)


@contextmanager
def enrollment_lock(embedding_dir):
    """Hold the enrollment folder's lock (lock_folder: let go when the process ends, however it ends); refuse when
    another enroll.py holds it: two writers would mix their speakers. Holding it, a switch that a killed run left
    midway is completed (finish_switch) and the temporary files of killed runs are removed."""
    folder = Path(embedding_dir)
    made = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot_write(folder, e) from e
    release = lock_folder(folder)
    if release is None:
        raise ValueError(f"{folder}: another enroll.py is enrolling into it now (it holds the folder's lock); "
                         "wait until it ends, or enroll into another --embedding-dir")
    try:
        try:
            finish_switch(folder)
            for stale in folder.glob(f'.*{TMP_SUFFIX}'):
                stale.unlink()
        except OSError as e:
            raise cannot_write(folder, e) from e
        yield
    finally:
        release()
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


def enrolled_otherwise(records, used):
    """What to say when test audio is read with another --vad/--level (`used`) than the speakers of `records` were
    enrolled with; None when they agree."""
    if all(same_front_end(r, used) for r in records.values()):
        return None
    enrolled = sorted({cli.flags_text(front_end(r)) for r in records.values()})
    return (f"the speakers were enrolled with {' or '.join(enrolled)}, the test side is read with "
            f"{cli.flags_text(used)}: their scores may not compare. Pass the enrollment's --vad and --level, or "
            "enroll again with these")


def threshold_path(checkpoint, score_norm='none'):
    """Where a calibrated threshold of a checkpoint is stored: beside it, <name>_threshold.json for cosine scores,
    <name>_<score_norm>_threshold.json for normalised ones (their scales differ)."""
    checkpoint = Path(checkpoint)
    infix = '' if score_norm == 'none' else f'_{score_norm}'
    return checkpoint.with_name(f'{checkpoint.stem}{infix}_threshold.json')


def save_threshold(checkpoint, ckpt, record, scoring, front_end):
    """Store a calibrated threshold of the model in `checkpoint` for the scoring settings `scoring`
    (stage.scoring_settings), calibrated on features made with `front_end` ({'vad', 'level'}); record holds
    'threshold' and how it was found."""
    path = threshold_path(checkpoint, scoring['score_norm'])
    require_finite(record['threshold'], f"the threshold to store in {path}")
    text = json.dumps({**record, 'scoring': scoring, 'front_end': front_end, 'model_id': model_id(ckpt)}, indent=2)
    atomic_write(path, lambda f: f.write(text.encode()))


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
    calibrated = record.get('scoring')
    if calibrated != scoring:
        raise ValueError(f"the threshold {record['source']} was calibrated for scoring {calibrated}, not {scoring}: "
                         "calibrate again with these settings, score with those, or pass --threshold")
    return record
