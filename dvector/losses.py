"""Training losses: the tutorial's softmax cross-entropy, and the margin losses of modern speaker recognition.

The margin losses work on the cosines between d-vectors and the speakers' weight vectors (the
model's cosine head) and push each d-vector nearer its own speaker than the others by a margin:
    AM-softmax (CosFace, Wang et al. 2018):   target logit s * (cos(theta) - m)
    AAM-softmax (ArcFace, Deng et al. 2019):  target logit s * cos(theta + m)
every other logit s * cos(theta).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LOSSES = ('softmax', 'am', 'aam')


class MarginSoftmaxLoss(nn.Module):
    """Cross-entropy of scaled cosine logits, the target speaker's with an additive ('am') or angular ('aam') margin."""

    def __init__(self, kind, margin, scale):
        super().__init__()
        if kind not in ('am', 'aam'):
            raise ValueError(f"unknown margin loss {kind!r}; choose 'am' or 'aam'")
        if not 0 <= margin < 1 or scale <= 0:
            raise ValueError(f"the margin must be in [0, 1) and the scale positive, not {margin} and {scale}")
        self.kind, self.margin, self.scale = kind, margin, scale

    def logits(self, cosine, targets):
        """The scaled logits (B, n_classes) of cosines (B, n_classes), the margin applied at the targets (B,)."""
        cosine = cosine.float().clamp(-1, 1)
        target_cos = cosine.gather(1, targets[:, None])
        if self.kind == 'am':
            with_margin = target_cos - self.margin
        else:
            sine = (1 - target_cos ** 2).clamp(min=1e-7).sqrt()  # not 0: a finite gradient at cos = +-1
            with_margin = target_cos * math.cos(self.margin) - sine * math.sin(self.margin)  # cos(theta + m)
            # past theta = pi - m, cos(theta + m) would rise again: continue it linearly instead (as ArcFace)
            with_margin = torch.where(target_cos > math.cos(math.pi - self.margin), with_margin,
                                      target_cos - math.sin(math.pi - self.margin) * self.margin)
        return self.scale * cosine.scatter(1, targets[:, None], with_margin)

    def forward(self, cosine, targets):
        return F.cross_entropy(self.logits(cosine, targets), targets)


def margin_at(epoch, margin, warmup_epochs):
    """The margin of an epoch under a linear warm-up: 0 in epoch 1, the full margin from epoch warmup_epochs + 1."""
    if warmup_epochs <= 0:
        return margin
    return margin * min(1.0, (epoch - 1) / warmup_epochs)


def build_criterion(loss, margin=0.0, scale=1.0):
    """The training criterion of a LOSS setting, taking the model's logits (softmax) or cosines (margin losses)."""
    if loss == 'softmax':
        return nn.CrossEntropyLoss()
    if loss in LOSSES:
        return MarginSoftmaxLoss(loss, margin, scale)
    raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
