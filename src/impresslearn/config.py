"""The experiment config: frozen sections, dotted overrides, JSON round trip.

An experiment is seven sections, so that an override reads the same in every preset:
``scenario``, ``backbone``, ``method``, ``train``, ``eval``, ``sweep`` and ``frontier`` (empty
unless the experiment is an ImpressLearn sweep or frontier). Each section is the frozen config
dataclass of its component; the ``method`` section's class depends on ``method.name``.
Overrides (``--set train.lr=1e-3``) refuse unknown keys and values of the wrong type (minGPT's
``merge_from_args`` refuses unknown keys; here the result is frozen and re-validated too).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from impresslearn.backbones import BACKBONES, BackboneConfig
from impresslearn.data import is_known_dataset, list_datasets
from impresslearn.errors import ConfigError
from impresslearn.inference import PROCEDURES, VERIFICATIONS, VERIFIED
from impresslearn.methods import SupSupConfig, method_class, method_config_class
from impresslearn.methods.coeffs import parse_representation
from impresslearn.scenarios import SCENARIOS, ScenarioConfig
from impresslearn.train import TrainConfig

SECTIONS = ("scenario", "backbone", "method", "train", "eval", "sweep", "frontier")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings.

    ``batch_size``: of the evaluation forward passes (task ids given). ``scenario``: ``GG`` (task
    ids given at test time) or, after the stream, also ``GNs`` / ``GNu`` (SupSup's taxonomy): the
    task is inferred once per test batch of ``inference_batch`` images, from its first
    ``inference_images`` images (1 = one-shot from a single image), by ``inference``
    (``oneshot``, ``binary``, ImpressLearn's ``entropy_fit``, ``shortlist``: the
    ``shortlist_size`` tasks the one-shot gradient ranks best, each verified by its own model,
    ``binary_shortlist``: binary search stopped at ``shortlist_size`` candidates, each verified,
    or ``exhaustive``: every task verified) on ``objective`` (``entropy`` = H, ``superfluous`` = G). GNu counts
    the whole batch wrong when the task is wrong; GNs classifies it with the inferred task. NNs
    trains without task ids too: the learner detects new tasks itself (:mod:`impresslearn.nns`):
    a new task when ``N * max(softmax(-grad)) < nns_threshold`` (SupSup: ``1 + 2^-3``), the
    gradient taken of ``nns_objective``: ``entropy`` (H, SupSup's) or ``cross_entropy`` (the
    training batch's labels, which NNs has; only task ids are missing).
    ``inference_test_images``: evaluate task inference on the first this many test images of each
    task (0 = all; one-shot superposition of 250 tasks costs ~0.16 s per batch on one CPU core).
    ``matrix``: ``full`` evaluates every seen task after each task (the whole accuracy matrix);
    ``diagonal`` evaluates only the task just learned, then all tasks once at the end (the final
    row), for long streams where the full matrix would cost T²/2 evaluations.
    ``predict``: the prediction is the argmax over the task's ``classes`` (the superfluous outputs
    are ignored), or over all ``outputs``, as SupSup's code does (an image whose largest output is
    a superfluous one then counts as wrong).
    ``verification``: how the verifying procedures (``shortlist``, ``binary_shortlist``,
    ``exhaustive``) compare candidates: by the objective as it is (``raw``) or ``calibrated``, each
    candidate's value minus its task's reference (its own model's mean value on the first
    ``reference_images`` training images of its task, measured when the task is learned), or
    ``auto``: whichever of the two found each new task more often among the tasks learned before
    it, on its next ``reference_images`` training images (a self-test after every task).
    """

    batch_size: int = 1000
    scenario: str = "GG"
    inference: str = "oneshot"
    objective: str = "entropy"
    inference_batch: int = 128
    inference_images: int = 1
    matrix: str = "full"
    nns_threshold: float = 1.125
    nns_objective: str = "entropy"
    inference_test_images: int = 0
    shortlist_size: int = 5
    predict: str = "classes"
    verification: str = "raw"
    reference_images: int = 1024

    def __post_init__(self) -> None:
        if self.predict not in ("classes", "outputs"):
            raise ConfigError(f"eval.predict={self.predict!r}: use classes or outputs")
        if self.inference_test_images < 0:
            raise ConfigError(
                "eval.inference_test_images must be >= 0 (0 = every test image), got "
                f"{self.inference_test_images}"
            )
        if not self.nns_threshold > 1.0:
            raise ConfigError(
                f"eval.nns_threshold must be > 1 (N * max(nu) is 1 when no candidate stands out), "
                f"got {self.nns_threshold}"
            )
        if self.nns_objective not in ("entropy", "cross_entropy"):
            raise ConfigError(
                f"eval.nns_objective={self.nns_objective!r}: use entropy or cross_entropy"
            )
        if self.matrix not in ("full", "diagonal"):
            raise ConfigError(f"eval.matrix={self.matrix!r}: use full or diagonal")
        if self.batch_size < 1:
            raise ConfigError(f"eval.batch_size must be >= 1, got {self.batch_size}")
        if self.scenario not in ("GG", "GNs", "GNu", "NNs"):
            raise ConfigError(f"eval.scenario={self.scenario!r}: use GG, GNs, GNu or NNs")
        if self.inference not in PROCEDURES:
            raise ConfigError(f"eval.inference={self.inference!r}: use one of {PROCEDURES}")
        if self.shortlist_size < 1:
            raise ConfigError(f"eval.shortlist_size must be >= 1, got {self.shortlist_size}")
        if self.objective not in ("entropy", "superfluous"):
            raise ConfigError(f"eval.objective={self.objective!r}: use entropy or superfluous")
        if not 1 <= self.inference_images <= self.inference_batch:
            raise ConfigError("need 1 <= eval.inference_images <= eval.inference_batch")
        if self.verification not in VERIFICATIONS:
            raise ConfigError(
                f"eval.verification={self.verification!r}: use one of {VERIFICATIONS}"
            )
        if self.reference_images < 1:
            raise ConfigError(f"eval.reference_images must be >= 1, got {self.reference_images}")
        if self.verification != "raw" and self.inference not in VERIFIED:
            raise ConfigError(
                f"eval.verification={self.verification} applies to the verifying procedures "
                f"{VERIFIED}, not eval.inference={self.inference!r}"
            )
        if self.verification != "raw" and self.scenario == "NNs":
            raise ConfigError(
                f"eval.verification={self.verification} is not available with NNs: use GNs or GNu"
            )

    @property
    def needs_calibration(self) -> bool:
        """Whether task inference needs each task's reference and self-test (calibrated or auto
        verification in GNs or GNu)."""
        return self.verification != "raw" and self.scenario in ("GNs", "GNu")


@dataclass(frozen=True)
class SweepConfig:
    """Sweep grid: ``num_impressions`` (empty = not a sweep), ``kinds``, and the evaluation tasks
    (default: every 3rd task after the first ``max(num_impressions)``)."""

    num_impressions: tuple[int, ...] = ()
    kinds: tuple[str, ...] = ("heterogeneous", "homogeneous", "random")
    eval_tasks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if any(n < 1 for n in self.num_impressions):
            raise ConfigError(f"sweep.num_impressions must be >= 1, got {self.num_impressions}")
        unknown = set(self.kinds) - {"heterogeneous", "homogeneous", "random"}
        if unknown:
            raise ConfigError(f"sweep.kinds has unknown kinds {sorted(unknown)}")

    def resolved_eval_tasks(self, num_tasks: int) -> tuple[int, ...]:
        first = max(self.num_impressions)
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
    each of the ``representations`` (empty = not a frontier), named ``GRANULARITY[:K][@DTYPE]``:
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


@dataclass(frozen=True)
class ExperimentConfig:
    """A complete, replayable experiment. ``name`` is the preset it came from."""

    name: str = "custom"
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    method: Any = field(default_factory=SupSupConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    frontier: FrontierConfig = field(default_factory=FrontierConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def predicted_outputs(self, num_classes: int) -> int:
        """How many leading outputs the prediction's argmax runs over (``eval.predict``)."""
        if self.eval.predict == "classes":
            return num_classes
        return self.backbone.num_outputs or num_classes

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


def _section_class(section: str, values: dict[str, Any]) -> type:
    if section == "method":
        return method_config_class(values.get("name", "supsup"))
    return {
        "scenario": ScenarioConfig,
        "backbone": BackboneConfig,
        "train": TrainConfig,
        "eval": EvalConfig,
        "sweep": SweepConfig,
        "frontier": FrontierConfig,
    }[section]


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


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
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
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


def _build_section(section: str, values: dict[str, Any]) -> Any:
    cls = _section_class(section, values)
    types_ = _field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}; "
            f"{section} has: {', '.join(types_)}"
        )
    coerced = {k: _coerce(v, types_[k], f"{section}.{k}") for k, v in values.items()}
    return cls(**coerced)


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Rebuild a config from :meth:`ExperimentConfig.to_dict` output, strictly."""
    if not isinstance(data, dict):
        raise ConfigError("a config must be a JSON object with the sections " + ", ".join(SECTIONS))
    unknown = sorted(set(data) - {"name", *SECTIONS})
    if unknown:
        raise ConfigError(
            f"unknown config section(s) {unknown}; known: name, {', '.join(SECTIONS)}"
        )
    sections = {}
    for section in SECTIONS:
        values = data.get(section, {})
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be an object, got {values!r}")
        sections[section] = _build_section(section, values)
    name = data.get("name", "custom")
    if not isinstance(name, str):
        raise ConfigError(f"config name must be a string, got {name!r}")
    config = ExperimentConfig(name=name, **sections)
    _check_registered(config)
    return config


def _check_registered(config: ExperimentConfig) -> None:
    """Names that must be registered, and what the method cannot run
    (:meth:`~impresslearn.methods.Method.check_config`): refused at config time, not halfway into
    a run."""
    BACKBONES.get(config.backbone.name)
    SCENARIOS.get(config.scenario.name)
    method_class(config.method.name).check_config(config)
    if config.frontier.representations:
        if config.method.name != "impresslearn":
            raise ConfigError("a frontier needs method.name=impresslearn")
        if config.sweep.num_impressions:
            raise ConfigError("an experiment is a sweep or a frontier, not both")
    if config.eval.scenario == "NNs":
        if config.train.schedule != "constant":
            raise ConfigError(
                "eval.scenario=NNs: the learner does not know when a task ends, so a per-task "
                "learning-rate schedule cannot be used; set train.schedule=constant"
            )
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


def apply_overrides(config: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """Apply ``section.key=value`` overrides; unknown keys and wrong types are a ConfigError."""
    data = config.to_dict()
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        if key == "name":
            data["name"] = text
            continue
        section, dot, name = key.partition(".")
        if not dot or section not in SECTIONS:
            raise ConfigError(
                f"unknown override key {key!r}: keys are section.field with section one of "
                f"{', '.join(SECTIONS)} (see `impresslearn show PRESET`)"
            )
        values = data[section]
        known = _field_types(_section_class(section, values))
        if name not in known:
            raise ConfigError(f"unknown override key {key!r}; {section} has: {', '.join(known)}")
        values[name] = parse_value(text)
        if section == "method" and name == "name":
            # A different method: keep only the fields the new method also has.
            fields_ = _field_types(_section_class("method", values))
            data[section] = {k: v for k, v in values.items() if k in fields_}
        exclusive = getattr(_section_class(section, values), "exclusive", {})
        if name in exclusive and values[name] is not None:
            values[exclusive[name]] = None
    return config_from_dict(data)
