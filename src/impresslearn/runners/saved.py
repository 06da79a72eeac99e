"""Saved runs: rebuild a run from its folder, on any device, and evaluate it again.

Under ``torchrun`` the evaluation is shared among the processes (whole batches, or whole tasks
for task inference) and the counts reduced: the numbers equal one process's exactly.

A checkpoint holds everything a run learned (see :mod:`impresslearn.checkpoint`); the backbone's
weights are regenerated from its seed. :func:`load_run` needs no data; evaluating a saved run
loads the scenario's data again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from impresslearn.backbones import build_backbone
from impresslearn.checkpoint import (
    CHECKPOINT_NAME,
    RunState,
    checkpoint_config,
    checkpoint_shape,
    restore_checkpoint,
)
from impresslearn.config import ExperimentConfig, config_from_dict
from impresslearn.errors import ConfigError
from impresslearn.inference import check_inference, evaluate_without_task_ids
from impresslearn.methods import Method, build_method
from impresslearn.runners.stream import load_scenario_data
from impresslearn.runtime import Runtime
from impresslearn.scenarios import Scenario, build_scenario
from impresslearn.storage import read_checked_json
from impresslearn.train import accuracy


def load_config_file(path: Path) -> ExperimentConfig:
    """Read a ``config.json`` written by a run (or by hand)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    return config_from_dict(data)


@dataclass
class LoadedRun:
    """A saved run, rebuilt from its checkpoint on ``runtime.device``: predictions for a batch
    with a given task."""

    config: ExperimentConfig
    model: torch.nn.Module
    method: Method
    state: RunState
    num_classes: int
    runtime: Runtime
    input_shape: tuple[int, ...]

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def tasks(self) -> list[int]:
        """Tasks the saved run has finished."""
        return list(range(self.state.next_task))

    @torch.no_grad()
    def logits(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        """Outputs (on the run's device) for inputs ``x`` (a float batch of shape ``(N,
        *input_shape)``, normalised like the scenario's, on any device) with task ``task_id``."""
        if task_id not in self.tasks:
            raise ConfigError(
                f"task {task_id} is not in this run (finished tasks: 0..{self.state.next_task - 1})"
            )
        self.check_input(x)
        with self.method.task_context(task_id), self.runtime.autocast():
            return self.model(x.to(self.device))

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse a batch the model cannot take, saying what it expects."""
        if not isinstance(x, torch.Tensor):
            raise ConfigError(f"inputs must be a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.input_shape or x.dim() != len(self.input_shape) + 1:
            raise ConfigError(
                f"inputs of shape {tuple(x.shape)} do not fit this run's model: it takes a batch "
                f"of shape (N, {', '.join(map(str, self.input_shape))})"
            )
        if not x.is_floating_point():
            raise ConfigError(
                f"inputs are {x.dtype}: the model takes floating-point images normalised like the "
                "scenario's (e.g. the test data of run.scenario(data_root)), not raw pixel values"
            )

    @property
    def predicted_outputs(self) -> int:
        """The outputs a prediction's argmax runs over (the run's ``eval.predict``)."""
        return self.config.predicted_outputs(self.num_classes)

    def predict(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        """Predicted classes for ``x`` with task ``task_id`` given."""
        return self.logits(x, task_id)[:, : self.predicted_outputs].argmax(1)

    def scenario(self, data_root: Path | None) -> Scenario:
        """The run's task stream, its data loaded from ``data_root`` onto the run's device."""
        data = load_scenario_data(self.config, data_root, self.runtime)
        return build_scenario(self.config.scenario, data)


def load_run(
    run_dir: Path,
    *,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    runtime: Runtime | None = None,
) -> LoadedRun:
    """Rebuild a saved run from ``run_dir/checkpoint.safetensors`` on ``device`` (or on
    ``runtime``, e.g. a run context's; no data needed)."""
    runtime = runtime or Runtime.create(device, precision)
    path = Path(run_dir) / CHECKPOINT_NAME
    config = checkpoint_config(path)
    input_shape, num_classes = checkpoint_shape(path)
    model = build_backbone(config.backbone, input_shape, num_classes).to(runtime.device)
    method = build_method(model, config.method)
    state = restore_checkpoint(path, config, model, method)
    return LoadedRun(config, model, method, state, num_classes, runtime, tuple(input_shape))


def evaluate_run(run: LoadedRun, data_root: Path | None, *, progress: bool = False) -> list[float]:
    """Accuracy of every finished task of a saved run, task ids given."""
    scenario = run.scenario(data_root)
    accs = []
    for t in tqdm(run.tasks, desc="eval", disable=not progress, leave=False):
        with run.method.task_context(t), run.runtime.autocast():
            data = scenario.test_data(t)
            batch = run.config.eval.batch_size
            accs.append(accuracy(run.model, data, batch, run.predicted_outputs, run.runtime))
    return accs


def evaluate_run_inferred(
    run: LoadedRun, data_root: Path | None, config: ExperimentConfig, *, progress: bool = False
) -> dict[str, Any]:
    """Evaluate a finished saved run with task ids hidden, under the ``eval`` (GNs or GNu) and
    ``inference`` sections of ``config`` (the run's own config with evaluation overrides), e.g.
    to compare inference procedures on one trained model. Returns the metrics entries."""
    if not config.eval.infers_tasks:
        raise ConfigError(
            f"inference evaluation needs eval.scenario GNs or GNu, got {config.eval.scenario!r}"
        )
    scenario = run.scenario(data_root)
    if run.state.next_task != scenario.num_tasks:
        raise ConfigError(
            f"the run finished {run.state.next_task} of {scenario.num_tasks} tasks; task inference "
            "is evaluated on a finished stream (resume it first)"
        )
    check_inference(config.inference, run.method, run.model, scenario.num_classes)
    return evaluate_without_task_ids(
        config.inference,
        config.eval.scenario,
        run.method,
        scenario,
        predicted=config.predicted_outputs(scenario.num_classes),
        progress=progress,
        runtime=run.runtime,
        calibration=run.state.calibration,
    )


EVALUATIONS = "evaluations"  # RUN/evaluations/NAME.json: re-evaluations of a saved run


def evaluation_name(overrides: list[str]) -> str:
    """A file name for an evaluation with these ``eval.*`` / ``inference.*`` overrides: the
    overrides sorted and joined by commas, characters
    other than letters, digits, ``.``, ``,``, ``-`` and ``=`` replaced by ``_``; ``as-trained``
    for none (the run's own evaluation settings)."""
    if not overrides:
        return "as-trained"
    text = ",".join(sorted(overrides))
    return "".join(c if c.isalnum() or c in ".-=," else "_" for c in text)[:200]


def save_evaluation(
    run_dir: Path, run: LoadedRun, config: ExperimentConfig, overrides: list[str], metrics: dict
) -> Path:
    """Write ``RUN/evaluations/NAME.json`` (atomically; NAME from :func:`evaluation_name`): the
    overrides, the evaluated settings, how many of the run's tasks were learned, and the metrics.
    The training's own result files are never touched; the same evaluation again replaces its
    file."""
    from impresslearn.storage import write_checked_json

    folder = Path(run_dir) / EVALUATIONS
    folder.mkdir(exist_ok=True)
    path = folder / f"{evaluation_name(overrides)}.json"
    learned, planned = run.state.next_task, run.config.scenario.num_tasks
    record = {
        "overrides": sorted(overrides),
        "eval": config.to_dict()["eval"],
        "inference": config.to_dict()["inference"],
        "tasks_learned": learned,
        "num_tasks": planned,
        "finished": learned == planned,
        "metrics": metrics,
    }
    write_checked_json(path, record)
    return path


def load_evaluations(run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """The saved evaluations of a run folder, as (name, record), by name."""
    folder = Path(run_dir) / EVALUATIONS
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        out.append((path.stem, read_checked_json(path)))
    return out
