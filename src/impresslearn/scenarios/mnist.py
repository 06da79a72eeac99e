"""The MNIST-family task streams of SupSup (Wortsman et al. 2020) and ImpressLearn.

* PermutedMNIST: task i applies a fixed pixel permutation drawn from a generator seeded by
  ``(scenario seed, i)``; every task keeps all ten classes.
* RotatedMNIST: task i rotates every image by ``i * rotation_step`` degrees (SupSup: 36 tasks of
  10 degrees); the rotation is applied once per task to the whole split, not per batch.
* SplitMNIST: 5 tasks of two consecutive digits, labels remapped to 0 and 1.

All three work over any MNIST-format data set (``mnist``, ``fashion_mnist``, ``mnist_embedded``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from impresslearn.data import ImageData
from impresslearn.errors import ConfigError
from impresslearn.scenarios.base import (
    SCENARIOS,
    ScenarioConfig,
    TaskData,
    check_task_id,
    normalise,
)
from impresslearn.seeding import PURPOSE_TASK, generator


class _MnistStream:
    """Shared plumbing: the base splits (uint8, on the data's device, shared by every task) and
    the per-task transform hook, which says how a batch of them becomes the task's inputs."""

    options: tuple[str, ...] = ()  # of SCENARIO_OPTIONS

    def __init__(self, config: ScenarioConfig, data: ImageData) -> None:
        if data.train.images.dim() != 3:
            raise ConfigError(
                f"scenario {config.name!r} needs single-channel images (an MNIST-format data set); "
                f"{data.name!r} has shape {tuple(data.train.images.shape[1:])}"
            )
        self.config = config
        self.num_tasks = config.num_tasks
        self.data = data
        self.input_shape = (1, *data.train.images.shape[1:])
        self.num_classes = data.num_classes

    def _raw(self, split: str) -> tuple[Tensor, Tensor]:
        part = self.data.train if split == "train" else self.data.test
        return part.images, part.labels

    def _make(self, task_id: int, split: str) -> TaskData:
        check_task_id(task_id, self.num_tasks)
        images, labels = self._raw(split)
        return self._transform(task_id, images, labels)

    def train_data(self, task_id: int) -> TaskData:
        return self._make(task_id, "train")

    def test_data(self, task_id: int) -> TaskData:
        return self._make(task_id, "test")

    def _transform(self, task_id: int, images: Tensor, labels: Tensor) -> TaskData:
        raise NotImplementedError


@SCENARIOS.register("permuted_mnist")
class PermutedMNIST(_MnistStream):
    """Task i = the data set under a fixed random pixel permutation (seeded by (seed, i))."""

    def task_name(self, task_id: int) -> str:
        return f"permutation {task_id}"

    def permutation(self, task_id: int) -> Tensor:
        """The pixel permutation of task ``task_id`` (a pure function of seed and task id)."""
        num_pixels = math.prod(self.input_shape)
        return torch.randperm(
            num_pixels, generator=generator(self.config.seed, PURPOSE_TASK, task_id)
        )

    def _transform(self, task_id: int, images: Tensor, labels: Tensor) -> TaskData:
        order = self.permutation(task_id).to(images.device)
        mean, std, shape = self.data.mean, self.data.std, self.input_shape

        def prepare(batch: Tensor) -> Tensor:
            return normalise(batch, mean, std).flatten(1)[:, order].view(-1, *shape)

        return TaskData(images, labels, prepare)


def rotate(images: Tensor, degrees: float) -> Tensor:
    """Rotate float images ``(N, C, H, W)`` counter-clockwise (as displayed, row 0 at the top)
    about their centre, bilinear, zeros outside, with torch alone; +90 equals ``torch.rot90(k=1)``."""
    if degrees % 360 == 0:
        return images.clone()
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    # affine_grid maps output to input coordinates: the inverse rotation.
    matrix = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=images.dtype).to(images.device)
    grid = F.affine_grid(matrix.expand(len(images), 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@SCENARIOS.register("rotated_mnist")
class RotatedMNIST(_MnistStream):
    """Task i = the data set rotated by ``i * rotation_step`` degrees."""

    options = ("rotation_step",)

    def task_name(self, task_id: int) -> str:
        return f"rotation {self.angle(task_id):g} deg"

    def angle(self, task_id: int) -> float:
        return task_id * self.config.rotation_step

    def _transform(self, task_id: int, images: Tensor, labels: Tensor) -> TaskData:
        angle, mean, std = self.angle(task_id), self.data.mean[0], self.data.std[0]

        def prepare(batch: Tensor) -> Tensor:
            # Rotate the 0..1 pixels, so the area uncovered by the rotation is background (0),
            # then normalise. Every image is rotated on its own: a batch gives the same values as
            # the whole split would.
            return rotate(batch.float().div_(255.0).unsqueeze(1), angle).sub_(mean).div_(std)

        return TaskData(images, labels, prepare)


@SCENARIOS.register("split_mnist")
class SplitMNIST(_MnistStream):
    """Task i = digits ``2i`` and ``2i + 1``, relabelled 0 and 1 (at most 5 tasks)."""

    def __init__(self, config: ScenarioConfig, data: ImageData) -> None:
        super().__init__(config, data)
        max_tasks = data.num_classes // 2
        if config.num_tasks > max_tasks:
            raise ConfigError(
                f"split_mnist has at most {max_tasks} tasks of two classes, "
                f"got scenario.num_tasks={config.num_tasks}"
            )
        self.num_classes = 2

    def task_name(self, task_id: int) -> str:
        return f"digits {2 * task_id}/{2 * task_id + 1}"

    def _transform(self, task_id: int, images: Tensor, labels: Tensor) -> TaskData:
        keep = (labels == 2 * task_id) | (labels == 2 * task_id + 1)
        mean, std = self.data.mean, self.data.std
        return TaskData(images[keep], labels[keep] - 2 * task_id, lambda b: normalise(b, mean, std))
