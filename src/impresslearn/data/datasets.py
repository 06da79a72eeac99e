"""The data set registry: load any known data set by name.

A tiny name -> loader dict; ``impresslearn list`` and the scenarios read it through
:func:`list_datasets` and :func:`load_dataset`. Every loader takes the data root and the
system-wide folders to search, so tests can point both at folders they control.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from impresslearn.data.embedded import load_embedded_mnist
from impresslearn.data.idx_datasets import FASHION_MNIST, MNIST, load_idx_dataset
from impresslearn.data.image_data import ImageData
from impresslearn.errors import ConfigError

DatasetLoader = Callable[[Path | None, Sequence[Path] | None], ImageData]

_DATASETS: dict[str, DatasetLoader] = {
    "mnist": partial(load_idx_dataset, MNIST),
    "fashion_mnist": partial(load_idx_dataset, FASHION_MNIST),
    "mnist_embedded": load_embedded_mnist,
}


def list_datasets() -> list[str]:
    """Return the names of the known data sets, sorted."""
    return sorted(_DATASETS)


def load_dataset(
    name: str, root: Path | None, *, system_dirs: Sequence[Path] | None = None
) -> ImageData:
    """Load the data set ``name`` from under ``root`` and verify it.

    Args:
        name: one of :func:`list_datasets`.
        root: the data root (see :func:`~impresslearn.data.roots.resolve_data_root`); None to
            search only the system-wide folders. Ignored by ``mnist_embedded``.
        system_dirs: system-wide folders searched after ``root``; None for each data set's
            default (``/usr/share/datasets/fashion-mnist`` for Fashion-MNIST, none for MNIST).

    Raises:
        ConfigError: ``name`` is not a known data set (the message lists the known ones).
        DataError: the data set is missing or corrupt (the message names the paths).
    """
    if name not in _DATASETS:
        raise ConfigError(f"unknown data set {name!r}; known: {', '.join(list_datasets())}")
    return _DATASETS[name](None if root is None else Path(root), system_dirs)
