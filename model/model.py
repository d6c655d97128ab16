"""The d-vector model: ResNet backbone -> pooling over time -> d-vector -> speaker logits (or cosines).

    python model/model.py     # the shape of each tensor of a dummy batch on its way through the model
"""
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

if __name__ == '__main__':  # run as a script: import from the repository, not from model/ (which has a model.py)
    sys.path[0] = str(Path(__file__).resolve().parents[1])
from model.resnet import build_resnet

POOLINGS = ('avg', 'asp')
HEADS = ('linear', 'cosine')


class AttentiveStatsPool(nn.Module):
    """Attentive statistics pooling (Okabe et al., 2018): attention-weighted mean and standard deviation over time.

    (B, D, T) -> (B, 2 D). A small network scores each frame; the scores, softmax-normalised over
    time, weight the statistics, so that the frames that say most about the speaker count most.
    """

    def __init__(self, in_dim, attention_dim=128):
        super().__init__()
        self.attention = nn.Sequential(nn.Conv1d(in_dim, attention_dim, 1), nn.Tanh(), nn.Conv1d(attention_dim, 1, 1))

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):  # the variance needs float32
            x = x.float()
            weights = torch.softmax(self.attention(x), dim=2)  # (B, 1, T)
            mean = (weights * x).sum(2)
            variance = (weights * x * x).sum(2) - mean ** 2
            return torch.cat([mean, variance.clamp(min=1e-5).sqrt()], 1)


class CosineClassifier(nn.Module):
    """Cosines between the d-vectors and one learned vector per speaker: the logits of the margin losses."""

    def __init__(self, embedding_size, num_classes):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x):
        return F.linear(F.normalize(x), F.normalize(self.weight))


class BackgroundResNet(nn.Module):
    """The tutorial's `background_resnet`, trained as a speaker classifier.

    The d-vector is the output of `fc0`. With the tutorial's settings (pooling 'avg', head
    'linear') the backbone's output is averaged over frequency and time, and `last` maps the
    d-vector, after batch norm and ReLU, to logits over the training speakers. Pooling 'asp' keeps
    the frequency bins as features and pools over time with attentive statistics; head 'cosine'
    gives the cosines the margin losses need. `last` is only used in training.
    """

    def __init__(self, embedding_size, num_classes, backbone='resnet18', base_channels=16, pooling='avg',
                 head='linear', n_filters=40):
        super().__init__()
        if pooling not in POOLINGS or head not in HEADS:
            raise ValueError(f"pooling must be one of {POOLINGS} and head one of {HEADS}, not {pooling!r}, {head!r}")
        self.backbone = build_resnet(backbone, base_channels=base_channels)
        channels = self.backbone.out_channels
        if pooling == 'asp':
            out_bins = -(-n_filters // 8)  # the backbone halves the frequency axis three times
            self.pool = AttentiveStatsPool(channels * out_bins)
            channels = 2 * channels * out_bins
        self.pooling, self.head = pooling, head
        self.fc0 = nn.Linear(channels, embedding_size)
        if head == 'linear':
            self.bn0 = nn.BatchNorm1d(embedding_size)
            self.last = nn.Linear(embedding_size, num_classes)
        else:
            self.last = CosineClassifier(embedding_size, num_classes)

    def embed(self, x):
        """d-vectors (B, embedding_size) of log-fbank input x (B, 1, n_filters, T)."""
        x = self.backbone(x)                          # (B, C, F/8, T/8)
        if self.pooling == 'avg':
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, C)
        else:
            x = self.pool(x.flatten(1, 2))              # (B, C * F/8, T/8) -> (B, 2 C F/8)
        return self.fc0(x)

    def forward(self, x):
        """(d-vectors (B, embedding_size), speaker logits or cosines (B, num_classes)).

        Under autocast, the small classifier head still runs in float32, so that the logits and the
        loss keep their precision.
        """
        embedding = self.embed(x)
        with torch.autocast(x.device.type, enabled=False):
            if self.head == 'linear':
                return embedding, self.last(F.relu(self.bn0(embedding.float())))
            return embedding, self.last(embedding.float())


def traced_shapes(model, x):
    """[(step, shape, what its axes are)] of the tensors that a batch x (B, 1, F, T) gives on its way
    through the model; F: n_filters, T: frames, C: the backbone's output channels (model.backbone.out_channels)."""
    pooling, pooled = {'avg': ('pooling: average over F and T', '(B, C)'),
                       'asp': ('pooling: attentive statistics over T', '(B, 2 C F/8)')}[model.pooling]
    folded = [(model.pool, 'frequency folded into channels', True, '(B, C F/8, T/8)')] if model.pooling == 'asp' else []
    steps = [  # (module, step, whether the tensor is the module's input (else its output), its axes)
        (model.backbone.conv1, 'backbone.conv1: 7x7, stride 1', False, '(B, channels, F, T)'),
        (model.backbone.layer1, 'backbone.layer1', False, '(B, channels, F, T)'),
        (model.backbone.layer2, 'backbone.layer2', False, '(B, channels, F/2, T/2)'),
        (model.backbone.layer3, 'backbone.layer3', False, '(B, channels, F/4, T/4)'),
        (model.backbone.layer4, 'backbone.layer4', False, '(B, C, F/8, T/8)'),
        *folded,
        (model.fc0, pooling, True, pooled),
        (model.fc0, 'fc0: the d-vector', False, '(B, embedding_size)'),
        (model.last, f"last: speaker {'logits' if model.head == 'linear' else 'cosines'}", False, '(B, num_classes)'),
    ]
    shapes = [('input: log-fbank windows', tuple(x.shape), '(B, 1, F, T)')]

    def record(step, of_input, what):
        def hook(module, inputs, output):
            shapes.append((step, tuple((inputs[0] if of_input else output).shape), what))
        return hook

    hooks = [module.register_forward_hook(record(step, of_input, what)) for module, step, of_input, what in steps]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


if __name__ == '__main__':
    import configure as c
    num_classes = 200  # the speakers of the ETRI training set; train.py takes them from the data
    model = BackgroundResNet(c.EMBEDDING_SIZE, num_classes, c.BACKBONE, c.BASE_CHANNELS, c.POOLING,
                             'linear' if c.LOSS == 'softmax' else 'cosine', c.FILTER_BANK).eval()
    x = torch.randn(2, 1, c.FILTER_BANK, c.NUM_WIN_SIZE)  # a batch of two training windows
    print(f"BackgroundResNet of configure.py's settings: {c.BACKBONE} x{c.BASE_CHANNELS}, pooling {c.POOLING}, "
          f"{num_classes} speakers; {sum(p.numel() for p in model.parameters()):,} parameters")
    for step, shape, what in traced_shapes(model, x):
        print(f"  {step:38s} {shape!s:18} {what}")
