"""A small real data set shipped inside the package, so a quickstart runs offline.

``mnist_embedded`` is the 10,000 MNIST test images (LeCun, Cortes and Burges), split into its own
train part (the first 8,000) and test part (the last 2,000). It is stored as the compressed numpy
archive ``embedded/mnist-t10k.npz`` (arrays ``x`` uint8 (10000, 28, 28) and ``y`` uint8 (10000,)),
read without pickle; ``scripts/make_embedded.py`` regenerates it from the verified idx files.
"""

from __future__ import annotations

import importlib.resources
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from impresslearn.data.idx_datasets import MNIST_MEAN, MNIST_STD
from impresslearn.data.image_data import ImageData, ImageSplit
from impresslearn.errors import DataError

logger = logging.getLogger(__name__)

EMBEDDED_MNIST_NAME = "mnist-t10k.npz"
EMBEDDED_MNIST_SIZE = 10_000
EMBEDDED_TRAIN_SIZE = 8_000  # the first 8,000 images; the last 2,000 are the test split


def load_embedded_mnist(
    root: Path | None = None, system_dirs: Sequence[Path] | None = None
) -> ImageData:
    """Return the embedded MNIST subset as :class:`ImageData` named ``mnist_embedded``.

    ``root`` and ``system_dirs`` are accepted for a uniform loader signature and ignored: the data
    ships with the package.

    Raises:
        DataError: the archive is missing from the installation or corrupt.
    """
    resource = importlib.resources.files("impresslearn.data") / "embedded" / EMBEDDED_MNIST_NAME
    try:
        with resource.open("rb") as file, np.load(file, allow_pickle=False) as archive:
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(
            f"the embedded data set {resource} is missing or corrupt ({error}); reinstall "
            "impresslearn, or regenerate it with scripts/make_embedded.py"
        ) from error
    if x.dtype != np.uint8 or x.shape != (EMBEDDED_MNIST_SIZE, 28, 28):
        raise DataError(f"the embedded data set {resource} holds x {x.dtype} {x.shape}")
    if y.dtype != np.uint8 or y.shape != (EMBEDDED_MNIST_SIZE,) or y.max() > 9:
        raise DataError(f"the embedded data set {resource} holds bad labels y {y.dtype} {y.shape}")
    images = torch.from_numpy(x)  # (10000, 28, 28) uint8
    labels = torch.from_numpy(y.astype(np.int64))
    cut = EMBEDDED_TRAIN_SIZE
    train = ImageSplit(images[:cut], labels[:cut])
    test = ImageSplit(images[cut:], labels[cut:])
    logger.info("mnist_embedded: %d train / %d test images", len(train), len(test))
    return ImageData("mnist_embedded", train, test, 10, MNIST_MEAN, MNIST_STD)
