"""Experiment kinds: one registry of recipes with one signature.

An experiment config names its ``kind``; the recipe registered under that name runs it:
``recipe.run(config, ctx) -> RunResult`` over one :class:`~impresslearn.runners.context.RunContext`.
The kinds shipped are ``stream`` (a task stream, :mod:`~impresslearn.runners.tasks`), ``nns``
(new tasks detected while training, :mod:`~impresslearn.runners.nns`), ``sweep`` and
``frontier`` (ImpressLearn's grids, :mod:`~impresslearn.runners.sweep`,
:mod:`~impresslearn.runners.frontier`). A new kind is one module and a registration::

    @register_recipe("my-kind", check=check_my_kind, report=my_table)
    def run_my_kind(config: ExperimentConfig, ctx: RunContext) -> RunResult: ...

:func:`run` is the one entry point (the CLI's ``run`` and the Python API): it checks the config
against its recipe, then runs it. Repeats over seeds (:mod:`~impresslearn.runners.seeds`) wrap
any recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from impresslearn.config import ExperimentConfig
from impresslearn.errors import ConfigError, refuse_unused
from impresslearn.methods import method_class
from impresslearn.metrics import AccuracyMatrix
from impresslearn.registry import Registry
from impresslearn.runners.context import RunContext
from impresslearn.train import TrainConfig


@dataclass
class RunResult:
    """What a finished experiment produced (also written to its folder, if it had one):
    ``metrics`` (what ``metrics.json`` holds), and for runs of a stream the evaluated entries of
    the accuracy matrix (``accuracies``), the trained method and the scenario."""

    config: ExperimentConfig
    metrics: dict[str, Any]
    out_dir: Path | None = None
    accuracies: AccuracyMatrix | None = None
    method: Any = None
    scenario: Any = None

    @property
    def accuracy_matrix(self) -> np.ndarray | None:
        """The accuracy matrix as a dense T x T array, NaN where not evaluated (O(T²) memory:
        for long streams use ``accuracies``)."""
        return None if self.accuracies is None else self.accuracies.dense()


def _accept(config: ExperimentConfig) -> None:
    """A recipe without checks of its own."""


@dataclass(frozen=True)
class Recipe:
    """A registered experiment kind.

    ``run(config, ctx)``: runs it. ``check(config)``: refuses what the kind cannot run, before
    anything is built or written. ``report(metrics)``: the text the command line prints after a
    run (None: none). ``resumable``: a stopped run continues with ``--resume``. ``logs``: it
    writes TensorBoard event files with ``--log tensorboard``."""

    kind: str
    run: Callable[[ExperimentConfig, RunContext], RunResult]
    check: Callable[[ExperimentConfig], None] = _accept
    report: Callable[[dict[str, Any]], str] | None = None
    resumable: bool = False
    logs: bool = False
    doc: str = ""


RECIPES: Registry[Recipe] = Registry("experiment kind")


def register_recipe(
    kind: str,
    *,
    check: Callable[[ExperimentConfig], None] = _accept,
    report: Callable[[dict[str, Any]], str] | None = None,
    resumable: bool = False,
    logs: bool = False,
) -> Callable[[Callable], Callable]:
    """Decorator registering ``run(config, ctx) -> RunResult`` as the recipe of ``kind`` (the
    first line of its docstring is what ``impresslearn list`` shows)."""

    def add(run_fn: Callable[[ExperimentConfig, RunContext], RunResult]) -> Callable:
        doc = (run_fn.__doc__ or "").strip().splitlines()
        RECIPES.register(kind)(
            Recipe(kind, run_fn, check, report, resumable, logs, doc[0] if doc else "")
        )
        return run_fn

    return add


def recipe_of(config: ExperimentConfig) -> Recipe:
    """The recipe of ``config.kind`` (a ConfigError listing the kinds if unknown)."""
    return RECIPES.get(config.kind)


# Sections that only one kind reads: set for another kind, they would be ignored.
KIND_SECTIONS = {"nns": "nns", "sweep": "sweep", "frontier": "frontier"}


def check_experiment(config: ExperimentConfig) -> Recipe:
    """Refuse what ``config``'s kind cannot run (its recipe's check), and a section only another
    kind reads, set away from its defaults (it would be ignored); returns the recipe."""
    recipe = recipe_of(config)
    defaults = ExperimentConfig()
    for section, kind in KIND_SECTIONS.items():
        if config.kind != kind and getattr(config, section) != getattr(defaults, section):
            raise ConfigError(
                f"the {section} section is read by experiments of kind {kind} only, and this one "
                f"is of kind {config.kind}: set kind={kind}, or leave {section}.* at its defaults"
            )
    recipe.check(config)
    return recipe


def check_context(recipe: Recipe, ctx: RunContext) -> None:
    """Refuse a context the recipe cannot honour, before anything is written."""
    if ctx.resume and ctx.out_dir is None:
        raise ConfigError("resuming needs the run folder")
    if ctx.resume and not recipe.resumable:
        raise ConfigError(
            f"a {recipe.kind} experiment cannot be resumed: start it again (--overwrite)"
        )
    if ctx.log is not None:
        if not recipe.logs:
            raise ConfigError(
                f"--log tensorboard logs task streams (kinds stream, nns) and their repeats, not "
                f"{recipe.kind} experiments: drop it"
            )
        if ctx.out_dir is None:
            raise ConfigError("--log tensorboard writes into the run folder: give one (--out)")


def run(config: ExperimentConfig, ctx: RunContext) -> RunResult:
    """Run ``config`` by the recipe of its kind in ``ctx``.

    Raises:
        ConfigError: bad input (an unknown kind, what the kind cannot run, a context it cannot
            honour), before anything is written; or another process is writing the run folder.
    """
    recipe = check_experiment(config)
    check_context(recipe, ctx)
    if not ctx.resume:  # a resumed run was accepted when it started
        check_unused(config)
    return recipe.run(config, ctx)


def check_unused(config: ExperimentConfig) -> None:
    """Refuse a setting that has no effect in this experiment, saying why (a new run's check: a
    saved run's config is read as it was written). The method declares its own
    (:meth:`~impresslearn.methods.Method.unused_settings`)."""
    method = method_class(config.method.name)
    refuse_unused("method", config.method, type(config.method)(), method.unused_settings(config))
    trainings = {
        "train": config.train,
        "method.impressions": getattr(config.method, "impressions", None),
    }
    for section, train in trainings.items():
        if isinstance(train, TrainConfig):
            refuse_unused(section, train, TrainConfig(), train.unused_settings())
    if config.eval.predict == "outputs" and config.backbone.num_outputs is None:
        raise ConfigError(
            "eval.predict=outputs has no effect here: without backbone.num_outputs the model's "
            "outputs are the task's classes; set backbone.num_outputs=N, or remove the setting"
        )
