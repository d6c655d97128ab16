"""The embedding network as an ONNX graph, and ONNX Runtime as an embedding backend.

The graph maps log-fbank input `fbank` (batch, 1, n_filters, frames) float32 to `dvector`
(batch, embedding_size) float32, before L2 normalisation; batch and frames are dynamic. Its
metadata_props carry the feature settings the model was trained on (JSON under 'feature'), the
model's settings, which model it is and the hash of its weights, so that the file can be used
without this repository (docs/onnx.md).

The stages (--backend onnx) embed through `OnnxEmbedder`, which has the model's `.embed(x)`, so
that dvector.embed_all segments and batches exactly as with PyTorch. The graph is exported once
per checkpoint into a cache beside it (`cached_embedder`).
"""
import contextlib
import hashlib
import json
import logging
import re
import sys
import warnings
from pathlib import Path

import onnx
import onnxruntime
import torch
from google.protobuf.message import DecodeError
from torch import nn

from dvector.atomic import atomic_write, check_writable
from dvector.checkpoint import model_from_checkpoint, model_id

INPUT, OUTPUT = 'fbank', 'dvector'
CHECK_SHAPES = ((2, 100), (3, 237))  # (batch, frames) of the random inputs an export is checked on: two lengths,
                                     # one not a multiple of the backbone's stride of 8
TOLERANCE = 1e-4  # the largest |ONNX Runtime - PyTorch| allowed in a check, relative to the largest |d-vector element|


class EmbeddingNet(nn.Module):
    """The part of the model that makes d-vectors: model.embed as a module's forward."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, fbank):
        """d-vectors (B, embedding_size), not normalised, of log-fbank input (B, 1, n_filters, T)."""
        return self.model.embed(fbank)


class OnnxEmbedder:
    """An ONNX graph of the embedding network run by ONNX Runtime on the CPU, in float32.

    It has the model's `.embed(x)`, so it can stand in for the model wherever d-vectors are made.
    """

    def __init__(self, source):
        """source: the path of an .onnx file, or its bytes."""
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # what the machine has, as PyTorch uses
        self.session = onnxruntime.InferenceSession(source if isinstance(source, bytes) else str(source), options,
                                                    providers=['CPUExecutionProvider'])

    def embed(self, x):
        """d-vectors (B, embedding_size) float32 on the CPU of log-fbank input x (B, 1, n_filters, T)."""
        return torch.from_numpy(self.session.run([OUTPUT], {INPUT: x.float().cpu().numpy()})[0])


@contextlib.contextmanager
def quiet_exporter():
    """Silence what torch's ONNX exporter says about things that do not concern this model.

    It logs a warning for each torchvision operator it skips (torchvision is not installed) and
    triggers a FutureWarning inside torch itself.
    """
    logger = logging.getLogger('torch.onnx')
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def largest_difference(embedder, model, n_filters):
    """The largest |embedder - model| d-vector difference on seeded random input of CHECK_SHAPES, relative to the
    largest |d-vector element| of the model: how far the graph is from PyTorch float32."""
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch, frames in CHECK_SHAPES:
        x = torch.randn(batch, 1, n_filters, frames, generator=generator)
        with torch.no_grad():
            expected = model.embed(x)
        worst = max(worst, ((embedder.embed(x) - expected).abs().max() / expected.abs().max()).item())
    return worst


def export_bytes(model, n_filters, metadata):
    """(ONNX model bytes, largest relative difference) of model.embed, checked against PyTorch float32.

    model: a BackgroundResNet on the CPU in float32; metadata: {key: str}, stored as metadata_props.
    The batch norms need no folding here: the exporter folds them into the convolutions.
    Raises ValueError when the graph's d-vectors differ from PyTorch's by more than TOLERANCE.
    """
    model = model.float().cpu().eval()
    example = torch.randn(2, 1, n_filters, CHECK_SHAPES[0][1])
    with quiet_exporter():
        program = torch.onnx.export(EmbeddingNet(model).eval(), (example,), dynamo=True, verbose=False,
                                    input_names=[INPUT], output_names=[OUTPUT],
                                    dynamic_shapes={INPUT: {0: 'batch', 3: 'frames'}})
    proto = program.model_proto
    onnx.helper.set_model_props(proto, metadata)
    data = proto.SerializeToString()
    difference = largest_difference(OnnxEmbedder(data), model, n_filters)
    if not difference <= TOLERANCE:  # NaN fails too
        raise ValueError(f"the exported ONNX graph's d-vectors differ from PyTorch's by {difference:.1e} "
                         f"(relative), more than {TOLERANCE}; not written")
    return data, difference


def weights_hash(ckpt):
    """sha256 (hex) of a checkpoint's weights and its model and feature settings: all an export depends on."""
    digest = hashlib.sha256(json.dumps([ckpt['model_args'], ckpt['feature']], sort_keys=True).encode())
    for name, tensor in sorted(ckpt['state_dict'].items()):
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def checkpoint_metadata(ckpt, digest):
    """The metadata_props of a checkpoint's export: what a user of the .onnx file needs to know, as strings."""
    return {'feature': json.dumps(ckpt['feature']), 'model_args': json.dumps(ckpt['model_args']),
            'model_id': model_id(ckpt), 'weights_sha256': digest,
            'contract': f"{INPUT}: (batch, 1, n_filters, frames) float32, mean-normalised log Mel-filterbank "
                        f"energies in dB made with the settings under 'feature', trim_frames cut at each end; "
                        f"{OUTPUT}: (batch, embedding_size) float32 d-vectors, not L2-normalised"}


def export_checkpoint(ckpt, path, digest):
    """Export a checkpoint's embedding network to `path`, atomically; digest: its weights_hash.

    Returns the check's largest relative difference from PyTorch.
    """
    data, difference = export_bytes(model_from_checkpoint(ckpt, 'cpu'), ckpt['feature']['n_filters'],
                                    checkpoint_metadata(ckpt, digest))
    atomic_write(path, lambda f: f.write(data))
    return difference


def cache_path(checkpoint, digest):
    """Where the export of a checkpoint with weights hash `digest` is cached: beside it, <stem>.<hash12>.onnx."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f'{checkpoint.stem}.{digest[:12]}.onnx')


def exported_hash(path):
    """The weights_sha256 in the metadata of the .onnx file at path; None when it has none or is no readable ONNX
    model (a truncated file)."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError):  # none there, or not a whole protobuf message
        return None
    return {prop.key: prop.value for prop in proto.metadata_props}.get('weights_sha256')


def cached_embedder(checkpoint, ckpt):
    """An OnnxEmbedder of the checkpoint (at path `checkpoint`, loaded as ckpt), exported first if not cached.

    The cache is keyed by the weights' hash, not by the run: a checkpoint that train.py rewrites
    (checkpoint_best.pth) is exported again, and its earlier exports are removed. A cached file is used only when
    the hash in its metadata is the checkpoint's: another model's export, or a truncated one, is exported again.
    Where no export is cached and the folder is not writable, it raises OSError (cannot write <path>) before exporting.
    """
    checkpoint = Path(checkpoint)
    digest = weights_hash(ckpt)
    path = cache_path(checkpoint, digest)
    if exported_hash(path) != digest:
        if path.is_file():
            print(f"Note: {path} is not the export of {checkpoint}'s weights (another model's, or cut off): "
                  "exported again", file=sys.stderr)
        check_writable(path)  # a folder that is not writable fails now, not after the seconds of an export
        export_checkpoint(ckpt, path, digest)
        stale = re.compile(re.escape(checkpoint.stem) + r'\.[0-9a-f]{12}\.onnx')
        for other in checkpoint.parent.iterdir():
            if other != path and stale.fullmatch(other.name):
                other.unlink()
    return OnnxEmbedder(path)
