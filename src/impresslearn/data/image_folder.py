"""Any image classification data set stored as a tree of class folders, decoded with Pillow.

The layouts are those of :mod:`impresslearn.data.image_files` (class folders, ImageNet's and
TinyImageNet's validation folders with their labels files, a flat tree split by a seeded shuffle);
image files ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.ppm``, ``.webp``, searched recursively
inside each class folder; names starting with ``.`` are skipped.

Class names sorted alphabetically give the label indices. Images become uint8 RGB ``(N, H, W, 3)``
(with an image size, those of another size are resized and centre-cropped to it exactly as a
streamed image folder evaluates them: :func:`~impresslearn.data.imagenet_augment.fit_image`) and
the normalisation mean and std are measured on the train split. :func:`export_image_folder` writes such a tree, e.g. from CIFAR-100, as PNG files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from impresslearn.data.image_data import ImageData, ImageSplit
from impresslearn.data.image_files import FileSplit, TreeIndex, index_image_tree
from impresslearn.data.imagenet_augment import fit_image
from impresslearn.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


def load_image_folder(
    path: Path,
    *,
    image_size: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    index: TreeIndex | None = None,
) -> ImageData:
    """Read the tree of class folders at ``path`` into :class:`ImageData` named after the folder.

    When ``path/train`` is a folder the tree has the split layout and ``path/test`` (else
    ``path/val``) must hold the same class folders. Otherwise each folder in ``path`` is a class,
    and each class's files are shuffled by a ``torch.Generator`` seeded with ``seed`` (classes in
    sorted order) and ``max(1, round(test_fraction * n))`` of them (at most n - 1) go to the test
    split. Within a class, images keep the sorted order of their file names.

    Args:
        path: the root of the tree.
        image_size: bring every image to ``image_size`` x ``image_size`` (one of another size:
            the shorter side resized bilinearly to ``image_size * 256 / 224``, then the centre
            crop); None keeps the stored size, which must then be the same for all images.
        test_fraction: the share of each class held out for testing (flat layout only).
        seed: the seed of the flat layout's train/test split.
        index: the tree's index when the caller has made it already
            (:func:`~impresslearn.data.image_files.index_image_tree` with the same arguments).

    Raises:
        ConfigError: ``image_size`` or ``test_fraction`` is out of range.
        DataError: the path is missing, holds no class folders, a class holds no images (or only
            one in the flat layout), the two splits have different classes, an image cannot be
            decoded (the message names the file), or images differ in size without ``image_size``.
    """
    if image_size is not None and image_size < 1:
        raise ConfigError(f"image_size must be a positive number of pixels, got {image_size}")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    start = time.perf_counter()
    path = Path(path)
    index = index or index_image_tree(path, test_fraction=test_fraction, seed=seed)
    size_of_first: dict[str, object] = {}  # shared by both splits: all images must match
    train = _decode_split(index.train, image_size, size_of_first)
    test = _decode_split(index.test, image_size, size_of_first)
    mean, std = _channel_stats(train.images.numpy(), path)
    class_names = index.class_names
    logger.info(
        "image folder %s: %d classes, %d train / %d test images of %s (%.2f s)",
        path,
        len(class_names),
        len(train),
        len(test),
        "x".join(map(str, train.images.shape[1:])),
        time.perf_counter() - start,
    )
    return ImageData(path.name or str(path), train, test, len(class_names), mean, std, class_names)


def export_image_folder(
    images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], out: Path
) -> list[Path]:
    """Write ``images`` as PNG files ``out/<class name>/<row index>.png`` and return their paths.

    ``images`` is uint8 ``(N, H, W, 3)`` (RGB) or ``(N, H, W)`` (grey), ``labels`` ``(N,)``
    indices into ``class_names``. Row indices are zero-padded to one width, so sorting the files
    of a class by name restores their row order; reading the tree back with
    :func:`load_image_folder` gives the same pixels.

    Raises:
        ValueError: bad shapes or dtypes, labels outside ``class_names``, or class names that are
            not plain, distinct folder names.
    """
    images, labels = torch.as_tensor(images).cpu(), torch.as_tensor(labels).cpu()
    if images.dtype != torch.uint8 or not (
        images.dim() == 3 or (images.dim() == 4 and images.shape[3] == 3)
    ):
        raise ValueError(
            f"images must be uint8 (N, H, W, 3) or (N, H, W), got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(f"labels must lie in 0..{len(class_names) - 1}")
    if len(set(class_names)) != len(class_names):
        raise ValueError("class names must be distinct")
    for name in class_names:
        if not name or name.startswith(".") or "/" in name or "\\" in name:
            raise ValueError(f"class name {name!r} is not a plain folder name")
    out = Path(out)
    width = len(str(max(len(images) - 1, 0)))
    arrays, written = images.numpy(), []
    for index, label in enumerate(labels.tolist()):
        target = out / class_names[label] / f"{index:0{width}d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arrays[index]).save(target)
        written.append(target)
    logger.info("exported %d images in %d classes to %s", len(written), len(class_names), out)
    return written


def _decode_split(files: FileSplit, image_size: int | None, size_of_first: dict) -> ImageSplit:
    arrays = [_decode(Path(path), image_size, size_of_first) for path in files.paths]
    images = torch.from_numpy(np.stack(arrays))  # (N, H, W, 3) uint8
    return ImageSplit(images, files.labels.clone())


def _decode(path: Path, image_size: int | None, size_of_first: dict) -> np.ndarray:
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        if image_size is not None:
            return fit_image(rgb, image_size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DataError(
            f"cannot decode the image {path} ({type(error).__name__}: {error}): replace or remove "
            "the file"
        ) from error
    if not size_of_first:
        size_of_first.update(size=rgb.size, path=path)
    elif rgb.size != size_of_first["size"]:
        (w0, h0), (w1, h1) = size_of_first["size"], rgb.size
        raise DataError(
            f"images differ in size: {size_of_first['path']} is {w0}x{h0} but {path} is {w1}x{h1}; "
            "pass an image size to resize them all (image_size=..., or the data set name "
            "folder:PATH@SIZE)"
        )
    return np.asarray(rgb, dtype=np.uint8)  # (H, W, 3)


def _channel_stats(images: np.ndarray, path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # Exact and memory-light: a 256-bin histogram per channel instead of a float copy of all pixels.
    values = np.arange(256) / 255.0
    mean, std = [], []
    for channel in range(images.shape[3]):
        counts = np.bincount(images[..., channel].ravel(), minlength=256)
        channel_mean = (counts * values).sum() / counts.sum()
        variance = (counts * (values - channel_mean) ** 2).sum() / counts.sum()
        mean.append(float(channel_mean))
        std.append(float(np.sqrt(variance)))
    if min(std) == 0:
        raise DataError(f"the training images of {path} are constant in a channel (std {std})")
    return tuple(mean), tuple(std)
