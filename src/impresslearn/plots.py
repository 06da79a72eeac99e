"""Pictures of results (matplotlib, headless). Never imports torch."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from impresslearn.metrics import AccuracyMatrix, as_matrix  # noqa: E402
from impresslearn.storage import atomic_write_bytes  # noqa: E402


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _finish_lines(fig, ax, xlabel: str | None, ylabel: str, title: str, path: Path) -> None:
    """Labels, title, grid and legend of a line plot, then save it."""
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


HEATMAP_TASKS = 60  # beyond this a heat map is unreadable: plot the evaluations per task


def accuracy_figure(matrix: AccuracyMatrix, title: str = ""):
    """The accuracy matrix as a figure: a heat map of ``R[i, j]`` (rows: after training task
    i; columns: task j) up to :data:`HEATMAP_TASKS` tasks; for a longer stream, per task j its
    accuracy when learned (``R[j, j]``), at the end (``R[T-1, j]``) and at every evaluation in
    between (the sampled entries), which lie on one line when nothing is forgotten."""
    t = matrix.num_tasks
    if t > HEATMAP_TASKS:
        return _per_task_evaluations(matrix, title)
    r = matrix.dense()
    size = min(12.0, 3.0 + 0.35 * t)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    shown = np.ma.masked_invalid(r * 100)
    image = ax.imshow(shown, vmin=0, vmax=100, cmap="viridis", origin="upper")
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    ax.set_xlabel("evaluated task j")
    ax.set_ylabel("after training task i")
    ax.set_title(title or "accuracy matrix R[i, j]")
    if t <= 15:
        for i in range(t):
            for j in range(i + 1):
                if np.isnan(r[i, j]):
                    continue
                value = r[i, j] * 100
                ax.text(
                    j,
                    i,
                    f"{value:.1f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value < 60 else "black",
                )
    ticks = range(0, t, max(1, t // 12))
    ax.set_xticks(list(ticks))
    ax.set_yticks(list(ticks))
    return fig


def _per_task_evaluations(matrix: AccuracyMatrix, title: str):
    t = matrix.num_tasks
    rows, cols, vals = matrix.entries()
    between = (rows != cols) & (rows != t - 1)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    if between.any():
        ax.scatter(
            cols[between],
            100 * vals[between],
            s=4,
            color="tab:orange",
            alpha=0.5,
            label=f"evaluated later ({int(between.sum())} sampled entries)",
        )
    diagonal = np.array([matrix[j, j] for j in range(t)])
    ax.plot(np.arange(t), 100 * diagonal, lw=0.8, color="tab:blue", label="when learned R[j, j]")
    final = matrix.row(t - 1)
    if not np.isnan(final).all():
        ax.plot(np.arange(t), 100 * final, lw=0.8, ls="--", color="black", label="final R[T-1, j]")
    ax.set_xlabel("task j")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or f"accuracy per task ({t} tasks)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_accuracy_matrix(matrix: AccuracyMatrix | np.ndarray, path: Path, title: str = "") -> None:
    """:func:`accuracy_figure` of ``matrix`` (sparse or dense), written as PNG."""
    _save(accuracy_figure(as_matrix(matrix), title), path)


def plot_sweep(
    summary: dict[str, dict[str, float]],
    dedicated: float,
    single: float | None,
    path: Path,
    title: str,
) -> None:
    """Mean accuracy on unseen tasks vs number of impressions, one line per impression kind, with
    the dedicated SupSup mask and a single unchanged impression as reference lines."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for kind, by_n in summary.items():
        ns = sorted(int(n) for n in by_n)
        ax.plot(ns, [100 * by_n[str(n)] for n in ns], marker="o", label=kind)
    ax.axhline(100 * dedicated, color="black", linestyle="--", label="dedicated SupSup mask")
    if single is not None:
        ax.axhline(100 * single, color="gray", linestyle=":", label="one impression, unchanged")
    ax.set_xscale("log")
    all_ns = sorted({int(n) for by_n in summary.values() for n in by_n})
    ax.set_xticks(all_ns)
    ax.set_xticklabels([str(n) for n in all_ns])
    _finish_lines(
        fig, ax, "number of impressions n", "mean accuracy on unseen tasks (%)", title, path
    )


def plot_adapt(
    series: dict[str, tuple[list[float], list[float], list[float]]],
    path: Path,
    title: str,
    xlabel: str,
    tick_labels: dict[float, str] | None = None,
) -> None:
    """Accuracy curves with error bars: per contender ``(xs, means, standard deviations)``, on
    a log x axis; ``tick_labels`` renames some x values (e.g. the whole training set: "all")."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for label, (xs, means, stds) in series.items():
        ax.errorbar(
            xs,
            [100 * m for m in means],
            yerr=[100 * s for s in stds],
            marker="o",
            capsize=3,
            label=label,
        )
    ax.set_xscale("log")
    xs = sorted({x for xs, _, _ in series.values() for x in xs})
    ax.set_xticks(xs)
    ax.set_xticklabels([(tick_labels or {}).get(x, f"{x:g}") for x in xs])
    ax.minorticks_off()
    _finish_lines(fig, ax, xlabel, "mean accuracy on unseen tasks (%)", title, path)


def plot_frontier(
    points: dict[str, tuple[int, float]],
    dedicated: tuple[int, float],
    single: float | None,
    path: Path,
    title: str,
) -> None:
    """Mean unseen-task accuracy vs bytes stored per task (log axis), one labelled point per
    coefficient representation, the dedicated SupSup mask as a point and one impression applied
    unchanged (which stores nothing) as a line, or in the legend when it lies far below."""
    fig, ax = plt.subplots(figsize=(8.0, 5.5))
    ordered = sorted(points.items(), key=lambda item: (item[1][0], item[1][1]))
    for i, (name, (size, acc)) in enumerate(ordered):
        ax.scatter(size, 100 * acc, color="tab:blue", zorder=3)
        ax.annotate(  # slanted, alternately above and below, so that neighbours stay legible
            name,
            (size, 100 * acc),
            textcoords="offset points",
            xytext=(3, 6) if i % 2 == 0 else (3, -8),
            va="bottom" if i % 2 == 0 else "top",
            rotation=30 if i % 2 == 0 else -30,
            fontsize=7,
        )
    if points:
        best = [ordered[0][1]]
        for _, (size, acc) in ordered[1:]:  # the frontier: more bytes only when more accurate
            if acc > best[-1][1]:
                best.append((size, acc))
        ax.plot(
            [b[0] for b in best],
            [100 * b[1] for b in best],
            color="tab:blue",
            alpha=0.5,
            label="ImpressLearn coefficients (frontier)",
        )
    ax.scatter(
        dedicated[0],
        100 * dedicated[1],
        marker="s",
        color="black",
        zorder=3,
        label=f"dedicated SupSup mask ({100 * dedicated[1]:.2f}%)",
    )
    accs = [100 * acc for _, acc in points.values()] + [100 * dedicated[1]]
    low, high = min(accs), max(accs)
    margin = max(1.0, 0.25 * (high - low))
    if single is not None:
        label = f"one impression, unchanged ({100 * single:.2f}%)"
        if 100 * single >= low - 4 * margin:
            ax.axhline(100 * single, color="gray", linestyle=":", label=label)
            low = min(low, 100 * single)
        else:  # far below the rest: named in the legend, off the axis
            ax.plot([], [], color="gray", linestyle=":", label=label + ", below the axis")
    ax.set_ylim(low - margin, high + 1.5 * margin)
    ax.set_xscale("log")
    _finish_lines(
        fig, ax, "bytes stored per task (log)", "mean accuracy on unseen tasks (%)", title, path
    )


def plot_comparison(runs: list[tuple[str, dict]], path: Path) -> None:
    """Bars of average accuracy, forgetting, bytes per task (log scale) and seconds per task,
    one per run."""
    names = [name for name, _ in runs]
    acc = [100 * m.get("average_accuracy", float("nan")) for _, m in runs]
    forgot = [100 * m.get("forgetting", float("nan")) for _, m in runs]
    size = [max(1, m.get("bytes_per_task", {}).get("total", 0)) for _, m in runs]
    secs = [m.get("seconds_per_task", float("nan")) for _, m in runs]
    fig, axes = plt.subplots(1, 4, figsize=(5 + 1.6 * len(runs) * 1.5, 4))
    for ax, values, label in zip(
        axes,
        (acc, forgot, size, secs),
        ("average accuracy (%)", "forgetting (points)", "bytes per task", "seconds per task"),
        strict=True,
    ):
        bars = ax.bar(range(len(values)), values, color="tab:blue")
        ax.bar_label(bars, fmt="%.4g", fontsize=7)
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_ylim(0, max(1.0, *(f for f in forgot if f == f)))  # zero forgetting shows as 0
    axes[2].set_yscale("log")
    fig.tight_layout()
    _save(fig, path)


def plot_per_task(
    task_names: list[str], series: dict[str, list[float | None]], path: Path, title: str
) -> None:
    """Final accuracy per task, one line per series (e.g. ImpressLearn's combination, a dedicated
    SupSup mask, one impression unchanged); ``None`` where a series has no value."""
    fig, ax = plt.subplots(figsize=(min(14.0, 4.0 + 0.3 * len(task_names)), 4.5))
    x = np.arange(len(task_names))
    named = len(task_names) <= HEATMAP_TASKS  # beyond, task names are unreadable: task numbers
    for label, values in series.items():
        y = np.array([np.nan if v is None else 100 * v for v in values], dtype=float)
        if named:
            ax.plot(x, y, marker="o", markersize=3, label=label)
        else:
            ax.plot(x, y, lw=0.6, label=label)
    if named:
        ax.set_xticks(x)
        ax.set_xticklabels(task_names, rotation=60, ha="right", fontsize=7)
    _finish_lines(fig, ax, None if named else "task", "final accuracy (%)", title, path)


def plot_seeds(series: dict[str, list[list[float]]], path: Path, title: str) -> None:
    """Per-task accuracy over repeats: each repeat faint, the mean bold with a ±1 std band.

    ``series`` maps a label (e.g. "task ids given", "task inferred") to one list of per-task
    accuracies per repeat; tasks are numbered, as their names may differ between seeds.
    """
    num_tasks = len(next(iter(series.values()))[0])
    fig, ax = plt.subplots(figsize=(min(14.0, 5.0 + 0.25 * num_tasks), 4.5))
    x = np.arange(num_tasks)
    for (label, runs), color in zip(series.items(), ("C0", "C1", "C2", "C3"), strict=False):
        y = 100 * np.asarray(runs, dtype=float)
        for row in y:
            ax.plot(x, row, color=color, alpha=0.25, linewidth=0.8)
        mean, std = y.mean(0), y.std(0, ddof=1) if len(y) > 1 else np.zeros(num_tasks)
        ax.plot(x, mean, color=color, marker="o", markersize=3, label=f"{label} (mean ± std)")
        band = np.clip(mean - std, 0, 100), np.clip(mean + std, 0, 100)
        ax.fill_between(x, *band, color=color, alpha=0.2)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    _finish_lines(fig, ax, "task", "final accuracy (%)", title, path)
