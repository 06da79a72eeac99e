"""Readable summaries of run metrics (plain text, no torch)."""

from __future__ import annotations

from typing import Any


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
            f"norm stats {_bytes(b['norm_stats'])})",
        ),
        ("seconds per task", f"{metrics['seconds_per_task']:.1f}"),
        ("peak memory", f"{metrics['peak_memory_mb']:.0f} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    finals = metrics["final_accuracies"]
    if len(finals) <= 12:
        lines.append(f"{'final accuracy':<{width}}  " + " ".join(f"{100 * a:.1f}" for a in finals))
    rule = "-" * max(len(line) for line in lines)
    return "\n".join([rule, *lines, rule])
