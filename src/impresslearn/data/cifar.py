"""CIFAR-100 (Krizhevsky, 2009, "Learning Multiple Layers of Features from Tiny Images").

Two on-disk forms are read, both giving the standard 50,000 / 10,000 train/test split:

- the project's compressed numpy shards in ``cifar100/`` (``cifar100-train-0.npz`` ...
  ``cifar100-train-4.npz`` and ``cifar100-test.npz``; arrays ``x`` uint8 ``(N, 32, 32, 3)`` and
  ``y`` uint8 fine labels), read without pickle;
- the official python version ``cifar-100-python/`` (pickled files ``train`` and ``test``).

The two forms hold the same images in a different row order across classes (the shards keep each
class's images in their original order, 100 per class per shard), so compare them per class, not
row by row. Nothing is downloaded: a missing or corrupt file is a :class:`DataError` naming it.
"""

from __future__ import annotations

import logging
import pickle
import time
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from impresslearn.data.image_data import ImageData, ImageSplit
from impresslearn.errors import DataError

logger = logging.getLogger(__name__)

NUM_CLASSES = 100
IMAGE_SHAPE = (32, 32, 3)  # HWC, RGB
TRAIN_PER_CLASS, TEST_PER_CLASS = 500, 100
# Per-channel mean and std of the training pixels scaled to 0..1 (the values commonly used).
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

NPZ_FOLDER, PICKLE_FOLDER = "cifar100", "cifar-100-python"
NPZ_TRAIN = tuple(f"cifar100-train-{k}.npz" for k in range(5))
NPZ_TEST = "cifar100-test.npz"
PICKLE_TRAIN, PICKLE_TEST = "train", "test"
FORMS = {"npz": (*NPZ_TRAIN, NPZ_TEST), "pickle": (PICKLE_TRAIN, PICKLE_TEST)}  # form -> files

HOW_TO_GET = (
    "run `impresslearn data fetch cifar100`, or put the six CIFAR-100 shards (cifar100-train-0.npz ... cifar100-train-4.npz, "
    "cifar100-test.npz) in a folder cifar100/, or the official python version (the folder "
    "cifar-100-python/ from https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz), under the "
    "data root, and point --data-root or IMPRESSLEARN_DATA at it"
)

# The only globals a CIFAR pickle refers to: numpy's array reconstruction, under its numpy 1 and
# numpy 2 module names (``_frombuffer`` for files re-saved with pickle protocol 5), and
# ``_codecs.encode``, which Python 3 uses for bytes in protocol 2. Anything else is refused, so a
# tampered file cannot make the unpickler call anything else.
_PICKLE_GLOBALS = {
    (f"numpy.{core}.{module}", name)
    for core in ("core", "_core")
    for module, name in (
        ("multiarray", "_reconstruct"),
        ("multiarray", "scalar"),
        ("numeric", "_frombuffer"),
    )
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


def load_cifar100(root: Path | None, system_dirs: Sequence[Path] | None = None) -> ImageData:
    """Find and read CIFAR-100 and return it as :class:`ImageData` named ``cifar100``.

    Looks in ``root/cifar100`` (numpy shards), ``root/cifar-100-python`` (official pickles), then
    ``root`` itself (either form), then each of ``system_dirs`` (either form; none by default), and
    reads the first folder holding a complete set of files. Images are uint8 ``(N, 32, 32, 3)``
    (NHWC, RGB), labels the int64 fine labels 0..99; the shards' training images are concatenated
    in shard order 0..4.

    The official python version is a pickle: it is read only because that is the form the data set
    is published in, with an unpickler that rebuilds numpy arrays and nothing else, so a tampered
    file cannot make it call arbitrary functions. Prefer the numpy shards where you have them.

    Raises:
        DataError: no folder holds the files (the message lists every folder looked at and how to
            get the data), or a file is corrupt, truncated or holds the wrong shapes or counts
            (the message names the file).
    """
    start = time.perf_counter()
    folders = [root / NPZ_FOLDER, root / PICKLE_FOLDER, root] if root is not None else []
    folders += [Path(d) for d in system_dirs or () if Path(d) not in folders]
    folder, form = _locate(folders)
    if form == "npz":
        train = _read_npz_split([folder / name for name in NPZ_TRAIN], TRAIN_PER_CLASS)
        test = _read_npz_split([folder / NPZ_TEST], TEST_PER_CLASS)
    else:
        train = _check_split(*read_cifar100_pickle(folder / PICKLE_TRAIN), TRAIN_PER_CLASS, folder)
        test = _check_split(*read_cifar100_pickle(folder / PICKLE_TEST), TEST_PER_CLASS, folder)
    logger.info(
        "CIFAR-100: %d train / %d test images from %s (%.2f s)",
        len(train),
        len(test),
        folder,
        time.perf_counter() - start,
    )
    return ImageData("cifar100", train, test, NUM_CLASSES, CIFAR100_MEAN, CIFAR100_STD)


def read_cifar100_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-100 shard: images uint8 ``(N, 32, 32, 3)`` and labels uint8 ``(N,)``.

    Raises:
        DataError: the file is unreadable, not a valid npz archive, lacks ``x`` or ``y``, or holds
            arrays of the wrong dtype or shape.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(
            f"cannot read the CIFAR-100 shard {path} ({type(error).__name__}: {error}); the file "
            "is corrupt or truncated: replace the file"
        ) from error
    if x.dtype != np.uint8 or x.shape[1:] != IMAGE_SHAPE or x.ndim != 4:
        raise DataError(
            f"{path} should hold x uint8 (N, 32, 32, 3), holds {x.dtype} {x.shape}: replace the file"
        )
    if y.dtype != np.uint8 or y.shape != (len(x),):
        raise DataError(
            f"{path} should hold y uint8 ({len(x)},), holds {y.dtype} {y.shape}: replace the file"
        )
    return x, y


def read_cifar100_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one file (``train`` or ``test``) of the official CIFAR-100 python version.

    The file is a pickled dict with ``b"data"`` (uint8 ``(N, 3072)``: per image the 1024 red, then
    green, then blue values, each plane row-major) and ``b"fine_labels"`` (N ints). Returns images
    uint8 ``(N, 32, 32, 3)`` (NHWC) and labels int64 ``(N,)``; counts per class are not checked.

    Raises:
        DataError: the file is unreadable, not such a pickle, or holds the wrong shapes.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            batch = _NumpyOnlyUnpickler(file, encoding="bytes").load()
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from error
    except Exception as error:  # corrupt bytes make an unpickler raise almost any exception type
        raise DataError(
            f"{path} is not a valid CIFAR-100 pickle ({type(error).__name__}: {error}); the file "
            "is corrupt, truncated or not CIFAR-100: replace the file"
        ) from error
    if not isinstance(batch, dict) or b"data" not in batch or b"fine_labels" not in batch:
        raise DataError(
            f"{path} is not a CIFAR-100 pickle: expected a dict with b'data' and b'fine_labels'"
        )
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"fine_labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{path} should hold data uint8 (N, 3072), holds {data.dtype} {data.shape}: replace "
            "the file"
        )
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path} should hold {len(data)} integer fine labels, holds {labels.dtype} "
            f"{labels.shape}: replace the file"
        )
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW planes -> HWC
    return np.ascontiguousarray(images), labels.astype(np.int64)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing the global {module}.{name}")
        return super().find_class(module, name)


def _locate(folders: list[Path]) -> tuple[Path, str]:
    incomplete = []
    for folder in folders:
        for form, names in FORMS.items():
            present = [(folder / name).is_file() for name in names]
            if all(present):
                return folder, form
            # A lone "train" or "test" file is too common a name to call a folder incomplete.
            if form == "npz" and any(present):
                missing = ", ".join(n for n, p in zip(names, present, strict=True) if not p)
                incomplete.append(f"{folder} lacks {missing}")
    looked = "; ".join(f"{f}{'' if f.is_dir() else ' (does not exist)'}" for f in folders)
    message = (
        "CIFAR-100 not found: looked for cifar100-train-{0..4}.npz + cifar100-test.npz, or the "
        f"pickles train + test, in: {looked or 'no folder'}."
    )
    if incomplete:
        message += " Incomplete: " + "; ".join(incomplete) + "."
    raise DataError(f"{message} To get it: {HOW_TO_GET}.")


def _read_npz_split(paths: list[Path], per_class: int) -> ImageSplit:
    shards = [read_cifar100_npz(path) for path in paths]
    images = np.concatenate([x for x, _ in shards]) if len(shards) > 1 else shards[0][0]
    labels = np.concatenate([y for _, y in shards]).astype(np.int64)
    return _check_split(images, labels, per_class, paths[0].parent)


def _check_split(images: np.ndarray, labels: np.ndarray, per_class: int, where: Path) -> ImageSplit:
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(
            f"the CIFAR-100 files in {where} hold label {labels.min()}..{labels.max()}, outside "
            f"0..{NUM_CLASSES - 1}: replace the files"
        )
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    wrong = np.flatnonzero(counts != per_class)
    if len(wrong):
        examples = ", ".join(f"class {c}: {counts[c]}" for c in wrong[:5])
        raise DataError(
            f"the CIFAR-100 files in {where} should hold {per_class} images of each of the "
            f"{NUM_CLASSES} classes per split, but {len(wrong)} classes differ ({examples}); the "
            "files are incomplete or not CIFAR-100: replace the files"
        )
    return ImageSplit(torch.from_numpy(images), torch.from_numpy(labels))
