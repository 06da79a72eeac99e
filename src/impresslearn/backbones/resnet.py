"""Residual backbones of the SplitCIFAR100 and SplitImageNet experiments, every layer masked.

* ``gem_resnet18``: the reduced ResNet-18 of GEM (Lopez-Paz & Ranzato 2017) that SupSup uses for
  SplitCIFAR100 (Wortsman et al. 2020, section 4.2): base width 20 (stages of 20-40-80-160
  channels), a 3x3 stride-1 stem, no max-pool, for 32x32 inputs.
* ``resnet18``: the same layout at base width 64 (the usual CIFAR ResNet-18; He et al. 2016).
* ``resnet50``: the ImageNet ResNet-50 (7x7 stride-2 stem, max-pool, bottleneck stages 3-4-6-3,
  stride on the 3x3 convolution as in torchvision's v1.5).

Convolutions have no bias and batch norm has no affine parameters, so with masked layers the only
learned state of a task is its masks (or coeffs) and its norm statistics. The classifier is a
masked linear layer too: SupSup keeps no trained head. Layer indices (which seed each frozen
weight) count convolutions and the classifier in module order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import count

from torch import Tensor, nn

from impresslearn.backbones.base import BACKBONES

LayerFactory = Callable[..., nn.Module]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (1x1 projection when the shape changes)."""

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int,
        *,
        conv_layer: LayerFactory,
        norm_layer: LayerFactory,
        index: Iterator[int],
    ) -> None:
        super().__init__()
        self.conv1 = conv_layer(in_planes, planes, 3, stride, 1, layer_index=next(index))
        self.bn1 = norm_layer(planes)
        self.conv2 = conv_layer(planes, planes, 3, 1, 1, layer_index=next(index))
        self.bn2 = norm_layer(planes)
        self.shortcut = _projection(in_planes, planes, stride, conv_layer, norm_layer, index)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return (out + self.shortcut(x)).relu()


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with a residual connection."""

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int,
        *,
        conv_layer: LayerFactory,
        norm_layer: LayerFactory,
        index: Iterator[int],
    ) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = conv_layer(in_planes, planes, 1, 1, 0, layer_index=next(index))
        self.bn1 = norm_layer(planes)
        self.conv2 = conv_layer(planes, planes, 3, stride, 1, layer_index=next(index))
        self.bn2 = norm_layer(planes)
        self.conv3 = conv_layer(planes, out_planes, 1, 1, 0, layer_index=next(index))
        self.bn3 = norm_layer(out_planes)
        self.shortcut = _projection(in_planes, out_planes, stride, conv_layer, norm_layer, index)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out)).relu()
        out = self.bn3(self.conv3(out))
        return (out + self.shortcut(x)).relu()


def _projection(
    in_planes: int,
    out_planes: int,
    stride: int,
    conv_layer: LayerFactory,
    norm_layer: LayerFactory,
    index: Iterator[int],
) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        conv_layer(in_planes, out_planes, 1, stride, 0, layer_index=next(index)),
        norm_layer(out_planes),
    )


class ResNet(nn.Module):
    """Stem, four stages of residual blocks, global average pool, classifier."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: Sequence[int],
        width: int,
        num_outputs: int,
        *,
        in_channels: int,
        imagenet_stem: bool,
        linear_layer: LayerFactory,
        conv_layer: LayerFactory,
        norm_layer: LayerFactory,
    ) -> None:
        super().__init__()
        index = count()
        if imagenet_stem:
            stem_conv = conv_layer(in_channels, width, 7, 2, 3, layer_index=next(index))
            pool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            stem_conv = conv_layer(in_channels, width, 3, 1, 1, layer_index=next(index))
            pool = nn.Identity()
        self.stem = nn.Sequential(stem_conv, norm_layer(width), nn.ReLU(), pool)
        stages, in_planes = [], width
        for i, blocks in enumerate(num_blocks):
            planes = width * 2**i
            layers = []
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(
                    block(
                        in_planes,
                        planes,
                        stride,
                        conv_layer=conv_layer,
                        norm_layer=norm_layer,
                        index=index,
                    )
                )
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.classifier = linear_layer(in_planes, num_outputs, layer_index=next(index))

    def forward(self, x: Tensor) -> Tensor:
        out = self.stages(self.stem(x))
        return self.classifier(out.mean(dim=(2, 3)))


def _build(
    name: str,
    block: type[BasicBlock] | type[Bottleneck],
    num_blocks: tuple[int, ...],
    width: int,
    imagenet_stem: bool,
    input_shape: tuple[int, ...],
    num_outputs: int,
    layers: dict[str, LayerFactory],
) -> ResNet:
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs image inputs (C, H, W), got input shape {input_shape}")
    return ResNet(
        block,
        num_blocks,
        width,
        num_outputs,
        in_channels=input_shape[0],
        imagenet_stem=imagenet_stem,
        **layers,
    )


@BACKBONES.register("gem_resnet18")
def gem_resnet18(input_shape, num_outputs, **layers) -> ResNet:
    """GEM's reduced ResNet-18 (base width 20), SupSup's SplitCIFAR100 network."""
    return _build(
        "gem_resnet18", BasicBlock, (2, 2, 2, 2), 20, False, input_shape, num_outputs, layers
    )


@BACKBONES.register("resnet18")
def resnet18(input_shape, num_outputs, **layers) -> ResNet:
    """ResNet-18 for 32x32 inputs (base width 64, 3x3 stem, no max-pool)."""
    return _build("resnet18", BasicBlock, (2, 2, 2, 2), 64, False, input_shape, num_outputs, layers)


@BACKBONES.register("resnet50")
def resnet50(input_shape, num_outputs, **layers) -> ResNet:
    """ResNet-50 with the ImageNet stem (SupSup's SplitImageNet network)."""
    return _build("resnet50", Bottleneck, (3, 4, 6, 3), 64, True, input_shape, num_outputs, layers)
