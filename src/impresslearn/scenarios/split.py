"""Class-incremental splits of a colour image data set into k-way tasks (task ids known).

* ``split_cifar100``: SplitCIFAR100 of SupSup (Wortsman et al. 2020) and ImpressLearn: the 100
  classes of CIFAR-100 in an order permuted by the scenario seed, cut into 20 tasks of 5, labels
  remapped to ``0..4`` in that order.
* ``split_images``: the same split of any data set, e.g. a tree of class folders a user has
  (``scenario.dataset=folder:PATH[@SIZE]``) for SplitImageNet-style runs.

Training batches are augmented on the fly when ``scenario.augment`` is on: a random crop after
zero-padding by 1/8 of the image side (4 pixels at 32x32) and a random horizontal flip, done for
the whole batch on tensors (:func:`impresslearn.data.random_crop_flip`). Test data is not augmented.
A streamed image folder (:class:`~impresslearn.data.streaming.StreamedImageData`) is decoded
batch by batch instead, with ImageNet's augmentation (a random resized crop and a flip) for
training and a resize and centre crop for evaluation.

``scenario.class_order`` names a text file that fixes the split (a published one, e.g.
ImageNet-100's classes or a paper's order): one class name per line (the order, cut into tasks
of ``classes_per_task``), or one task per line (its class names separated by spaces or commas).
Classes are named as the data set names them (class folders), or by their label index.
``builtin:NAME`` names a file shipped in ``impresslearn/data/orders/``: ``supsup-splitimagenet``
is SupSup's SplitImageNet split (NumPy's ``np.random.seed(1); np.random.permutation(1000)`` over
the sorted class folders, cut into 100 tasks of 10), reproduced exactly.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from impresslearn.data import ImageData, random_crop_flip
from impresslearn.data.streaming import StreamedImageData
from impresslearn.errors import ConfigError, DataError
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
    options = ("classes_per_task", "augment", "class_order")

    def __init__(self, config: ScenarioConfig, data: ImageData | StreamedImageData) -> None:
        self.streamed = isinstance(data, StreamedImageData)
        if not self.streamed and data.train.images.dim() != 4:
            raise ConfigError(
                f"scenario {config.name!r} needs colour images (N, H, W, C); {data.name!r} has "
                f"shape {tuple(data.train.images.shape[1:])}: use split_mnist for MNIST"
            )
        tasks = (
            read_class_order(order_file(config.class_order), data) if config.class_order else None
        )
        k = config.classes_per_task or self.default_classes_per_task
        if tasks is not None and len(tasks[0]) > 1:  # one task per line
            if config.classes_per_task and config.classes_per_task != len(tasks[0]):
                raise ConfigError(
                    f"{config.class_order} lists {len(tasks[0])} classes per task but "
                    f"scenario.classes_per_task={config.classes_per_task}: remove the setting"
                )
            k = len(tasks[0])
            if any(len(t) != k for t in tasks):
                raise DataError(f"{config.class_order}: every line must list {k} classes")
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
        if self.streamed:
            h = w = data.image_size
            c = 3
        else:
            h, w, c = data.train.images.shape[1:]
        self.input_shape = (c, h, w)
        self.padding = max(1, h // 8) if config.augment else 0
        if tasks is not None:
            order = [c for t in tasks for c in t]
            if len(order) < config.num_tasks * k:
                raise ConfigError(
                    f"{config.class_order} gives {len(order) // k} tasks of {k} classes; "
                    f"scenario.num_tasks={config.num_tasks} needs {config.num_tasks}"
                )
            self.class_order = torch.tensor(order)
        else:
            self.class_order = torch.randperm(
                data.num_classes, generator=generator(config.seed, PURPOSE_TASK, CLASS_ORDER_KEY)
            )

    def classes(self, task_id: int) -> list[int]:
        """The data set's class labels of task ``task_id``, in the order of the task's labels."""
        check_task_id(task_id, self.num_tasks)
        k = self.num_classes
        return self.class_order[k * task_id : k * (task_id + 1)].tolist()

    def task_name(self, task_id: int) -> str:
        names = getattr(self.data, "class_names", ())
        classes = self.classes(task_id)
        return "classes " + "/".join(names[c] if names else str(c) for c in classes)

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
        if self.streamed:
            source = self.data.source("train", augment=self.config.augment)
            return TaskData(
                *self._select_files(task_id, self.data.train), self._prepare, None, source
            )
        x, y = self._select(task_id, self.data.train.images, self.data.train.labels)
        augment = self._augment if self.config.augment else None
        return TaskData(x, y, self._prepare, augment)

    def test_data(self, task_id: int) -> TaskData:
        if self.streamed:
            source = self.data.source("test", augment=False)
            return TaskData(
                *self._select_files(task_id, self.data.test), self._prepare, None, source
            )
        x, y = self._select(task_id, self.data.test.images, self.data.test.labels)
        return TaskData(x, y, self._prepare)

    def _select_files(self, task_id: int, split) -> tuple[Tensor, Tensor]:
        """Indices of the task's files in the split, and their task labels (CPU)."""
        return self._select(task_id, torch.arange(len(split)), split.labels)


BUILTIN = "builtin:"


def order_file(text: str) -> Path:
    """The class-order file named by ``scenario.class_order``."""
    if text.startswith(BUILTIN):
        name = text[len(BUILTIN) :]
        path = Path(__file__).resolve().parents[1] / "data" / "orders" / f"{name}.txt"
        if not path.is_file():
            known = sorted(p.stem for p in path.parent.glob("*.txt"))
            raise ConfigError(f"no built-in class order {name!r}; known: {', '.join(known)}")
        return path
    return Path(text).expanduser()


def read_class_order(path: Path, data: ImageData | StreamedImageData) -> list[list[int]]:
    """The tasks (lists of class labels) of a class-order file; a file with one class per line
    gives one "task" per class, cut into tasks by the caller."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the class-order file {path}: {e}") from None
    names = list(getattr(data, "class_names", ()))
    lookup = {name: i for i, name in enumerate(names)}
    tasks, seen = [], set()
    for number, line in enumerate(lines, 1):
        task = []
        for word in line.replace(",", " ").split():
            label = lookup.get(word)
            if label is None and word.isdigit() and int(word) < data.num_classes:
                label = int(word)
            if label is None:
                known = f"e.g. {', '.join(names[:3])}" if names else f"0..{data.num_classes - 1}"
                raise DataError(
                    f"{path} line {number}: {word!r} is not a class of {data.name} ({known})"
                )
            if label in seen:
                raise DataError(f"{path} line {number}: class {word!r} is listed twice")
            seen.add(label)
            task.append(label)
        tasks.append(task)
    if not tasks:
        raise DataError(f"the class-order file {path} is empty")
    return tasks


@SCENARIOS.register("split_cifar100")
class SplitCIFAR100(SplitImages):
    """SplitCIFAR100: 20 tasks of 5 CIFAR-100 classes (class order permuted by the seed)."""

    def __init__(self, config: ScenarioConfig, data: ImageData) -> None:
        if data.name not in ("cifar100", "cifar100_subset"):
            raise ConfigError(
                f"{config.name} is built from CIFAR-100 (scenario.dataset=cifar100), got "
                f"{data.name!r}; use split_images for other data sets"
            )
        super().__init__(config, data)
        self._order_classes()
        held = set(torch.unique(data.train.labels).tolist())
        missing = [t for t in range(self.num_tasks) if not set(self.classes(t)) <= held]
        if missing:
            raise ConfigError(
                f"the CIFAR-100 subset holds the classes of {min(missing)} task(s) only, not of "
                f"task {min(missing)}: set scenario.num_tasks={min(missing)} or less, or write a "
                "larger subset"
            )

    def _order_classes(self) -> None:
        """Fix the class order further (a subclass's tasks); the seeded permutation by default."""


# Each fine label's coarse label (superclass), as CIFAR-100 defines them (its files' coarse
# labels; tests/test_scenarios.py checks the table against them).
CIFAR100_COARSE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)  # fmt: skip
SUPERCLASSES = 20


@SCENARIOS.register("cifar100_superclass")
class CIFAR100Superclass(SplitCIFAR100):
    """CIFAR-100 Superclass: 20 tasks, task i the 5 fine classes of superclass i (labelled 0..4
    in the order of their fine labels), as WSN and the papers before it use it."""

    options = ("augment",)

    def __init__(self, config: ScenarioConfig, data: ImageData) -> None:
        if config.num_tasks > SUPERCLASSES:
            raise ConfigError(
                f"cifar100_superclass has {SUPERCLASSES} tasks (one per superclass); "
                f"scenario.num_tasks={config.num_tasks} asks for more"
            )
        super().__init__(config, data)

    def _order_classes(self) -> None:
        coarse = torch.tensor(CIFAR100_COARSE)
        order = [torch.nonzero(coarse == c).reshape(-1) for c in range(SUPERCLASSES)]
        self.class_order = torch.cat(order)

    def task_name(self, task_id: int) -> str:
        return f"superclass {task_id}"
