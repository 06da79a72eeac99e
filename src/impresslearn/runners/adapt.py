"""The ``adapt`` recipe: how fast, and from how few examples, an unseen task is learned.

ImpressLearn's abstract claims the combinations "quickly adapt to unseen tasks" (Bhardwaj et al.,
arXiv 2210.01987). This recipe measures it. The impressions are learned once (as
:class:`~impresslearn.methods.ImpressLearn` learns them for a run); then every evaluation task
(never an impression) is learned again and again, from ``k`` labelled examples per class for
each ``k`` of ``adapt.examples_per_class`` (0: the whole training set), by

* coefficients in each of ``adapt.representations`` (the paper's per-layer alphas, and the
  compact representations of the frontier),
* ``dedicated_mask``: a SupSup mask of its own (its scores trained with the optimiser of
  ``method.impressions``),
* ``linear_head``: a linear classifier (starting at zero) on the standardised features that the
  frozen random backbone, all of its weights kept, gives its classifier layer.

Every contender takes the same number of optimiser steps (``train``'s count for the whole
training set), on the same batches of the same examples (drawn per task and repeat, nested: the
5 examples of a class include its 1), and is evaluated on the task's whole test set after each of
``adapt.steps``: along the way with the values it is training (and batch-norm statistics learned
so far), at the end as stored. ``adapt.repeats`` draws of the examples give the error bars. With
every example, the first draw takes a run's own batches, so a combination's last point is what a
run (or the frontier) gives that task in that representation.
Writes ``adapt.csv`` (one row per contender, task, examples, repeat and step),
``adapt_examples.png`` (accuracy at the last step against examples per class),
``adapt_steps.png`` (accuracy against steps with every example) and ``metrics.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from impresslearn.config import ExperimentConfig
from impresslearn.errors import ConfigError
from impresslearn.layers import (
    drop_norm_stats,
    extra_masks,
    freeze_norm_stats,
    masked_layers,
    norm_stats,
    norm_stats_bytes,
    one_hot,
    use_coeffs,
)
from impresslearn.methods import ImpressLearn
from impresslearn.methods.base import use_task
from impresslearn.methods.coeffs import parse_representation
from impresslearn.methods.impress import DEDICATED_KEY, DEDICATED_SEED_KEY
from impresslearn.plots import plot_adapt
from impresslearn.report import adapt_table
from impresslearn.runners.context import RunContext
from impresslearn.runners.folder import started_folder
from impresslearn.runners.grids import check_grid, grid_header, unseen_tasks
from impresslearn.runners.recipes import RunResult, register_recipe
from impresslearn.runners.stream import Stream, build_stream
from impresslearn.runtime import Runtime
from impresslearn.scenarios import TaskData
from impresslearn.seeding import PURPOSE_BATCHES, PURPOSE_SUBSET, generator
from impresslearn.storage import atomic_write_text, write_checked_json
from impresslearn.train import TrainConfig, accuracy, fit

log = logging.getLogger(__name__)

PROBE_KEY = "adapt.probe"  # batch-norm statistics of a contender evaluated while it trains
DEDICATED_MASK, LINEAR_HEAD = "dedicated_mask", "linear_head"
FULL = 0  # examples_per_class: the whole training set


def check_adapt(config: ExperimentConfig) -> None:
    """What an adaptation experiment needs of a config."""
    check_grid(config, "contender")
    adapt = config.adapt
    if not adapt.representations and not adapt.references:
        raise ConfigError(
            "kind=adapt needs something to compare: set adapt.representations (e.g. "
            '["layer","groups:8@int8"]) or adapt.references'
        )
    if not adapt.examples_per_class or not adapt.steps:
        raise ConfigError("kind=adapt needs adapt.examples_per_class and adapt.steps")


@register_recipe("adapt", check=check_adapt, report=adapt_table)
def run_adapt(config: ExperimentConfig, ctx: RunContext) -> RunResult:
    """Quick adaptation: unseen-task accuracy against examples per class and optimiser steps.

    With a run folder, ``config.json`` first, then ``adapt.csv``, ``adapt_examples.png``,
    ``adapt_steps.png`` and ``metrics.json`` (the folder locked meanwhile). Under several
    processes the (contender, task) pairs are dealt among them; every process learns the
    impressions."""
    group = ctx.runtime
    stream = build_stream(config, ctx.data_root, group.alone(), progress=ctx.shows_progress)
    tasks = unseen_tasks(config.adapt.eval_tasks, "adapt", stream.method, stream.num_tasks)
    total = config.train.num_steps(len(stream.scenario.train_data(tasks[0])))
    beyond = [s for s in config.adapt.steps if s > total]
    if beyond:
        raise ConfigError(
            f"adapt.steps {beyond} lie beyond the {total} steps the train section gives a task: "
            "drop them, or train longer (train.iterations)"
        )
    if ctx.out_dir is None:
        return RunResult(config, _adapt(stream, group, tasks, total, None))
    with started_folder(group, ctx.out_dir, config, overwrite=ctx.overwrite) as out:
        return RunResult(config, _adapt(stream, group, tasks, total, out), out)


def examples_of(labels: Tensor, k: int, keys: tuple[int, ...]) -> Tensor:
    """Rows of ``k`` examples of every class of ``labels`` (all rows for ``k`` = 0), drawn by a
    generator seeded with ``keys``: the first ``k`` of each class in one seeded order, so the
    draws for growing ``k`` are nested. Sorted; a ConfigError if a class has fewer than ``k``."""
    if k == FULL:
        return torch.arange(len(labels))
    labels = labels.cpu()
    order = torch.randperm(len(labels), generator=generator(*keys))
    rows = []
    for c in torch.unique(labels).tolist():
        of_class = order[labels[order] == c]
        if len(of_class) < k:
            raise ConfigError(
                f"adapt.examples_per_class={k} is more than the {len(of_class)} training "
                f"examples of class {c}: use at most {len(of_class)} (0 for all)"
            )
        rows.append(of_class[:k])
    return torch.cat(rows).sort().values


def _take(data: TaskData, rows: Tensor) -> TaskData:
    """The examples ``rows`` of ``data``."""
    if len(rows) == len(data):
        return data
    return replace(data, x=data.x[rows.to(data.x.device)], y=data.y[rows.to(data.y.device)])


class Trial:
    """One contender learning one task from one draw of examples: :meth:`fit` trains it for
    ``total`` steps on the batches every contender gets, calling ``probe()`` after each of
    ``steps``; ``curve`` maps step -> accuracy."""

    def __init__(
        self, stream: Stream, data: TaskData, total: int, steps: tuple[int, ...], gen_keys
    ):
        self.stream, self.data, self.total = stream, data, total
        self.steps = {s for s in steps if s < total}  # the last is evaluated as stored
        self.gen_keys = gen_keys
        self.curve: dict[int, float] = {}

    def fit(
        self,
        params: list[nn.Parameter],
        loss: Callable[[Tensor, Tensor], Tensor],
        train: TrainConfig,
        probe: Callable[[], float],
        description: str,
        data: TaskData | None = None,
    ) -> None:
        """Train ``params`` on the trial's examples (or ``data``, the same examples in
        another form, e.g. features), probing along the way."""

        def on_step(done: int) -> None:
            if done in self.steps:
                self.curve[done] = probe()

        fit(
            params,
            loss,
            self.data if data is None else data,
            train,
            generator(*self.gen_keys),
            progress=self.stream.progress,
            description=description,
            runtime=self.stream.runtime,
            on_step=on_step,
            steps=self.total,
        )


def _probe(stream: Stream, test: TaskData) -> float:
    """Accuracy of the model as it trains: batch-norm statistics learned so far, frozen aside."""
    freeze_norm_stats(stream.model, PROBE_KEY)
    with norm_stats(stream.model, PROBE_KEY):
        return stream.accuracy(test)


def _combination(stream: Stream, spec: str, t: int, trial: Trial) -> tuple[float, int]:
    """Coefficients in representation ``spec``: final accuracy as stored, and bytes per task."""
    config = stream.config
    method = ImpressLearn(
        stream.model, replace(config.method, dedicated_masks=False, **parse_representation(spec))
    )
    grid = replace(stream, method=method)
    test = stream.scenario.test_data(t)
    method.begin_task(t)
    with method.training_context():
        trial.fit(
            method.trainable_parameters(),
            grid.loss,
            config.train,
            lambda: _probe(stream, test),
            f"{spec}: task {t}",
        )
    method.end_task(t)
    with method.task_context(t):
        final = grid.accuracy(test)
    drop_norm_stats(stream.model, t)
    return final, method.bytes_per_task()["coeffs"] + norm_stats_bytes(stream.model)


def _dedicated_mask(stream: Stream, t: int, trial: Trial) -> tuple[float, int]:
    """A SupSup mask of task ``t`` alone, trained as the impressions are (their optimiser)."""
    method, test = stream.method, stream.scenario.test_data(t)
    train = replace(method.config.impression_train(), batch_size=stream.config.train.batch_size)

    def trainer(params, task_id, _train, description) -> None:
        trial.fit(params, _cross_entropy(stream), train, lambda: _probe(stream, test), description)

    mask = method.learn_mask(
        trainer, t, DEDICATED_SEED_KEY + t, DEDICATED_KEY, f"dedicated mask: task {t}"
    )
    n = method.n
    with extra_masks(stream.model, [mask]):
        with use_task(stream.model, one_hot(n, n + 1, method.device), DEDICATED_KEY):
            final = stream.accuracy(test)
    drop_norm_stats(stream.model, DEDICATED_KEY)
    return final, method.mask_bytes() + norm_stats_bytes(stream.model)


def _cross_entropy(stream: Stream) -> Callable[[Tensor, Tensor], Tensor]:
    def loss(x: Tensor, y: Tensor) -> Tensor:
        with stream.runtime.autocast():
            return F.cross_entropy(stream.model(x).float(), y)

    return loss


@torch.no_grad()
def backbone_features(stream: Stream, data: TaskData) -> Tensor:
    """What the frozen random backbone, all of its weights kept (no mask), gives its classifier
    layer for every example of ``data``, float32 ``(N, D)``. Batch norms (if any) normalise
    each evaluation batch with its own statistics: the backbone learns nothing."""
    model, layers = stream.model, masked_layers(stream.model)
    captured: list[Tensor] = []
    hook = layers[-1].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    dense = [torch.ones(layer.weight.shape, dtype=torch.bool) for layer in layers]
    n = layers[0].num_masks
    try:
        with (
            extra_masks(model, [dense]),
            use_coeffs(model, one_hot(n, n + 1, stream.method.device)),
        ):
            with stream.runtime.autocast():
                for x, _ in data.batches(stream.config.eval.batch_size):
                    model(x)
    finally:
        hook.remove()
    return torch.cat([c.flatten(1).float() for c in captured])


def _linear_head(
    stream: Stream, features: tuple[Tensor, Tensor], rows: Tensor, t: int, trial: Trial
) -> tuple[float, int]:
    """A linear classifier on the backbone's features, standardised with the training examples'
    mean and deviation, starting at zero (so without a random draw)."""
    train_x, test_x = features
    test = stream.scenario.test_data(t)
    x = train_x[rows.to(train_x.device)]
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    head = nn.Linear(x.shape[1], stream.num_classes).to(x.device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    examples = TaskData((x - mean) / std, trial.data.labels(slice(None)).to(x.device))
    test_data = TaskData((test_x - mean) / std, test.y.to(x.device))
    batch, classes = stream.config.eval.batch_size, stream.num_classes

    def probe() -> float:
        return accuracy(head, test_data, batch, classes)

    def loss(inputs: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(head(inputs), labels)

    train = stream.config.train
    trial.fit(list(head.parameters()), loss, train, probe, f"linear head: task {t}", examples)
    return probe(), 4 * (head.weight.numel() + head.bias.numel()) + 8 * x.shape[1]


def _contender_rows(
    stream: Stream, contender: str, t: int, total: int
) -> tuple[int, list[dict[str, Any]]]:
    """Every draw and examples count of one contender on task ``t``: bytes per task, rows."""
    config, adapt = stream.config, stream.config.adapt
    data = stream.scenario.train_data(t)
    features = None
    if contender == LINEAR_HEAD:
        features = (
            backbone_features(stream, data),
            backbone_features(stream, stream.scenario.test_data(t)),
        )
    rows, size = [], 0
    for repeat in range(adapt.repeats):
        for k in adapt.examples_per_class:
            picked = examples_of(
                data.labels(slice(None)), k, (config.train.seed, PURPOSE_SUBSET, t, repeat)
            )
            gen_keys = (config.train.seed, PURPOSE_BATCHES, t)  # a run's own batches ...
            if k != FULL or repeat:  # ... for the whole set's first draw, other orders else
                gen_keys += (2, repeat, k)
            trial = Trial(stream, _take(data, picked), total, adapt.steps, gen_keys)
            if contender == DEDICATED_MASK:
                final, size = _dedicated_mask(stream, t, trial)
            elif contender == LINEAR_HEAD:
                final, size = _linear_head(stream, features, picked, t, trial)
            else:
                final, size = _combination(stream, contender, t, trial)
            drop_norm_stats(stream.model, PROBE_KEY)
            trial.curve[total] = final
            log.info(
                "%s, task %d, k=%s, repeat %d: %.2f%%",
                contender,
                t,
                k or "all",
                repeat,
                100 * final,
            )
            rows += [
                {
                    "contender": contender,
                    "task_id": t,
                    "examples_per_class": k,
                    "examples": len(picked),
                    "repeat": repeat,
                    "step": step,
                    "accuracy": acc,
                }
                for step, acc in sorted(trial.curve.items())
            ]
    return size, rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values))


def summarise(
    rows: list[dict[str, Any]], contenders: list[str], ks: tuple[int, ...], total: int
) -> dict:
    """Per contender: mean accuracy over the tasks, then mean and standard deviation over the
    repeats, at the last step for every ``k`` (``by_examples``) and along the steps with the
    largest ``k`` (``by_steps``); and the fewest examples per class and steps that reach 90% of
    the contender's own accuracy with the largest ``k`` at the last step."""
    full = FULL if FULL in ks else max(ks)

    def curve(contender, k, step) -> tuple[float, float]:
        by_repeat: dict[int, list[float]] = {}
        for r in rows:
            if r["contender"] == contender and r["examples_per_class"] == k and r["step"] == step:
                by_repeat.setdefault(r["repeat"], []).append(r["accuracy"])
        return _mean_std([float(np.mean(v)) for v in by_repeat.values()])

    out = {}
    for c in contenders:
        steps = sorted({r["step"] for r in rows if r["contender"] == c})
        by_examples = {str(k): curve(c, k, total) for k in ks}
        by_steps = {str(s): curve(c, full, s) for s in steps}
        target = 0.9 * by_examples[str(full)][0]
        order = sorted(ks, key=lambda k: (k == FULL, k))
        out[c] = {
            "by_examples": by_examples,
            "by_steps": by_steps,
            "full_data_accuracy": by_examples[str(full)][0],
            "examples_per_class_to_90pct": next(
                (k for k in order if by_examples[str(k)][0] >= target), None
            ),
            "steps_to_90pct": next((s for s in steps if by_steps[str(s)][0] >= target), None),
        }
    return out


def _adapt(
    stream: Stream, group: Runtime, tasks: list[int], total: int, out_dir: Path | None
) -> dict[str, Any]:
    config, adapt, method = stream.config, stream.config.adapt, stream.method
    start = time.perf_counter()
    method.prepare(stream.mask_trainer, stream.num_tasks)  # the impressions, once
    prepared = time.perf_counter() - start
    contenders = [*adapt.representations, *adapt.references]
    jobs = [(c, t) for c in contenders for t in tasks]
    dealt = group.deal(jobs, lambda job: _contender_rows(stream, job[0], job[1], total))
    rows = [row for _, job_rows in dealt.values() for row in job_rows]
    sizes = {c: dealt[(c, tasks[0])][0] for c in contenders}
    train_examples = len(stream.scenario.train_data(tasks[0]))
    metrics = {
        **grid_header(config, method),
        "eval_tasks": tasks,
        "steps": total,
        "examples_per_class": list(adapt.examples_per_class),
        "all_examples_per_class": train_examples / stream.num_classes,
        "repeats": adapt.repeats,
        "bytes_per_task": sizes,
        "contenders": summarise(rows, contenders, adapt.examples_per_class, total),
        "rows": rows,
        "seconds_impressions": prepared,
        "seconds": time.perf_counter() - start,
        **group.describe(),
    }
    if out_dir is not None and group.is_writer:
        _write(Path(out_dir), metrics)
    return metrics


def _write(out_dir: Path, metrics: dict[str, Any]) -> None:
    lines = ["contender,bytes_per_task,task_id,examples_per_class,examples,repeat,step,accuracy"]
    lines += [
        f"{r['contender']},{metrics['bytes_per_task'][r['contender']]},{r['task_id']},"
        f"{r['examples_per_class'] or 'all'},{r['examples']},{r['repeat']},{r['step']},"
        f"{r['accuracy']:.6f}"
        for r in metrics["rows"]
    ]
    atomic_write_text(out_dir / "adapt.csv", "\n".join(lines) + "\n")
    summary = metrics["contenders"]
    every = metrics["all_examples_per_class"]
    title = (
        f"{metrics['preset']}: {len(metrics['eval_tasks'])} unseen tasks, "
        f"{metrics['repeats']} draws"
    )

    def series(key: str, x_of: Callable[[str], float]) -> dict[str, tuple[list, list, list]]:
        out = {}
        for name, s in summary.items():
            label = f"{name} ({metrics['bytes_per_task'][name]:,} B)"
            points = sorted((x_of(x), m, sd) for x, (m, sd) in s[key].items())
            out[label] = tuple(list(v) for v in zip(*points, strict=True))
        return out

    plot_adapt(
        series("by_examples", lambda k: float(k) or every),
        out_dir / "adapt_examples.png",
        f"{title}, after {metrics['steps']} steps",
        "labelled examples per class",
        {every: "all"},
    )
    plot_adapt(
        series("by_steps", float),
        out_dir / "adapt_steps.png",
        f"{title}, every example",
        "optimiser steps",
    )
    write_checked_json(out_dir / "metrics.json", metrics)
