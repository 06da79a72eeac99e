"""The ImpressLearn sweep: accuracy on unseen tasks vs the number and kind of impressions.

Bhardwaj et al. (arXiv 2210.01987), main figure: for ``n`` in a list and each impression kind
(heterogeneous = SupSup masks of the first ``n`` tasks, homogeneous = ``n`` masks of task 0 with
different seeds, random = ``n`` random masks), learn per-layer alphas on a fixed set of evaluation
tasks that are never impressions, and report their mean accuracy. Reference lines: a dedicated
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
import torch.nn.functional as F

from impresslearn.backbones import build_backbone
from impresslearn.config import ExperimentConfig, SweepConfig
from impresslearn.data import load_dataset
from impresslearn.errors import ConfigError
from impresslearn.layers import masked_layers, one_hot, task_norms, use_coeffs
from impresslearn.methods import ImpressLearn, ImpressLearnConfig
from impresslearn.methods.impress import random_masks
from impresslearn.plots import plot_sweep
from impresslearn.scenarios import build_scenario
from impresslearn.seeding import PURPOSE_BATCHES, generator
from impresslearn.storage import atomic_write_json, atomic_write_text
from impresslearn.train import accuracy, fit

log = logging.getLogger(__name__)


def run_sweep(
    config: ExperimentConfig,
    data_root: Path | None,
    out_dir: Path | None,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the sweep of ``config.sweep``; write ``sweep.csv``, ``sweep.png`` and ``metrics.json``."""
    sweep: SweepConfig = config.sweep
    method_cfg = config.method
    if not isinstance(method_cfg, ImpressLearnConfig):
        raise ConfigError("a sweep needs method.name=impresslearn")
    data = load_dataset(config.scenario.dataset, data_root)
    scenario = build_scenario(config.scenario, data)
    eval_tasks = sweep.resolved_eval_tasks(scenario.num_tasks)
    num_classes, max_n = scenario.num_classes, max(sweep.num_impressions)
    start = time.perf_counter()

    if task_norms(build_backbone(config.backbone, scenario.input_shape, num_classes)):
        raise ConfigError(
            f"sweeps support backbones without batch norm (per-task statistics are not tracked "
            f"through a sweep); {config.backbone.name!r} has it: run impress-split-cifar100 "
            "with --set method.num_impressions=N instead"
        )

    def new_model(stored: list[list[torch.Tensor]] = ()):
        """A fresh backbone whose banks hold ``stored`` (masks, each a list of per-layer masks)."""
        model = build_backbone(config.backbone, scenario.input_shape, num_classes)
        for per_layer in stored:
            for layer, mask in zip(masked_layers(model), per_layer, strict=True):
                layer.add_to_bank(mask)
        return model

    def learn_mask(model, task_id: int, seed_key: int, description: str) -> list[torch.Tensor]:
        method = ImpressLearn(model, method_cfg)
        method.begin_scores(seed_key)
        fit(
            method.scores(),
            lambda x, y: F.cross_entropy(model(x), y),
            scenario.train_data(task_id),
            method_cfg.impression_train(),
            generator(config.train.seed, PURPOSE_BATCHES, task_id, 1),
            progress=progress,
            description=description,
        )
        return [layer.end_scores() for layer in masked_layers(model)]

    scratch = new_model()
    masks: dict[str, list[list[torch.Tensor]]] = {}  # kind -> impression i -> per-layer mask
    if "heterogeneous" in sweep.kinds or "homogeneous" in sweep.kinds:
        masks["heterogeneous"] = [
            learn_mask(scratch, t, t, f"impression task {t}") for t in range(max_n)
        ]
    if "homogeneous" in sweep.kinds:
        masks["homogeneous"] = [masks["heterogeneous"][0]] + [
            learn_mask(scratch, 0, i, f"homogeneous impression {i}") for i in range(1, max_n)
        ]
    if "random" in sweep.kinds:
        layers = masked_layers(scratch)
        per_layer = [
            random_masks(
                tuple(layer.weight.shape),
                method_cfg.rule().for_shape(tuple(layer.weight.shape)),
                max_n,
                method_cfg.seed,
                layer.layer_index,
            )
            for layer in layers
        ]
        masks["random"] = [[m[i] for m in per_layer] for i in range(max_n)]

    # Reference lines: a dedicated SupSup mask per evaluation task; one impression unchanged.
    dedicated, single = {}, {}
    for t in eval_tasks:
        model = new_model([learn_mask(scratch, t, 10_000 + t, f"dedicated mask task {t}")])
        with use_coeffs(model, one_hot(0, 1)):
            dedicated[t] = accuracy(
                model, scenario.test_data(t), config.eval.batch_size, num_classes
            )
        if "heterogeneous" in masks:
            model = new_model([masks["heterogeneous"][0]])
            with use_coeffs(model, one_hot(0, 1)):
                single[t] = accuracy(
                    model, scenario.test_data(t), config.eval.batch_size, num_classes
                )

    rows: list[dict[str, Any]] = []
    for kind in sweep.kinds:
        for n in sweep.num_impressions:
            model = new_model(masks[kind][:n])
            method = ImpressLearn(
                model,
                replace(method_cfg, num_impressions=n, impression_kind=kind, impression_tasks=None),
            )
            for t in eval_tasks:
                method.begin_task(t)
                with method.training_context():
                    fit(
                        method.trainable_parameters(),
                        lambda x, y, m=method, mo=model: (
                            F.cross_entropy(mo(x), y) + m.loss_regulariser()
                        ),
                        scenario.train_data(t),
                        config.train,
                        generator(config.train.seed, PURPOSE_BATCHES, t),
                        progress=progress,
                        description=f"{kind} n={n} task {t}",
                    )
                method.end_task(t)
                with method.task_context(t):
                    acc = accuracy(
                        model, scenario.test_data(t), config.eval.batch_size, num_classes
                    )
                rows.append({"kind": kind, "num_impressions": n, "task_id": t, "accuracy": acc})
            mean = np.mean(
                [r["accuracy"] for r in rows if r["kind"] == kind and r["num_impressions"] == n]
            )
            log.info(
                "%s, n=%d: mean accuracy on %d unseen tasks %.2f%%",
                kind,
                n,
                len(eval_tasks),
                100 * mean,
            )

    summary = {
        kind: {
            str(n): float(
                np.mean(
                    [r["accuracy"] for r in rows if r["kind"] == kind and r["num_impressions"] == n]
                )
            )
            for n in sweep.num_impressions
        }
        for kind in sweep.kinds
    }
    metrics = {
        "preset": config.name,
        "kind": "impression-sweep",
        "scenario": config.scenario.name,
        "dataset": config.scenario.dataset,
        "backbone": config.backbone.name,
        "eval_tasks": list(eval_tasks),
        "mean_accuracy_unseen": summary,
        "dedicated_accuracy_unseen": float(np.mean(list(dedicated.values()))),
        "single_impression_accuracy_unseen": float(np.mean(list(single.values())))
        if single
        else None,
        "dedicated_accuracy": {str(t): a for t, a in dedicated.items()},
        "rows": rows,
        "seconds": time.perf_counter() - start,
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        lines = ["kind,num_impressions,task_id,accuracy"]
        lines += [
            f"{r['kind']},{r['num_impressions']},{r['task_id']},{r['accuracy']:.6f}" for r in rows
        ]
        lines += [f"dedicated_supsup,,{t},{a:.6f}" for t, a in dedicated.items()]
        lines += [f"single_impression,1,{t},{a:.6f}" for t, a in single.items()]
        atomic_write_text(out_dir / "sweep.csv", "\n".join(lines) + "\n")
        plot_sweep(
            summary,
            metrics["dedicated_accuracy_unseen"],
            metrics["single_impression_accuracy_unseen"],
            out_dir / "sweep.png",
            f"{config.name}: mean accuracy on {len(eval_tasks)} unseen tasks",
        )
        atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
