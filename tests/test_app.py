"""app.py through Flask's test client (no browser): the page's API runs the stages' code, shares enrollments with
them both ways, and refuses bad input with one clear message, losing nothing."""
import dataclasses
import io
import os
import re
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch

import app
import enroll
import identification
import verification
from dvector.atomic import atomic_write
from dvector.checkpoint import model_id
from dvector.records import enrollment_lock, load_enrollment, save_enrollment

from conftest import RATE, demo_speech, demo_wav, wav_bytes

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def recognizer():
    """The page's Recognizer with its default settings (the pretrained model), on the CPU."""
    return app.load_recognizer(app.parse_args(['--device', 'cpu']))


def with_settings(rec, **changes):
    """A copy of the Recognizer rec with some of its settings changed."""
    return dataclasses.replace(rec, args=Namespace(**{**vars(rec.args), **changes}))


@pytest.fixture
def page(recognizer, tmp_path):
    """(Flask test client, Recognizer) of the page, enrolling into a folder of its own."""
    rec = with_settings(recognizer, embedding_dir=str(tmp_path / 'enrolled'))
    return app.make_app(rec).test_client(), rec


def post(client, path, recordings, headers=None, **fields):
    """POST fields and recordings {file name: bytes} to the page's API, with headers: (status, JSON answer)."""
    data = {**fields, 'recording': [(io.BytesIO(content), name) for name, content in recordings.items()]}
    response = client.post(path, data=data, content_type='multipart/form-data', headers=headers)
    return response.status_code, response.get_json()


def enrolled_files(rec):
    """{name: [files]} of the enrollment records in the page's folder."""
    return {name: record['files'] for name, record in load_enrollment(rec.args.embedding_dir, rec.ckpt).items()}


def test_the_page_is_served_with_its_own_files_and_nothing_from_elsewhere(page):
    client, _ = page
    html = client.get('/').get_data(as_text=True)
    assert '<script src="/static/app.js"' in html and 'href="/static/style.css"' in html
    for name in ('app.js', 'recorder.js', 'style.css'):
        assert client.get(f'/static/{name}').status_code == 200
    for path in app.WEB.iterdir():  # no CDN, no font or script of another site: the page works offline
        assert not re.search(r'\w+://|["\'(]//', path.read_text()), path.name


def test_the_state_names_the_model_its_recommended_scoring_and_threshold(page):
    client, rec = page
    state = client.get('/api/state').get_json()
    assert state['model'] == model_id(rec.ckpt) and state['speakers'] == []
    assert state['scoring']['score_norm'] == 'asnorm'  # the checkpoint's recommendation, as the stages apply it
    assert state['threshold'] == pytest.approx(rec.ckpt['thresholds']['asnorm']['threshold'])
    assert state['front_end'] == {'vad': 'silero', 'level': -44.0}
    assert state['max_upload_bytes'] == 20 * 2 ** 20


@pytest.mark.slow
def test_the_stages_read_what_the_page_enrolls_and_score_it_as_the_page_does(page, tmp_path):
    client, rec = page
    assert post(client, '/api/enroll', {'a.wav': demo_wav(1), 'b.wav': demo_wav(2)}, name='alice')[0] == 200
    status, answer = post(client, '/api/enroll', {'c.wav': demo_wav(3, speaker=2)}, name='bob')
    assert status == 200 and answer['speakers'] == ['alice', 'bob'] and answer['map'].startswith('data:image/png')
    folder = tmp_path / 'enrolled'
    records = load_enrollment(folder, rec.ckpt)
    assert {k: records['alice'][k] for k in ('vad', 'level', 'enroll_frames')} == {'vad': 'silero', 'level': -44.0,
                                                                                 'enroll_frames': 0}
    assert [p.name for p in sorted((folder / 'recordings' / 'alice').iterdir())] == sorted(
        p.split('/')[-1] for p in records['alice']['files'])  # the recordings that enrolled alice, kept
    clip = tmp_path / 'clip.wav'
    clip.write_bytes(demo_wav(4))
    status, verdict = post(client, '/api/verify', {'clip.wav': clip.read_bytes()}, name='alice')
    assert status == 200 and verdict['decision'] == ('Accept' if verdict['score'] > verdict['threshold'] else 'Reject')
    flags = ['--checkpoint', rec.args.checkpoint, '--embedding-dir', str(folder), '--device', 'cpu',
             '--test-file', str(clip)]
    score, result = verification.main(flags + ['--enroll-speaker', 'alice'])
    assert (score, result) == (pytest.approx(verdict['score'], abs=1e-4), verdict['decision'])
    status, identified = post(client, '/api/identify', {'clip.wav': clip.read_bytes()})
    assert identification.main(flags + ['--vad', 'silero', '--level']) == identified['ranking'][0]['name']
    again = tmp_path / 'again'  # enroll.py, from the recordings the page kept, enrolls the same d-vectors
    enroll.main(flags[:2] + ['--embedding-dir', str(again), '--device', 'cpu', '--test-feat-dir',
                             str(folder / 'recordings'), '--vad', 'silero', '--level'])
    enrolled_again = load_enrollment(again, rec.ckpt)
    assert sorted(enrolled_again) == ['alice', 'bob']
    for name, record in enrolled_again.items():
        assert torch.allclose(record['embedding'], records[name]['embedding'], atol=1e-5), name


@pytest.mark.slow
def test_the_page_reads_what_enroll_py_enrolls(page, tmp_path):
    client, rec = page
    (tmp_path / 'voices' / 'carol').mkdir(parents=True)
    (tmp_path / 'voices' / 'carol' / 'enroll.wav').write_bytes(demo_wav(5, speaker=3))
    enroll.main(['--checkpoint', rec.args.checkpoint, '--embedding-dir', rec.args.embedding_dir, '--device', 'cpu',
                 '--test-feat-dir', str(tmp_path / 'voices'), '--vad', 'silero', '--level'])
    assert client.get('/api/state').get_json()['speakers'] == ['carol']
    status, verdict = post(client, '/api/verify', {'clip.wav': demo_wav(6, speaker=3)}, name='carol')
    assert status == 200 and verdict['claimed'] == 'carol' and np.isfinite(verdict['score'])


def test_enrolling_a_name_again_replaces_its_enrollment_and_recordings(page, tmp_path):
    client, rec = page
    post(client, '/api/enroll', {'a.wav': demo_wav(1), 'b.wav': demo_wav(2)}, name='alice')
    assert post(client, '/api/enroll', {'c.wav': demo_wav(3)}, name='alice')[0] == 200
    files = enrolled_files(rec)['alice']
    assert len(files) == 1 and sorted((tmp_path / 'enrolled' / 'recordings' / 'alice').iterdir()) == [
        tmp_path / 'enrolled' / 'recordings' / 'alice' / files[0].split('/')[-1]]


@pytest.mark.parametrize('recording, message', [
    (wav_bytes(np.zeros(3 * RATE, np.float32)), 'bad.wav: silent'),
    (wav_bytes(demo_speech(1)[RATE:RATE + 4 * RATE // 10]), 'bad.wav: too short'),  # 0.4 s
    (b'RIFF....WAVEnot audio at all', 'bad.wav: not a readable audio file'),
], ids=['silent', 'too short', 'unreadable'])
def test_a_bad_recording_is_refused_by_name_and_the_earlier_enrollment_stays(page, tmp_path, recording, message):
    client, rec = page
    post(client, '/api/enroll', {'a.wav': demo_wav(1)}, name='alice')
    before = enrolled_files(rec)
    status, answer = post(client, '/api/enroll', {'good.wav': demo_wav(2), 'bad.wav': recording}, name='alice')
    assert status == 400 and message in answer['error'] and 'dvector-app-' not in answer['error']
    assert enrolled_files(rec) == before  # nothing lost, nothing half-written
    assert [p.name for p in (tmp_path / 'enrolled' / 'recordings' / 'alice').iterdir()] == [
        before['alice'][0].split('/')[-1]]


def test_a_format_the_stages_cannot_read_is_refused_with_what_to_do(page):
    status, answer = post(page[0], '/api/enroll', {'clip.webm': b'\x1aE\xdf\xa3 webm'}, name='alice')
    assert status == 400 and answer['error'].startswith('audio that soundfile cannot read here')
    assert 'ffmpeg -i clip.webm clip.wav' in answer['error']


def test_an_upload_over_the_limit_is_refused_with_the_limit(page):
    client, rec = page
    small = app.make_app(with_settings(rec, max_upload_mb=1)).test_client()
    status, answer = post(small, '/api/enroll', {'long.wav': demo_wav(1, seconds=40)}, name='alice')  # 1.3 MB
    assert status == 413 and '1 MB (--max-upload-mb)' in answer['error']
    assert not Path(rec.args.embedding_dir).exists()


@pytest.mark.parametrize('name', ['', '../x', '.hidden', 'a/b', 'a b', 'x' * 65, '-v'])
def test_a_name_that_is_not_a_safe_folder_name_is_refused(page, tmp_path, name):
    status, answer = post(page[0], '/api/enroll', {'a.wav': demo_wav(1)}, name=name)
    assert status == 400 and answer['error'] == (
        f"{name!r} cannot be a speaker's name: it names the speaker's file and folder, so use letters, digits, '_', "
        "'-' and '.', beginning with a letter or digit, at most 64")
    assert not (tmp_path / 'enrolled').exists()


def test_a_second_enrollment_at_once_is_refused_by_the_enrollment_lock(page):
    client, rec = page
    post(client, '/api/enroll', {'a.wav': demo_wav(1)}, name='alice')
    before = enrolled_files(rec)
    with enrollment_lock(rec.args.embedding_dir):  # what another tab (or enroll.py) enrolling now holds
        status, answer = post(client, '/api/enroll', {'b.wav': demo_wav(2)}, name='alice')
    assert status == 400 and 'another enroll.py is enrolling into it now' in answer['error']
    assert enrolled_files(rec) == before


def test_verify_and_identify_say_who_can_be_scored(page):
    client, _ = page
    status, answer = post(client, '/api/identify', {'a.wav': demo_wav(1)})
    assert status == 400 and re.fullmatch(r'nobody is enrolled in \S+ yet: enroll someone first', answer['error'])
    post(client, '/api/enroll', {'a.wav': demo_wav(1)}, name='alice')
    status, answer = post(client, '/api/verify', {'b.wav': demo_wav(2)}, name='bob')
    assert status == 400 and answer['error'] == "speaker 'bob' is not enrolled; enrolled speakers: alice"
    status, answer = post(client, '/api/verify', {'b.wav': demo_wav(2), 'c.wav': demo_wav(3)}, name='alice')
    assert status == 400 and answer['error'] == '2 recordings are ticked: tick one to verify'
    status, answer = post(client, '/api/identify', {})
    assert status == 400 and answer['error'] == 'no recording given: record or upload one, and tick it'


def test_d_vectors_of_another_model_are_refused_on_the_page(page, tmp_path):
    client, rec = page
    other = {**rec.ckpt, 'run_id': 'another-run'}
    save_enrollment(rec.args.embedding_dir, {'dave': (torch.nn.functional.normalize(torch.ones(128), dim=0), [])},
                    other, tmp_path, {'enroll_frames': 0, 'vad': 'no', 'level': 'no'})
    state = client.get('/api/state').get_json()
    assert state['speakers'] == [] and 'holds d-vectors of another model' in state['error']
    status, answer = post(client, '/api/identify', {'a.wav': demo_wav(1)})
    assert status == 400 and answer['error'] == state['error']
    status, answer = post(client, '/api/enroll', {'a.wav': demo_wav(1)}, name='alice')  # refused before writing
    assert status == 400 and answer['error'] == state['error']
    assert sorted(p.name for p in Path(rec.args.embedding_dir).iterdir()) == ['dave.pth']


@pytest.mark.slow
@pytest.mark.parametrize('headers', [{'Origin': 'http://evil.example'}, {'Sec-Fetch-Site': 'cross-site'},
                                     {'Origin': 'null'}, {'Origin': 'http://localhost:9999'}])
def test_a_request_from_another_site_is_refused_and_changes_nothing(page, headers):
    client, rec = page
    post(client, '/api/enroll', {'a.wav': demo_wav(1)}, name='alice')
    before = enrolled_files(rec)
    status, answer = post(client, '/api/enroll', {'b.wav': demo_wav(2, speaker=2)}, headers, name='alice')
    assert status == 403 and answer['error'].startswith('a request from another site (')
    assert enrolled_files(rec) == before  # the impostor did not replace alice
    own = {'Origin': 'http://localhost', 'Sec-Fetch-Site': 'same-origin'}  # what the page itself sends
    assert post(client, '/api/verify', {'b.wav': demo_wav(2)}, own, name='alice')[0] == 200


@pytest.mark.parametrize('host', ['evil.example', 'evil.example:8000', 'rebound.localhost.example'])
def test_a_host_other_than_the_pages_is_refused_so_dns_rebinding_reads_nothing(page, host):
    client, _ = page
    post(client, '/api/enroll', {'a.wav': demo_wav(1)}, name='alice')
    for path in ('/', '/api/state', '/static/app.js'):
        response = client.get(path, headers={'Host': host})
        assert response.status_code == 403 and 'alice' not in response.get_data(as_text=True)
        assert response.get_json()['error'].startswith(f"the page is served as 127.0.0.1, not {host!r}")
    for host in ('127.0.0.1:8000', 'localhost:8000', '[::1]:8000'):  # its own addresses
        assert client.get('/api/state', headers={'Host': host}).get_json()['speakers'] == ['alice']


def test_the_page_is_served_on_this_machine_only_unless_asked_with_a_warning():
    args = app.parse_args([])
    assert (args.host, args.checkpoint) == ('127.0.0.1', 'pretrained/dvector_etri200_improved.pth')
    assert app.exposure_warning('127.0.0.1') is None
    assert app.exposure_warning('0.0.0.0').startswith('Warning: serving on 0.0.0.0, beyond this machine')


def test_a_trial_is_scored_with_the_claimed_speakers_enrollment_settings_as_verification_py_does(page, tmp_path):
    client, rec = page
    (tmp_path / 'voices' / 'dave').mkdir(parents=True)
    (tmp_path / 'voices' / 'dave' / 'enroll.wav').write_bytes(demo_wav(7, speaker=4))
    (tmp_path / 'clip.wav').write_bytes(demo_wav(8, speaker=4))
    flags = ['--checkpoint', rec.args.checkpoint, '--embedding-dir', rec.args.embedding_dir, '--device', 'cpu']
    enroll.main(flags + ['--test-feat-dir', str(tmp_path / 'voices'), '--enroll-frames', '200'])
    with pytest.raises(ValueError) as refused:  # no threshold was calibrated for 200-frame enrollment segments
        verification.main(flags + ['--enroll-speaker', 'dave', '--test-file', str(tmp_path / 'clip.wav')])
    status, answer = post(client, '/api/verify', {'clip.wav': (tmp_path / 'clip.wav').read_bytes()}, name='dave')
    assert status == 400 and answer['error'] == str(refused.value)
    assert "'enroll_frames': 200" in answer['error']


def test_identify_says_when_the_speakers_were_enrolled_with_another_front_end(page, tmp_path):
    client, rec = page
    (tmp_path / 'voices' / 'erin').mkdir(parents=True)
    (tmp_path / 'voices' / 'erin' / 'enroll.wav').write_bytes(demo_wav(9, speaker=5))
    enroll.main(['--checkpoint', rec.args.checkpoint, '--embedding-dir', rec.args.embedding_dir, '--device', 'cpu',
                 '--test-feat-dir', str(tmp_path / 'voices')])  # --vad no --level auto; the page reads with its own
    status, answer = post(client, '/api/identify', {'clip.wav': demo_wav(10, speaker=5)})
    assert status == 200 and answer['ranking'][0]['name'] == 'erin'
    assert answer['note'].startswith('the speakers were enrolled with --vad no --level auto, the test side is read '
                                     f'with --vad {rec.args.vad} --level {rec.args.level}')


@pytest.mark.slow
def test_the_notes_on_a_recording_are_shown_beside_the_result(page):
    client, _ = page
    clipped = np.clip(demo_speech(1) * 40, -1, 1)  # 40x louder: about a tenth of the samples at full scale
    status, answer = post(client, '/api/enroll', {'loud.wav': wav_bytes(clipped)}, name='alice')
    assert status == 200 and len(answer['notes']) == 1 and answer['notes'][0].startswith('loud.wav: clipped: ')
    low = wav_bytes(demo_speech(2)[::2], rate=8000)
    for path, fields in (('/api/verify', {'name': 'alice'}), ('/api/identify', {})):
        status, answer = post(client, path, {'phone.wav': low}, **fields)
        assert status == 200 and answer['notes'] == ['phone.wav: recorded at 8000 Hz: it holds nothing above 4000 '
                                                     'Hz, and the model was trained on 16000 Hz audio']


def test_an_enrollment_that_cannot_replace_the_earlier_one_writes_nothing(page, tmp_path):
    client, rec = page
    post(client, '/api/enroll', {'a.wav': demo_wav(1)}, name='alice')
    before = enrolled_files(rec)
    folder = tmp_path / 'enrolled' / 'recordings' / 'alice'
    (folder / 'mine').mkdir()  # a user's folder among the kept recordings
    status, answer = post(client, '/api/enroll', {'b.wav': demo_wav(2)}, name='alice')
    assert status == 400 and answer['error'] == (f"{folder / 'mine'}: a folder among the recordings of alice, which "
                                                 f"enrolling the name again replaces: move it out of {folder}")
    assert enrolled_files(rec) == before and sorted(p.name for p in folder.iterdir()) == sorted(
        [Path(before['alice'][0]).name, 'mine'])  # the d-vector and the recordings as they were


def test_a_look_alike_name_is_the_name_it_looks_like_and_never_a_second_speaker(page, tmp_path):
    client, rec = page
    post(client, '/api/enroll', {'a.wav': demo_wav(1)}, name='alice')
    status, answer = post(client, '/api/enroll', {'b.wav': demo_wav(2)}, name='ａｌｉｃｅ')  # full-width
    assert status == 200 and answer['enrolled'] == 'alice' and answer['speakers'] == ['alice']
    status, answer = post(client, '/api/enroll', {'b.wav': demo_wav(2)}, name='Alice')
    assert status == 400 and answer['error'] == ("'Alice' looks like the enrolled 'alice': enroll as 'alice' to "
                                                 "replace its enrollment, or choose another name")
    (tmp_path / 'voices' / 'ｂｏｂ').mkdir(parents=True)  # enroll.py takes a folder's name as it is
    (tmp_path / 'voices' / 'ｂｏｂ' / 'enroll.wav').write_bytes(demo_wav(3, speaker=2))
    enroll.main(['--checkpoint', rec.args.checkpoint, '--embedding-dir', rec.args.embedding_dir, '--device', 'cpu',
                 '--test-feat-dir', str(tmp_path / 'voices'), '--vad', 'silero', '--level'])
    status, answer = post(client, '/api/enroll', {'c.wav': demo_wav(4, speaker=2)}, name='bob')
    assert status == 400 and answer['error'].startswith("'bob' looks like the enrolled 'ｂｏｂ'")
    assert sorted(enrolled_files(rec)) == ['alice', 'ｂｏｂ']


def test_a_name_too_long_in_bytes_is_refused_before_anything_is_written(page, tmp_path):
    name = '\U00020000' * 64  # 64 letters (CJK), 256 bytes: longer than a file name may be
    status, answer = post(page[0], '/api/enroll', {'a.wav': demo_wav(1)}, name=name)
    assert status == 400 and answer['error'] == (f"{name!r} cannot be a speaker's name: it is 256 bytes in UTF-8, "
                                                 "and a name may have 200 (it names the speaker's file): choose a "
                                                 "shorter one")
    assert not (tmp_path / 'enrolled').exists()
    assert post(page[0], '/api/enroll', {'a.wav': demo_wav(1)}, name='\U00020000' * 50)[0] == 200  # 200 bytes


def test_a_file_name_too_long_is_an_error_naming_it_not_its_temporary_file(tmp_path):
    path = tmp_path / ('x' * 250 + '.pth')
    with pytest.raises(OSError) as refused:
        atomic_write(path, lambda f: f.write(b'x'))
    assert str(refused.value) == f"cannot write {path}: File name too long"


def test_staging_folders_of_a_killed_server_are_removed_at_the_next_start(tmp_path, monkeypatch):
    monkeypatch.setattr(app.tempfile, 'tempdir', str(tmp_path))
    killed = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    stale, running = (tmp_path / f'{app.STAGING}{pid}-x1' for pid in (killed.stdout.strip(), os.getpid()))
    for folder in (stale, running):
        (folder / '0').mkdir(parents=True)
        (folder / '0' / 'voice.wav').write_bytes(demo_wav(1))
    app.remove_stale_staging()
    assert not stale.exists() and running.exists()


def test_a_form_of_too_many_parts_or_too_large_a_field_says_so(page):
    client, rec = page
    status, answer = post(client, '/api/enroll', {f'{i}.wav': b'RIFF' for i in range(1001)}, name='alice')
    message = ("the form has more than 1000 parts, or a field other than a recording of more than 500 KB (the page "
               "sends a name and the ticked recordings): send fewer recordings, or a shorter name")
    assert (status, answer['error']) == (413, message)
    status, answer = post(client, '/api/enroll', {'a.wav': demo_wav(1)}, name='x' * 2 ** 20)
    assert (status, answer['error']) == (413, message)


@pytest.mark.parametrize('flags, message', [
    (['--port', '70000'], 'argument --port: must be a port from 0 (any free one) to 65535, not 70000'),
    (['--host', 'nonexistent.invalid'], 'error: --host nonexistent.invalid: no such address ('),
], ids=['port', 'host'])
@pytest.mark.slow
def test_an_address_the_page_cannot_be_served_on_is_one_error_line(flags, message):
    done = subprocess.run([sys.executable, 'app.py', *flags], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode in (1, 2) and message in done.stderr and 'Traceback' not in done.stderr
    assert 'The page:' not in done.stdout


def test_a_port_in_use_is_one_error_line(tmp_path):
    with app.socket.create_server(('127.0.0.1', 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f'cannot serve on --host 127.0.0.1 --port {port}: Address already in use'):
            app.check_address('127.0.0.1', port)


def test_a_recording_longer_than_max_seconds_is_refused_on_the_page(page):
    client, rec = page
    short = app.make_app(with_settings(rec, max_seconds=3)).test_client()
    status, answer = post(short, '/api/enroll', {'long.wav': demo_wav(1, seconds=4.0)}, name='alice')
    assert status == 400 and answer['error'].startswith('long.wav: longer than 3 s (4 s or more), the most a '
                                                        'recording may be (MAX_SECONDS, --max-seconds)')
    assert app.parse_args([]).max_seconds == 600
