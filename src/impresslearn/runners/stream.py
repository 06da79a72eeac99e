"""What a run of a task stream is made of, on the runtime it executes on.

:class:`Stream` holds the scenario (the tasks and their data on the device), the backbone and the
method, and where they execute (:class:`~impresslearn.runtime.Runtime`: device and precision).
It is built completely by :func:`build_stream`, with every check that can fail, before anything
is written. It owns the one training loss (cross-entropy plus the method's regulariser) and the
one way a task is learned (:meth:`Stream.learn_task`), which every recipe uses: the task stream
(:mod:`~impresslearn.runners.tasks`), new-task detection (:mod:`~impresslearn.runners.nns`),
ImpressLearn's sweep and frontier.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from impresslearn.backbones import build_backbone
from impresslearn.config import ExperimentConfig
from impresslearn.data import ImageData, load_dataset
from impresslearn.data.streaming import StreamedImageData
from impresslearn.errors import ConfigError
from impresslearn.inference import check_inference
from impresslearn.layers import task_norms
from impresslearn.methods import Method, build_method
from impresslearn.runtime import Runtime
from impresslearn.scenarios import Scenario, TaskData, build_scenario
from impresslearn.seeding import PURPOSE_BATCHES, generator
from impresslearn.train import TrainConfig, TrainStats, accuracy, fit


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


@dataclass
class Stream:
    """A run's parts on its runtime: the task stream, the backbone and the method."""

    config: ExperimentConfig
    runtime: Runtime
    scenario: Scenario
    model: torch.nn.Module
    method: Method
    progress: bool = False
    log: Any = None  # a TensorBoardLog (rank 0 of a run with a folder and --log tensorboard)

    @property
    def num_tasks(self) -> int:
        return self.scenario.num_tasks

    @property
    def num_classes(self) -> int:
        return self.scenario.num_classes

    @property
    def predicted_outputs(self) -> int:
        """The outputs a prediction's argmax runs over (``eval.predict``)."""
        return self.config.predicted_outputs(self.num_classes)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The current task's training loss: cross-entropy plus the method's regulariser."""
        with self.runtime.autocast():
            loss = F.cross_entropy(self.model(x).float(), y)
        extra = self.method.loss_regulariser()
        return loss if extra is None else loss + extra

    def mask_trainer(
        self, params: list[torch.nn.Parameter], task_id: int, train: TrainConfig, description: str
    ) -> None:
        """Train a mask's scores on ``task_id``'s data with plain cross-entropy (no coeffs are
        set, so layers use the scores): the trainer methods get for masks outside the stream."""

        def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with self.runtime.autocast():
                return F.cross_entropy(self.model(x).float(), y)

        fit(
            params,
            loss,
            self.scenario.train_data(task_id),
            train,
            generator(train.seed, PURPOSE_BATCHES, task_id, 1),
            progress=self.progress,
            description=description,
            runtime=self.runtime,
        )
        self.synchronise_norm_stats()

    def synchronise_norm_stats(self) -> None:
        """Average the batch-norm statistics just learned over the processes, so that every
        process freezes the same ones (each saw only its share of every batch). The running
        statistics are exponential averages, linear in the batches' statistics: averaging them
        once at the end equals averaging them after every step."""
        norms = task_norms(self.model)
        self.runtime.average_([t for n in norms for t in (n.running_mean, n.running_var)])

    def accuracy(self, data: TaskData) -> float:
        """Accuracy of the model as it stands (the caller selects the task) on ``data``
        (evaluated in whole batches shared among the processes)."""
        batch = self.config.eval.batch_size
        with self.runtime.autocast():
            return accuracy(self.model, data, batch, self.predicted_outputs, self.runtime)

    def evaluate(self, tasks: list[int]) -> list[float]:
        """Accuracy on each of ``tasks`` with its task id given."""
        accs = []
        for j in tqdm(tasks, desc="eval", disable=not self.progress, leave=False):
            with self.method.task_context(j):
                accs.append(self.accuracy(self.scenario.test_data(j)))
        return accs

    def learn_task(self, task_id: int, train: TrainConfig, description: str) -> TrainStats | None:
        """Learn task ``task_id`` with the method and freeze it; the training statistics, or
        None when the method had nothing to train (an ImpressLearn impression task)."""
        method = self.method
        method.begin_task(task_id)
        params = method.trainable_parameters()
        stats = None
        if params:
            with method.training_context():
                stats = fit(
                    params,
                    self.loss,
                    self.scenario.train_data(task_id),
                    train,
                    generator(train.seed, PURPOSE_BATCHES, task_id),
                    progress=self.progress,
                    description=description,
                    runtime=self.runtime,
                    on_loss=None if self.log is None else partial(self.log.loss, task_id),
                )
            self.synchronise_norm_stats()
        method.end_task(task_id)
        return stats


def check_memory(method: Method, num_tasks: int, runtime: Runtime) -> None:
    """Refuse a stream whose learned tasks cannot fit in the memory available on the run's
    device (:meth:`~impresslearn.methods.Method.resident_bytes_per_task` per task), before
    anything is written."""
    per_task = method.resident_bytes_per_task()
    need, free = per_task * num_tasks, runtime.available_memory()
    if free is not None and need > free:
        raise ConfigError(
            f"{num_tasks:,} tasks of {method.name} would hold about {need / 1e9:.1f} GB "
            f"({per_task:,} B per task) in {runtime.device} memory, more than the "
            f"{free / 1e9:.1f} GB available: use fewer tasks (scenario.num_tasks), a smaller "
            "backbone, or a machine with more memory"
        )


def load_scenario_data(
    config: ExperimentConfig, data_root: Path | None, runtime: Runtime
) -> ImageData | StreamedImageData:
    """The scenario's data set on the runtime's device (in memory: moved once, uint8; streamed:
    decoded by the runtime's workers)."""
    data = load_dataset(config.scenario.dataset, data_root, loading=config.scenario.loading)
    if isinstance(data, StreamedImageData):
        data = data.with_workers(runtime.workers)
    return data.to(runtime.device)


def build_stream(
    config: ExperimentConfig, data_root: Path | None, runtime: Runtime, *, progress: bool = False
) -> Stream:
    """Set-up: the data on the runtime's device (moved once, uint8), the scenario, the backbone
    and the method, with every check that can fail before a run writes anything."""
    data = load_scenario_data(config, data_root, runtime)
    scenario = build_scenario(config.scenario, data)
    model = build_backbone(config.backbone, scenario.input_shape, scenario.num_classes)
    method = build_method(model.to(runtime.device), config.method)
    method.check_stream(scenario.num_tasks)
    check_memory(method, scenario.num_tasks, runtime)
    images = len(scenario.train_data(0))
    if config.train.batch_size > images:
        raise ConfigError(
            f"train.batch_size={config.train.batch_size} is more than the {images} training "
            f"images of a task of {config.scenario.name} on {config.scenario.dataset}: use at "
            f"most {images}"
        )
    if config.eval.infers_tasks:
        check_inference(config.inference, method, model, scenario.num_classes)
    return Stream(config, runtime, scenario, model, method, progress and runtime.is_writer)
