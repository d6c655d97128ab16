"""The margin losses: their logits on known inputs, the margin warm-up, and the loss settings."""
import math

import pytest
import torch
import torch.nn.functional as F

from dvector.losses import MarginSoftmaxLoss, build_criterion, margin_at

COSINE = torch.tensor([[0.5, 0.2, -0.1], [0.3, 0.9, 0.0]])
TARGETS = torch.tensor([0, 1])


def test_additive_margin_subtracts_the_margin_from_the_target_cosine_only():
    logits = MarginSoftmaxLoss('am', margin=0.2, scale=10).logits(COSINE, TARGETS)
    torch.testing.assert_close(logits, torch.tensor([[3.0, 2.0, -1.0], [3.0, 7.0, 0.0]]))


def test_additive_angular_margin_adds_the_margin_to_the_target_angle():
    logits = MarginSoftmaxLoss('aam', margin=0.2, scale=10).logits(COSINE, TARGETS)
    expected = torch.tensor([[10 * math.cos(math.acos(0.5) + 0.2), 2.0, -1.0],
                             [3.0, 10 * math.cos(math.acos(0.9) + 0.2), 0.0]])
    torch.testing.assert_close(logits, expected)


def test_past_pi_minus_the_margin_the_angular_margin_goes_on_decreasing():
    loss = MarginSoftmaxLoss('aam', margin=0.5, scale=1)
    cosines = torch.linspace(-1, 1, 201)[:, None]
    target_logits = loss.logits(cosines, torch.zeros(201, dtype=torch.long))[:, 0]
    assert (target_logits.diff() > 0).all()  # monotonic in the cosine: a better match never scores lower
    assert (target_logits < cosines[:, 0]).all()  # and always below the margin-free logit
    far = torch.tensor([[-0.99]])
    torch.testing.assert_close(loss.logits(far, torch.tensor([0]))[0, 0],
                               torch.tensor(-0.99 - math.sin(math.pi - 0.5) * 0.5))


@pytest.mark.parametrize('kind', ['am', 'aam'])
def test_without_margin_it_is_the_softmax_of_scaled_cosines(kind):
    loss = MarginSoftmaxLoss(kind, margin=0.0, scale=30)
    torch.testing.assert_close(loss(COSINE, TARGETS), F.cross_entropy(30 * COSINE, TARGETS))
    assert MarginSoftmaxLoss(kind, 0.3, 30)(COSINE, TARGETS) > loss(COSINE, TARGETS)  # the margin makes it harder


def test_margin_warm_up_grows_linearly_from_zero():
    assert [margin_at(epoch, 0.2, 4) for epoch in (1, 2, 3, 5, 9)] == pytest.approx([0, 0.05, 0.1, 0.2, 0.2])
    assert margin_at(1, 0.2, 0) == 0.2


def test_loss_settings():
    assert isinstance(build_criterion('softmax'), torch.nn.CrossEntropyLoss)
    assert build_criterion('aam', 0.2, 30).kind == 'aam'
    with pytest.raises(ValueError, match="unknown loss 'arcface'"):
        build_criterion('arcface')
    with pytest.raises(ValueError, match='margin must be in'):
        MarginSoftmaxLoss('am', 1.5, 30)


@pytest.mark.parametrize('cosine', [1.0, -1.0])
def test_angular_margin_has_a_finite_gradient_at_the_ends(cosine):
    cosines = torch.tensor([[cosine, 0.1]], requires_grad=True)
    MarginSoftmaxLoss('aam', 0.2, 30)(cosines, torch.tensor([0])).backward()
    assert torch.isfinite(cosines.grad).all()
