"""The in-memory form of an image classification data set: a train and a test split.

Images stay uint8 (0..255) as stored on disk; scaling and normalising with ``mean`` / ``std`` is
left to the scenario that builds tasks from them, so one loaded data set serves every scenario.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True, eq=False)
class ImageSplit:
    """One split of a data set: ``images`` uint8 ``(N, H, W)`` or ``(N, H, W, C)``, ``labels``
    int64 ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() not in (3, 4):
            raise ValueError(
                "images must be a uint8 tensor of shape (N, H, W) or (N, H, W, C), got "
                f"{self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(
                f"labels must be an int64 tensor of shape (N,), got {self.labels.dtype} "
                f"{tuple(self.labels.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> ImageSplit:
        """This split with its tensors on ``device`` (itself when already there)."""
        return ImageSplit(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True, eq=False)
class ImageData:
    """A named data set: its two splits, the number of classes, and the per-channel pixel mean and
    std (of pixels scaled to 0..1) used to normalise inputs; ``class_names`` (index = label) when
    the data set has them (an image folder's class folders)."""

    name: str
    train: ImageSplit
    test: ImageSplit
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.train.images.shape[1:] != self.test.images.shape[1:]:
            raise ValueError(
                f"train images {tuple(self.train.images.shape[1:])} and test images "
                f"{tuple(self.test.images.shape[1:])} differ in shape"
            )
        images = self.train.images
        channels = images.shape[3] if images.dim() == 4 else 1
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(
                f"mean and std need one value per channel ({channels}), got {self.mean}, {self.std}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    def to(self, device: torch.device | str) -> ImageData:
        """This data set with both splits on ``device``: moved once, still uint8, so that every
        task built from it on that device is normalised there batch by batch."""
        return replace(self, train=self.train.to(device), test=self.test.to(device))
