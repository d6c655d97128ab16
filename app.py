"""Try it in the browser: a page on this machine that enrolls, verifies and identifies speakers from the microphone.

    python app.py                                    # the pretrained model; open the address it prints
    python app.py --checkpoint model_saved/checkpoint_best.pth --embedding-dir my_enrolled
    python app.py --port 0                           # any free port

The page records from the microphone (Web Audio samples, written as a 16-bit WAV by the page itself:
no ffmpeg) or takes files in any format the stages read, and runs the stages' own code on them: the
checkpoint's features (with --vad and --level), its d-vectors, its recommended scoring (AS-norm with
its cohort) and its threshold. Enrollments go to --embedding-dir as enroll.py writes them
(<name>.pth, under the folder's lock), and the recordings that made them to
<embedding-dir>/recordings/<name>/: enroll.py, verification.py and identification.py read the page's
enrollments, and the page reads theirs. It is served on 127.0.0.1, this machine only, unless --host
says otherwise (browsers give a page the microphone only on localhost or https).
"""
import argparse
import base64
import ipaddress
import os
import re
import shutil
import socket
import tempfile
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import torch
from flask import Flask, abort, jsonify, request, send_from_directory
from werkzeug.exceptions import Forbidden, RequestEntityTooLarge
from werkzeug.serving import make_server
from werkzeug.utils import secure_filename

import configure as c
from dvector import cli

# ---- The stages' code that the page runs: named here only ----------------------------------------
from dvector.atomic import atomic_write
from dvector.audio import collect_notes, require_utterance_file
from dvector.checkpoint import model_id
from dvector.cohort import scoring_cohort
from dvector.embedding import embed_file, enroll_speaker, require_enrolled
from dvector.frontend import VADS, front_end, reading_settings
from dvector.plots import plot_dvector_map, project
from dvector.records import ENROLLMENT_SETTINGS, enrolled_otherwise, enrollment_lock, load_enrollment, save_enrollment
from dvector.scoring import rank_speakers
from dvector.stage import (
    EMBED_PRECISIONS,
    add_backend_arg,
    add_scoring_args,
    open_stage,
    scoring_settings,
    settle_scoring,
    verification_threshold,
)

WEB = Path(__file__).resolve().parent / 'web'  # the page: index.html, app.js, recorder.js, style.css
RECORDINGS = 'recordings'  # <embedding dir>/recordings/<name>/: the recordings that enrolled <name>
SAFE_NAME = re.compile(r'\w[\w.-]{0,63}')  # a speaker's name: also a folder's and a file's, on any system
NAME_BYTES = 200  # a name's most bytes in UTF-8: a file name holds 255, and the staged files of its enrollment add 35
STAGING = 'dvector-app-'  # the page's temporary folders, <system temp>/<STAGING><pid>-<random>: uploads being read
LOCAL_HOSTS = ('127.0.0.1', 'localhost', '::1')
THIS_RECORDING = 'this recording'  # the tested recording's label on the d-vector map
THRESHOLD_MEANING = ("A calibrated threshold lies where, on the trials it was calibrated on, impostors wrongly "
                     "accepted and true speakers wrongly rejected were equally common: a higher one lets fewer "
                     "impostors in and turns more true speakers away.")


def parse_args(argv=None):
    p = cli.parser(__doc__)
    cli.setting(p, 'APP_CHECKPOINT', '--checkpoint')
    cli.setting(p, 'APP_EMBEDDING_DIR', '--embedding-dir')
    cli.setting(p, 'APP_HOST', '--host')
    cli.setting(p, 'APP_PORT', '--port', type=cli.port)
    cli.setting(p, 'APP_MAX_UPLOAD_MB', '--max-upload-mb', type=cli.positive_int)
    cli.setting(p, 'APP_VAD', '--vad', choices=VADS)
    cli.setting(p, 'APP_LEVEL', '--level', type=cli.level, nargs='?', const=c.TRAIN_LEVEL, metavar='DBFS')
    cli.setting(p, 'MAX_SECONDS', type=cli.positive_int)
    p.add_argument('--threshold', type=cli.finite_float, help='accept above this score (default: the calibrated '
                   'threshold of the checkpoint for its scoring when it has one, else THRESHOLD of configure.py)')
    add_scoring_args(p)
    cli.setting(p, 'EMBED_PRECISION', choices=EMBED_PRECISIONS)
    add_backend_arg(p)
    cli.add_device_arg(p)
    args = p.parse_args(argv)
    args.given |= {'vad', 'level'}  # the page's front end (APP_VAD, APP_LEVEL) is for a microphone: it stands before
    return args                     # a checkpoint's recommendation for files, as a flag would


@dataclass
class Recognizer:
    """The model and how the page scores with it, as the stages score with the same flags: made once, at start."""
    args: argparse.Namespace  # the flags, the scoring settings settled as the stages settle them
    model: torch.nn.Module
    ckpt: dict
    device: torch.device
    cohort: torch.Tensor | None  # AS-norm's cohort (n, embedding_size); None for cosine scores
    threshold: float
    threshold_source: str


def load_recognizer(args):
    """The Recognizer of the flags: the checkpoint's model, its recommended scoring, its cohort and threshold."""
    model, ckpt, device, _, _ = open_stage(args)
    cohort = scoring_cohort(args, ckpt, model, device)
    threshold, source = verification_threshold(args, ckpt)
    return Recognizer(args, model, ckpt, device, cohort, threshold, source)


# ---- What the page does -----------------------------------------------------------------------

def require_safe_name(name):
    """name in Unicode's NFKC form (full-width 'ａｌｉｃｅ' is 'alice'), when it can name a speaker's file and folder;
    else an error saying what a name may be."""
    name = unicodedata.normalize('NFKC', name)
    if not SAFE_NAME.fullmatch(name):
        raise ValueError(f"{name!r} cannot be a speaker's name: it names the speaker's file and folder, so use "
                         "letters, digits, '_', '-' and '.', beginning with a letter or digit, at most 64")
    if len(name.encode()) > NAME_BYTES:
        raise ValueError(f"{name!r} cannot be a speaker's name: it is {len(name.encode())} bytes in UTF-8, and a name "
                         f"may have {NAME_BYTES} (it names the speaker's file): choose a shorter one")
    return name


def require_distinct_name(name, embedding_dir):
    """An error when `name` looks like another enrolled name, the same in NFKC form ignoring case ('Alice', or an
    enroll.py folder's 'ａｌｉｃｅ', beside 'alice'): two look-alike speakers a user would take for one."""
    for path in Path(embedding_dir).glob('*.pth'):
        if path.stem != name and unicodedata.normalize('NFKC', path.stem).casefold() == name.casefold():
            raise ValueError(f"{name!r} looks like the enrolled {path.stem!r}: enroll as {path.stem!r} to replace "
                             "its enrollment, or choose another name")


def enrolled_records(rec):
    """{name: enrollment record} of the page's folder, {} when nobody is enrolled; d-vectors of another model, and
    records that do not say how they were made, are refused (load_enrollment)."""
    try:
        return load_enrollment(rec.args.embedding_dir, rec.ckpt, rec.device, rec.args.checkpoint)
    except FileNotFoundError:  # no enrollment files yet
        return {}


def someone_enrolled(rec):
    """enrolled_records, or an error when nobody is enrolled yet."""
    records = enrolled_records(rec)
    if not records:
        raise ValueError(f"nobody is enrolled in {rec.args.embedding_dir} yet: enroll someone first")
    return records


def staging():
    """A temporary folder of this process's (STAGING), removed after; one that a killed server left is removed at the
    next start (remove_stale_staging)."""
    return tempfile.TemporaryDirectory(prefix=f'{STAGING}{os.getpid()}-')


def is_running(pid):
    """Whether a process `pid` runs (as any user)."""
    try:
        os.kill(pid, 0)  # signal 0: nothing sent, only whether it could be
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        pass
    return True


def remove_stale_staging():
    """Remove the staging folders of page servers that no longer run (killed mid-request): uploads left behind."""
    for folder in Path(tempfile.gettempdir()).glob(f'{STAGING}*-*'):
        pid = folder.name[len(STAGING):].split('-')[0]
        if pid.isdigit() and not is_running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def received(uploads, notes):
    """[path] of the uploaded files, each checked and saved under its own name in a temporary folder, removed after;
    an error about them names the upload, not the temporary file. The AudioNotes of reading them (clipped,
    truncated, a low sample rate), naming the uploads, are added to the list `notes` on leaving."""
    if not uploads:
        raise ValueError("no recording given: record or upload one, and tick it")
    with staging() as folder, collect_notes() as found:
        try:
            paths = []
            for i, upload in enumerate(uploads):
                path = Path(folder) / f'{i}' / (secure_filename(upload.filename or '') or 'recording')
                path.parent.mkdir()
                upload.save(path)
                paths.append(require_utterance_file(path))
            yield paths
        except (ValueError, OSError) as e:
            raise ValueError(upload_names(folder, str(e))) from e
    notes += [upload_names(folder, message) for messages in found.values() for message in messages]


def upload_names(folder, text):
    """text about files staged in `folder`, naming the uploads instead."""
    return re.sub(re.escape(folder) + r'/\d+/', '', text)


def reading(rec, args):
    """How the page reads a recording with settings args (--vad, --level): a frontend.reading_settings()."""
    return reading_settings(rec.ckpt['feature'], args.vad, args.level, args.max_seconds)


def embed_recording(rec, path, args):
    """The d-vector of a test recording, read and cut as args say (--vad, --level, --test-frames)."""
    return embed_file(rec.model, reading(rec, args), path, args.test_frames, rec.device)


def claim_settings(rec, name, record):
    """(settings, threshold, its source) of a single trial against the enrolled `name`: the page's settings as
    verification.py settles them for that trial (stage.settle_scoring: the enrollment's own --enroll-frames,
    --vad and --level; the page's --vad and --level are for new enrollments, not a contradiction), and the
    threshold calibrated for them."""
    args = argparse.Namespace(**{**vars(rec.args), 'given': rec.args.given - set(ENROLLMENT_SETTINGS)})
    settle_scoring(args, rec.ckpt, {**record, 'speaker': name})
    return (args, *verification_threshold(args, rec.ckpt))


def ranked(rec, records, vector):
    """[(name, score)] of the enrolled `records` against a d-vector, best first: the checkpoint's scoring."""
    enrolled = {name: record['embedding'] for name, record in records.items()}
    return rank_speakers(enrolled, vector, rec.cohort, rec.args.cohort_top)


def keep_recordings(folder, paths):
    """[path] of copies of the enrollment recordings in `folder`, named enroll_<time>_<n> (enroll.py enrolls a
    speaker from its files named *enroll*), to the microsecond: never an earlier enrollment's names."""
    stamp = datetime.now().strftime('%Y%m%d-%H%M%S-%f')
    kept = [folder / f'enroll_{stamp}_{i}{path.suffix.lower()}' for i, path in enumerate(paths, 1)]
    for source, path in zip(paths, kept):
        atomic_write(path, lambda f, source=source: f.write(source.read_bytes()))
    return kept


def earlier_recordings(folder):
    """[path] of the recordings in `folder` that an earlier enrollment of its name kept, which enrolling it again
    replaces; an error, before anything is written, when the folder holds anything but files."""
    earlier = sorted(folder.iterdir()) if folder.is_dir() else []
    others = [p for p in earlier if p.is_dir()]
    if others:
        raise ValueError(f"{others[0]}: a folder among the recordings of {folder.name}, which enrolling the name again "
                         f"replaces: move it out of {folder}")
    return earlier


def enroll(rec, name, uploads):
    """Enroll `name` from the uploaded recordings as enroll.py would from a folder of them, replacing an earlier
    enrollment of the name; the recordings are kept in recordings/<name>/. Nothing is written unless all is."""
    name = require_safe_name(name)
    settings = {k: getattr(rec.args, k) for k in ENROLLMENT_SETTINGS}
    root = Path(rec.args.embedding_dir) / RECORDINGS
    notes = []
    with enrollment_lock(rec.args.embedding_dir), received(uploads, notes) as paths:  # the lock first: refused early
        require_distinct_name(name, rec.args.embedding_dir)
        enrolled_records(rec)  # a folder the page cannot read (another model's d-vectors) is refused before writing
        earlier = earlier_recordings(root / name)
        vector = enroll_speaker(rec.model, reading(rec, rec.args), paths, settings['enroll_frames'], rec.device)
        kept = keep_recordings(root / name, paths)
        try:
            save_enrollment(rec.args.embedding_dir, {name: (vector, [str(p) for p in kept])}, rec.ckpt, root, settings)
        except BaseException:
            for path in kept:
                path.unlink(missing_ok=True)
            raise
        for path in earlier:
            path.unlink()
    records = enrolled_records(rec)
    return {'enrolled': name, 'recordings': len(kept), 'speakers': sorted(records), 'notes': notes,
            'map': dvector_map(rec, records)}


def verify(rec, name, uploads):
    """Score one recording against the enrolled `name`: score, threshold, Accept or Reject, and the map."""
    records = someone_enrolled(rec)
    record = require_enrolled(records, name)
    args, threshold, source = claim_settings(rec, name, record)
    notes = []
    with received(one_recording(uploads, 'verify'), notes) as (path,):
        vector = embed_recording(rec, path, args)  # as the speaker was enrolled (verification.py)
    score = ranked(rec, {name: record}, vector)[0][1]
    return {'claimed': name, 'score': score, 'threshold': threshold, 'threshold_source': source,
            'decision': 'Accept' if score > threshold else 'Reject', 'meaning': THRESHOLD_MEANING, 'notes': notes,
            'map': dvector_map(rec, records, vector)}


def identify(rec, uploads):
    """Rank everyone enrolled against one recording, best first, with the map."""
    records = someone_enrolled(rec)
    notes = []
    with received(one_recording(uploads, 'identify'), notes) as (path,):
        vector = embed_recording(rec, path, rec.args)
    ranking = [{'name': name, 'score': score} for name, score in ranked(rec, records, vector)]
    return {'ranking': ranking, 'note': enrolled_otherwise(records, front_end(vars(rec.args))), 'notes': notes,
            'map': dvector_map(rec, records, vector)}


def one_recording(uploads, action):
    """uploads, when they are one recording (or none, which received refuses); else an error."""
    if len(uploads) > 1:
        raise ValueError(f"{len(uploads)} recordings are ticked: tick one to {action}")
    return uploads


def dvector_map(rec, records, vector=None):
    """The enrolled d-vectors (stars) and a recording's (a dot) on a PCA map, as a PNG data URL; None for < 2."""
    names = sorted(records)
    vectors = [records[n]['embedding'] for n in names] + ([vector] if vector is not None else [])
    if len(vectors) < 2:
        return None
    xy, axis_labels = project(torch.stack(vectors).float().cpu(), 'pca', c.MAP_PERPLEXITY, c.SEED)
    points = {THIS_RECORDING: xy[len(names):]} if vector is not None else {}
    title = (f"d-vectors of {len(names)} enrolled speakers (stars){' and this recording' if points else ''}, PCA\n"
             f"model {model_id(rec.ckpt)}")
    with staging() as folder:
        path = Path(folder) / 'map.png'
        plot_dvector_map(points, dict(zip(names, xy)), {}, path, title, axis_labels)  # {}: no sex markers
        return 'data:image/png;base64,' + base64.b64encode(path.read_bytes()).decode()


def page_state(rec):
    """What the page shows on opening: the model, its scoring and threshold, who is enrolled, the upload limit."""
    state = {'model': model_id(rec.ckpt), 'checkpoint': rec.args.checkpoint, 'scoring': scoring_settings(rec.args),
             'front_end': front_end(vars(rec.args)), 'threshold': rec.threshold,
             'threshold_source': rec.threshold_source, 'max_upload_bytes': upload_limit(rec), 'speakers': []}
    try:
        state['speakers'] = sorted(enrolled_records(rec))
    except ValueError as e:  # the folder holds what this model cannot score: the page says so, and why
        state['error'] = str(e)
    return state


def upload_limit(rec):
    return rec.args.max_upload_mb * 2 ** 20


# ---- The web server -----------------------------------------------------------------------------

def is_served_name(name, host):
    """Whether a request's Host header names the page: an IP address, 'localhost', or the --host it is served on.
    Any other name (evil.example resolved to this machine, DNS rebinding) is another site's."""
    name = urlsplit(f'//{name}').hostname or ''  # less the port and an IPv6 address's brackets
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name.lower() in ('localhost', host.lower())


def cross_site(headers, host):
    """What makes a request another site's, for a browser: its Sec-Fetch-Site, or an Origin other than the page's
    (http://<Host>); None for the page's own requests and for clients that are not browsers (they send neither)."""
    site = headers.get('Sec-Fetch-Site')
    if site not in (None, 'same-origin', 'none'):
        return f'Sec-Fetch-Site {site}'
    origin = headers.get('Origin')
    if origin is not None and origin != f'http://{host}':
        return f'Origin {origin}'
    return None


def refuse_other_sites(args):
    """Refuse (403) a request that names another host, and a state-changing one (POST) from another site: a page
    elsewhere could otherwise enroll impostors here, or read who is enrolled."""
    if not is_served_name(request.host, args.host):
        abort(403, f"the page is served as {args.host}, not {request.host!r}: open it at its own address (the one "
                   "app.py printed)")
    found = cross_site(request.headers, request.host) if request.method == 'POST' else None
    if found:
        abort(403, f"a request from another site ({found}) is refused: enroll, verify and identify on the page "
                   "itself, at the address app.py printed")


def make_app(rec):
    """The Flask app of the page: the page's files, and a JSON API whose errors are {'error': message}."""
    app = Flask(__name__, static_folder=WEB, static_url_path='/static')
    app.config['MAX_CONTENT_LENGTH'] = upload_limit(rec)
    app.before_request(lambda: refuse_other_sites(rec.args))

    @app.get('/')
    def page():
        return send_from_directory(WEB, 'index.html')

    @app.get('/api/state')
    def state():
        return jsonify(page_state(rec))

    @app.post('/api/enroll')
    def enroll_name():
        return jsonify(enroll(rec, request.form.get('name', ''), request.files.getlist('recording')))

    @app.post('/api/verify')
    def verify_claim():
        return jsonify(verify(rec, request.form.get('name', ''), request.files.getlist('recording')))

    @app.post('/api/identify')
    def identify_speaker():
        return jsonify(identify(rec, request.files.getlist('recording')))

    @app.errorhandler(ValueError)
    @app.errorhandler(OSError)
    def bad_input(e):
        return jsonify(error=str(e)), 400

    @app.errorhandler(Forbidden)
    def forbidden(e):
        return jsonify(error=e.description), 403

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(e):
        if (request.content_length or 0) > upload_limit(rec):
            return jsonify(error=f"the upload is larger than the page takes, {rec.args.max_upload_mb} MB "
                                 "(--max-upload-mb): send fewer or shorter recordings"), 413
        return jsonify(error=f"the form has more than {app.config['MAX_FORM_PARTS']} parts, or a field other than a "
                             f"recording of more than {app.config['MAX_FORM_MEMORY_SIZE'] // 1000} KB (the page sends "
                             "a name and the ticked recordings): send fewer recordings, or a shorter name"), 413

    return app


def exposure_warning(host):
    """The warning to print when the page is served beyond this machine; None for a local address."""
    if host in LOCAL_HOSTS:
        return None
    return (f"Warning: serving on {host}, beyond this machine: anyone who reaches it there can enroll, verify and "
            "identify voices, with no password. Browsers give a page the microphone only on localhost or https, so "
            "from other machines it takes uploaded files only")


def check_address(host, port):
    """Refuse, with what to do, an address the page cannot be served on: a --host that is no address of this machine,
    a --port in use. (Werkzeug would print the reason without an error line, and exit.)"""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        socket.create_server((host, port), family=family).close()
    except socket.gaierror as e:
        raise ValueError(f"--host {host}: no such address ({e.strerror}): give an address of this machine, "
                         "127.0.0.1 (this machine only) or 0.0.0.0 (every network)") from None
    except OSError as e:
        raise OSError(f"cannot serve on --host {host} --port {port}: {e.strerror}: give another --port (0: any free "
                      "one), or an address of this machine as --host") from None


def main(argv=None):
    args = parse_args(argv)
    check_address(args.host, args.port)
    remove_stale_staging()
    rec = load_recognizer(args)
    server = make_server(args.host, args.port, make_app(rec), threaded=True)
    warning = exposure_warning(args.host)
    if warning:
        print(warning)
    host = f'[{args.host}]' if ':' in args.host else args.host
    print(f"The page: http://{host}:{server.server_port}/  (model {model_id(rec.ckpt)}; enrollments in "
          f"{args.embedding_dir}/; Ctrl-C stops it)", flush=True)
    server.serve_forever()


if __name__ == '__main__':
    cli.run(main)
