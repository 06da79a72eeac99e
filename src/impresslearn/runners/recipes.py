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

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from impresslearn.config import ExperimentConfig
from impresslearn.errors import ConfigError
from impresslearn.methods import method_class
from impresslearn.metrics import AccuracyMatrix
from impresslearn.registry import Registry
from impresslearn.runners.context import RunContext
from impresslearn.train import TrainConfig

log = logging.getLogger(__name__)


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
KIND_SECTIONS = {"nns": "nns", "sweep": "sweep", "frontier": "frontier", "adapt": "adapt"}


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
        warn_unused(config)
    return recipe.run(config, ctx)


def unused_settings(config: ExperimentConfig) -> dict[str, str]:
    """Every setting of ``config`` set away from its default where nothing reads it: its key
    (``method.groups``, ``method.impressions.lr``) and a message saying why. The method declares
    its own (:meth:`~impresslearn.methods.Method.unused_settings`)."""
    sections = [
        ("method", config.method, type(config.method)(), method_class(config.method.name)),
        ("train", config.train, TrainConfig(), None),
    ]
    impressions = getattr(config.method, "impressions", None)
    if isinstance(impressions, TrainConfig):
        sections.append(("method.impressions", impressions, TrainConfig(), None))
    out = {}
    for section, values, defaults, method in sections:
        unused = method.unused_settings(config) if method else values.unused_settings()
        for name, why in unused.items():
            value, default = getattr(values, name), getattr(defaults, name)
            if value == default:
                continue
            key = f"{section}.{name}"
            if dataclasses.is_dataclass(value):  # a nested section: its first changed field
                field = next(
                    f.name
                    for f in dataclasses.fields(value)
                    if getattr(value, f.name) != getattr(default, f.name)
                )
                key, value = f"{key}.{field}", getattr(value, field)
            shown = json.dumps(list(value) if isinstance(value, tuple) else value)
            out[key] = f"{key}={shown} has no effect here: {why}"
    if config.eval.predict == "outputs" and config.backbone.num_outputs is None:
        out["eval.predict"] = (
            "eval.predict=outputs has no effect here: without backbone.num_outputs the model's "
            "outputs are the task's classes (set backbone.num_outputs=N)"
        )
    return out


def refuse_unused(config: ExperimentConfig, given: list[str]) -> None:
    """Refuse a setting the user gave (``given``: the keys of their overrides) that has no
    effect in ``config``, before anything is written."""
    for key, message in unused_settings(config).items():
        if any(key == g or key.startswith(f"{g}.") for g in given):
            raise ConfigError(f"{message}; remove the setting")


def warn_unused(config: ExperimentConfig) -> None:
    """One line per setting that has no effect in ``config``: inherited from a preset or a
    config file when something else changed (another granularity, impression kind or
    optimiser), so a warning rather than an error."""
    for message in unused_settings(config).values():
        log.warning("impresslearn: %s; it is ignored", message)
