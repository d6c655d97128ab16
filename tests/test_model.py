"""The ResNet backbones and the d-vector model."""
import pytest
import torch

from dvector.stage import for_inference
from model.model import AttentiveStatsPool, BackgroundResNet, traced_shapes
from model.resnet import BACKBONES, build_resnet

from conftest import run_ok


@pytest.mark.parametrize('backbone', list(BACKBONES))
def test_shapes_for_every_backbone(backbone):
    model = BackgroundResNet(embedding_size=128, num_classes=7, backbone=backbone).eval()
    for n_frames in (100, 37):
        embedding, logits = model(torch.randn(2, 1, 40, n_frames))
        assert embedding.shape == (2, 128) and logits.shape == (2, 7)
    expansion = 1 if backbone in ('resnet18', 'resnet34') else 4
    assert model.fc0.in_features == 128 * expansion


def test_backbone_downsamples_by_eight_and_keeps_the_tutorial_layout():
    backbone = build_resnet('resnet18')
    assert backbone(torch.randn(1, 1, 40, 100)).shape == (1, 128, 5, 13)
    assert backbone.conv1.kernel_size == (7, 7) and backbone.conv1.stride == (1, 1)
    assert [layer[0].conv1.out_channels for layer in
            (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)] == [16, 32, 64, 128]


def test_d_vector_is_the_embedding_layer_output_of_the_average_pooled_backbone():
    model = BackgroundResNet(embedding_size=16, num_classes=3).eval()
    x = torch.randn(4, 1, 40, 50)
    embedding, logits = model(x)
    pooled = model.backbone(x).mean(dim=(2, 3))  # (B, 128): global average pooling
    torch.testing.assert_close(embedding, model.fc0(pooled))  # before batch norm and ReLU
    assert logits.shape == (4, 3)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone 'resnet9'.*resnet18"):
        build_resnet('resnet9')


@pytest.mark.slow
@pytest.mark.parametrize('backbone', ['resnet18', 'resnet50'])
def test_folding_batch_norms_keeps_the_d_vectors(backbone):
    torch.manual_seed(0)
    model = BackgroundResNet(embedding_size=128, num_classes=10, backbone=backbone)
    model.train()
    model(torch.randn(16, 1, 40, 100))  # running statistics that are not the initial ones
    model.eval()
    x = torch.randn(4, 1, 40, 130)
    with torch.no_grad():
        expected = model.embed(x)
        fast = for_inference(model, 'cpu')
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.backbone.modules())
        torch.testing.assert_close(fast.embed(x), expected, atol=1e-4, rtol=1e-4)


def test_a_bfloat16_backbone_embeds_like_the_float32_one():
    torch.manual_seed(0)
    model = BackgroundResNet(embedding_size=128, num_classes=10)
    model(torch.randn(16, 1, 40, 100))  # running statistics that are not the initial ones
    model.eval()
    x = torch.randn(6, 1, 40, 100)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.embed(x))
        fast = for_inference(model, 'cpu', torch.bfloat16)
        assert {p.dtype for p in fast.backbone.module.parameters()} == {torch.bfloat16}
        assert {p.dtype for p in fast.backbone.exact.parameters()} == {torch.float32}  # for segments under 9 frames
        got = fast.embed(x)
    assert got.dtype == torch.float32 and fast.fc0.weight.dtype == torch.float32  # pooling and projection
    assert torch.nn.functional.cosine_similarity(got, expected).min() > 0.999


def test_width_scales_every_layer():
    backbone = build_resnet('resnet18', base_channels=32)
    assert backbone(torch.randn(1, 1, 40, 100)).shape == (1, 256, 5, 13)
    assert [layer[0].conv1.out_channels for layer in
            (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)] == [32, 64, 128, 256]
    with pytest.raises(ValueError, match='base_channels must be at least 1'):
        build_resnet('resnet18', base_channels=0)


@pytest.mark.parametrize('backbone', ['resnet18', 'resnet50'])
def test_attentive_statistics_pooling_shapes(backbone):
    model = BackgroundResNet(embedding_size=64, num_classes=5, backbone=backbone, pooling='asp').eval()
    for n_frames in (100, 37):
        embedding, logits = model(torch.randn(2, 1, 40, n_frames))
        assert embedding.shape == (2, 64) and logits.shape == (2, 5)
    assert model.fc0.in_features == 2 * model.backbone.out_channels * 5  # mean and std of C x 5 bins


def test_attentive_pooling_with_equal_attention_gives_mean_and_standard_deviation():
    pool = AttentiveStatsPool(in_dim=6)
    torch.nn.init.zeros_(pool.attention[2].weight)  # every frame scores the same
    x = torch.randn(3, 6, 50)
    torch.testing.assert_close(pool(x), torch.cat([x.mean(2), x.std(2, unbiased=False)], 1))


def test_attention_weights_the_frames():
    pool = AttentiveStatsPool(in_dim=1, attention_dim=1)
    with torch.no_grad():  # the score grows with the value: high frames weigh more
        pool.attention[0].weight.fill_(1.0), pool.attention[0].bias.zero_()
        pool.attention[2].weight.fill_(10.0), pool.attention[2].bias.zero_()
    x = torch.tensor([[[0.0, 0.0, 0.0, 1.0]]])
    assert pool(x)[0, 0] > x.mean()


def test_cosine_head_gives_cosines():
    model = BackgroundResNet(embedding_size=16, num_classes=3, head='cosine').eval()
    embedding, cosines = model(torch.randn(4, 1, 40, 50))
    expected = torch.nn.functional.normalize(embedding) @ torch.nn.functional.normalize(model.last.weight).T
    torch.testing.assert_close(cosines, expected)
    assert cosines.abs().max() <= 1 + 1e-6
    with pytest.raises(ValueError, match='pooling must be one of'):
        BackgroundResNet(embedding_size=16, num_classes=3, pooling='max')


def test_folding_batch_norms_keeps_the_d_vectors_with_attentive_pooling():
    torch.manual_seed(0)
    model = BackgroundResNet(embedding_size=32, num_classes=4, pooling='asp', head='cosine', base_channels=8)
    model.train()
    model(torch.randn(8, 1, 40, 100))
    model.eval()
    x = torch.randn(3, 1, 40, 120)
    with torch.no_grad():
        expected = model.embed(x)
        torch.testing.assert_close(for_inference(model, 'cpu').embed(x), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_the_model_file_runs_on_a_dummy_batch_and_shows_each_shape(tmp_path):
    out = run_ok(tmp_path, 'model/model.py')  # configure.py's settings: resnet18 x16, average pooling, 100 frames
    shapes = [line.split(')')[0].split('(')[-1] for line in out.splitlines()[1:]]
    assert shapes == ['2, 1, 40, 100', '2, 16, 40, 100', '2, 16, 40, 100', '2, 32, 20, 50', '2, 64, 10, 25',
                      '2, 128, 5, 13', '2, 128', '2, 128', '2, 200'], out
    assert 'backbone.layer4' in out and 'fc0: the d-vector' in out and 'last: speaker logits' in out


def test_traced_shapes_follow_attentive_pooling():
    model = BackgroundResNet(embedding_size=32, num_classes=5, base_channels=8, pooling='asp', head='cosine').eval()
    steps = {step: shape for step, shape, _ in traced_shapes(model, torch.randn(3, 1, 40, 60))}
    assert steps['frequency folded into channels'] == (3, 64 * 5, 8)  # (B, C F/8, T/8)
    assert steps['pooling: attentive statistics over T'] == (3, 2 * 64 * 5)
    assert steps['last: speaker cosines'] == (3, 5)
