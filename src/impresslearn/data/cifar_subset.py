"""A CIFAR-100 subset: only some classes, in one small file, for machines that cannot hold all of it.

Data set ``cifar100_subset``: ``ROOT/cifar100-subset/cifar100-subset.npz`` holds the complete
train and test images of a few CIFAR-100 classes (arrays ``x_train``, ``y_train``, ``x_test``,
``y_test``, ``classes``), with the original fine labels 0..99. So a subset written for the first
``k`` tasks of SplitCIFAR100 (:func:`write_cifar100_subset`) gives exactly those tasks: same class
order, same images, same labels. It is checked like the full set (500 training and 100 test
images of every class it lists); asking a scenario for a class it does not hold is an error,
never a silently smaller task.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from impresslearn.data.cifar import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGE_SHAPE,
    NUM_CLASSES,
    TEST_PER_CLASS,
    TRAIN_PER_CLASS,
)
from impresslearn.data.image_data import ImageData, ImageSplit
from impresslearn.errors import DataError

SUBSET_FOLDER = "cifar100-subset"
SUBSET_FILE = "cifar100-subset.npz"


def write_cifar100_subset(data: ImageData, classes: Sequence[int], path: Path) -> int:
    """Write the images of ``classes`` of the full CIFAR-100 ``data`` to ``path`` (an npz);
    returns its size in bytes."""
    classes = sorted({int(c) for c in classes})
    arrays = {"classes": np.asarray(classes, dtype=np.int64)}
    for split, part in (("train", data.train), ("test", data.test)):
        keep = torch.isin(part.labels, torch.tensor(classes))
        arrays[f"x_{split}"] = part.images[keep].numpy()
        arrays[f"y_{split}"] = part.labels[keep].numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path.stat().st_size


def load_cifar100_subset(root: Path | None, system_dirs: Sequence[Path] | None = None) -> ImageData:
    """Read ``root/cifar100-subset/cifar100-subset.npz`` (or ``root/cifar100-subset.npz``).

    Raises:
        DataError: the file is missing, unreadable, or does not hold 500 / 100 images of each
            class it lists.
    """
    folders = [root / SUBSET_FOLDER, root] if root is not None else []
    folders += [Path(d) for d in system_dirs or ()]
    path = next((f / SUBSET_FILE for f in folders if (f / SUBSET_FILE).is_file()), None)
    if path is None:
        looked = ", ".join(str(f / SUBSET_FILE) for f in folders) or "no folder (no data root)"
        raise DataError(
            f"no CIFAR-100 subset found: looked for {looked}. Write one from the full data set "
            "with scripts/export_gpu_data.py, or use scenario.dataset=cifar100"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in ("classes", "x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(
            f"cannot read the CIFAR-100 subset {path} ({error}): write it again"
        ) from None
    classes = arrays["classes"]
    if classes.ndim != 1 or len(classes) == 0 or classes.min() < 0 or classes.max() >= NUM_CLASSES:
        raise DataError(f"{path} lists no valid CIFAR-100 classes: write it again")
    splits = []
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"].astype(np.int64)
        if x.dtype != np.uint8 or x.shape[1:] != IMAGE_SHAPE or len(x) != len(y):
            raise DataError(f"{path}: x_{split} is not uint8 (N, 32, 32, 3): write it again")
        counts = np.bincount(y, minlength=NUM_CLASSES)
        expected = np.zeros(NUM_CLASSES, dtype=np.int64)
        expected[classes] = per_class
        if not np.array_equal(counts, expected):
            raise DataError(
                f"{path} should hold {per_class} {split} images of each of its {len(classes)} "
                "classes and none of any other: write it again"
            )
        splits.append(ImageSplit(torch.from_numpy(x), torch.from_numpy(y)))
    return ImageData(
        "cifar100_subset", splits[0], splits[1], NUM_CLASSES, CIFAR100_MEAN, CIFAR100_STD
    )


def subset_classes(data: ImageData) -> set[int]:
    """The classes a data set holds training images of."""
    return set(torch.unique(data.train.labels).tolist())
