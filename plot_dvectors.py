"""See the d-vectors: the test utterances of a test folder drawn as a 2-D map, one colour per speaker.

    python plot_dvectors.py                      # TEST_FEAT_DIR with CHECKPOINT -> results/dvector_map.png
    python plot_dvectors.py --checkpoint model_saved/checkpoint_best.pth --test-feat-dir feat_logfbank_nfilt40/test \\
        --segments 300 --out results/dvector_map.png   # each test file as its 3-s pieces (ETRI's: one 15-s file each)
    python plot_dvectors.py --method pca         # quick and linear, instead of t-SNE
    python plot_dvectors.py --untrained          # the checkpoint's model with random weights: what training buys

Each test file of --test-feat-dir (<speaker>/<name>, .p features or audio; names without 'enroll')
is one point: its d-vector as verification and identification make it (--test-frames). With
--segments FRAMES each whole FRAMES-frame piece of it is a point of its own (a shorter rest is left
out). A speaker's enrollment files (names containing 'enroll') give it a large star: the mean of
their d-vectors (--enroll-frames), L2-normalised, as enroll.py enrolls it. Points and stars are
projected to 2-D together, by t-SNE (seeded) or PCA. The colour is the speaker; where speaker ids
read like ETRI's, <number><F|M><digits>, the marker is the sex the letter gives.

Reading it: a model that tells the speakers apart draws one tight cloud per colour, its star inside
it. t-SNE keeps neighbourhoods, not distances: tight, separate clouds mean each d-vector's nearest
neighbours are of its own speaker; the gaps between clouds and their sizes mean little. PCA is a
linear view, so its distances are honest, but two axes show only part of the d-vectors' spread.
The silhouette printed (and in the title) is measured on the d-vectors themselves, by cosine
distance, not on the map: 1 for tight, well-apart speakers, 0 for overlapping ones.
"""
import re
from functools import partial

import numpy as np
import torch
from sklearn.metrics import silhouette_score
from tqdm import tqdm

import configure as c
from DB_wav_reader import split_enroll_and_test
from dvector import cli
from dvector.checkpoint import model_id
from dvector.embedding import embed_all, enroll_speaker, split_segments
from dvector.plots import plot_dvector_map, project
from dvector.stage import add_model_args, add_scoring_args, open_stage
from dvector.utterance import read_utterance

METHODS = ('tsne', 'pca')
ETRI_ID = re.compile(r'\d+([FM])\d+')  # ETRI speaker ids: <number><F|M><digits>, the letter the speaker's sex


def parse_args(argv=None):
    p = add_scoring_args(add_model_args(cli.parser(__doc__), embedding_dir=False), score_norm=False)
    p.add_argument('--segments', type=cli.positive_int, metavar='FRAMES',
                   help='draw each whole FRAMES-frame piece of a test file as a point (100 frames: 1 s), not the file')
    cli.setting(p, 'MAP_METHOD', '--method', choices=METHODS)
    cli.setting(p, 'MAP_PERPLEXITY', '--perplexity', type=cli.finite_float)
    p.add_argument('--untrained', action='store_true',
                   help="embed with the checkpoint's model settings but fresh random weights: the baseline")
    p.add_argument('--seed', type=int, default=c.SEED, help='seeds t-SNE and the random weights of --untrained')
    cli.setting(p, 'DVECTOR_MAP', '--out')
    args = p.parse_args(argv)
    if args.perplexity <= 0:
        p.error(f'--perplexity must be positive, not {args.perplexity:g}')
    return args


def speaker_sex(speaker):
    """'F' or 'M' for an ETRI-style speaker id, which says it; None for any other id."""
    match = ETRI_ID.fullmatch(speaker)
    return match[1] if match else None


def test_pieces(files, settings, frames):
    """{(file, i): features (frames, n_filters)} of the whole pieces of `frames` frames of each test file."""
    pieces = {}
    for f in tqdm(files, desc='reading', leave=False, disable=None):
        for i, piece in enumerate(split_segments(read_utterance(f, settings), frames)):
            if len(piece) == frames:
                pieces[f, i] = piece
    return pieces


def embed_tests(model, settings, test_DB, args, device):
    """(d-vectors (n, embedding_size), their speakers [n]): one per test file, or per piece with --segments."""
    speaker_of = dict(zip(test_DB['filename'], test_DB['speaker_id']))
    if args.segments:
        pieces = test_pieces(list(speaker_of), settings, args.segments)
        names, read, frames = list(pieces), pieces.__getitem__, 0
        speakers = [speaker_of[f] for f, _ in names]
    else:
        names, read, frames = list(speaker_of), partial(read_utterance, settings=settings), args.test_frames
        speakers = [speaker_of[f] for f in names]
    if len(set(speakers)) < 2:
        short = sorted(set(speaker_of.values()) - set(speakers))
        raise ValueError(f"the test files of {', '.join(short)} have no whole {args.segments}-frame pieces and a map "
                         "needs 2 speakers: give --segments fewer frames")
    vectors = embed_all(model, names, read, frames, device, 'embedding')
    return torch.stack([vectors[n] for n in names]).float().cpu(), speakers


def enrollment_vectors(model, settings, enroll_DB, frames, device):
    """{speaker: d-vector} of each speaker with enrollment files, made as enroll.py makes it."""
    groups = enroll_DB.groupby('speaker_id')['filename']
    return {speaker: enroll_speaker(model, settings, list(files), frames, device).float().cpu()
            for speaker, files in tqdm(groups, desc='enrolling', disable=None)}


def silhouette(vectors, speakers):
    """Mean silhouette of the d-vectors by speaker, cosine distance; None when no speaker has two."""
    if len(set(speakers)) < 2 or len(set(speakers)) == len(speakers):
        return None
    return float(silhouette_score(vectors.numpy(), speakers, metric='cosine'))


def title(args, ckpt, n_points, n_speakers, score):
    unit = f"{args.segments * ckpt['feature']['win_step']:g}-s pieces" if args.segments else 'utterances'
    model = (f"untrained: {model_id(ckpt)}'s settings, random weights (seed {args.seed})" if args.untrained
             else f"model {model_id(ckpt)}")
    quality = '' if score is None else f"; silhouette {score:.2f} (cosine, on the d-vectors)"
    return (f"d-vectors of {args.test_feat_dir}: {n_points} test {unit} of {n_speakers} speakers, "
            f"{'t-SNE' if args.method == 'tsne' else 'PCA'}\n{model}{quality}")


def main(argv=None):
    args = parse_args(argv)
    # --untrained: the same model with fresh random weights (seeded), what training starts from
    model, ckpt, device, settings, _ = open_stage(args, random_weights_seed=args.seed if args.untrained else None)
    enroll_DB, test_DB = split_enroll_and_test(args.test_feat_dir)
    n_test = test_DB['speaker_id'].nunique()
    if n_test < 2:
        raise ValueError(f"test files of {n_test} speaker(s) under {args.test_feat_dir} "
                         f"({', '.join(test_DB['speaker_id'].unique()) or 'none'}): a map needs at least 2")
    vectors, speakers = embed_tests(model, settings, test_DB, args, device)
    centres = enrollment_vectors(model, settings, enroll_DB, args.enroll_frames, device)

    enrolled = sorted(centres)
    centre_vectors = torch.stack([centres[s] for s in enrolled]) if enrolled else vectors[:0]
    # one projection of points and stars together: t-SNE places points relative to each other only
    xy, axis_labels = project(torch.cat([vectors, centre_vectors]), args.method, args.perplexity, args.seed)
    points = {s: xy[:len(speakers)][np.array(speakers) == s] for s in sorted(set(speakers))}
    centre_xy = dict(zip(enrolled, xy[len(speakers):]))
    score = silhouette(vectors, speakers)
    sexes = {s: speaker_sex(s) for s in set(points) | set(centre_xy)}
    plot_dvector_map(points, centre_xy, sexes, args.out, title(args, ckpt, len(speakers), len(points), score),
                     axis_labels)
    print(f"Mapped {len(speakers)} test {'pieces' if args.segments else 'utterances'} of {len(points)} speakers "
          f"and {len(enrolled)} enrollments ({'t-SNE' if args.method == 'tsne' else 'PCA'}"
          f"{', untrained model' if args.untrained else ''}): {args.out}")
    if score is not None:
        print(f"Silhouette of the test d-vectors by speaker (cosine): {score:.3f} "
              "(1: tight, well-apart speakers; 0: overlapping)")
    return {'points': points, 'centres': centre_xy, 'silhouette': score, 'out': args.out}


if __name__ == '__main__':
    cli.run(main)
