"""TensorBoard event files for a run (``--log tensorboard``; ``pip install impresslearn[tensorboard]``).

Written into ``RUN/tensorboard/`` by the process that writes the run folder: the training loss of
every task (tag ``loss/task_T``, against the task's optimiser step), the accuracy of each task when
it is learned and the mean over the tasks seen (``accuracy/new_task``, ``accuracy/average_seen``,
against the task id), the final headline metrics, and the accuracy matrix as an image
(``accuracy_matrix``). Reading them back: ``tensorboard --logdir RUN/tensorboard``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from impresslearn.errors import ConfigError
from impresslearn.metrics import AccuracyMatrix

LOGS = ("tensorboard",)
FOLDER = "tensorboard"


def check_log(log: str | None) -> None:
    """Refuse an unknown log kind, or TensorBoard when it is not installed (before any write)."""
    if log is None:
        return
    if log not in LOGS:
        raise ConfigError(f"unknown log {log!r}: use one of {LOGS}")
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--log tensorboard needs the tensorboard package: pip install 'impresslearn[tensorboard]'"
        ) from None


class TensorBoardLog:
    """The event files of one run."""

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / FOLDER))

    def loss(self, task_id: int, step: int, value: float) -> None:
        self.writer.add_scalar(f"loss/task_{task_id}", value, step)

    def task(self, event: dict[str, Any]) -> None:
        t = event["task_id"]
        self.writer.add_scalar("accuracy/new_task", event["accuracy"], t)
        self.writer.add_scalar("accuracy/average_seen", event["average_accuracy_seen"], t)
        self.writer.flush()

    def finish(self, metrics: dict[str, Any], matrix: AccuracyMatrix) -> None:
        from impresslearn.plots import accuracy_figure

        for key in (
            "average_accuracy",
            "forgetting",
            "average_accuracy_inferred",
            "task_inference_accuracy",
            "average_accuracy_unseen",
        ):
            if isinstance(metrics.get(key), float):
                self.writer.add_scalar(f"final/{key}", metrics[key], 0)
        fig = accuracy_figure(matrix)
        self.writer.add_figure("accuracy_matrix", fig, 0)  # closes the figure
        self.writer.close()
