"""The front end around the fbank: speech detection (vad) and level, and the settings an utterance is read with.

Settings come in three shapes: the model's (fbank.feature_settings(), or a checkpoint's 'feature': rate,
filters, windows, trimming, training window), how an utterance is read (reading_settings(): those and
the front end's vad and level), and what a feature file records of how it was made
(extraction_settings()).

Two optional steps, off by default ('vad' and 'level' of the settings: VAD and LEVEL of configure.py),
both led by the level (dBFS) of each fbank frame's samples, and by the utterance's *loud frames*:
those within VAD_DB of the LOUD_PERCENTILE-th percentile of its frame levels (a percentile, not the
maximum, so that a click does not set the reference):

- level (a target in dBFS): before the fbank, a gain that brings the utterance's speech level (the
  RMS of its loud frames) to the target. Mean normalisation makes the features blind to gain,
  except through the absolute floor: quiet speech sinks into it (at -70 dBFS every value of the
  ETRI test wavs is at the floor). Aiming at the training data's level (TRAIN_LEVEL) keeps clean
  speech where the model saw it.
- vad 'energy': the frames that are not loud are dropped after the log, before mean
  normalisation, so that silences neither become d-vector segments nor pull the mean. They are the
  fbank's own frames, so the kept frames are rows of the tutorial's features. Every utterance is
  then trimmed (TRIM_FRAMES at each end, when it is read for the model) as without it: the frames
  trimmed are speech then. A piece `file@start-end` of a trial list is cut on the recording's own
  timeline, and holds the kept frames between start and end.
- vad 'silero': silero-vad's trained detector keeps the frames it finds speech in, and nothing is trimmed.

utterance.log_fbank_frames applies them.
"""
import warnings
from contextlib import contextmanager
from functools import lru_cache

import librosa
import numpy as np
import python_speech_features
import torch

import configure as c
from dvector.audio import without_dc
from dvector.fbank import frame_chunks

VADS = ('no', 'energy', 'silero')
SILERO_RATE = 16000  # silero-vad's model runs at 16 kHz (or 8); audio at other rates is resampled for it
LOUD_PERCENTILE = 95  # the reference of the utterance's loud frames (5 % of the frames may be louder: clicks)
# dB below that reference where speech ends. On the 20 ETRI test wavs (clean read speech, 1 m) the
# frame levels are bimodal: speech mostly within 25 dB of the reference, the room's silence 40-50 dB
# below it, fewest frames between -40 and -30 dB. 30 dB keeps weak consonants and drops the silence.
VAD_DB = 30.0


def check_level(level):
    """A LEVEL setting checked: 'no', 'auto', or a target speech level in dBFS (a float below 0)."""
    if level in ('no', 'auto'):
        return level
    try:
        level = float(level)
    except (TypeError, ValueError):
        raise ValueError(f"level must be 'no', 'auto' or a target in dBFS such as -44, not {level!r}") from None
    if not -120 < level < 0:
        raise ValueError(f"level {level} dBFS: a target speech level must be between -120 and 0 dBFS")
    return level


def reading_settings(feature, vad='no', level='no', max_seconds=c.MAX_SECONDS):
    """How an utterance is read: a model's feature settings (feature_settings() or a checkpoint's 'feature') with
    the front end's vad and level, and the longest recording read (max_seconds).

    The settings that utterance.py's functions take; 'vad' and 'level' default to 'no' (the tutorial) when absent,
    'max_seconds' to MAX_SECONDS.
    """
    if vad not in VADS:
        raise ValueError(f"unknown vad {vad!r} (VAD of configure.py or --vad); choose one of {', '.join(VADS)}")
    return {**feature, 'vad': vad, 'level': check_level(level), 'max_seconds': max_seconds}


def front_end(settings):
    """{'vad', 'level'} of feature settings; absent means the tutorial's 'no'."""
    return {'vad': settings.get('vad', 'no'), 'level': settings.get('level', 'no')}


def same_front_end(a, b):
    """Whether two front ends ({'vad', 'level'}, or settings holding them) make the same features of speech at the
    training level: level 'auto' leaves it as 'no' does, so features, enrollments and thresholds made with
    either are used with the other (the ETRI features and the published thresholds were made with 'no')."""
    def plain(settings):
        chosen = front_end(settings)
        return {**chosen, 'level': 'no' if chosen['level'] == 'auto' else chosen['level']}
    return plain(a) == plain(b)


def extraction_settings(settings):
    """What features written with these settings record about how they were made (plain data for the pickle)."""
    keys = ('sample_rate', 'n_filters', 'win_len', 'win_step')
    return {**{k: settings[k] for k in keys}, **front_end(settings)}


def edge_frames(settings):
    """Frames trimmed at each end of an utterance read with settings: the tutorial's trim_frames (the ETRI
    recordings' silent edges), but none after silero-vad, which has found where the speech begins and ends
    (trimming then cuts only speech: a 3-s clip would lose a third of it)."""
    return 0 if settings.get('vad') == 'silero' else settings['trim_frames']


def decibels(power):
    """10 * log10(power), with 0 as the smallest positive float instead of -inf."""
    return 10 * np.log10(np.maximum(power, np.finfo(np.float64).tiny))


def frame_levels(audio, settings):
    """dBFS (n_frames,) of each fbank frame of audio (n_samples,): the mean power of its samples, 0 dBFS = 1.0.

    The fbank's frames exactly (python_speech_features' framing, the last one padded with
    zeros), but of the samples as they are: the fbank's pre-emphasis would lift the hiss of
    silence towards the (low-frequency) speech and blur the two apart.
    """
    rate = settings['sample_rate']
    return np.concatenate([
        decibels(np.mean(np.square(python_speech_features.sigproc.framesig(
            audio[chunk], settings['win_len'] * rate, settings['win_step'] * rate), dtype=np.float64), axis=1))
        for chunk in frame_chunks(audio, settings)])


def loud_frames(frame_db):
    """Boolean mask (n_frames,) of the frames within VAD_DB of the LOUD_PERCENTILE-th percentile of frame_db (dB)."""
    return frame_db >= np.percentile(frame_db, LOUD_PERCENTILE) - VAD_DB


def speech_level(frame_db):
    """dBFS: the RMS of the loud frames of an utterance whose frames have levels frame_db (n_frames,) dBFS.

    Silences, however long, do not lower it, as they lower the RMS of the whole file.
    """
    return float(decibels(np.mean(10 ** (frame_db[loud_frames(frame_db)] / 10))))


def level_gain(level, speech_dbfs, train_level=None):
    """dB of gain for a LEVEL setting (a target in dBFS, or 'auto') on speech at speech_dbfs.

    'auto' brings speech that lies more than AUTO_LEVEL_DB below the model's training level, or AUTO_LEVEL_ABOVE_DB
    above it, to it, and leaves the recording as it is otherwise, so recordings near the training data's level keep
    the tutorial's features exactly. train_level: the speech level a checkpoint recorded of its training data
    ('train_level' of its feature settings); loud speech is turned down only then. Without one (checkpoints from
    before it was recorded), quiet speech is lifted to TRAIN_LEVEL and loud speech left as it is: a model trained
    from audio at another level than ETRI's would otherwise be moved away from it.
    """
    if level != 'auto':
        return level - speech_dbfs
    target = c.TRAIN_LEVEL if train_level is None else train_level
    if speech_dbfs < target - c.AUTO_LEVEL_DB or (train_level is not None and
                                                  speech_dbfs > target + c.AUTO_LEVEL_ABOVE_DB):
        return target - speech_dbfs
    return 0.0


def speech_gain(frame_db, settings):
    """(speech level dBFS, dB of gain) of an utterance whose frames have levels frame_db, read with settings' level
    (and the training level a checkpoint records in them)."""
    level, chosen = speech_level(frame_db), front_end(settings)['level']
    return level, 0.0 if chosen == 'no' else level_gain(chosen, level, settings.get('train_level'))


def heard_level(audio, settings):
    """dBFS: the speech level of audio (n_samples,) as the features of settings hear it, after their gain."""
    return sum(speech_gain(frame_levels(without_dc(audio), settings), settings))


def import_silero():
    """The silero_vad module. Importing it sets torch's threads to 1 for the whole process (its model.py does):
    that is undone, or every d-vector after the first detection would be computed on one core."""
    threads = torch.get_num_threads()
    import silero_vad
    torch.set_num_threads(threads)
    return silero_vad


@contextmanager
def torch_threads(n):
    """A context in which torch computes on n threads; the number before is restored on leaving it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@lru_cache(maxsize=1)
def silero_model():
    """silero-vad's trained speech detector (MIT licence; the model ships inside its PyPI wheel)."""
    silero_vad = import_silero()
    with warnings.catch_warnings():  # its loader uses APIs that torch and Python now call deprecated
        warnings.simplefilter('ignore', DeprecationWarning)
        return silero_vad.load_silero_vad()


def silero_frames(audio, settings, n_frames):
    """Boolean mask (n_frames,) of the fbank frames whose centre silero-vad's detector finds in speech."""
    silero_vad = import_silero()
    rate = settings['sample_rate']
    audio16 = audio if rate == SILERO_RATE else librosa.resample(audio, orig_sr=rate, target_sr=SILERO_RATE)
    with torch.no_grad(), torch_threads(1):  # 32-ms steps of a tiny network: threads only add overhead
        spans = silero_vad.get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(audio16, np.float32)),
                                                 silero_model(), sampling_rate=SILERO_RATE)
    centres = (np.arange(n_frames) * settings['win_step'] + settings['win_len'] / 2) * SILERO_RATE
    kept = np.zeros(n_frames, bool)
    for span in spans:
        kept |= (centres >= span['start']) & (centres < span['end'])
    return kept


def min_speech_frames(settings, n_frames):
    """Frames of speech silero-vad must find in a recording of n_frames before its choice is trusted: MIN_SPEECH
    seconds, or the whole recording when it is shorter."""
    return min(n_frames, round(c.MIN_SPEECH / settings['win_step']))
