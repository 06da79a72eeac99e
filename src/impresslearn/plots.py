"""Pictures of results (matplotlib, headless). Never imports torch."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from impresslearn.storage import atomic_write_bytes  # noqa: E402


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def plot_accuracy_matrix(matrix: np.ndarray, path: Path, title: str = "") -> None:
    """Heat map of ``R[i, j]`` (rows: after training task i; columns: task j), written as PNG."""
    r = np.asarray(matrix, dtype=float)
    t = r.shape[0]
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
    _save(fig, path)
