"""Export a checkpoint's embedding network to ONNX, for use without PyTorch or this repository.

    python -m tools.export_onnx --checkpoint model_saved/checkpoint_best.pth --out model_saved/dvector.onnx

The graph maps log-fbank input `fbank` (batch, 1, n_filters, frames) float32 to `dvector`
(batch, embedding_size) float32, before L2 normalisation; batch and frames are dynamic. Any
backbone, width and pooling the checkpoint was trained with. The feature settings the model
expects are stored in the file's metadata (metadata_props, 'feature', as JSON), with the model's
settings, its id and the hash of its weights. Before the file is written, its d-vectors are checked
against PyTorch's float32 ones on random input of two lengths. docs/onnx.md says how to make the
input and what to do with the output.
"""
import json

from dvector import cli
from dvector.checkpoint import load_checkpoint
from dvector.onnx_backend import TOLERANCE, export_checkpoint, weights_hash


def parse_args(argv=None):
    p = cli.parser(__doc__)
    cli.setting(p, 'CHECKPOINT')
    p.add_argument('--out', required=True, help='the .onnx file to write')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    ckpt = load_checkpoint(args.checkpoint)
    difference = export_checkpoint(ckpt, args.out, weights_hash(ckpt))
    settings = ', '.join(f"{k} {v}" for k, v in ckpt['model_args'].items() if k != 'num_classes')
    print(f"Exported {args.checkpoint} ({settings}) to {args.out}")
    print(f"Checked against PyTorch float32: largest d-vector difference {difference:.1e} of the largest element "
          f"(at most {TOLERANCE} allowed)")
    print(f"Feature settings (metadata 'feature'): {json.dumps(ckpt['feature'])}")
    return difference


if __name__ == '__main__':
    cli.run(main)
