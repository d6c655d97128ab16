// The page of app.py. Recordings are made here from the microphone's samples (Web Audio, not MediaRecorder,
// whose webm/opus the server's audio reader cannot read) and written as 16-bit WAV files, or uploaded; the
// server enrolls, verifies and identifies them, and its messages are shown as they come.
'use strict';

const $ = (id) => document.getElementById(id);
const element = (tag, properties) => Object.assign(document.createElement(tag), properties);
const recordings = [];  // {name, file (a Blob), url (to play it), description, ticked}
let state = null;       // GET /api/state: the model, its scoring and threshold, who is enrolled, the upload limit
let recorder = null;    // the recording in progress: {stream, context, blocks, rate}
let count = 0;          // recordings made on this page, to name them

// ---- Messages and the server's API ----

function say(text, isError = false) {
  $('message').textContent = text;
  $('message').className = isError ? 'error' : '';
}

// The server's notes on the recordings just used (clipped, truncated, a low sample rate): beside the result.
function showNotes(notes) {
  $('notes').replaceChildren(...notes.map((note) => element('li', {textContent: `Note: ${note}`})));
  $('notes').hidden = !notes.length;
}

async function api(path, form) {
  let response;
  try {
    response = await fetch(path, form ? {method: 'POST', body: form} : {});
  } catch (e) {
    throw new Error('app.py does not answer: is it still running?');
  }
  const failed = {error: `app.py failed (HTTP ${response.status}): see its terminal`};
  const body = await response.json().catch(() => failed);
  if (!response.ok) throw new Error(body.error);
  return body;
}

// Run an action of a button: the buttons wait meanwhile, and an error is shown, the recordings kept.
async function act(busy, work) {
  const buttons = document.querySelectorAll('button:not(#record)');
  buttons.forEach((b) => { b.disabled = true; });
  say(busy);
  showNotes([]);
  try {
    say(await work());
  } catch (e) {
    say(e.message, true);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

// ---- What the server says: the model, the enrolled speakers, results ----

function showState(newState) {
  state = newState;
  const scoring = state.scoring.score_norm === 'asnorm' ? 'AS-norm scores' : 'cosine scores';
  const vad = state.front_end.vad === 'no' ? 'no speech detection' : `speech detection ${state.front_end.vad}`;
  const level = state.front_end.level === 'no' ? 'no level change' : `level brought to ${state.front_end.level} dBFS`;
  $('model').textContent = `Model ${state.model} (${state.checkpoint}): ${scoring}, ${vad}, ${level}.`;
  showSpeakers(state.speakers);
  if (state.error) say(state.error, true);
}

function showSpeakers(speakers) {
  $('speakers').textContent = speakers.length ? speakers.join(', ') : 'nobody yet';
  const claimed = $('claimed').value;
  $('claimed').replaceChildren(...speakers.map((name) => new Option(name, name, false, name === claimed)));
}

function showMap(result) {
  $('results').hidden = false;
  $('map').hidden = !result.map;
  if (result.map) $('map').src = result.map;
}

function showVerdict(result, recording) {
  $('verdict-of').textContent = `${recording} claimed as ${result.claimed}`;
  $('decision').textContent = result.decision;
  $('decision').className = result.decision;
  $('score').textContent = result.score.toFixed(3);
  $('threshold').textContent = result.threshold.toFixed(3);
  $('threshold-source').textContent = `(${result.threshold_source})`;
  $('meaning').textContent = `${result.decision === 'Accept' ? 'Above' : 'Not above'} the threshold: ` +
    `${result.decision === 'Accept' ? 'taken' : 'not taken'} as ${result.claimed}. ${result.meaning}`;
  $('verdict').hidden = false;
  showMap(result);
}

function showRanking(result, recording) {
  $('identity-of').textContent = `Who said ${recording}? Everyone enrolled, best score first:`;
  $('ranking').replaceChildren(...result.ranking.map(({name, score}) => {
    return element('li', {textContent: `${name}: ${score.toFixed(3)}`});
  }));
  $('identity-note').textContent = result.note ? `Note: ${result.note}` : '';
  $('identity-note').hidden = !result.note;
  $('identity').hidden = false;
  showMap(result);
}

// ---- The recordings ----

// New recordings, [{name, file, description}], ticked in place of the others.
function addRecordings(added) {
  recordings.forEach((r) => { r.ticked = false; });
  added.forEach((r) => recordings.push({...r, url: URL.createObjectURL(r.file), ticked: true}));
  showRecordings();
}

function showRecordings() {
  $('recordings').replaceChildren(...recordings.map((recording, i) => {
    const item = element('li');
    const tick = element('input', {type: 'checkbox', checked: recording.ticked});
    tick.onchange = () => { recording.ticked = tick.checked; };
    const label = element('span', {textContent: `${recording.name} (${recording.description})`});
    const audio = element('audio', {controls: true, src: recording.url});
    const remove = element('button', {textContent: 'Remove'});
    remove.onclick = () => { URL.revokeObjectURL(recording.url); recordings.splice(i, 1); showRecordings(); };
    item.append(tick, label, audio, remove);
    return item;
  }));
}

// The ticked recordings as a form, with the fields given; refused here when over the server's upload limit.
function ticked(fields) {
  const chosen = recordings.filter((r) => r.ticked);
  const bytes = chosen.reduce((n, r) => n + r.file.size, 0);
  if (bytes > state.max_upload_bytes) {
    throw new Error(`the ticked recordings are ${(bytes / 2 ** 20).toFixed(1)} MB, more than app.py takes at once, ` +
                    `${state.max_upload_bytes / 2 ** 20} MB (--max-upload-mb): tick fewer or shorter ones`);
  }
  const form = new FormData();
  Object.entries(fields).forEach(([key, value]) => form.append(key, value));
  chosen.forEach((r) => form.append('recording', r.file, r.name));
  return form;
}

function tickedName() {
  return recordings.filter((r) => r.ticked).map((r) => r.name).join(', ');
}

// ---- Recording from the microphone ----

async function startRecording() {
  if (!navigator.mediaDevices) {
    throw new Error('the browser gives the microphone only to pages on localhost or https: open this page on the ' +
                    'machine that runs app.py, or upload a file');
  }
  // the voice as the microphone gives it: the browser's echo, noise and gain processing would change it
  const stream = await navigator.mediaDevices.getUserMedia(
    {audio: {channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
  const context = new AudioContext();
  await context.audioWorklet.addModule('/static/recorder.js');
  const node = new AudioWorkletNode(context, 'recorder');
  const recording = {stream, context, blocks: [], rate: context.sampleRate};
  recorder = recording;
  // this recording's own object: blocks still queued after stopRecording land here, not on a null recorder
  node.port.onmessage = ({data}) => { recording.blocks.push(data); showLevel(recording, data); };
  // through the node to the speakers: it outputs silence, and an unconnected node may not be run
  context.createMediaStreamSource(stream).connect(node).connect(context.destination);
}

async function stopRecording() {
  const {stream, context, blocks, rate} = recorder;
  recorder = null;
  stream.getTracks().forEach((track) => track.stop());
  await context.close();
  const seconds = blocks.reduce((n, b) => n + b.length, 0) / rate;
  addRecordings([{name: `recording-${++count}.wav`, file: wavFile(blocks, rate),
                  description: `${seconds.toFixed(1)} s, recorded`}]);
}

function showLevel(recording, block) {
  const rms = Math.sqrt(block.reduce((sum, x) => sum + x * x, 0) / block.length);
  const dbfs = 20 * Math.log10(Math.max(rms, 1e-6));
  $('level').style.width = `${Math.min(100, Math.max(0, (dbfs + 60) / 60 * 100))}%`;
  $('level-db').textContent = `${dbfs.toFixed(0)} dBFS`;
  const samples = recording.blocks.reduce((n, b) => n + b.length, 0);
  $('length').textContent = `${(samples / recording.rate).toFixed(1)} s`;
}

// Samples in [-1, 1] as a mono 16-bit PCM WAV file: a 44-byte header, then the samples, little-endian.
function wavFile(blocks, rate) {
  const n = blocks.reduce((sum, b) => sum + b.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const text = (offset, s) => [...s].forEach((ch, i) => view.setUint8(offset + i, ch.charCodeAt(0)));
  text(0, 'RIFF'); view.setUint32(4, 36 + 2 * n, true); text(8, 'WAVE');
  text(12, 'fmt '); view.setUint32(16, 16, true);          // the format chunk: 16 bytes
  view.setUint16(20, 1, true); view.setUint16(22, 1, true); // PCM, 1 channel
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true);  // samples and bytes a second
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);           // bytes a sample, bits a sample
  text(36, 'data'); view.setUint32(40, 2 * n, true);
  let offset = 44;
  for (const block of blocks) {
    for (const x of block) {
      view.setInt16(offset, Math.round(Math.max(-1, Math.min(1, x)) * 32767), true);
      offset += 2;
    }
  }
  return new Blob([view], {type: 'audio/wav'});
}

// ---- The buttons ----

$('record').onclick = async () => {
  try {
    if (recorder) {
      await stopRecording();
      $('record').textContent = 'Record';
      $('record').classList.remove('recording');
      say('Recorded: tick the recordings to use, then enroll, verify or identify.');
    } else {
      await startRecording();
      $('record').textContent = 'Stop';
      $('record').classList.add('recording');
      say('Recording: speak for 5 to 15 seconds, then press Stop.');
    }
  } catch (e) {
    say(`cannot record: ${e.message}`, true);
  }
};

$('upload').onchange = () => {
  addRecordings([...$('upload').files].map((file) => (
    {name: file.name, file, description: `${(file.size / 1024).toFixed(0)} KB, uploaded`})));
  $('upload').value = '';
};

$('enroll').onclick = () => act('Enrolling...', async () => {
  const result = await api('/api/enroll', ticked({name: $('name').value.trim()}));
  showSpeakers(result.speakers);
  $('claimed').value = result.enrolled;
  showMap(result);
  showNotes(result.notes);
  return `Enrolled ${result.enrolled} from ${result.recordings} recording(s).`;
});

$('verify').onclick = () => act('Verifying...', async () => {
  const recording = tickedName();
  const result = await api('/api/verify', ticked({name: $('claimed').value}));
  showVerdict(result, recording);
  showNotes(result.notes);
  return `Verified ${recording} against ${result.claimed}: ${result.decision}.`;
});

$('identify').onclick = () => act('Identifying...', async () => {
  const recording = tickedName();
  const result = await api('/api/identify', ticked({}));
  showRanking(result, recording);
  showNotes(result.notes);
  return `Identified ${recording}: ${result.ranking[0].name} scores highest.`;
});

api('/api/state').then(showState).catch((e) => say(e.message, true));
