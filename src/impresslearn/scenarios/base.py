"""Scenarios: a stream of tasks built from one real data set.

A scenario is seeded and deterministic: built twice from the same config it yields the same tasks,
and it never touches global random state. Tasks are produced on demand (a 250-task PermutedMNIST
does not hold 250 permuted copies of MNIST in memory).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torch import Tensor

from impresslearn.data.streaming import FileSource
from impresslearn.errors import ConfigError
from impresslearn.registry import Registry


@dataclass(frozen=True)
class ScenarioConfig:
    """Which task stream to build.

    ``name``: a registered scenario (``impresslearn list``). ``dataset``: the data set it is built
    from (``mnist``, ``fashion_mnist``, ``mnist_embedded``, ``cifar100``, or a tree of class
    folders ``folder:PATH[@SIZE]``). ``rotation_step`` is read by ``rotated_mnist`` only (degrees
    between consecutive tasks); ``classes_per_task`` (0 = the scenario's default), ``augment``
    (random crop and flip of training batches; a random resized crop for streamed image folders)
    and ``class_order`` (a file: one class name per line, or each line one task's classes) by
    the colour-image splits. ``loading`` (``auto``, ``memory``, ``stream``): how an image folder
    is read (:func:`impresslearn.data.load_dataset`).
    """

    name: str = "permuted_mnist"
    dataset: str = "mnist"
    num_tasks: int = 10
    seed: int = 0
    rotation_step: float = 10.0
    classes_per_task: int = 0
    augment: bool = True
    class_order: str = ""
    loading: str = "auto"

    def __post_init__(self) -> None:
        if self.classes_per_task < 0:
            raise ConfigError(
                f"scenario.classes_per_task must be >= 1 (or 0 for the default), got "
                f"{self.classes_per_task}"
            )
        if self.num_tasks < 1:
            raise ConfigError(f"scenario.num_tasks must be >= 1, got {self.num_tasks}")
        if self.seed < 0:
            raise ConfigError(f"scenario.seed must be >= 0, got {self.seed}")


@dataclass(frozen=True, eq=False)
class TaskData:
    """One split of a task: stored inputs ``x``, labels ``y`` int64 ``(N,)``, and how a batch of
    stored inputs becomes the model's input.

    ``x`` is what the scenario stores, usually the data set's uint8 images shared by every task
    (no copy per task); ``prepare(x[rows])`` turns a batch of them into normalised float
    ``(B, C, H, W)`` inputs (the task's permutation, rotation, ... applied), on the device the
    images live on. ``prepare=None`` means ``x`` already holds the model's inputs. ``augment(x,
    generator)``, if given, transforms each prepared training batch (drawing only from the batch
    generator, so training stays deterministic).

    Streamed data (``source``, a :class:`~impresslearn.data.streaming.FileSource`): ``x`` holds
    indices into the source's files and ``y`` their labels, on the CPU; the source decodes
    (and, for training, augments) the files of each batch, and ``prepare`` normalises them."""

    x: Tensor
    y: Tensor
    prepare: Callable[[Tensor], Tensor] | None = None
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None
    source: FileSource | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self) -> torch.device:
        return self.x.device if self.source is None else self.source.device

    def inputs(self, rows: slice | Tensor) -> Tensor:
        """Model inputs of ``rows`` (a slice or an index tensor), not augmented."""
        x = self.x[rows]
        if self.source is not None:
            x = self.source.decode(x)
        return x if self.prepare is None else self.prepare(x)

    def labels(self, rows: slice | Tensor) -> Tensor:
        """Labels of ``rows``, on the device the inputs are on."""
        return self.y[rows].to(self.device)

    def batches(
        self, batch_size: int, select: Callable[[int], bool] | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """``(inputs, labels)`` of consecutive batches in order (evaluation); with ``select``,
        only the batches whose number it accepts (a process's share)."""
        if self.source is not None:
            for x, y in self.source.eval_batches(self.x, self.y, batch_size, select):
                yield (x if self.prepare is None else self.prepare(x)), y
            return
        for i, start in enumerate(range(0, len(self), batch_size)):
            if select is None or select(i):
                rows = slice(start, start + batch_size)
                yield self.inputs(rows), self.y[rows]

    def head(self, count: int) -> TaskData:
        """The first ``count`` examples (all when ``count`` is 0 or more than there are)."""
        if not count or count >= len(self):
            return self
        return replace(self, x=self.x[:count], y=self.y[:count])

    def part(self, start: int, stop: int) -> TaskData:
        """Examples ``start`` to ``stop - 1`` (fewer, or none, where the split ends)."""
        return replace(self, x=self.x[start:stop], y=self.y[start:stop])

    def prepared(self) -> Tensor:
        """Every input prepared at once (a float copy of the whole split: for small data)."""
        return self.inputs(slice(None))


# The ScenarioConfig fields that only some scenarios read; each scenario class names the ones it
# reads in ``options``, and a config that sets another one away from its default is refused.
SCENARIO_OPTIONS = ("rotation_step", "classes_per_task", "augment", "class_order")


def check_scenario_options(config: ScenarioConfig, options: tuple[str, ...]) -> None:
    """Refuse a ``SCENARIO_OPTIONS`` field set away from its default that the scenario does not
    read (``options``): it would be silently ignored."""
    default = ScenarioConfig()
    for name in SCENARIO_OPTIONS:
        value = getattr(config, name)
        if name not in options and value != getattr(default, name):
            reads = (
                f"it reads only {', '.join(options)}"
                if options
                else f"it reads none of {', '.join(SCENARIO_OPTIONS)}"
            )
            raise ConfigError(
                f"scenario.{name}={value!r} has no effect on scenario {config.name!r} ({reads}): "
                "remove the setting, or choose a scenario that uses it"
            )


class Scenario(Protocol):
    """A stream of ``num_tasks`` classification tasks over inputs of ``input_shape``.

    A scenario class names in ``options`` which of :data:`SCENARIO_OPTIONS` it reads."""

    config: ScenarioConfig
    num_tasks: int
    input_shape: tuple[int, ...]
    num_classes: int  # classes per task

    def task_name(self, task_id: int) -> str: ...

    def train_data(self, task_id: int) -> TaskData: ...

    def test_data(self, task_id: int) -> TaskData: ...


SCENARIOS: Registry[type] = Registry("scenario")


def normalise(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 ``(N, H, W)`` or ``(N, H, W, C)`` -> float ``(N, C, H, W)`` scaled to 0..1 and
    normalised with the per-channel ``mean`` / ``std``, on the images' device."""
    x = images.float().div_(255.0)
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2).contiguous()
    m = torch.tensor(mean).view(1, -1, 1, 1).to(x.device)
    s = torch.tensor(std).view(1, -1, 1, 1).to(x.device)
    return x.sub_(m).div_(s)


def check_task_id(task_id: int, num_tasks: int) -> None:
    if not 0 <= task_id < num_tasks:
        raise IndexError(f"task_id {task_id} is outside this scenario's {num_tasks} tasks")
