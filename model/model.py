"""The d-vector model: ResNet backbone -> pooling over time -> d-vector -> speaker logits (or cosines)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

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
