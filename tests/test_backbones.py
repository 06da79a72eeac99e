"""Tests for impresslearn.backbones: every registered backbone, built masked and dense."""

import pytest
import torch
from torch import nn

from impresslearn.backbones import BACKBONES, BackboneConfig, build_backbone
from impresslearn.errors import ConfigError
from impresslearn.layers import (
    DenseConv2d,
    DenseLinear,
    MaskedLayer,
    masked_layers,
    one_hot,
    use_coeffs,
)

MNIST_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
BATCH = 3


def mnist_batch() -> torch.Tensor:
    return torch.randn(BATCH, *MNIST_SHAPE, generator=torch.Generator().manual_seed(0))


def masked_output(model: nn.Module) -> torch.Tensor:
    """Store one random mask per layer and run a batch with it selected."""
    gen = torch.Generator().manual_seed(1)
    for layer in masked_layers(model):
        layer.add_to_bank(torch.rand(layer.weight.shape, generator=gen) < 0.5)
    with torch.no_grad(), use_coeffs(model, one_hot(0, 1)):
        return model(mnist_batch())


@pytest.fixture(params=BACKBONES.names())
def name(request) -> str:
    return request.param


def test_masked_backbone_has_no_parameters_before_learning(name):
    model = build_backbone(BackboneConfig(name=name), MNIST_SHAPE, NUM_CLASSES)
    assert list(model.parameters()) == []
    layers = masked_layers(model)
    assert layers
    assert all(not layer.weight.requires_grad for layer in layers)


def test_masked_backbone_output_shape_defaults_to_num_classes(name):
    model = build_backbone(BackboneConfig(name=name, num_outputs=None), MNIST_SHAPE, NUM_CLASSES)
    output = masked_output(model)
    assert output.shape == (BATCH, NUM_CLASSES)
    assert torch.isfinite(output).all()


def test_superfluous_outputs_widen_the_last_layer(name):
    model = build_backbone(BackboneConfig(name=name, num_outputs=25), MNIST_SHAPE, NUM_CLASSES)
    assert masked_output(model).shape == (BATCH, 25)


def test_fewer_outputs_than_classes_is_a_config_error(name):
    with pytest.raises(ConfigError, match="num_outputs"):
        build_backbone(BackboneConfig(name=name, num_outputs=5), MNIST_SHAPE, NUM_CLASSES)


def test_masked_backbone_is_a_pure_function_of_its_seed(name):
    def weights(seed: int) -> list[torch.Tensor]:
        model = build_backbone(BackboneConfig(name=name, seed=seed), MNIST_SHAPE, NUM_CLASSES)
        return [layer.weight for layer in masked_layers(model)]

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_masked_layers_have_distinct_indices_in_module_order(name):
    model = build_backbone(BackboneConfig(name=name), MNIST_SHAPE, NUM_CLASSES)
    indices = [layer.layer_index for layer in masked_layers(model)]
    assert indices == list(range(len(indices)))


def test_dense_backbone_trains_every_parameter(name):
    config = BackboneConfig(name=name)
    model = build_backbone(config, MNIST_SHAPE, NUM_CLASSES, dense=True)
    params = list(model.parameters())
    assert params and all(p.requires_grad for p in params)
    assert not any(isinstance(m, MaskedLayer) for m in model.modules())
    output = model(mnist_batch())
    assert output.shape == (BATCH, NUM_CLASSES)
    output.square().sum().backward()
    assert all(p.grad is not None for p in params)
    # The dense baseline starts from the masked backbone's weights (same seed rule).
    masked = build_backbone(config, MNIST_SHAPE, NUM_CLASSES)
    dense_weights = [
        m.weight.detach() for m in model.modules() if isinstance(m, DenseLinear | DenseConv2d)
    ]
    masked_weights = [layer.weight for layer in masked_layers(masked)]
    assert len(dense_weights) == len(masked_weights)
    assert all(torch.equal(d, w) for d, w in zip(dense_weights, masked_weights, strict=True))


@pytest.mark.parametrize(
    ("name", "shapes"),
    [
        ("lenet_300_100", [(300, 784), (100, 300), (10, 100)]),
        ("fc_1024_1024", [(1024, 784), (1024, 1024), (10, 1024)]),
    ],
)
def test_mlp_layer_shapes(name, shapes):
    model = build_backbone(BackboneConfig(name=name), MNIST_SHAPE, NUM_CLASSES)
    assert [tuple(layer.weight.shape) for layer in masked_layers(model)] == shapes


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="lenet_300_100"):
        build_backbone(BackboneConfig(name="resnet_9000"), MNIST_SHAPE, NUM_CLASSES)


@pytest.mark.parametrize("kwargs", [{"seed": -1}, {"num_outputs": 0}, {"weight_init": "xavier"}])
def test_backbone_config_validation(kwargs):
    with pytest.raises(ConfigError):
        BackboneConfig(**kwargs)
