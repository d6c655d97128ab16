"""The tutorial's training loop, written plainly: one epoch of forward, cross-entropy, backward and SGD step on
the CPU, on the training split of a feature folder, with configure.py's recipe and seed. The tests run it beside
`train.py --epochs 1 --precision fp32 --channels-last no --preload no --device cpu` and require the same weights
bit for bit: on any CPU, whatever its kernels round to, train.py's tutorial path adds nothing to the arithmetic.
It shares train.py's split (split_train_valid) and windows (DvectorDataset): those are checked elsewhere (their
own tests, and the first-epoch loss on real speakers in test_etri.py).

    python tests/tutorial_loop.py FEAT_DIR OUT.pth [--batch-size N]
"""
import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import configure as c  # noqa: E402 (the repository's root is put on the path first)
from DB_wav_reader import read_training_structure  # noqa: E402
from dvector.fbank import feature_settings  # noqa: E402
from dvector.training_run import split_train_valid  # noqa: E402
from model.model import BackgroundResNet  # noqa: E402
from SR_Dataset import DvectorDataset  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('feat_dir')
    parser.add_argument('out')
    parser.add_argument('--batch-size', type=int, default=c.BATCH_SIZE)
    args = parser.parse_args()
    DB = read_training_structure(args.feat_dir)
    train_DB, _ = split_train_valid(DB, c.VAL_RATIO, c.SEED)
    speakers = sorted(DB['speaker_id'].unique())
    feature = {**feature_settings(), 'win_size': c.NUM_WIN_SIZE}
    torch.manual_seed(c.SEED)
    net = BackgroundResNet(embedding_size=c.EMBEDDING_SIZE, num_classes=len(speakers), n_filters=c.FILTER_BANK)
    windows = DvectorDataset(train_DB, {s: i for i, s in enumerate(speakers)}, feature, random_windows=True)
    loader = DataLoader(windows, batch_size=args.batch_size, shuffle=True, drop_last=True)
    optimizer = torch.optim.SGD(net.parameters(), lr=c.LR, momentum=c.MOMENTUM, weight_decay=c.WEIGHT_DECAY)
    criterion = torch.nn.CrossEntropyLoss()
    net.train()
    for inputs, targets in loader:
        _, logits = net(inputs)
        loss = criterion(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save(net.state_dict(), args.out)


if __name__ == '__main__':
    main()
