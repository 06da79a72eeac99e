"""Class-incremental splits of a colour image data set into k-way tasks (task ids known).

* ``split_cifar100``: SplitCIFAR100 of SupSup (Wortsman et al. 2020) and ImpressLearn: the 100
  classes of CIFAR-100 in an order permuted by the scenario seed, cut into 20 tasks of 5, labels
  remapped to ``0..4`` in that order.
* ``split_images``: the same split of any data set, e.g. a tree of class folders a user has
  (``scenario.dataset=folder:PATH[@SIZE]``) for SplitImageNet-style runs.

Training batches are augmented on the fly when ``scenario.augment`` is on: a random crop after
zero-padding by 1/8 of the image side (4 pixels at 32x32) and a random horizontal flip, done for
the whole batch on tensors (:func:`impresslearn.data.random_crop_flip`). Test data is not augmented.
"""

from __future__ import annotations

import torch
from torch import Tensor

from impresslearn.data import ImageData, random_crop_flip
from impresslearn.errors import ConfigError
from impresslearn.scenarios.base import (
    SCENARIOS,
    ScenarioConfig,
    TaskData,
    check_task_id,
    normalise,
)
from impresslearn.seeding import PURPOSE_TASK, generator

CLASS_ORDER_KEY = 10_000  # seed key of the class order, apart from any task id


@SCENARIOS.register("split_images")
class SplitImages:
    """Task i = classes ``order[k*i : k*(i+1)]`` of the data set, relabelled ``0..k-1``."""

    default_classes_per_task = 5
    options = ("classes_per_task", "augment")

    def __init__(self, config: ScenarioConfig, data: ImageData) -> None:
        if data.train.images.dim() != 4:
            raise ConfigError(
                f"scenario {config.name!r} needs colour images (N, H, W, C); {data.name!r} has "
                f"shape {tuple(data.train.images.shape[1:])}: use split_mnist for MNIST"
            )
        k = config.classes_per_task or self.default_classes_per_task
        if config.num_tasks * k > data.num_classes:
            raise ConfigError(
                f"{config.name}: {config.num_tasks} tasks of {k} classes need "
                f"{config.num_tasks * k} classes but {data.name!r} has {data.num_classes}; lower "
                "scenario.num_tasks or scenario.classes_per_task"
            )
        self.config = config
        self.data = data
        self.num_tasks = config.num_tasks
        self.num_classes = k
        h, w, c = data.train.images.shape[1:]
        self.input_shape = (c, h, w)
        self.padding = max(1, h // 8) if config.augment else 0
        self.class_order = torch.randperm(
            data.num_classes, generator=generator(config.seed, PURPOSE_TASK, CLASS_ORDER_KEY)
        )

    def classes(self, task_id: int) -> list[int]:
        """The data set's class labels of task ``task_id``, in the order of the task's labels."""
        check_task_id(task_id, self.num_tasks)
        k = self.num_classes
        return self.class_order[k * task_id : k * (task_id + 1)].tolist()

    def task_name(self, task_id: int) -> str:
        return "classes " + "/".join(str(c) for c in self.classes(task_id))

    def _select(self, task_id: int, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The task's uint8 images and relabelled labels (a copy of its 1/k of the split)."""
        classes = torch.tensor(self.classes(task_id))
        # relabel[c] = position of class c in this task, -1 for other classes
        relabel = torch.full((self.data.num_classes,), -1, dtype=torch.int64)
        relabel[classes] = torch.arange(len(classes))
        y = relabel.to(labels.device)[labels]
        keep = y >= 0
        return images[keep], y[keep]

    def _prepare(self, batch: Tensor) -> Tensor:
        return normalise(batch, self.data.mean, self.data.std)

    def _augment(self, x: Tensor, gen: torch.Generator) -> Tensor:
        return random_crop_flip(x, gen, padding=self.padding)

    def train_data(self, task_id: int) -> TaskData:
        x, y = self._select(task_id, self.data.train.images, self.data.train.labels)
        augment = self._augment if self.config.augment else None
        return TaskData(x, y, self._prepare, augment)

    def test_data(self, task_id: int) -> TaskData:
        x, y = self._select(task_id, self.data.test.images, self.data.test.labels)
        return TaskData(x, y, self._prepare)


@SCENARIOS.register("split_cifar100")
class SplitCIFAR100(SplitImages):
    """SplitCIFAR100: 20 tasks of 5 CIFAR-100 classes (class order permuted by the seed)."""

    def __init__(self, config: ScenarioConfig, data: ImageData) -> None:
        if data.name not in ("cifar100", "cifar100_subset"):
            raise ConfigError(
                f"split_cifar100 is built from CIFAR-100 (scenario.dataset=cifar100), got "
                f"{data.name!r}; use split_images for other data sets"
            )
        super().__init__(config, data)
        held = set(torch.unique(data.train.labels).tolist())
        missing = [t for t in range(self.num_tasks) if not set(self.classes(t)) <= held]
        if missing:
            raise ConfigError(
                f"the CIFAR-100 subset holds the classes of {min(missing)} task(s) only, not of "
                f"task {min(missing)}: set scenario.num_tasks={min(missing)} or less, or write a "
                "larger subset"
            )
