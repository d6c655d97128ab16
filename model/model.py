"""The d-vector model: ResNet backbone -> global average pooling -> d-vector -> speaker logits."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from model.resnet import build_resnet


class BackgroundResNet(nn.Module):
    """The tutorial's `background_resnet`, trained as a speaker classifier.

    The d-vector is the output of `fc0`, taken before batch norm and ReLU; `last` maps it to
    logits over the training speakers and is only used in training.
    """

    def __init__(self, embedding_size, num_classes, backbone='resnet18'):
        super().__init__()
        self.backbone = build_resnet(backbone)
        self.fc0 = nn.Linear(self.backbone.out_channels, embedding_size)
        self.bn0 = nn.BatchNorm1d(embedding_size)
        self.last = nn.Linear(embedding_size, num_classes)

    def embed(self, x):
        """d-vectors (B, embedding_size) of log-fbank input x (B, 1, n_filters, T)."""
        x = self.backbone(x)                      # (B, C, F/8, T/8)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, C)
        return self.fc0(x)

    def forward(self, x):
        """(d-vectors (B, embedding_size), speaker logits (B, num_classes)).

        Under autocast, the small classifier head still runs in float32, so that the logits and the
        loss keep their precision.
        """
        embedding = self.embed(x)
        with torch.autocast(x.device.type, enabled=False):
            return embedding, self.last(F.relu(self.bn0(embedding.float())))
