"""A speaker's d-vector from wavs, with nothing but the exported .onnx file and numpy, onnxruntime,
soundfile, librosa and python_speech_features: no PyTorch, no code of this repository.

    python -m tools.export_onnx --checkpoint model_saved/checkpoint_best.pth --out dvector.onnx
    python examples/onnx_dvector.py dvector.onnx enroll1.wav [enroll2.wav ...]

prints the d-vector that `enroll.py --embed-precision fp32 --enroll-frames 200` stores in
enroll_embeddings/<speaker>.pth for these files: 128 numbers, unit length. enroll.py cuts into
200-frame segments by default for the tutorial's checkpoints; for the improved recipe's (the
pretrained model's too) it embeds whole utterances, as their recommended scoring says: set
SEGMENT_FRAMES = 0 below to match that (the .onnx file does not record the scoring). Score two
d-vectors by their dot product (cosine).
"""
import json
import sys

import librosa
import numpy as np
import onnxruntime
import python_speech_features
import soundfile

SEGMENT_FRAMES = 200  # frames per segment: enroll.py's --enroll-frames (ENROLL_FRAMES); 0: the whole utterance


def log_fbank(path, feature):
    """Mean-normalised log Mel-filterbank energies (n_frames, n_filters) in dB: feature_extraction.py's recipe."""
    with soundfile.SoundFile(path) as f:
        audio, _ = librosa.load(f, sr=feature['sample_rate'], mono=True)  # resampled, downmixed
    fb, _ = python_speech_features.fbank(audio, samplerate=feature['sample_rate'], nfilt=feature['n_filters'],
                                         winlen=feature['win_len'], winstep=feature['win_step'])
    fb = 20 * np.log10(np.maximum(fb, 1e-5))
    return fb - fb.mean(axis=0)


def utterance_dvector(session, feat):
    """Unit d-vector of an utterance's trimmed features (n_frames, n_filters): its segments' d-vectors summed."""
    total = 0
    step = SEGMENT_FRAMES or len(feat)
    for start in range(0, len(feat), step):  # the last segment may be shorter
        segment = feat[start:start + step].T[None, None].astype(np.float32)  # (1, 1, n_filters, frames)
        total = total + session.run(['dvector'], {'fbank': segment})[0][0]
    return total / np.linalg.norm(total)


def speaker_dvector(model_path, wavs):
    """Unit d-vector (embedding_size,) of a speaker: the normalised mean of its files' d-vectors."""
    session = onnxruntime.InferenceSession(model_path, providers=['CPUExecutionProvider'])
    feature = json.loads(session.get_modelmeta().custom_metadata_map['feature'])  # the model's feature settings
    vectors = []
    for wav in wavs:
        feat = log_fbank(wav, feature)
        feat = feat[feature['trim_frames']:len(feat) - feature['trim_frames']]  # 0.5 s off each end: silence
        if len(feat) <= feature['min_frames']:
            sys.exit(f"{wav}: too short once trimmed ({len(feat)} frames)")
        vectors.append(utterance_dvector(session, feat))
    mean = np.mean(vectors, axis=0)
    return mean / np.linalg.norm(mean)


if __name__ == '__main__':
    print(' '.join(f'{v:.7f}' for v in speaker_dvector(sys.argv[1], sys.argv[2:])))
