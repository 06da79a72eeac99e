"""ImpressLearn: every task as a learned linear combination of a few basis masks (impressions).

Dhrupad Bhardwaj, Julia Kempe, Artem Vysogorets, Angela M. Teng, Evaristus C. Ezekwem,
"ImpressLearn: Continual Learning via Combined Task Impressions", arXiv 2210.01987, 2022. A fixed set of ``n`` binary *impressions* is stored once in every masked layer's
bank. Task ``t`` is represented by one coefficient vector ``alpha[t, l]`` per layer ``l`` (or, in
the ``output_unit`` variant, one per output unit), so its effective weight is
``W[l] * sum_i alpha[t, l, i] * M_i[l]``. Only the current task's alphas are trained, with the loss
``cross_entropy + lambda * sum_l (||alpha[t, l]||_1 - 1)^2``; alphas start at ``1/n``. Backbone,
impressions and other tasks' alphas are frozen, so nothing is forgotten.

Impressions come in three kinds (``impression_kind``):

* ``heterogeneous``: SupSup masks learned on ``n`` tasks of the stream (``impression_tasks``,
  default the first ``n``; the paper's setting);
* ``homogeneous``: ``n`` masks learned on one task with different seeds for the scores;
* ``random``: ``n`` seeded random masks at the target density.

Impressions are learned (or drawn) before the stream starts, in :meth:`ImpressLearn.prepare`.
With batch norm in the backbone, every task learns its own running statistics while its alphas
are trained; a task that reuses its impression unchanged reuses the impression's statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from impresslearn.errors import ConfigError
from impresslearn.layers import (
    MASK_KINDS,
    DensityRule,
    copy_norm_stats,
    drop_norm_stats,
    extra_masks,
    freeze_norm_stats,
    masked_layers,
    norm_stats,
    norm_stats_bytes,
    one_hot,
    use_coeff_fn,
)
from impresslearn.methods.base import (
    BASIC_PROCEDURES,
    METHODS,
    Candidates,
    MaskTrainer,
    Method,
    begin_masks,
    check_densities,
    random_masks,
    unknown_task,
    use_task,
)
from impresslearn.methods.coeffs import (
    COEFF_DTYPES,
    GRANULARITIES,
    CoeffLayout,
    dequantise,
    layouts,
    quantise,
)
from impresslearn.metrics import DEDICATED, SINGLE_IMPRESSION, AccuracyMatrix, ReferenceAccuracy
from impresslearn.seeding import PURPOSE_TASK, generator
from impresslearn.train import TrainConfig

IMPRESSION_KINDS = ("heterogeneous", "homogeneous", "random")
# How impressions are trained unless configured (SupSup's way, the MNIST settings measured best).
IMPRESSION_TRAIN = TrainConfig(
    optimizer="rmsprop", lr=3e-4, batch_size=128, iterations=3000, schedule="cosine"
)


@dataclass(frozen=True)
class ImpressLearnConfig:
    """ImpressLearn's settings.

    ``num_impressions``: ``n``. ``impression_kind``: heterogeneous, homogeneous or random.
    ``impression_tasks``: heterogeneous: the tasks whose SupSup masks are the impressions (default
    the first ``n``); homogeneous: one task (default task 0). ``granularity``: how a task's
    coefficients are shaped (:mod:`impresslearn.methods.coeffs`): ``layer`` (the paper: ``n``
    numbers per layer), ``output_unit`` (``n`` per output unit), ``classifier_unit`` (per unit in
    the last masked layer, per layer elsewhere), ``groups`` (``groups`` contiguous groups of units
    per layer) or ``low_rank`` (per-unit coefficients of rank ``rank``). ``coeff_dtype``: how the
    trained coefficients are stored and then used: ``float32``, ``float16`` or ``int8`` (one
    float32 scale per tensor).
    ``train_impression_tasks``: learn alphas for the impression tasks too; otherwise a
    heterogeneous impression task uses its own mask (one-hot alphas). ``reg_lambda``: weight of the
    ``(||alpha||_1 - 1)^2`` term. ``density``, ``density_rule``, ``mask_kind``: of the impressions
    (``topk`` ranks ``|scores|`` as SupSup's code; ``topk_raw`` ranks the signed scores as the
    ImpressLearn authors' code).
    ``impressions``: how impressions (and the comparison masks) are trained, SupSup's way: a
    :class:`~impresslearn.train.TrainConfig` (``method.impressions.lr``,
    ``method.impressions.iterations`` or ``.epochs`` per mask, ...).
    ``dedicated_masks``: also learn a SupSup mask for every non-impression task, only to report
    its accuracy next to the combination's (the mask is not kept). ``shared_scores``:
    heterogeneous impressions all start from the same initial scores (those of the first
    impression task) instead of each from its task's own, so that neighbouring impressions differ
    only where their tasks do.
    """

    name: str = "impresslearn"
    num_impressions: int = 10
    impression_kind: str = "heterogeneous"
    impression_tasks: tuple[int, ...] | None = None
    granularity: str = "layer"
    groups: int = 4
    rank: int = 1
    coeff_dtype: str = "float32"
    train_impression_tasks: bool = False
    reg_lambda: float = 0.005
    density: float = 0.5
    density_rule: str = "uniform"
    mask_kind: str = "topk"
    seed: int = 0
    impressions: TrainConfig = field(default_factory=lambda: IMPRESSION_TRAIN)
    dedicated_masks: bool = False
    shared_scores: bool = False

    def __post_init__(self) -> None:
        if self.num_impressions < 1:
            raise ConfigError(f"method.num_impressions must be >= 1, got {self.num_impressions}")
        if self.impression_kind not in IMPRESSION_KINDS:
            raise ConfigError(
                f"method.impression_kind={self.impression_kind!r} is unknown; use one of "
                f"{IMPRESSION_KINDS}"
            )
        if self.granularity not in GRANULARITIES:
            raise ConfigError(
                f"method.granularity={self.granularity!r} is unknown; use one of {GRANULARITIES}"
            )
        if self.groups < 1 or self.rank < 1:
            raise ConfigError(
                f"method.groups and method.rank must be >= 1, got {self.groups} and {self.rank}"
            )
        if self.coeff_dtype not in COEFF_DTYPES:
            raise ConfigError(
                f"method.coeff_dtype={self.coeff_dtype!r} is unknown; use one of {COEFF_DTYPES}"
            )
        if self.mask_kind not in MASK_KINDS:
            raise ConfigError(
                f"method.mask_kind={self.mask_kind!r} is unknown; use one of {MASK_KINDS}"
            )
        if self.reg_lambda < 0:
            raise ConfigError(f"method.reg_lambda must be >= 0, got {self.reg_lambda}")
        tasks = self.impression_tasks
        if tasks is not None:
            if any(t < 0 for t in tasks) or len(set(tasks)) != len(tasks):
                raise ConfigError(f"method.impression_tasks must be distinct task ids, got {tasks}")
            if self.impression_kind == "heterogeneous" and len(tasks) != self.num_impressions:
                raise ConfigError(
                    f"method.impression_tasks lists {len(tasks)} tasks but "
                    f"method.num_impressions={self.num_impressions}"
                )
            if self.impression_kind == "homogeneous" and len(tasks) != 1:
                raise ConfigError(
                    "homogeneous impressions come from one task: impression_tasks=[t]"
                )
        try:
            self.rule()
        except ConfigError as e:
            raise ConfigError(f"method.density / method.density_rule: {e}") from None
        if not isinstance(self.impressions, TrainConfig):
            raise ConfigError(
                f"method.impressions must be a TrainConfig, got {type(self.impressions).__name__}"
            )

    def rule(self) -> DensityRule:
        return DensityRule(self.density_rule, self.density)

    def impression_train(self) -> TrainConfig:
        """The training settings of impressions and comparison masks."""
        return self.impressions

    def source_tasks(self) -> tuple[int, ...]:
        """Tasks whose data the impressions are learned on (empty for random impressions)."""
        if self.impression_kind == "random":
            return ()
        if self.impression_kind == "homogeneous":
            return self.impression_tasks or (0,)
        return self.impression_tasks or tuple(range(self.num_impressions))


DEDICATED_KEY = "dedicated"  # norm statistics of a temporary comparison mask
DEDICATED_SEED_KEY = 10_000  # scores of task t's comparison mask: seed key 10_000 + t


def impression_key(index: int) -> str:
    """Key of the batch-norm statistics learned with impression ``index``."""
    return f"impression.{index}"


@METHODS.register("impresslearn")
class ImpressLearn(Method):
    """Impressions in every layer's bank; per task, per layer, a coefficient vector over them."""

    name = "impresslearn"
    config_class = ImpressLearnConfig
    scenarios = frozenset(("GG", "GNs", "GNu", "NNs"))
    procedures = BASIC_PROCEDURES | {"entropy_fit"}

    def __init__(self, model: nn.Module, config: ImpressLearnConfig) -> None:
        self.model = model
        self.config = config
        self.layers = masked_layers(model)
        if not self.layers:
            raise ConfigError("ImpressLearn needs a backbone built from masked layers")
        check_densities(self.layers, config.rule(), config.mask_kind)
        self.layouts: list[CoeffLayout] = layouts(
            config.granularity,
            [tuple(layer.weight.shape) for layer in self.layers],
            config.num_impressions,
            config.groups,
            config.rank,
        )
        self.alphas: dict[int, list[Tensor]] = {}  # task_id -> frozen per-layer coeffs, mixed
        # task_id -> per layer, its trained tensors as stored (tasks that trained alphas only)
        self.stored: dict[int, list[list[dict[str, Tensor]]]] = {}
        self.dedicated_accuracy: dict[int, float] = {}
        self.single_impression_accuracy: dict[int, float] = {}
        self._current: list[list[nn.Parameter]] = []  # per layer, the tensors being trained
        self._current_task: int | None = None
        self._stacked: tuple[int, list[Tensor]] | None = None  # alphas of all tasks, per layer

    # ------------------------------------------------------------------------- impressions

    @property
    def n(self) -> int:
        return self.config.num_impressions

    def impression_of(self, task_id: int) -> int | None:
        """Index of the impression learned on ``task_id`` (heterogeneous only), else None."""
        if self.config.impression_kind != "heterogeneous":
            return None
        tasks = self.config.source_tasks()
        return tasks.index(task_id) if task_id in tasks else None

    @classmethod
    def check_config(cls, config: Any) -> None:
        super().check_config(config)
        m = config.method
        if (
            config.kind == "nns"
            and m.impression_kind == "heterogeneous"
            and not m.train_impression_tasks
        ):
            raise ConfigError(
                "kind=nns with ImpressLearn: the learner cannot tell which stream task "
                "an impression came from, so every task must learn alphas; set "
                "method.train_impression_tasks=true"
            )

    @classmethod
    def unused_settings(cls, config: Any) -> dict[str, str]:
        """The method fields ``config`` does not read, and why (a sweep varies the impression
        kind, a frontier the representation: those rules hold for the other kinds)."""
        m, unused = config.method, {}
        if config.kind != "frontier":
            for name, granularity in (("groups", "groups"), ("rank", "low_rank")):
                if m.granularity != granularity:
                    unused[name] = (
                        f"only method.granularity={granularity} reads it, not {m.granularity}"
                    )
        if config.kind in ("stream", "nns"):
            if m.impression_kind == "random":
                unused["impression_tasks"] = "random impressions are drawn, not learned on tasks"
                if not m.dedicated_masks:
                    unused["impressions"] = (
                        "random impressions are drawn, not trained (the impressions' training "
                        "also trains the dedicated comparison masks, method.dedicated_masks=true)"
                    )
            if m.impression_kind != "heterogeneous":
                why = f"only heterogeneous impressions are tasks of the stream, not {m.impression_kind}"
                unused["train_impression_tasks"] = why
                unused["shared_scores"] = why
        return unused

    def check_stream(self, num_tasks: int) -> None:
        cfg = self.config
        if any(t >= num_tasks for t in cfg.source_tasks()):
            raise ConfigError(
                f"impressions come from tasks {cfg.source_tasks()} but the scenario has only "
                f"{num_tasks} tasks"
            )

    def impression_jobs(self) -> list[tuple[int, int]]:
        """``(task_id, score seed key)`` of every learned impression, in bank order (empty for
        random impressions)."""
        cfg = self.config
        if cfg.impression_kind == "heterogeneous":
            tasks = cfg.source_tasks()
            return [(t, tasks[0] if cfg.shared_scores else t) for t in tasks]
        if cfg.impression_kind == "homogeneous":
            return [(cfg.source_tasks()[0], i) for i in range(self.n)]
        return []

    def random_impressions(self) -> list[list[Tensor]]:
        """The ``n`` random impressions (each a list of per-layer bool masks, on the CPU)."""
        cfg, rule = self.config, self.config.rule()
        per_layer = [
            random_masks(
                tuple(layer.weight.shape),
                rule.for_shape(tuple(layer.weight.shape)),
                self.n,
                cfg.seed,
                layer.layer_index,
            )
            for layer in self.layers
        ]
        return [[masks[i] for masks in per_layer] for i in range(self.n)]

    def learn_mask(
        self, trainer: MaskTrainer, task_id: int, seed_key: int, norm_key: str, description: str
    ) -> list[Tensor]:
        """Learn a SupSup mask on ``task_id`` (scores seeded by ``seed_key``), the impressions'
        way; its batch-norm statistics are frozen under ``norm_key``. Returns the per-layer bool
        masks; nothing is stored in the banks."""
        self.begin_scores(seed_key)
        with norm_stats(self.model, norm_key, learn=True):
            trainer(self.scores(), task_id, self.config.impression_train(), description)
        freeze_norm_stats(self.model, norm_key)
        return [layer.end_scores() for layer in self.layers]

    def prepare(self, trainer: MaskTrainer, num_tasks: int) -> None:
        """Learn (or draw) the ``n`` impressions and store them in every layer's bank."""
        self.check_stream(num_tasks)
        if self.config.impression_kind == "random":
            impressions = self.random_impressions()
        else:
            impressions = [
                self.learn_mask(
                    trainer,
                    task_id,
                    seed_key,
                    impression_key(i),
                    f"impression {i + 1}/{self.n} (task {task_id})",
                )
                for i, (task_id, seed_key) in enumerate(self.impression_jobs())
            ]
        self.prepare_with(impressions)

    def prepare_with(self, impressions: list[list[Tensor]]) -> None:
        """Store ``impressions`` (each a list of per-layer bool masks, e.g. learned once and
        shared by several methods) in every layer's bank, in order."""
        if len(impressions) != self.n:
            raise ValueError(f"got {len(impressions)} impressions, expected {self.n}")
        for per_layer in impressions:
            for layer, mask in zip(self.layers, per_layer, strict=True):
                layer.add_to_bank(mask)

    def learn_dedicated_mask(self, trainer: MaskTrainer, task_id: int) -> list[Tensor]:
        """A SupSup mask of task ``task_id`` alone, for comparison (statistics under
        ``DEDICATED_KEY``); the per-layer bool masks."""
        return self.learn_mask(
            trainer,
            task_id,
            DEDICATED_SEED_KEY + task_id,
            DEDICATED_KEY,
            f"dedicated mask (task {task_id})",
        )

    def begin_scores(self, seed_key: int) -> None:
        """Start learning a SupSup mask in every layer (an impression or a comparison mask)."""
        cfg = self.config
        begin_masks(self.layers, cfg.rule(), cfg.mask_kind, cfg.seed, seed_key)

    def scores(self) -> list[nn.Parameter]:
        return [layer.scores for layer in self.layers]

    # -------------------------------------------------------------------------- the stream

    def _trains(self, task_id: int) -> bool:
        return self.impression_of(task_id) is None or self.config.train_impression_tasks

    def begin_task(self, task_id: int) -> None:
        if task_id in self.alphas:
            raise ValueError(f"task {task_id} already has alphas")
        if self.layers[0].num_masks < self.n:
            raise ConfigError(
                f"ImpressLearn holds {self.layers[0].num_masks} of its {self.n} impressions: "
                "call prepare(trainer, num_tasks) first (trainer: a MaskTrainer, "
                "trainer(params, task_id, train_config, description), that trains params on a "
                "task's data), or prepare_with(impressions) with masks learned elsewhere"
            )
        self._current_task = task_id
        if not self._trains(task_id):
            self._current = []
            return
        gen = generator(self.config.seed, PURPOSE_TASK, task_id, 1)
        self._current = [
            [nn.Parameter(t.to(self.device)) for t in layout.initial(gen)]
            for layout in self.layouts
        ]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for params in self._current for p in params]

    def _mixed(self, params: list[list[Tensor]]) -> list[Tensor]:
        """The per-layer coeffs the layers mix with, from each layout's tensors."""
        return [layout.expand(p) for layout, p in zip(self.layouts, params, strict=True)]

    def current_alphas(self) -> list[Tensor] | None:
        """The alphas being learned (detached, as the layers mix them), or None between tasks."""
        if not self._current:
            return None
        with torch.no_grad():
            return self._mixed(self._current)

    def initial_alphas(self) -> list[Tensor]:
        """Alphas as a new task starts them: ``1/n`` everywhere."""
        return [
            torch.full(layout.mixed_shape, 1.0 / self.n, device=self.device)
            for layout in self.layouts
        ]

    def training_context(self) -> AbstractContextManager[None]:
        if not self._current:
            return nullcontext()
        if all(layout.kind in ("layer", "unit") for layout in self.layouts):
            # The trained tensors are the coeffs themselves.
            coeffs = [params[0] for params in self._current]
            return use_task(self.model, coeffs, self._current_task, learn_norm=True)
        return self._expanding_context()

    @contextmanager
    def _expanding_context(self) -> Iterator[None]:
        """Grouped or low-rank alphas: expanded anew before every forward pass."""
        with (
            use_coeff_fn(self.model, lambda: self._mixed(self._current)),
            norm_stats(self.model, self._current_task, learn=True),
        ):
            yield

    def loss_regulariser(self) -> Tensor | None:
        if not self._current or self.config.reg_lambda == 0:
            return None
        total = sum(
            ((layout.rows(params).abs().sum(-1) - 1.0) ** 2).sum()
            for layout, params in zip(self.layouts, self._current, strict=True)
        )
        return self.config.reg_lambda * total

    def end_task(self, task_id: int) -> None:
        if self._current:
            # Stored as configured (float32, float16 or int8); the task uses what is stored.
            dtype = self.config.coeff_dtype
            self.stored[task_id] = [
                [quantise(p, dtype) for p in params] for params in self._current
            ]
            self.alphas[task_id] = self._from_stored(self.stored[task_id])
            freeze_norm_stats(self.model, task_id)
        else:  # a heterogeneous impression task: its own mask and statistics
            index = self.impression_of(task_id)
            copy_norm_stats(self.model, impression_key(index), task_id)
            self.alphas[task_id] = [
                one_hot(index, self.n, self.device).expand(layout.mixed_shape).clone()
                for layout in self.layouts
            ]
        self._current = []
        self._current_task = None

    def _from_stored(self, stored: list[list[dict[str, Tensor]]]) -> list[Tensor]:
        with torch.no_grad():
            return self._mixed([[dequantise(t) for t in params] for params in stored])

    def task_context(self, task_id: int) -> AbstractContextManager[None]:
        if task_id not in self.alphas:
            raise unknown_task(task_id, self.learned_tasks())
        return use_task(self.model, self.alphas[task_id], task_id)

    def learned_tasks(self) -> list[int]:
        """Task ids with alphas, in the order of beta's entries in task inference."""
        return sorted(self.alphas)

    def mixed_coeffs(self, beta: Tensor) -> list[Tensor]:
        """Per-layer coeffs of the superposition of tasks weighted by ``beta``:
        ``gamma[l] = beta @ alpha[:, l]``, a T x n product; the network still mixes n masks."""
        if self._stacked is None or self._stacked[0] != len(self.alphas):
            tasks = self.learned_tasks()
            per_layer = [
                torch.stack([self.alphas[t][i] for t in tasks]) for i in range(len(self.layers))
            ]
            self._stacked = (len(self.alphas), per_layer)  # (T, n) or (T, out, n) per layer
        return [torch.tensordot(beta, a, dims=1) for a in self._stacked[1]]

    # ----------------------------------------------------------- task inference, detection

    def entropy_fit_start(self) -> list[Tensor]:
        """``entropy_fit`` starts from the mean of the stored tasks' alphas, per layer."""
        tasks = self.learned_tasks()
        return [
            torch.stack([self.alphas[t][i] for t in tasks]).mean(0) for i in range(len(self.layers))
        ]

    def nearest_task(self, coeffs: list[Tensor]) -> int:
        """The stored task whose alphas are nearest (squared L2 over all layers) to ``coeffs``."""
        tasks = self.learned_tasks()
        distances = [
            sum(float((self.alphas[t][i] - f).square().sum()) for i, f in enumerate(coeffs))
            for t in tasks
        ]
        return tasks[min(range(len(tasks)), key=distances.__getitem__)]

    @contextmanager
    def new_task_candidates(self, min_candidates: int) -> Iterator[Candidates]:
        """Scenario NNs in coefficient space: the stored tasks' alphas, the alphas being learned,
        and, up to ``min_candidates``, untrained alphas (all ``1/n``); ``coeffs[l] = beta @
        alphas[l]`` over the candidates."""
        stored = [self.alphas[t] for t in self.learned_tasks()]
        current = self.current_alphas()
        learning = [current] if current is not None else []
        fill = [self.initial_alphas()] * max(0, min_candidates - len(stored) - len(learning))
        candidates = stored + learning + fill
        per_layer = [torch.stack([c[i] for c in candidates]) for i in range(len(self.layers))]

        def mix(beta: Tensor) -> list[Tensor]:
            return [torch.tensordot(beta, a, dims=1) for a in per_layer]

        yield Candidates(self.model, len(candidates), len(stored) + len(learning), mix)

    def after_task(self, task_id: int, trainer: MaskTrainer, evaluate: Callable[[], float]) -> None:
        """Reference numbers for a task that is not an impression: the accuracy of its dedicated
        SupSup mask (when ``dedicated_masks``), and of one impression applied unchanged (the
        paper's sanity check: close to chance when the impression came from another task)."""
        if self.impression_of(task_id) is not None:
            return
        if self.config.impression_kind == "heterogeneous":
            impression = one_hot(0, self.n, self.device)
            with use_task(self.model, impression, impression_key(0)):
                self.single_impression_accuracy[task_id] = evaluate()
        if self.config.dedicated_masks:
            mask = self.learn_dedicated_mask(trainer, task_id)
            # The mask as an extra bank entry selected alone: exactly weight * mask.
            with extra_masks(self.model, [mask]):
                only = one_hot(self.n, self.n + 1, self.device)
                with use_task(self.model, only, DEDICATED_KEY):
                    self.dedicated_accuracy[task_id] = evaluate()
            drop_norm_stats(self.model, DEDICATED_KEY)

    # -------------------------------------------------------------------------- checkpoint

    def task_state(self, task_id: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
        # A task that trained alphas keeps them as stored (``L.J.values``: tensor J of layer L,
        # and ``L.J.scale`` for int8); an impression task that reuses its mask keeps its one-hot
        # coeffs (``L``).
        if task_id in self.stored:
            tensors = {
                f"{i}.{j}.{part}": value
                for i, params in enumerate(self.stored[task_id])
                for j, stored in enumerate(params)
                for part, value in stored.items()
            }
        else:
            tensors = {f"{i}": a for i, a in enumerate(self.alphas[task_id])}
        meta = {
            key: measured[task_id]
            for key, measured in (
                ("dedicated_accuracy", self.dedicated_accuracy),
                ("single_impression_accuracy", self.single_impression_accuracy),
            )
            if task_id in measured
        }
        return tensors, meta

    def restore_task(
        self, task_id: int, tensors: Mapping[str, Tensor], meta: dict[str, Any]
    ) -> None:
        self._stacked = None
        if "0" in tensors:  # one-hot coeffs (or a checkpoint of float32 alphas)
            self.alphas[task_id] = [tensors[f"{i}"].clone() for i in range(len(self.layers))]
        else:
            self.stored[task_id] = [
                [
                    {
                        part: tensors[f"{i}.{j}.{part}"].clone()
                        for part in ("values", "scale")
                        if f"{i}.{j}.{part}" in tensors
                    }
                    for j in range(layout.num_tensors)
                ]
                for i, layout in enumerate(self.layouts)
            ]
            self.alphas[task_id] = self._from_stored(self.stored[task_id])
        if "dedicated_accuracy" in meta:
            self.dedicated_accuracy[task_id] = meta["dedicated_accuracy"]
        if "single_impression_accuracy" in meta:
            self.single_impression_accuracy[task_id] = meta["single_impression_accuracy"]

    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        # Every task's task_state under ``alpha.T.``.
        tensors = {
            f"alpha.{t}.{key}": value
            for t in sorted(self.alphas)
            for key, value in self.task_state(t)[0].items()
        }
        meta = {
            "tasks": sorted(self.alphas),
            "dedicated_accuracy": {str(t): a for t, a in self.dedicated_accuracy.items()},
            "single_impression_accuracy": {
                str(t): a for t, a in self.single_impression_accuracy.items()
            },
        }
        return tensors, meta

    def restore_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        self._stacked = None
        self.stored, self.alphas = {}, {}
        self.dedicated_accuracy, self.single_impression_accuracy = {}, {}
        for t in map(int, meta["tasks"]):
            self.restore_task(t, _Prefixed(tensors, f"alpha.{t}."), {})
        self.dedicated_accuracy = {int(t): a for t, a in meta["dedicated_accuracy"].items()}
        self.single_impression_accuracy = {
            int(t): a for t, a in meta["single_impression_accuracy"].items()
        }

    def to(self, device: torch.device | str) -> ImpressLearn:
        self.model.to(device)
        self.alphas = {t: [a.to(device) for a in alphas] for t, alphas in self.alphas.items()}
        self.stored = {
            t: [[{k: v.to(device) for k, v in s.items()} for s in params] for params in per_layer]
            for t, per_layer in self.stored.items()
        }
        self._current = [
            [nn.Parameter(p.detach().to(device)) for p in params] for params in self._current
        ]
        self._stacked = None
        return self

    def bytes_per_task(self) -> dict[str, int]:
        """Bytes a task that learns alphas stores: its coefficients as stored (``coeff_dtype``)
        and its batch-norm statistics."""
        dtype = self.config.coeff_dtype
        coeffs = sum(layout.stored_bytes(dtype) for layout in self.layouts)
        return {"mask": 0, "coeffs": coeffs, "norm_stats": norm_stats_bytes(self.model)}

    def resident_bytes_per_task(self) -> int:
        # A task's coefficients as stored plus the float32 form the layers mix with.
        mixed = sum(4 * math.prod(layout.mixed_shape) for layout in self.layouts)
        return mixed + sum(self.bytes_per_task().values())

    def mask_bytes(self) -> int:
        """Bytes of one binary mask over every layer (1 bit per weight): an impression, or what
        a SupSup task stores."""
        return sum((layer.weight.numel() + 7) // 8 for layer in self.layers)

    def shared_bytes(self) -> int:
        """Bytes of the impressions, stored once for all tasks (1 bit per weight)."""
        return self.n * self.mask_bytes()

    def references(self) -> list[ReferenceAccuracy]:
        """A dedicated SupSup mask's accuracy per task (with ``dedicated_masks``) and one
        impression's applied unchanged (heterogeneous impressions), where measured."""
        measured = [
            ReferenceAccuracy(DEDICATED, dict(self.dedicated_accuracy)),
            ReferenceAccuracy(SINGLE_IMPRESSION, dict(self.single_impression_accuracy)),
        ]
        return [r for r in measured if r.per_task]

    def extra_metrics(self, matrix: AccuracyMatrix) -> dict[str, Any]:
        final = matrix.row(matrix.num_tasks - 1)
        unseen = [t for t in range(len(final)) if self.impression_of(t) is None]
        out: dict[str, Any] = {
            "impression_kind": self.config.impression_kind,
            "num_impressions": self.n,
            "impression_tasks": list(self.config.source_tasks()),
            "unseen_tasks": unseen,
            "average_accuracy_unseen": float(np.mean(final[unseen])) if unseen else None,
            "shared_bytes": {"impressions": self.shared_bytes()},
            "bytes_per_mask": self.mask_bytes(),
        }
        for reference in self.references():
            # the dedicated masks' mean over the unseen tasks; one impression's over every
            # task it was measured on (the unseen tasks too)
            out.update(reference.to_metrics(unseen if reference.key == DEDICATED else None))
        return out


class _Prefixed:
    """The entries of ``tensors`` under ``prefix``, looked up without the prefix."""

    def __init__(self, tensors: Mapping[str, Tensor], prefix: str) -> None:
        self.tensors, self.prefix = tensors, prefix

    def __contains__(self, key: str) -> bool:
        return self.prefix + key in self.tensors

    def __getitem__(self, key: str) -> Tensor:
        return self.tensors[self.prefix + key]
