"""app.py in a real browser: headless Chromium, its fake microphone playing ETRI test recordings (looped), enrolls
two speakers by recording them, then verifies and identifies a third recording, through the page as a user would;
then identifies an uploaded file, and shows a refusal without losing the recordings.

APP_SCREENSHOT=docs/app.png in the environment saves the page at the end there (README.md shows it).
"""
import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from urllib.parse import urlsplit
from urllib.request import urlopen

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from conftest import ETRI, REPO, demo_wav, needs_etri

CHROMIUM, CHROMEDRIVER = shutil.which('chromium'), shutil.which('chromedriver')
needs_chromium = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=(
    "headless Chromium is not installed and could not be: apt-get install chromium chromium-driver (.ci/run does, "
    "where it can)"))

SPEAKERS = ('230M4087', '240M3063')  # two men of the official ETRI test set, enrolled by recording them
TESTED = '230M4087'                   # whose test.wav is then recorded, verified and identified
RECORD_SECONDS = 8                    # each recording, in real time: the fake microphone plays as a voice would
WAIT = 60                             # seconds for the page to start or answer, at most
REBOUND = 'rebound.example'           # a name of another site that Chromium resolves to this machine (DNS rebinding)
# A POST of a recording to enroll, as any page may send one to any address (mode no-cors: sent, answer unread)
POST_ENROLLMENT = """
const [url, wav, name, done] = arguments;
const form = new FormData();
form.append('name', name);
form.append('recording', new Blob([Uint8Array.from(atob(wav), (c) => c.charCodeAt(0))]), 'voice.wav');
fetch(url, {method: 'POST', body: form, mode: 'no-cors'}).then(() => done('sent'), (e) => done(String(e)));
"""


@pytest.fixture
def page_url(tmp_path):
    """The address of app.py started as a user starts it (the pretrained model), on a free port, enrolling into a
    folder of its own."""
    log = tmp_path / 'app.log'
    with open(log, 'w') as err:
        server = subprocess.Popen([sys.executable, str(REPO / 'app.py'), '--port', '0', '--embedding-dir',
                                   str(tmp_path / 'enrolled')], cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        line = server.stdout.readline()  # the first line it prints is the page's address, once it serves
        address = re.search(r'The page: (http://127\.0\.0\.1:\d+/)', line)
        assert address, f"app.py printed {line!r}:\n{log.read_text()}"
        yield address[1]
    finally:
        server.terminate()
        server.wait(timeout=WAIT)


@contextmanager
def chromium(microphone=None):
    """Headless Chromium whose microphone plays the wav `microphone`, looped, with the permission given; REBOUND
    resolves to this machine."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--window-size=1000,1650',
                 '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
                 f'--host-resolver-rules=MAP {REBOUND} 127.0.0.1') + (
                     (f'--use-file-for-fake-audio-capture={microphone}',) if microphone else ()):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def text(driver, element_id):
    return driver.find_element(By.ID, element_id).text


def record(driver, url):
    """Open the page and record RECORD_SECONDS from the microphone; the recording's line in the page's list."""
    driver.get(url)
    WebDriverWait(driver, WAIT).until(lambda d: text(d, 'model').startswith('Model '))
    driver.find_element(By.ID, 'record').click()
    time.sleep(RECORD_SECONDS)
    assert re.fullmatch(r'-\d+ dBFS', text(driver, 'level-db')), "the level meter shows no level"
    assert float(text(driver, 'length').removesuffix(' s')) >= RECORD_SECONDS - 1
    driver.find_element(By.ID, 'record').click()
    return WebDriverWait(driver, WAIT).until(lambda d: d.find_element(By.CSS_SELECTOR, '#recordings li')).text


def answer(driver, button):
    """Press a button of the page and wait for its answer: (the message it shows, whether it is an error)."""
    driver.find_element(By.ID, button).click()
    message = WebDriverWait(driver, WAIT).until(lambda d: d.find_element(By.ID, 'message'))
    WebDriverWait(driver, WAIT).until(lambda d: not message.text.endswith('...'))
    return message.text, message.get_attribute('class') == 'error'


def press(driver, button):
    """answer(), which must not be an error: the message."""
    message, error = answer(driver, button)
    assert not error, message
    return message


def save_screenshot(driver, path):
    """The page as a PNG at path, in 256 colours (a small file for the README)."""
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert('RGB')
    image.quantize(colors=256).save(path, optimize=True)


@needs_etri
@needs_chromium
@pytest.mark.slow
def test_the_page_enrolls_verifies_and_identifies_recordings_from_the_microphone(page_url):
    wavs = ETRI / 'test_wavs'
    for speaker in SPEAKERS:
        with chromium(wavs / speaker / 'enroll.wav') as driver:
            assert record(driver, page_url).startswith('recording-1.wav (')
            driver.find_element(By.ID, 'name').send_keys(speaker)
            assert press(driver, 'enroll') == f'Enrolled {speaker} from 1 recording(s).'
    with chromium(wavs / TESTED / 'test.wav') as driver:
        record(driver, page_url)
        verdicts = {}
        for claimed in sorted(SPEAKERS, key=lambda s: s == TESTED):  # the true claim last: the screenshot's
            Select(driver.find_element(By.ID, 'claimed')).select_by_value(claimed)
            press(driver, 'verify')
            verdicts[claimed] = (text(driver, 'decision'), *(float(text(driver, n)) for n in ('score', 'threshold')))
        press(driver, 'identify')
        ranking = [item.text for item in driver.find_elements(By.CSS_SELECTOR, '#ranking li')]
        assert driver.find_element(By.ID, 'map').get_attribute('src').startswith('data:image/png;base64,')
        if os.environ.get('APP_SCREENSHOT'):
            save_screenshot(driver, os.environ['APP_SCREENSHOT'])
        other = next(s for s in SPEAKERS if s != TESTED)  # an uploaded file: the other's whole test.wav
        driver.find_element(By.ID, 'upload').send_keys(str(wavs / other / 'test.wav'))
        assert press(driver, 'identify') == f'Identified test.wav: {other} scores highest.'
        driver.find_element(By.CSS_SELECTOR, '#recordings input[type=checkbox]').click()  # the recording ticked too
        assert answer(driver, 'verify') == ('2 recordings are ticked: tick one to verify', True)
        assert len(driver.find_elements(By.CSS_SELECTOR, '#recordings li')) == 2  # both still there
    print(f"\n{TESTED}'s test.wav from the fake microphone: " + '; '.join(
        f"claimed {claimed}: score {score:.3f}, threshold {threshold:.3f}, {decision}"
        for claimed, (decision, score, threshold) in verdicts.items()) + f"; identified: {', '.join(ranking)}")
    assert {claimed: decision for claimed, (decision, _, _) in verdicts.items()} == {
        claimed: 'Accept' if claimed == TESTED else 'Reject' for claimed in SPEAKERS}, verdicts
    assert ranking[0].startswith(f'{TESTED}: ') and len(ranking) == len(SPEAKERS), ranking


def enrolled_speakers(url):
    """The speakers the page at url has enrolled, asked as the page asks."""
    with urlopen(url + 'api/state', timeout=WAIT) as response:
        return json.load(response)['speakers']


@needs_chromium
@pytest.mark.slow
def test_another_site_can_neither_enroll_nor_read_the_page(page_url):
    port = urlsplit(page_url).port
    wav = base64.b64encode(demo_wav(1, seconds=4.0)).decode()
    with chromium() as driver:
        driver.set_script_timeout(WAIT)
        driver.get(f'http://{REBOUND}:{port}/api/state')  # DNS rebinding: another site's name, this machine's address
        assert f"the page is served as 127.0.0.1, not '{REBOUND}:{port}'" in driver.find_element(By.TAG_NAME,
                                                                                             'body').text
        driver.get(f'http://localhost:{port}/')  # a page of another site (localhost is not 127.0.0.1) posts to it
        assert driver.execute_async_script(POST_ENROLLMENT, f'{page_url}api/enroll', wav, 'mallory') == 'sent'
        assert enrolled_speakers(page_url) == []
        driver.get(page_url)  # the same request from the page itself enrolls
        assert driver.execute_async_script(POST_ENROLLMENT, f'{page_url}api/enroll', wav, 'mallory') == 'sent'
        assert enrolled_speakers(page_url) == ['mallory']
