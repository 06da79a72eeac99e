"""The experiment config: its kind, frozen sections, dotted overrides, JSON round trip.

An experiment names its ``kind`` (``stream``, ``nns``, ``sweep``, ``frontier``, or any kind
registered later: :mod:`impresslearn.runners.recipes`) and holds ten sections, so that an
override reads the same in every preset: ``scenario``, ``backbone``, ``method``, ``train``,
``eval``, ``inference`` (task inference, :class:`~impresslearn.inference.InferenceConfig`),
``nns`` (new-task detection), ``sweep``, ``frontier`` and ``adapt`` (the grids of those kinds). Each
section is the frozen config dataclass of its component; the ``method`` section's class depends on
``method.name``, and a section may nest another (``method.impressions`` is a
:class:`~impresslearn.train.TrainConfig`). Overrides (``--set train.lr=1e-3``,
``--set method.impressions.lr=1e-3``) refuse unknown keys and values of the wrong type (minGPT's
``merge_from_args`` refuses unknown keys; here the result is frozen and re-validated too).

Keys that moved keep working for a while: an override of an old key (``eval.inference``) is
applied to its new place (``inference.procedure``) with a warning naming it, and configs saved
in the old layout (``config.json``, checkpoints) load unchanged (:data:`RENAMED`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from impresslearn.backbones import BACKBONES, BackboneConfig
from impresslearn.data import is_known_dataset, list_datasets
from impresslearn.errors import ConfigError
from impresslearn.inference.config import InferenceConfig
from impresslearn.methods import SupSupConfig, method_class, method_config_class
from impresslearn.methods.coeffs import parse_representation
from impresslearn.scenarios import SCENARIOS, ScenarioConfig
from impresslearn.scenarios.base import check_scenario_options
from impresslearn.seeding import PURPOSE_EVAL_SAMPLE, derive_seed
from impresslearn.train import TrainConfig

log = logging.getLogger(__name__)

SECTIONS = (
    "scenario",
    "backbone",
    "method",
    "train",
    "eval",
    "inference",
    "nns",
    "sweep",
    "frontier",
    "adapt",
)
TOP_LEVEL = ("name", "kind")
EVAL_SCENARIOS = ("GG", "GNs", "GNu")

# Keys that moved: old dotted key -> new dotted key. Old overrides are applied to the new key
# with a warning; old saved configs are read into the new layout.
RENAMED = {
    "eval.inference": "inference.procedure",
    "eval.objective": "inference.objective",
    "eval.inference_batch": "inference.batch",
    "eval.inference_images": "inference.images",
    "eval.inference_test_images": "inference.test_images",
    "eval.shortlist_size": "inference.shortlist_size",
    "eval.verification": "inference.verification",
    "eval.reference_images": "inference.reference_images",
    "eval.nns_threshold": "nns.threshold",
    "eval.nns_objective": "nns.objective",
    **{
        f"method.impression_{key}": f"method.impressions.{key}"
        for key in (
            "optimizer",
            "lr",
            "iterations",
            "epochs",
            "batch_size",
            "schedule",
            "weight_decay",
        )
    },
}


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings.

    ``batch_size``: of the evaluation forward passes (task ids given). ``scenario``: ``GG`` (task
    ids given at test time) or, after the stream, also ``GNs`` / ``GNu`` (SupSup's taxonomy):
    the task of every test batch is inferred (the ``inference`` section says how). GNu counts the
    whole batch wrong when the task is wrong; GNs classifies it with the inferred task.
    ``matrix``: ``full`` evaluates every seen task after each task (the whole accuracy matrix);
    ``diagonal`` evaluates only the task just learned, then all tasks once at the end (the final
    row), for long streams where the full matrix would cost T²/2 evaluations; ``sampled:K`` also
    evaluates K earlier tasks after each task, a seeded sample fixed by the scenario's seed and
    the task (:meth:`evaluated_tasks`), so that forgetting is watched during the stream at
    O(T·K) cost.
    ``predict``: the prediction is the argmax over the task's ``classes`` (the superfluous outputs
    are ignored), or over all ``outputs``, as SupSup's code does (an image whose largest output is
    a superfluous one then counts as wrong).
    """

    batch_size: int = 1000
    scenario: str = "GG"
    matrix: str = "full"
    predict: str = "classes"

    def __post_init__(self) -> None:
        if self.predict not in ("classes", "outputs"):
            raise ConfigError(f"eval.predict={self.predict!r}: use classes or outputs")
        if self.matrix not in ("full", "diagonal"):
            self.sample_size  # noqa: B018 -- validates sampled:K
        if self.batch_size < 1:
            raise ConfigError(f"eval.batch_size must be >= 1, got {self.batch_size}")
        if self.scenario not in EVAL_SCENARIOS:
            hint = " (new-task detection is an experiment kind: --set kind=nns)"
            raise ConfigError(
                f"eval.scenario={self.scenario!r}: use GG, GNs or GNu"
                + (hint if self.scenario == "NNs" else "")
            )

    @property
    def infers_tasks(self) -> bool:
        """Whether the tasks are inferred at test time (GNs or GNu)."""
        return self.scenario != "GG"

    @property
    def sample_size(self) -> int:
        """K of ``sampled:K`` (0 for ``diagonal``; ``full`` has no sample)."""
        if self.matrix == "diagonal":
            return 0
        kind, _, k = self.matrix.partition(":")
        if kind != "sampled" or not k.isdigit() or int(k) < 1:
            raise ConfigError(
                f"eval.matrix={self.matrix!r}: use full, diagonal or sampled:K (K >= 1 earlier "
                "tasks evaluated after each task, e.g. sampled:10)"
            )
        return int(k)

    def evaluated_tasks(self, task: int, num_tasks: int, seed: int) -> list[int]:
        """The tasks evaluated after learning ``task`` of a stream of ``num_tasks``: all seen ones
        (``full``, and after the last task), the task alone (``diagonal``), or the task and
        ``min(K, task)`` earlier ones drawn without replacement from a generator seeded by
        ``(seed, task)`` alone (``sampled:K``), so the sample does not depend on the stream's
        length and a grown stream evaluates the same tasks."""
        if self.matrix == "full" or task == num_tasks - 1:
            return list(range(task + 1))
        k = min(self.sample_size, task)
        if k == 0:
            return [task]
        rng = np.random.default_rng(derive_seed(seed, PURPOSE_EVAL_SAMPLE, task))
        return sorted(int(j) for j in rng.choice(task, size=k, replace=False)) + [task]


@dataclass(frozen=True)
class NNsConfig:
    """New-task detection (experiment kind ``nns``; SupSup's scenario NNs): every 100 training
    batches the learner superposes its candidates and declares a new task when ``N *
    max(softmax(-grad)) < threshold`` (SupSup: ``1 + 2^-3``), the gradient taken of
    ``objective``: ``entropy`` (H, SupSup's) or ``cross_entropy`` (the training batch's labels,
    which NNs has; only task ids are missing)."""

    threshold: float = 1.125
    objective: str = "entropy"

    def __post_init__(self) -> None:
        if not self.threshold > 1.0:
            raise ConfigError(
                "nns.threshold must be > 1 (N * max(nu) is 1 when no candidate stands out), "
                f"got {self.threshold}"
            )
        if self.objective not in ("entropy", "cross_entropy"):
            raise ConfigError(f"nns.objective={self.objective!r}: use entropy or cross_entropy")


@dataclass(frozen=True)
class SweepConfig:
    """The grid of an experiment of kind ``sweep``: ``num_impressions``, the impression ``kinds``,
    and the evaluation tasks (default: every 3rd task after the first ``max(num_impressions)``,
    the heterogeneous impressions' tasks; without heterogeneous impressions, after task 0, the
    homogeneous impressions' task, so that n may exceed the stream's length).
    ``representations``: the coefficients' representations the grid is learned in (named as
    ``frontier.representations``, e.g. ``["layer","groups:8@int8"]``); empty: the method
    section's own."""

    num_impressions: tuple[int, ...] = ()
    kinds: tuple[str, ...] = ("heterogeneous", "homogeneous", "random")
    eval_tasks: tuple[int, ...] = ()
    representations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if any(n < 1 for n in self.num_impressions):
            raise ConfigError(f"sweep.num_impressions must be >= 1, got {self.num_impressions}")
        for spec in self.representations:
            parse_representation(spec)
        if len(set(self.representations)) != len(self.representations):
            raise ConfigError(f"sweep.representations repeats one: {self.representations}")
        unknown = set(self.kinds) - {"heterogeneous", "homogeneous", "random"}
        if unknown:
            raise ConfigError(f"sweep.kinds has unknown kinds {sorted(unknown)}")

    def resolved_eval_tasks(self, num_tasks: int) -> tuple[int, ...]:
        first = max(self.num_impressions) if "heterogeneous" in self.kinds else 1
        tasks = self.eval_tasks or tuple(range(first, num_tasks, 3))
        if not tasks or min(tasks) < first or max(tasks) >= num_tasks:
            raise ConfigError(
                f"sweep evaluation tasks must lie in [{first}, {num_tasks}) so that no impression "
                f"was learned on them; got {tasks or 'none'} (raise scenario.num_tasks)"
            )
        return tasks


@dataclass(frozen=True)
class FrontierConfig:
    """ImpressLearn's accuracy-per-byte frontier: the impressions are learned once, then the
    ``eval_tasks`` (default: every task that is not an impression) learn their coefficients in
    each of the ``representations`` (experiment kind ``frontier``), named ``GRANULARITY[:K][@DTYPE]``:
    ``layer``, ``output_unit``, ``classifier_unit``, ``groups:G``, ``low_rank:R``, each stored
    as ``float32`` (default), ``float16`` or ``int8``, e.g. ``classifier_unit@float16``.
    ``train_scales``: every representation is trained at each of these multiples of the
    ``train`` section's iterations (or epochs), e.g. ``[1, 5, 15]`` for a training-length curve."""

    representations: tuple[str, ...] = ()
    eval_tasks: tuple[int, ...] = ()
    train_scales: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        for spec in self.representations:
            parse_representation(spec)
        if len(set(self.representations)) != len(self.representations):
            raise ConfigError(f"frontier.representations repeats one: {self.representations}")
        if any(t < 0 for t in self.eval_tasks):
            raise ConfigError(f"frontier.eval_tasks must be task ids >= 0, got {self.eval_tasks}")
        scales = self.train_scales
        if not scales or any(k < 1 for k in scales) or len(set(scales)) != len(scales):
            raise ConfigError(
                f"frontier.train_scales must be distinct whole numbers >= 1, got {scales}"
            )


ADAPT_REFERENCES = ("dedicated_mask", "linear_head")


@dataclass(frozen=True)
class AdaptConfig:
    """How fast unseen tasks are learned (experiment kind ``adapt``): the impressions are
    learned once, then each of the ``eval_tasks`` (default: every task that is not an
    impression) is learned from ``k`` labelled examples per class for each ``k`` of
    ``examples_per_class`` (0: all of them), by coefficients in each of the ``representations``
    (as ``frontier.representations``) and by each of the ``references`` (``dedicated_mask``: a
    SupSup mask of its own; ``linear_head``: a linear classifier on the frozen random
    backbone's features). Every contender takes the same number of optimiser steps (what the
    ``train`` section gives the whole training set), on the same batches of the same examples,
    and is evaluated on the task's whole test set after each of ``steps`` and at the end.
    ``repeats``: draws of the examples (and batch orders), for error bars."""

    examples_per_class: tuple[int, ...] = (1, 5, 10, 50, 100, 0)
    steps: tuple[int, ...] = (1, 3, 10, 30, 100, 300, 1000)
    representations: tuple[str, ...] = ("layer",)
    references: tuple[str, ...] = ADAPT_REFERENCES
    eval_tasks: tuple[int, ...] = ()
    repeats: int = 3

    def __post_init__(self) -> None:
        for spec in self.representations:
            parse_representation(spec)
        for name, values in (
            ("examples_per_class", self.examples_per_class),
            ("steps", self.steps),
            ("representations", self.representations),
        ):
            if len(set(values)) != len(values):
                raise ConfigError(f"adapt.{name} repeats a value: {list(values)}")
        if any(k < 0 for k in self.examples_per_class):
            raise ConfigError(
                f"adapt.examples_per_class must be counts >= 1, or 0 for all; got "
                f"{list(self.examples_per_class)}"
            )
        if any(s < 1 for s in self.steps):
            raise ConfigError(f"adapt.steps must be step counts >= 1, got {list(self.steps)}")
        unknown = sorted(set(self.references) - set(ADAPT_REFERENCES))
        if unknown:
            raise ConfigError(
                f"adapt.references has unknown entries {unknown}: use some of {ADAPT_REFERENCES}"
            )
        if any(t < 0 for t in self.eval_tasks):
            raise ConfigError(f"adapt.eval_tasks must be task ids >= 0, got {self.eval_tasks}")
        if self.repeats < 1:
            raise ConfigError(f"adapt.repeats must be >= 1, got {self.repeats}")


@dataclass(frozen=True)
class ExperimentConfig:
    """A complete, replayable experiment. ``name`` is the preset it came from; ``kind`` the
    recipe that runs it (:mod:`impresslearn.runners.recipes`: ``stream``, ``nns``, ``sweep``,
    ``frontier``, ...)."""

    name: str = "custom"
    kind: str = "stream"
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    method: Any = field(default_factory=SupSupConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    nns: NNsConfig = field(default_factory=NNsConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    frontier: FrontierConfig = field(default_factory=FrontierConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise ConfigError(f"kind must name an experiment kind, got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def predicted_outputs(self, num_classes: int) -> int:
        """How many leading outputs the prediction's argmax runs over (``eval.predict``)."""
        if self.eval.predict == "classes":
            return num_classes
        return self.backbone.num_outputs or num_classes

    @property
    def needs_calibration(self) -> bool:
        """Whether each task's reference (and self-test) is measured as the stream goes:
        calibrated or auto verification with the tasks inferred at test time."""
        return self.eval.infers_tasks and self.inference.calibrated

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


_SECTION_CLASSES = {
    "scenario": ScenarioConfig,
    "backbone": BackboneConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "inference": InferenceConfig,
    "nns": NNsConfig,
    "sweep": SweepConfig,
    "frontier": FrontierConfig,
    "adapt": AdaptConfig,
}


def _section_class(section: str, values: dict[str, Any]) -> type:
    if section == "method":
        return method_config_class(values.get("name", "supsup"))
    return _SECTION_CLASSES[section]


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_config_class(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """``value`` (from JSON or parsed CLI text) checked against ``annotation``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if typing.get_origin(annotation) is tuple:
        (item, _) = args  # tuple[X, ...]
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, item, key) for v in value)
        raise ConfigError(f"{key} must be a list like [0, 4, 8], got {value!r}")
    if _is_config_class(annotation):  # a nested section, e.g. method.impressions
        if isinstance(value, annotation):
            return value
        if isinstance(value, dict):
            try:
                return _build(annotation, value, key)
            except ConfigError as e:
                raise ConfigError(f"{key}: {e}") from None
        raise ConfigError(
            f"{key} must be an object of the keys {', '.join(_field_types(annotation))}"
        )
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
            return float(value)
        if isinstance(value, str) and value.strip().lower().lstrip("+-") in ("nan", "inf"):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(
        f"{key} must be {_type_name(annotation)}, got {value!r} ({type(value).__name__})"
    )


def _type_name(annotation: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        annotation, str(annotation)
    )


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    types_ = _field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{prefix}.{k}' for k in unknown)}; "
            f"{prefix} has: {', '.join(types_)}"
        )
    coerced = {}
    for k, v in values.items():
        if _is_config_class(types_[k]) and isinstance(v, dict):
            # A nested section given in part: the rest from the field's own default (e.g. the
            # impressions' training defaults, not TrainConfig's).
            default = _field_default(cls, k)
            if default is not None:
                v = {**dataclasses.asdict(default), **v}
        coerced[k] = _coerce(v, types_[k], f"{prefix}.{k}")
    return cls(**coerced)


def _field_default(cls: type, name: str) -> Any:
    """The default value of field ``name`` of the dataclass ``cls`` (None if it has none)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _build_section(section: str, values: dict[str, Any]) -> Any:
    return _build(_section_class(section, values), values, section)


def _move(data: dict[str, Any], old: str, new: str) -> bool:
    """Move the value at dotted key ``old`` of ``data`` to ``new`` (kept there if already set);
    whether ``old`` was present."""
    *old_path, old_leaf = old.split(".")
    holder = data
    for part in old_path:
        holder = holder.get(part)
        if not isinstance(holder, dict):
            return False
    if old_leaf not in holder:
        return False
    value = holder.pop(old_leaf)
    *new_path, new_leaf = new.split(".")
    target = data
    for part in new_path:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            return True  # a malformed section: its own check reports it
    target.setdefault(new_leaf, value)
    return True


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A config dict of an earlier layout in the current one (a copy): the keys of
    :data:`RENAMED` moved, ``eval.scenario=NNs`` turned into ``kind=nns`` (evaluated as GNu, as
    NNs runs always were), and a missing ``kind`` told from the sections, as runs were told apart
    before kinds had names."""
    data = json.loads(json.dumps(data))
    for old, new in RENAMED.items():
        _move(data, old, new)
    evaluation = data.get("eval")
    if isinstance(evaluation, dict) and evaluation.get("scenario") == "NNs":
        evaluation["scenario"] = "GNu"
        data.setdefault("kind", "nns")
    if "kind" not in data:
        sweep, frontier = data.get("sweep", {}), data.get("frontier", {})
        if isinstance(sweep, dict) and sweep.get("num_impressions"):
            data["kind"] = "sweep"
        elif isinstance(frontier, dict) and frontier.get("representations"):
            data["kind"] = "frontier"
    return data


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Rebuild a config from :meth:`ExperimentConfig.to_dict` output (or an earlier layout's,
    see :data:`RENAMED`), strictly."""
    if not isinstance(data, dict):
        raise ConfigError("a config must be a JSON object with the sections " + ", ".join(SECTIONS))
    data = _migrate(data)
    unknown = sorted(set(data) - {*TOP_LEVEL, *SECTIONS})
    if unknown:
        raise ConfigError(
            f"unknown config section(s) {unknown}; known: {', '.join((*TOP_LEVEL, *SECTIONS))}"
        )
    sections = {}
    for section in SECTIONS:
        values = data.get(section, {})
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be an object, got {values!r}")
        sections[section] = _build_section(section, values)
    top = {}
    for key in TOP_LEVEL:
        if key in data:
            if not isinstance(data[key], str):
                raise ConfigError(f"config {key} must be a string, got {data[key]!r}")
            top[key] = data[key]
    config = ExperimentConfig(**top, **sections)
    _check_registered(config)
    return config


def _check_registered(config: ExperimentConfig) -> None:
    """Names that must be registered, and what the method cannot run
    (:meth:`~impresslearn.methods.Method.check_config`): refused at config time, not halfway into
    a run. What the experiment's kind needs is its recipe's check
    (:func:`impresslearn.runners.check_experiment`)."""
    BACKBONES.get(config.backbone.name)
    scenario = SCENARIOS.get(config.scenario.name)
    check_scenario_options(config.scenario, getattr(scenario, "options", ()))
    method_class(config.method.name).check_config(config)
    if not is_known_dataset(config.scenario.dataset):
        raise ConfigError(
            f"unknown data set {config.scenario.dataset!r} (scenario.dataset); known: "
            f"{', '.join(list_datasets())}, or a tree of class folders as folder:PATH[@SIZE]"
        )


def parse_value(text: str) -> Any:
    """CLI text to a value: JSON literals (``1e-3``, ``true``, ``null``), else the string itself."""
    lowered = text.strip()
    if lowered.lower() in ("none", "null"):
        return None
    if lowered.lower() in ("true", "false"):
        return lowered.lower() == "true"
    try:
        return json.loads(lowered)
    except json.JSONDecodeError:
        return text


def _renamed_key(key: str, text: str) -> list[tuple[str, str]]:
    """The overrides an old key stands for now, with a warning naming the new key."""
    if key == "eval.scenario" and text.strip() == "NNs":
        log.warning(
            "eval.scenario=NNs is now an experiment kind: use --set kind=nns (applied as "
            "kind=nns, eval.scenario=GNu)"
        )
        return [("kind", "nns"), ("eval.scenario", "GNu")]
    new = RENAMED.get(key)
    if new is None:
        return [(key, text)]
    log.warning("%s is now %s: use --set %s=%s (applied)", key, new, new, text)
    return [(new, text)]


def _set(data: dict[str, Any], key: str, text: str) -> None:
    """Set the dotted ``key`` (section.field, or section.nested.field) of ``data`` to ``text``."""
    section, dot, rest = key.partition(".")
    if not dot or section not in SECTIONS:
        raise ConfigError(
            f"unknown override key {key!r}: keys are {', '.join(TOP_LEVEL)} or section.field "
            f"with section one of {', '.join(SECTIONS)} (see `impresslearn show PRESET`)"
        )
    values = data[section]
    cls = _section_class(section, values)
    *path, name = rest.split(".")
    prefix = section
    for part in path:  # into a nested section
        nested = _field_types(cls).get(part)
        if not _is_config_class(nested):
            raise ConfigError(
                f"unknown override key {key!r}: {prefix}.{part} is not a section; "
                f"{prefix} has: {', '.join(_field_types(cls))}"
            )
        if not isinstance(values.get(part), dict):  # e.g. just after method.name changed
            values[part] = dataclasses.asdict(_field_default(cls, part))
        values, cls, prefix = values[part], nested, f"{prefix}.{part}"
    known = _field_types(cls)
    if name not in known or _is_config_class(known[name]):
        raise ConfigError(f"unknown override key {key!r}; {prefix} has: {', '.join(known)}")
    values[name] = parse_value(text)
    if prefix == "method" and name == "name":
        # A different method: keep only the fields the new method also has.
        fields_ = _field_types(_section_class("method", values))
        data[section] = {k: v for k, v in values.items() if k in fields_}
    exclusive = getattr(cls, "exclusive", {})
    if name in exclusive and values[name] is not None:
        values[exclusive[name]] = None


def apply_overrides(config: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """Apply ``key=value`` overrides (``kind``, ``name``, ``section.field`` or
    ``section.nested.field``); unknown keys and wrong types are a ConfigError. Keys that moved
    (:data:`RENAMED`) are applied to their new place with a warning."""
    if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(
            f"overrides must be a list of 'section.key=value' strings, got {overrides!r}: "
            f"write e.g. apply_overrides(config, [{'train.lr=0.1'!r}])"
        )
    data = config.to_dict()
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        for key_, text_ in _renamed_key(key, text):
            if key_ in TOP_LEVEL:
                data[key_] = text_
            else:
                _set(data, key_, text_)
    return config_from_dict(data)
