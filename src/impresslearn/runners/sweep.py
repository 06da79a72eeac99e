"""The ``sweep`` recipe, ImpressLearn's main figure: accuracy on unseen tasks vs the number and kind of impressions.

Bhardwaj et al. (arXiv 2210.01987), main figure: for ``n`` in a list and each impression kind
(heterogeneous = SupSup masks of the first ``n`` tasks, homogeneous = ``n`` masks of task 0 with
different seeds, random = ``n`` random masks), learn per-layer alphas (or the coefficients of each
of ``sweep.representations``) on a fixed set of evaluation tasks that are never impressions, and
report their mean accuracy. Reference lines: a dedicated
SupSup mask per evaluation task, and the paper's sanity check, one heterogeneous impression (task
0's mask) applied unchanged.

All masks are learned once and shared across the grid: the impressions for ``n`` are the first
``n`` of the ``max(n)`` learned for each kind, exactly what :class:`ImpressLearn` would learn for
that ``n`` (same seeds).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from impresslearn.backbones import build_backbone
from impresslearn.config import ExperimentConfig
from impresslearn.errors import ConfigError
from impresslearn.layers import (
    drop_norm_stats,
    extra_masks,
    norm_stats,
    one_hot,
    task_norms,
    use_coeffs,
)
from impresslearn.methods import ImpressLearn
from impresslearn.methods.coeffs import parse_representation
from impresslearn.methods.impress import DEDICATED_KEY, impression_key
from impresslearn.metrics import (
    DEDICATED,
    DEDICATED_UNSEEN,
    SINGLE_IMPRESSION_UNSEEN,
)
from impresslearn.plots import plot_sweep
from impresslearn.report import sweep_table
from impresslearn.runners.context import RunContext
from impresslearn.runners.folder import started_folder
from impresslearn.runners.grids import check_grid, grid_header
from impresslearn.runners.recipes import RunResult, register_recipe
from impresslearn.runners.stream import Stream, build_stream
from impresslearn.runtime import Runtime
from impresslearn.storage import (
    atomic_write_text,
    write_checked_json,
)

log = logging.getLogger(__name__)

Masks = list[torch.Tensor]  # one bool mask per masked layer


def check_sweep(config: ExperimentConfig) -> None:
    """What a sweep needs of a config."""
    check_grid(config, "grid point")
    if not config.sweep.num_impressions:
        raise ConfigError(
            "kind=sweep needs the grid: set sweep.num_impressions, e.g. [1,2,5,10,20]"
        )


@register_recipe("sweep", check=check_sweep, report=sweep_table)
def run_sweep(config: ExperimentConfig, ctx: RunContext) -> RunResult:
    """ImpressLearn's sweep: unseen-task accuracy against the number and kind of impressions.

    With a run folder, ``config.json`` first, then ``sweep.csv``, ``sweep.png`` and
    ``metrics.json`` (the folder locked meanwhile). Under several processes the masks and grid
    points are dealt among them."""
    group = ctx.runtime  # the processes the sweep's pieces are dealt to
    stream = build_stream(config, ctx.data_root, group.alone(), progress=ctx.shows_progress)
    eval_tasks = config.sweep.resolved_eval_tasks(stream.num_tasks)
    if ctx.out_dir is None:
        return RunResult(config, _sweep(stream, group, eval_tasks, None))
    with started_folder(group, ctx.out_dir, config, overwrite=ctx.overwrite) as out:
        return RunResult(config, _sweep(stream, group, eval_tasks, out), out)


def _impressions(
    stream: Stream, group: Runtime, kinds: tuple[str, ...], max_n: int
) -> dict[str, list[Masks]]:
    """The ``max_n`` impressions of every kind, learned (or drawn) once by the method's own code:
    the first ``n`` of them are exactly what :class:`ImpressLearn` uses for ``n``. A mask shared
    by two kinds (task 0's, seed key 0: heterogeneous and homogeneous) is learned once."""
    methods = {
        kind: ImpressLearn(
            stream.model,
            replace(
                stream.config.method,
                num_impressions=max_n,
                impression_kind=kind,
                impression_tasks=None,
            ),
        )
        for kind in kinds
    }
    jobs = list(dict.fromkeys(job for m in methods.values() for job in m.impression_jobs()))
    any_method = next(iter(methods.values()))

    def learn(job: tuple[int, int]) -> Masks:
        task_id, seed_key = job
        return any_method.learn_mask(
            stream.mask_trainer,
            task_id,
            seed_key,
            impression_key(0),
            f"impression: task {task_id}, seed key {seed_key}",
        )

    learned = group.deal(jobs, learn)
    masks: dict[str, list[Masks]] = {}
    for kind, method in methods.items():
        if kind == "random":
            masks[kind] = method.random_impressions()
        else:
            masks[kind] = [learned[job] for job in method.impression_jobs()]
    return masks


def line_name(kind: str, spec: str | None) -> str:
    """A line of the sweep: the impression kind, and the representation when one is named."""
    return kind if spec is None else f"{kind} {spec}"


def homogeneous_gap(summary: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Per representation (``""``: the method's own), heterogeneous minus homogeneous accuracy
    at every ``n`` (points), and the smallest ``n`` from which homogeneous impressions stay
    within 1 point of heterogeneous ones (None: not within the grid)."""
    out = {}
    for line, by_n in summary.items():
        kind, _, spec = line.partition(" ")
        if kind != "heterogeneous" or line.replace(kind, "homogeneous", 1) not in summary:
            continue
        other = summary[line.replace(kind, "homogeneous", 1)]
        gaps = {n: 100 * (by_n[n] - other[n]) for n in sorted(by_n, key=int)}
        within = [n for n in gaps if all(gaps[m] <= 1.0 for m in gaps if int(m) >= int(n))]
        out[spec] = {"points": gaps, "within_1_point_from": int(within[0]) if within else None}
    return out


def _accuracy_of_mask(stream: Stream, mask: Masks, task_id: int, norm_key: str) -> float:
    """Accuracy on ``task_id`` of one mask alone (the stream's model has an empty bank), with
    the batch-norm statistics of ``norm_key`` (if the backbone has batch norm)."""
    with (
        extra_masks(stream.model, [mask]),
        use_coeffs(stream.model, one_hot(0, 1, stream.method.device)),
        norm_stats(stream.model, norm_key),
    ):
        return stream.accuracy(stream.scenario.test_data(task_id))


def _sweep(
    stream: Stream, group: Runtime, eval_tasks: tuple[int, ...], out_dir: Path | None
) -> dict[str, Any]:
    config, sweep = stream.config, stream.config.sweep
    max_n = max(sweep.num_impressions)
    start = time.perf_counter()
    masks = _impressions(stream, group, sweep.kinds, max_n)
    seconds_impressions = time.perf_counter() - start
    # One impression unchanged: task 0's mask (the first heterogeneous and homogeneous one),
    # with its own batch-norm statistics; not measured for backbones with batch norm, whose
    # impressions' statistics the sweep does not keep.
    first = next((masks[k][0] for k in ("heterogeneous", "homogeneous") if k in masks), None)
    if task_norms(stream.model):
        first = None

    # Reference lines: a dedicated SupSup mask per evaluation task; one impression unchanged.
    def reference(t: int) -> tuple[float, float | None]:
        mask = stream.method.learn_dedicated_mask(stream.mask_trainer, t)
        dedicated = _accuracy_of_mask(stream, mask, t, DEDICATED_KEY)
        drop_norm_stats(stream.model, DEDICATED_KEY)
        one = _accuracy_of_mask(stream, first, t, impression_key(0)) if first is not None else None
        return dedicated, one

    references = group.deal(list(eval_tasks), reference)
    dedicated = {t: references[t][0] for t in eval_tasks}
    single = {t: references[t][1] for t in eval_tasks if references[t][1] is not None}

    def grid_point(point: tuple[str, int, str | None]) -> list[dict[str, Any]]:
        kind, n, spec = point
        model = build_backbone(config.backbone, stream.scenario.input_shape, stream.num_classes)
        representation = parse_representation(spec) if spec else {}
        method = ImpressLearn(
            model.to(stream.runtime.device),
            replace(
                config.method,
                num_impressions=n,
                impression_kind=kind,
                impression_tasks=None,
                **representation,
            ),
        )
        method.prepare_with(masks[kind][:n])
        grid = Stream(config, stream.runtime, stream.scenario, model, method, stream.progress)
        rows = []
        for t in eval_tasks:
            grid.learn_task(t, config.train, f"{line_name(kind, spec)} n={n} task {t}")
            with method.task_context(t):
                acc = grid.accuracy(stream.scenario.test_data(t))
            rows.append(
                {
                    "kind": kind,
                    "representation": spec or "",
                    "num_impressions": n,
                    "task_id": t,
                    "accuracy": acc,
                }
            )
        log.info(
            "%s, n=%d: mean accuracy on %d unseen tasks %.2f%%",
            line_name(kind, spec),
            n,
            len(eval_tasks),
            100 * np.mean([r["accuracy"] for r in rows]),
        )
        return rows

    specs = sweep.representations or (None,)
    points = [
        (kind, n, spec) for spec in specs for kind in sweep.kinds for n in sweep.num_impressions
    ]
    rows = [row for point_rows in group.deal(points, grid_point).values() for row in point_rows]

    summary = {
        line_name(kind, spec): {
            str(n): float(
                np.mean(
                    [
                        r["accuracy"]
                        for r in rows
                        if r["kind"] == kind
                        and r["num_impressions"] == n
                        and r["representation"] == (spec or "")
                    ]
                )
            )
            for n in sweep.num_impressions
        }
        for spec in specs
        for kind in sweep.kinds
    }
    metrics = {
        **grid_header(config),
        "eval_tasks": list(eval_tasks),
        "mean_accuracy_unseen": summary,
        "heterogeneous_minus_homogeneous": homogeneous_gap(summary),
        DEDICATED_UNSEEN: float(np.mean(list(dedicated.values()))),
        SINGLE_IMPRESSION_UNSEEN: float(np.mean(list(single.values()))) if single else None,
        DEDICATED: {str(t): a for t, a in dedicated.items()},
        "rows": rows,
        "seconds_impressions": seconds_impressions,
        "seconds": time.perf_counter() - start,
        **group.describe(),
    }
    if out_dir is not None and group.is_writer:
        out_dir = Path(out_dir)
        lines = ["kind,representation,num_impressions,task_id,accuracy"]
        lines += [
            f"{r['kind']},{r['representation']},{r['num_impressions']},{r['task_id']},"
            f"{r['accuracy']:.6f}"
            for r in rows
        ]
        lines += [f"dedicated_supsup,,,{t},{a:.6f}" for t, a in dedicated.items()]
        lines += [f"single_impression,,1,{t},{a:.6f}" for t, a in single.items()]
        atomic_write_text(out_dir / "sweep.csv", "\n".join(lines) + "\n")
        plot_sweep(
            summary,
            metrics[DEDICATED_UNSEEN],
            metrics[SINGLE_IMPRESSION_UNSEEN],
            out_dir / "sweep.png",
            f"{config.name}: mean accuracy on {len(eval_tasks)} unseen tasks",
        )
        write_checked_json(out_dir / "metrics.json", metrics)
    return metrics
