"""Fully connected backbones of SupSup's MNIST experiments (Wortsman et al. 2020, section 4).

LeNet-300-100 (784-300-100-out) and FC-1024-1024 (784-1024-1024-out), ReLU, no biases, every
layer (the classifier included) built from the ``linear_layer`` passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import Tensor, nn

from impresslearn.backbones.base import BACKBONES


class MLP(nn.Module):
    """Flatten, then linear layers with ReLU between them."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        hidden: Sequence[int],
        num_outputs: int,
        *,
        linear_layer: Callable[..., nn.Module],
    ) -> None:
        super().__init__()
        sizes = [math.prod(input_shape), *hidden, num_outputs]
        self.layers = nn.ModuleList(
            linear_layer(n_in, n_out, layer_index=i)
            for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = layer(x).relu()
        return self.layers[-1](x)


@BACKBONES.register("lenet_300_100")
def lenet_300_100(input_shape, num_outputs, *, linear_layer, conv_layer, norm_layer) -> MLP:
    """LeNet-300-100: two hidden layers of 300 and 100 units."""
    return MLP(input_shape, (300, 100), num_outputs, linear_layer=linear_layer)


@BACKBONES.register("fc_1024_1024")
def fc_1024_1024(input_shape, num_outputs, *, linear_layer, conv_layer, norm_layer) -> MLP:
    """FC-1024-1024: two hidden layers of 1024 units (SupSup's RotatedMNIST network)."""
    return MLP(input_shape, (1024, 1024), num_outputs, linear_layer=linear_layer)
