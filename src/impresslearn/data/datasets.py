"""The data set registry: load any known data set by name.

:data:`DATASETS` maps a name to a loader; ``impresslearn list`` and the scenarios read it through
:func:`list_datasets` and :func:`load_dataset`. Every loader takes the data root and the
system-wide folders to search (so tests can point both at folders they control) and returns a
verified :class:`~impresslearn.data.image_data.ImageData`. A new data set is one
:func:`register_dataset` call (or ``@DATASETS.register("name")`` on its loader); see
docs/extending.md. Besides the registered names, ``folder:PATH[@SIZE]`` names any tree of class
folders (see :func:`~impresslearn.data.image_folder.load_image_folder`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from impresslearn.data.cifar import load_cifar100
from impresslearn.data.cifar_subset import load_cifar100_subset
from impresslearn.data.embedded import load_embedded_mnist
from impresslearn.data.idx_datasets import FASHION_MNIST, MNIST, load_idx_dataset
from impresslearn.data.image_data import ImageData
from impresslearn.data.image_files import index_image_tree
from impresslearn.data.image_folder import load_image_folder
from impresslearn.data.streaming import StreamedImageData, streamed_image_data
from impresslearn.errors import ConfigError, DataError
from impresslearn.registry import Registry

# ``loader(root, system_dirs)``: the data set, verified, from under the data root ``root`` (None:
# only the system-wide folders) and ``system_dirs`` (None: the data set's own default folders).
DatasetLoader = Callable[[Path | None, Sequence[Path] | None], ImageData]

DATASETS: Registry[DatasetLoader] = Registry("data set")

FOLDER_PREFIX = "folder:"


def register_dataset(name: str, loader: DatasetLoader | None = None):
    """Register ``loader`` as the data set ``name`` (``scenario.dataset=name``); without
    ``loader``, a decorator: ``@register_dataset("my_data") def load(root, system_dirs): ...``.

    Raises:
        ValueError: ``name`` is taken, or it starts with ``folder:`` (reserved for image folders).
    """
    if name.startswith(FOLDER_PREFIX):
        raise ValueError(f"data set names cannot start with {FOLDER_PREFIX!r}: {name!r}")
    if loader is None:
        return DATASETS.register(name)
    return DATASETS.register(name)(loader)


register_dataset("mnist", partial(load_idx_dataset, MNIST))
register_dataset("fashion_mnist", partial(load_idx_dataset, FASHION_MNIST))
register_dataset("mnist_embedded", load_embedded_mnist)
register_dataset("cifar100", load_cifar100)
register_dataset("cifar100_subset", load_cifar100_subset)

# Data sets that a complete data root need not hold: `impresslearn data check` reports them but
# does not fail for them unless they are named.
OPTIONAL_DATASETS = {
    "cifar100_subset": "a few CIFAR-100 classes in one file, written by "
    "scripts/export_gpu_data.py for a machine that cannot hold the full set",
}


def list_datasets() -> list[str]:
    """Return the names of the known data sets, sorted (without the ``folder:PATH`` form)."""
    return DATASETS.names()


def is_known_dataset(name: str) -> bool:
    """Whether ``name`` is one of :func:`list_datasets` or of the form ``folder:PATH[@SIZE]``."""
    return name in DATASETS or (name.startswith(FOLDER_PREFIX) and len(name) > len(FOLDER_PREFIX))


LOADINGS = ("auto", "memory", "stream")
MEMORY_LIMIT = 4 * 2**30  # auto: image folders decoding to more bytes than this are streamed


def load_dataset(
    name: str,
    root: Path | None,
    *,
    system_dirs: Sequence[Path] | None = None,
    loading: str = "auto",
) -> ImageData | StreamedImageData:
    """Load the data set ``name`` from under ``root`` and verify it.

    Args:
        name: one of :func:`list_datasets`, or ``folder:PATH`` for the tree of class folders at
            ``PATH`` (absolute, else relative to ``root`` when it exists there, else to the current
            folder), read with :func:`~impresslearn.data.image_folder.load_image_folder`'s
            defaults; ``folder:PATH@SIZE`` (a trailing ``@`` and digits) also resizes the images
            to ``SIZE`` x ``SIZE``, e.g. ``folder:/data/imagenet-subset@64``.
        root: the data root (see :func:`~impresslearn.data.roots.resolve_data_root`); None to
            search only the system-wide folders. Ignored by ``mnist_embedded``.
        system_dirs: system-wide folders searched after ``root``; None for each data set's
            default (``/usr/share/datasets/fashion-mnist`` for Fashion-MNIST, none for MNIST).
        loading: for ``folder:PATH@SIZE``, ``memory`` decodes every image once into memory,
            ``stream`` indexes the files and decodes batches as they are needed
            (:class:`~impresslearn.data.streaming.StreamedImageData`), ``auto`` streams a tree
            whose images would decode to more than :data:`MEMORY_LIMIT` bytes at ``SIZE``.
            Other data sets are always in memory.

    Raises:
        ConfigError: ``name`` is not a known data set (the message lists the known ones).
        DataError: the data set is missing or corrupt (the message names the paths).
    """
    root = None if root is None else Path(root)
    if loading not in LOADINGS:
        raise ConfigError(f"scenario.loading={loading!r}: use one of {', '.join(LOADINGS)}")
    if name.startswith(FOLDER_PREFIX):
        path_text, image_size = _parse_folder_name(name)
        path = _resolve_folder(path_text, root)
        if loading == "stream" and image_size is None:
            raise ConfigError(
                f"streaming {name!r} needs the size images are cropped to: write {name}@SIZE "
                "(e.g. @224)"
            )
        index = None
        if image_size is not None and loading != "memory":
            index = index_image_tree(path)
            decoded = index.num_images * image_size * image_size * 3
            if loading == "stream" or decoded > MEMORY_LIMIT:
                return streamed_image_data(index, name, image_size)
        data = load_image_folder(path, image_size=image_size, index=index)
        return replace(data, name=name)
    if loading == "stream":
        raise ConfigError(
            f"scenario.loading=stream reads image folders (folder:PATH@SIZE); {name!r} is held "
            "in memory: remove the setting"
        )
    if name not in DATASETS:
        raise ConfigError(
            f"unknown data set {name!r}; known: {', '.join(list_datasets())}, or "
            "folder:PATH[@SIZE] for a tree of class folders PATH/<class>/<images> (resized to "
            "SIZE x SIZE when given)"
        )
    return DATASETS.get(name)(root, system_dirs)


def _parse_folder_name(name: str) -> tuple[str, int | None]:
    text = name[len(FOLDER_PREFIX) :]
    head, at, tail = text.rpartition("@")
    image_size = None
    if at and tail.isascii() and tail.isdigit():
        text, image_size = head, int(tail)
        if image_size == 0:
            raise ConfigError(f"data set {name!r}: the image size after '@' must be positive")
    if not text:
        raise ConfigError(f"data set {name!r} names no folder: write folder:PATH[@SIZE]")
    return text, image_size


def _resolve_folder(path_text: str, root: Path | None) -> Path:
    path = Path(path_text).expanduser()
    if path.is_absolute():
        return path
    candidates = ([root / path] if root is not None else []) + [Path.cwd() / path]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    looked = "; ".join(str(c) for c in candidates)
    raise DataError(
        f"image folder {path_text!r} not found: looked in {looked}; give an absolute path or one "
        "relative to the data root or the current folder"
    )
