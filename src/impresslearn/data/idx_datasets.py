"""MNIST and Fashion-MNIST from their four standard idx files, found and verified on disk.

Each data set is described by an :class:`IdxDatasetSpec`: the folders searched under the data root
(standard layouts, torchvision's ``MNIST/raw`` among them), system-wide folders (Debian's
``dataset-fashion-mnist`` installs into ``/usr/share/datasets/fashion-mnist``), and the published
MD5 of each *decompressed* file, so a file is accepted whatever gzip wrapper it came in. Nothing is
downloaded and nothing is faked: a missing or corrupt file is a :class:`DataError` naming the paths.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from impresslearn.data.idx import parse_idx, read_idx_bytes
from impresslearn.data.image_data import ImageData, ImageSplit
from impresslearn.errors import DataError

logger = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


@dataclass(frozen=True)
class IdxDatasetSpec:
    """Where to find one MNIST-format data set and how to recognise its files."""

    name: str  # registry name
    title: str  # the data set's own name, for messages
    subdirs: tuple[str, ...]  # searched under the data root, in order
    system_dirs: tuple[Path, ...]  # searched after the root (system-wide installs)
    md5: Mapping[str, str]  # decompressed file name -> published MD5
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    how_to_get: str  # appended to the "not found" message


MNIST = IdxDatasetSpec(
    name="mnist",
    title="MNIST",
    subdirs=("mnist", "MNIST/raw", "."),
    system_dirs=(),
    md5={
        TRAIN_IMAGES: "6bbc9ace898e44ae57da46a324031adb",
        TRAIN_LABELS: "a25bea736e30d166cdddb491f175f624",
        TEST_IMAGES: "2646ac647ad5339dbf082846283269ea",
        TEST_LABELS: "27ae3e4e09519cfbb04c329615203637",
    },
    num_classes=10,
    mean=MNIST_MEAN,
    std=MNIST_STD,
    how_to_get=(
        "run `impresslearn data fetch mnist`, or put the four MNIST idx files (.gz or "
        "uncompressed) in a folder mnist/ and point "
        "--data-root or IMPRESSLEARN_DATA at the folder holding it; the data set "
        "'mnist_embedded' needs no files"
    ),
)

FASHION_MNIST = IdxDatasetSpec(
    name="fashion_mnist",
    title="Fashion-MNIST",
    subdirs=("fashion-mnist", "FashionMNIST/raw", "fashion_mnist"),
    system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
    # The MD5s of the decompressed files of Zalando's release (Xiao et al., 2017); Debian's package
    # re-compresses them, so only these (not the .gz checksums Zalando publishes) identify them.
    md5={
        TRAIN_IMAGES: "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        TRAIN_LABELS: "9018921c3c673c538a1fc5bad174d6f9",
        TEST_IMAGES: "8181f5470baa50b63fa0f6fddb340f0a",
        TEST_LABELS: "15d484375f8d13e6eb1aabb0c3f46965",
    },
    num_classes=10,
    mean=(0.2860,),
    std=(0.3530,),
    how_to_get=(
        "install Debian's package with `apt-get install dataset-fashion-mnist` (it puts the files "
        "in /usr/share/datasets/fashion-mnist/), or run `impresslearn data fetch fashion_mnist`, "
        "or put the four Fashion-MNIST idx files in a "
        "folder fashion-mnist/ and point --data-root or IMPRESSLEARN_DATA at the folder holding it"
    ),
)


def find_idx_file(folder: Path, name: str) -> Path | None:
    """Return ``folder/name`` or ``folder/name.gz``, whichever exists (plain first), else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx_verified(path: Path, md5: str) -> np.ndarray:
    """Read an idx file and check the MD5 of its decompressed content against ``md5``.

    Raises:
        DataError: the file is unreadable or malformed, or its checksum does not match.
    """
    array, digest = _read_with_digest(path)
    _check_md5(path, digest, md5)
    return array


def load_idx_dataset(
    spec: IdxDatasetSpec, root: Path | None, system_dirs: Sequence[Path] | None = None
) -> ImageData:
    """Find, read and verify the four idx files of ``spec`` and return them as :class:`ImageData`.

    Looks in ``root/<subdir>`` for each of ``spec.subdirs`` (unless ``root`` is None), then in
    ``system_dirs`` (``spec.system_dirs`` when None), and takes the first folder holding all four
    files. Shapes and counts are checked before checksums, so a file of the wrong kind gets the
    more specific message.

    Raises:
        DataError: no folder holds the four files (the message lists every folder looked at and
            how to get the data), or a file is malformed or fails its checksum (the message names
            the file).
    """
    start = time.perf_counter()
    paths = _locate(spec, root, spec.system_dirs if system_dirs is None else tuple(system_dirs))
    arrays, digests = {}, {}
    for name in IDX_FILES:
        arrays[name], digests[name] = _read_with_digest(paths[name])
    train = _make_split(spec, paths, arrays, TRAIN_IMAGES, TRAIN_LABELS)
    test = _make_split(spec, paths, arrays, TEST_IMAGES, TEST_LABELS)
    for name in IDX_FILES:
        _check_md5(paths[name], digests[name], spec.md5[name], spec.title)
    logger.info(
        "%s: %d train / %d test images from %s, checksums verified (%.2f s)",
        spec.title,
        len(train),
        len(test),
        paths[TRAIN_IMAGES].parent,
        time.perf_counter() - start,
    )
    return ImageData(spec.name, train, test, spec.num_classes, spec.mean, spec.std)


def _locate(spec: IdxDatasetSpec, root: Path | None, system_dirs: tuple[Path, ...]) -> dict:
    folders = [root / sub for sub in spec.subdirs] if root is not None else []
    folders += [d for d in system_dirs if d not in folders]
    incomplete = []
    for folder in folders:
        found = {name: find_idx_file(folder, name) for name in IDX_FILES}
        if all(found.values()):
            return found
        if any(found.values()):
            missing = ", ".join(name for name, path in found.items() if path is None)
            incomplete.append(f"{folder} lacks {missing}")
    looked = "; ".join(f"{f}{'' if f.is_dir() else ' (does not exist)'}" for f in folders)
    names = ", ".join(f"{name}[.gz]" for name in IDX_FILES)
    message = f"{spec.title} not found: looked for {names} in: {looked or 'no folder'}."
    if incomplete:
        message += " Incomplete: " + "; ".join(incomplete) + "."
    raise DataError(f"{message} To get it: {spec.how_to_get}.")


def _read_with_digest(path: Path) -> tuple[np.ndarray, str]:
    raw = read_idx_bytes(path)
    return parse_idx(raw, path), hashlib.md5(raw, usedforsecurity=False).hexdigest()


def _check_md5(path: Path, digest: str, expected: str, title: str = "expected") -> None:
    if digest != expected:
        raise DataError(
            f"checksum mismatch for {path}: the MD5 of its decompressed content is {digest}, "
            f"the published one is {expected}; the file is corrupt or not the {title} file: "
            "replace it"
        )


def _make_split(
    spec: IdxDatasetSpec, paths: dict, arrays: dict, images_name: str, labels_name: str
) -> ImageSplit:
    images, labels = arrays[images_name], arrays[labels_name]
    images_path, labels_path = paths[images_name], paths[labels_name]
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(
            f"{images_path} should hold uint8 images of shape (N, rows, cols), "
            f"holds {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{labels_path} should hold uint8 labels of shape (N,), holds {labels.dtype} "
            f"{labels.shape}"
        )
    if len(images) == 0:
        raise DataError(f"{images_path} holds no images")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
            "labels; the two files do not belong together"
        )
    if labels.max() >= spec.num_classes:
        raise DataError(
            f"{labels_path} holds label {labels.max()}, outside 0..{spec.num_classes - 1}"
        )
    return ImageSplit(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))
