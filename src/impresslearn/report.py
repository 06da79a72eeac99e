"""Readable summaries of run metrics (plain text, no torch)."""

from __future__ import annotations

import textwrap
from typing import Any

from impresslearn.metrics import (
    DEDICATED,
    DEDICATED_UNSEEN,
    SINGLE_IMPRESSION,
    SINGLE_IMPRESSION_UNSEEN,
)


def _seconds(metrics: dict[str, Any]) -> str:
    text = f"{metrics['seconds_per_task']:.1f}"
    prepare = metrics.get("prepare_seconds", 0.0)
    if prepare >= 0.05 * metrics["seconds_per_task"] * metrics["num_tasks"]:
        text += (
            f" (the {prepare:.0f} s of preparation shared out; "
            f"{metrics['seconds_per_task_after_prepare']:.1f} each after it)"
        )
    return text


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def summary_table(metrics: dict[str, Any]) -> str:
    """A small table of a run's headline numbers and its final per-task accuracies."""
    b = metrics["bytes_per_task"]
    rows = [
        ("preset", metrics["preset"]),
        (
            "method / scenario",
            f"{metrics['method']} / {metrics['scenario']} ({metrics['dataset']})",
        ),
        ("backbone", metrics["backbone"]),
        ("tasks", str(metrics["num_tasks"])),
        ("average accuracy", f"{100 * metrics['average_accuracy']:.2f}%"),
        ("backward transfer", f"{100 * metrics['backward_transfer']:+.2f} points"),
        ("forgetting", f"{100 * metrics['forgetting']:.2f} points"),
        (
            "bytes per task",
            f"{_bytes(b['total'])} (mask {_bytes(b['mask'])}, coeffs {_bytes(b['coeffs'])}, "
            f"norm stats {_bytes(b['norm_stats'])}"
            + (f", trained weights {_bytes(b['weights'])})" if "weights" in b else ")"),
        ),
        ("seconds per task", _seconds(metrics)),
        ("peak memory", f"{metrics['peak_memory_mb']:.0f} MiB"),
    ]
    if "checkpoint_growth_per_task" in metrics:
        rows.insert(
            8,
            (
                "on disk per task",
                f"{_bytes(metrics['checkpoint_growth_per_task'])} (checkpoint growth)",
            ),
        )
    if "task_inference_accuracy" in metrics:
        rows.insert(
            5,
            (
                f"accuracy ({metrics['eval_scenario']})",
                f"{100 * metrics['average_accuracy_inferred']:.2f}% with the task inferred "
                f"(task inference {100 * metrics['task_inference_accuracy']:.2f}%)",
            ),
        )
    if "task_inference_margin_median" in metrics:
        rows.insert(6, ("one-shot margin", margin_text(metrics)))
    if "average_accuracy_fitted_alphas" in metrics:
        fitted = 100 * metrics["average_accuracy_fitted_alphas"]
        rows.insert(6, ("fitted alphas", f"{fitted:.2f}% (classifying with the alphas fitted)"))
    if metrics.get("average_accuracy_unseen") is not None:
        rows.insert(5, ("unseen-task accuracy", f"{100 * metrics['average_accuracy_unseen']:.2f}%"))
        if DEDICATED_UNSEEN in metrics:
            rows.insert(
                6,
                (
                    "dedicated masks",
                    f"{100 * metrics[f'{DEDICATED}_unseen']:.2f}% (same tasks)",
                ),
            )
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    finals = metrics["final_accuracies"]
    if len(finals) <= 12:
        lines.append(f"{'final accuracy':<{width}}  " + " ".join(f"{100 * a:.1f}" for a in finals))
    rule = "-" * max(len(line) for line in lines)
    return "\n".join([rule, *lines, rule])


def _count(n: float) -> str:
    return f"{n:,.0f} B"


def impressions_table(metrics: dict[str, Any]) -> str | None:
    """ImpressLearn's per-task comparison, side by side: for every task that is not an
    impression, the learned combination's accuracy, a dedicated SupSup mask's on the same task
    (``method.dedicated_masks``), one impression applied unchanged, and the bytes the task costs
    (its coefficients) against a SupSup mask; impression tasks use their own mask. None when the
    metrics hold no such comparison (runs of other methods, NNs runs)."""
    if "unseen_tasks" not in metrics or "impression_tasks" not in metrics:
        return None
    if metrics.get("eval_scenario") == "NNs":
        return None  # the slots of an NNs run are not the stream's tasks
    finals = metrics["final_accuracies"]
    names = metrics.get("task_names") or [f"task {t}" for t in range(len(finals))]
    impressions = list(metrics["impression_tasks"])
    unseen = list(metrics["unseen_tasks"])
    dedicated = metrics.get(DEDICATED, {})
    single = metrics.get(SINGLE_IMPRESSION, {})
    b = metrics["bytes_per_task"]
    mask = metrics.get("bytes_per_mask")
    supsup_task = None if mask is None else mask + b.get("norm_stats", 0)

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    head = (
        "task",
        "learned as",
        "accuracy",
        "dedicated mask",
        "one impression",
        "bytes per task",
    )
    rows = []
    for t in range(len(finals)):
        if t in impressions:
            kind = f"impression {impressions.index(t) + 1}/{len(impressions)}"
            cost = "(impression)"
            rows.append((names[t], kind, pct(finals[t]), "-", "-", cost))
        elif t in unseen:
            rows.append(
                (
                    names[t],
                    "combination",
                    pct(finals[t]),
                    pct(dedicated.get(str(t))),
                    pct(single.get(str(t))),
                    _count(b["total"]),
                )
            )
    if unseen:

        def mean(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return sum(known) / len(known) if known and len(known) == len(values) else None

        rows.append(
            (
                f"mean of the {len(unseen)} unseen",
                "combination",
                pct(metrics.get("average_accuracy_unseen")),
                pct(mean([dedicated.get(str(t)) for t in unseen])),
                pct(mean([single.get(str(t)) for t in unseen])),
                _count(b["total"]),
            )
        )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        left = [c.ljust(w) for c, w in zip(cells[:2], widths[:2], strict=True)]
        right = [c.rjust(w) for c, w in zip(cells[2:], widths[2:], strict=True)]
        return "  ".join(left + right)

    lines = [line(head), *(line(r) for r in rows)]
    width = max(len(x) for x in lines)
    notes = ["final accuracy per task, task ids given"]
    if supsup_task is not None:
        times = supsup_task / b["total"] if b["total"] else None
        ratio = "" if times is None else f" ({times:,.{1 if times < 10 else 0}f}x more)"
        notes.append(
            f"bytes per task: a combination {_count(b['total'])} (coeffs "
            f"{_count(b['coeffs'])}), a SupSup mask {_count(supsup_task)}{ratio}"
        )
    shared = metrics.get("shared_bytes", {}).get("impressions")
    if shared is not None:
        notes.append(f"the {len(impressions)} impressions: {_count(shared)}, stored once")
    notes.append(
        "dedicated mask: a SupSup mask learned on the task, only for comparison; "
        "one impression: impression 1 applied unchanged"
    )
    notes.append(f"forgetting: {100 * metrics['forgetting']:.2f} points")
    wrapped = [w for note in notes for w in textwrap.wrap(note, width, subsequent_indent="  ")]
    rule = "-" * max(len(x) for x in lines + wrapped)
    return "\n".join([rule, *lines, rule, *wrapped, rule])


def margin_text(metrics: dict[str, Any]) -> str:
    """The one-shot margins of a run (inference.oneshot_margin), in words."""
    return (
        f"median {metrics['task_inference_margin_median']:.2f}, 95% of inferences above "
        f"{metrics['task_inference_margin_p5']:.2f} (standard deviations of the other tasks)"
    )


def sweep_table(metrics: dict[str, Any]) -> str:
    """The sweep's mean accuracy on unseen tasks, one row per impression kind."""
    summary = metrics["mean_accuracy_unseen"]
    ns = sorted({int(n) for by_n in summary.values() for n in by_n})
    width = max(len("impressions"), *(len(line) for line in summary)) + 2
    header = f"{'impressions':<{width}}" + "".join(f"{'n=' + str(n):>9}" for n in ns)
    lines = [header]
    for line, by_n in summary.items():
        lines.append(f"{line:<{width}}" + "".join(f"{100 * by_n[str(n)]:8.2f}%" for n in ns))
    lines.append(f"dedicated SupSup mask: {100 * metrics[f'{DEDICATED}_unseen']:.2f}%")
    if metrics.get(SINGLE_IMPRESSION_UNSEEN) is not None:
        lines.append(
            f"one impression, unchanged: {100 * metrics[f'{SINGLE_IMPRESSION}_unseen']:.2f}%"
        )
    for spec, gap in (metrics.get("heterogeneous_minus_homogeneous") or {}).items():
        at = gap["within_1_point_from"]
        lines.append(
            f"homogeneous{' ' + spec if spec else ''}: "
            + (
                "not within 1 point of heterogeneous in this grid"
                if at is None
                else f"within 1 point of heterogeneous from n={at}"
            )
        )
    lines.append(f"unseen tasks: {metrics['eval_tasks']}")
    rule = "-" * max(len(line) for line in lines)
    return "\n".join([rule, *lines, rule])


def frontier_table(metrics: dict[str, Any]) -> str:
    """The frontier: per representation, bytes per task and mean accuracy on unseen tasks, with
    the dedicated SupSup mask and one impression unchanged, sorted by bytes."""
    rows = [
        (
            name,
            r["bytes_per_task"]["coeffs"],
            r["bytes_per_task"]["total"],
            r["mean_accuracy_unseen"],
        )
        for name, r in metrics["representations"].items()
    ]
    d = metrics["dedicated_bytes_per_task"]
    rows.append(("dedicated SupSup mask", d["mask"], d["total"], metrics[DEDICATED_UNSEEN]))
    if metrics.get(SINGLE_IMPRESSION_UNSEEN) is not None:
        rows.append(("one impression, unchanged", 0, 0, metrics[SINGLE_IMPRESSION_UNSEEN]))
    rows.sort(key=lambda r: r[2])
    width = max(len("representation"), *(len(r[0]) for r in rows))
    lines = [f"{'representation':<{width}}  {'coeffs B':>9}  {'total B':>9}  {'unseen acc':>10}"]
    lines += [f"{n:<{width}}  {c:>9}  {t:>9}  {100 * a:9.2f}%" for n, c, t, a in rows]
    lines.append(
        f"{metrics['num_impressions']} {metrics['impression_kind']} impressions; unseen tasks: "
        f"{metrics['eval_tasks']}"
    )
    rule = "-" * max(len(line) for line in lines)
    return "\n".join([rule, *lines, rule])


def adapt_table(metrics: dict[str, Any]) -> str:
    """Quick adaptation: per contender, bytes per task, accuracy at the last step for every
    number of examples per class, and what it takes to reach 90% of its full-data accuracy."""
    ks = metrics["examples_per_class"]
    names = list(metrics["contenders"])
    width = max(len("contender"), *(len(n) for n in names))
    heads = [f"k={k}" if k else "all" for k in ks]
    lines = [
        f"{'contender':<{width}}  {'bytes':>7}"
        + "".join(f"{h:>8}" for h in heads)
        + f"  {'k to 90%':>8}  {'steps to 90%':>12}"
    ]
    for name in names:
        c = metrics["contenders"][name]
        cells = "".join(f"{100 * c['by_examples'][str(k)][0]:7.2f}%" for k in ks)
        k90, s90 = c["examples_per_class_to_90pct"], c["steps_to_90pct"]
        lines.append(
            f"{name:<{width}}  {metrics['bytes_per_task'][name]:>7}{cells}"
            f"  {'all' if k90 == 0 else str(k90):>8}  {str(s90):>12}"
        )
    lines.append(
        f"accuracy after {metrics['steps']} steps, mean over unseen tasks {metrics['eval_tasks']} "
        f"and {metrics['repeats']} draws; {metrics['num_impressions']} "
        f"{metrics['impression_kind']} impressions"
    )
    rule = "-" * max(len(line) for line in lines)
    return "\n".join([rule, *lines, rule])


def _pct(value: Any) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def compare_table(runs: list[tuple[str, dict[str, Any]]]) -> str:
    """A markdown table comparing runs (name, metrics): accuracy (with task ids; with the task
    inferred, for GNs / GNu runs), forgetting, bytes (trained weights: WSN) and seconds per
    task."""
    header = (
        "| run | method | scenario | tasks | avg acc % | forgetting pts | unseen acc % "
        "| dedicated % | task inferred % | task inference % | bytes/task | mask B | coeffs B "
        "| norm B | weights B | s/task |"
    )
    lines = [header, "|" + "---|" * 16]
    for name, m in runs:
        b = m.get("bytes_per_task", {})
        lines.append(
            f"| {name} | {m.get('method', '')} | {m.get('scenario', '')} | {m.get('num_tasks', '')} "
            f"| {_pct(m.get('average_accuracy'))} | {_pct(m.get('forgetting'))} "
            f"| {_pct(m.get('average_accuracy_unseen'))} "
            f"| {_pct(m.get(f'{DEDICATED}_unseen'))} "
            f"| {_pct(m.get('average_accuracy_inferred'))} "
            f"| {_pct(m.get('task_inference_accuracy'))} | {b.get('total', '')} "
            f"| {b.get('mask', '')} | {b.get('coeffs', '')} | {b.get('norm_stats', '')} "
            f"| {b.get('weights', '')} | {m.get('seconds_per_task', 0):.1f} |"
        )
    return "\n".join(lines)


_SEEDS_ROWS = (
    ("average_accuracy", "average accuracy", "pct"),
    ("average_accuracy_unseen", "unseen-task accuracy", "pct"),
    (DEDICATED_UNSEEN, "dedicated masks (unseen)", "pct"),
    ("average_accuracy_inferred", "accuracy, task inferred", "pct"),
    ("task_inference_accuracy", "task inference", "pct"),
    ("backward_transfer", "backward transfer", "points"),
    ("forgetting", "forgetting", "points"),
    ("bytes_per_task", "bytes per task", "bytes"),
    ("seconds_per_task", "seconds per task", "seconds"),
)


def seeds_table(record: dict[str, Any]) -> str:
    """The repeats of a run over seeds (``seeds.json``): mean ± sample std, range, per seed."""
    summary = record["summary"]

    def fmt(value: float, kind: str) -> str:
        if kind in ("pct", "points"):
            return f"{100 * value:.2f}"
        if kind == "bytes":
            return _bytes(value)
        return f"{value:.1f}"

    rows = []
    for key, label, kind in _SEEDS_ROWS:
        if key not in summary:
            continue
        s = summary[key]
        unit = {"pct": " %", "points": " points"}.get(kind, "")
        rows.append(
            (
                label,
                f"{fmt(s['mean'], kind)} ± {fmt(s['std'], kind)}{unit}",
                f"{fmt(s['min'], kind)} .. {fmt(s['max'], kind)}",
                " ".join(fmt(v, kind) for v in s["values"]),
            )
        )
    head = ("metric", "mean ± std", "range", "per seed")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    lines = [
        f"{record['preset']}: {record['num_seeds']} repeats, every seed shifted by 0.."
        f"{record['num_seeds'] - 1} (std: sample standard deviation)",
        "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    rule = "-" * max(len(line) for line in lines)
    return "\n".join([rule, *lines, rule])
