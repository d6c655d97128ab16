"""An utterance's features, from a feature file or from audio: what the model is given.

read_utterance gives the trimmed features (n_frames, n_filters) the model embeds, file_features the frames of a
feature pickle or an audio file before trimming, and log_fbank_frames the features of samples: the recipe (fbank.py)
with the front end (frontend.py), the level before the fbank and speech detection after it. check_audio_header
checks from its header alone that an audio file can be read so, and write_feature_file writes a feature file
(feature_extraction.py).
"""
import pickle
import warnings
from functools import partial

import numpy as np
import soundfile

import configure as c
from dvector.atomic import atomic_write
from dvector.audio import AudioNote, check_length, is_audio, read_audio, unreadable_audio, without_dc
from dvector.fbank import FLOOR, fbank, feature_settings, frame_count, frame_geometry
from dvector.feature_files import FeatureFileError, is_level, load_feature_record, require_finite, trim_edges
from dvector.frontend import (
    edge_frames,
    extraction_settings,
    frame_levels,
    front_end,
    heard_level,
    level_gain,
    loud_frames,
    min_speech_frames,
    reading_settings,
    same_front_end,
    silero_frames,
    speech_gain,
)
from dvector.torch_fbank import torch_fbank


def log_fbank_frames(audio, settings, device=None, source='the recording'):
    """(feat float64 (n_kept, n_filters) in dB, kept bool (n_frames,)) of audio (n_samples,) at settings' rate.

    feat holds the kept frames, mean-normalised; kept marks which of the fbank's n_frames frames
    they are (all of them without vad). Level and speech detection both use the frames' levels
    before any gain, of the samples without their DC offset: the loud frames are the same either
    way. The gain applies to the samples without it too.
    device: None, the fbank by python_speech_features (the recipe); a torch device, by torch_fbank there in
    float64 (the same numbers to float precision). Where silero-vad finds less than MIN_SPEECH seconds of speech
    (noise or babble can hide speech from it), every frame is kept, with an AudioNote naming source: a detector
    never discards a speaker.
    """
    return heard_fbank_frames(audio, settings, device, source)[:2]


def heard_fbank_frames(audio, settings, device=None, source='the recording'):
    """(feat, kept) as log_fbank_frames, and the speech level in dBFS the features heard, after their gain (what
    feature files record as 'speech_dbfs')."""
    vad = front_end(settings)['vad']
    centred = without_dc(audio)
    frame_db = frame_levels(centred, settings)
    speech_dbfs, gain = speech_gain(frame_db, settings)
    if gain:  # a gain on the samples: the floor below then meets speech at the target level
        audio = centred
        audio *= np.float32(10 ** (gain / 20))  # in place: no other copy of a long one
    fb = fbank(audio, settings) if device is None else torch_fbank(audio, settings, device)
    kept = (loud_frames(frame_db) if vad == 'energy' else
            silero_frames(audio, settings, len(fb)) if vad == 'silero' else np.ones(len(fb), bool))
    if vad == 'silero' and kept.sum() < min_speech_frames(settings, len(fb)):
        warnings.warn(AudioNote('little speech', f"{source}: silero-vad found {kept.sum() * settings['win_step']:.2f} "
                                f"s of speech in {len(fb) * settings['win_step']:.2f} s: every frame is used instead"))
        kept = np.ones(len(fb), bool)
    fb = 20 * np.log10(np.maximum(fb[kept], FLOOR))
    return require_finite(fb - fb.mean(axis=0), 'features'), kept, speech_dbfs + gain


def log_fbank(path, settings=None):
    """Mean-normalised log Mel-filterbank energies (n_frames, n_filters) float64 in dB of an audio file.

    settings: a reading_settings(); default configure.py's feature settings without vad or level (the tutorial's
    recipe).
    """
    settings = settings or feature_settings()
    return audio_features(path, settings)[0]


def audio_features(path, settings, device=None, prepare=None):
    """log_fbank_frames of an audio file (its fbank on `device`, as log_fbank_frames says), of its waveform as
    prepare(waveform) makes it when given (training's speed and augmentation); an error names the file."""
    try:
        audio = read_audio(path, settings['sample_rate'], settings.get('max_seconds', c.MAX_SECONDS))
        return log_fbank_frames(prepare(audio) if prepare else audio, settings, device, source=path)
    except FeatureFileError as e:
        if str(path) in str(e):
            raise
        raise FeatureFileError(f"{path}: {e}") from None


def file_features(path, settings):
    """(feat (n_kept, n_filters), kept bool (n_frames,)) of a feature pickle or an audio file, untrimmed.

    Audio is made into features with settings (a reading_settings()). A pickle's features are used as they
    are, so they must have been made with the same vad and level (a pickle that does not record
    them was made by the tutorial's recipe, without either; see same_front_end); its frames are all kept.
    """
    if is_audio(path):
        return audio_features(path, settings)
    record = load_feature_record(path, settings['n_filters'])
    made, asked = front_end(record.get('settings', {})), front_end(settings)
    if not same_front_end(made, asked):
        raise FeatureFileError(f"{path}: features made with vad {made['vad']!r} and level {made['level']!r}, but "
                               f"vad {asked['vad']!r} and level {asked['level']!r} are asked for (--vad, --level); "
                               "extract them again with these settings (feature_extraction.py), or score with theirs")
    made_at = record.get('speech_dbfs')  # a level far from the model's: 'auto' would have moved its audio
    auto = asked['level'] == 'auto' and is_level(made_at)
    gain = level_gain('auto', made_at, settings.get('train_level')) if auto else 0.0
    if gain:
        target = made_at + gain
        warnings.warn(AudioNote('level', f"{path}: features made at {made_at:.0f} dBFS, far from the model's training "
                                         f"level ({target:g} dBFS), where its audio would be brought: extract them "
                                         f"with --level {target:g} (and score with it), or give the audio"))
    return record['feat'], np.ones(len(record['feat']), bool)


def read_utterance(path, settings):
    """Trimmed features (n_frames, n_filters) of a feature pickle or an audio file: what the model embeds.

    settings: a reading_settings() (its trim_frames and min_frames too). Trimming comes after speech
    detection: with vad 'energy' the frames cut at each end are speech; with 'silero' none are cut.
    """
    feat, _ = file_features(path, settings)
    return trim_edges(feat, path, edge_frames(settings), settings['min_frames'])


def check_audio_header(path, settings):
    """Refuse, from its header alone, an audio file that cannot be opened or is too short for trim_edges: the
    check of every training file before a run from audio, where decoding a million files would take an hour.
    Silent or broken samples are found when the file is read for a batch (the error names it)."""
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, soundfile.SoundFileError) as e:
        raise unreadable_audio(path, e) from e
    check_length(path, info.samplerate, info.frames, settings.get('max_seconds', c.MAX_SECONDS))
    n_frames = frame_count(round(info.duration * settings['sample_rate']), *frame_geometry(settings))
    trim_edges(np.empty((n_frames, 0)), path, edge_frames(settings), settings['min_frames'])


def training_level(files, settings, sample=50):
    """(dBFS, how it was found): the median speech level of `sample` training files spread over the list, audio
    as the features of settings (a reading_settings()) hear it, feature files as they record it ('speech_dbfs');
    (TRAIN_LEVEL, ...) when none records one (the published ETRI features: ETRI's level)."""
    levels = []
    for path in files[::max(1, len(files) // sample)][:sample]:
        if is_audio(path):
            levels.append(heard_level(read_audio(path, settings['sample_rate'], settings['max_seconds']), settings))
        elif is_level(level := load_feature_record(path, settings['n_filters']).get('speech_dbfs')):
            levels.append(float(level))
    if not levels:
        return c.TRAIN_LEVEL, 'TRAIN_LEVEL of configure.py: the feature files record none'
    return round(float(np.median(levels)), 1), f'the median of {len(levels)} files'


def already_made(path, settings):
    """Whether the feature file at path is readable, was made with these settings (a frontend.reading_settings())
    and records its speech level (files made before it was recorded are made again, for train.py to read it).

    A file that records no settings was made by the tutorial's recipe (before they were recorded).
    """
    try:
        record = load_feature_record(path, settings['n_filters'])
    except (OSError, FeatureFileError):
        return False
    tutorial = extraction_settings(reading_settings(feature_settings()))
    return record.get('settings', tutorial) == extraction_settings(settings) and 'speech_dbfs' in record


def write_feature_file(job, settings, overwrite):
    """Write the features of one (audio path, speaker, feature path), as feature_extraction.py does for a tree,
    with the speech level they were made at ('speech_dbfs': train.py records its training data's in checkpoints);
    returns 'written', 'there' (already made with these settings) or the message of its failure, naming the file."""
    wav, speaker, out = job
    if not overwrite and already_made(out, settings):
        return 'there'
    try:
        audio = read_audio(wav, settings['sample_rate'], settings.get('max_seconds', c.MAX_SECONDS))
        feat, _, speech_dbfs = heard_fbank_frames(audio, settings, source=wav)
        record = {'feat': feat, 'label': speaker, 'settings': extraction_settings(settings), 'speech_dbfs': speech_dbfs}
        atomic_write(out, partial(pickle.dump, record))
    except Exception as e:  # a bad file must not stop the others
        return str(e) if str(wav) in str(e) else f"{wav}: {e}"
    return 'written'
