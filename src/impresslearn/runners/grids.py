"""What ImpressLearn's grid experiments (``sweep``, ``frontier``, ``adapt``) share: the checks
every one of them needs, and the unseen tasks they evaluate."""

from __future__ import annotations

from typing import Any

from impresslearn.config import ExperimentConfig
from impresslearn.errors import ConfigError
from impresslearn.methods import ImpressLearn, ImpressLearnConfig


def check_grid(config: ExperimentConfig, what: str) -> None:
    """Refuse a grid experiment of ``config.kind`` without ImpressLearn, or with the task inferred
    at test time (``what``: what every grid point is, e.g. "representation")."""
    if not isinstance(config.method, ImpressLearnConfig):
        raise ConfigError(f"kind={config.kind} needs method.name=impresslearn")
    if config.eval.infers_tasks:
        raise ConfigError(
            f"a {config.kind} experiment evaluates every {what} with task ids given: drop "
            f"eval.scenario={config.eval.scenario}"
        )


def unseen_tasks(
    eval_tasks: tuple[int, ...], section: str, method: ImpressLearn, num_tasks: int
) -> list[int]:
    """The evaluation tasks: ``eval_tasks`` (of the config section ``section``), or every task
    that is not an impression; a ConfigError naming ``section.eval_tasks`` for one outside the
    stream or an impression."""
    tasks = list(eval_tasks) or [t for t in range(num_tasks) if method.impression_of(t) is None]
    bad = [t for t in tasks if t >= num_tasks or method.impression_of(t) is not None]
    if bad or not tasks:
        raise ConfigError(
            f"{section}.eval_tasks must be tasks of the stream (0..{num_tasks - 1}) that are not "
            f"impressions {list(method.config.source_tasks())}; got {tasks or 'none'}"
        )
    return tasks


def grid_header(config: ExperimentConfig, method: ImpressLearn | None = None) -> dict[str, Any]:
    """The first entries of a grid experiment's ``metrics.json``: what ran, on what, and (with
    ``method``) its impressions."""
    header: dict[str, Any] = {
        "preset": config.name,
        "kind": config.kind,
        "scenario": config.scenario.name,
        "dataset": config.scenario.dataset,
        "backbone": config.backbone.name,
    }
    if method is not None:
        header.update(
            num_impressions=method.n,
            impression_kind=method.config.impression_kind,
            impression_tasks=list(method.config.source_tasks()),
        )
    return header
