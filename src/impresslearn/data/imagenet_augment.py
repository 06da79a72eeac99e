"""ImageNet-style augmentation of single decoded images, with Pillow and numpy (no torchvision).

Meant to run per image where a file is decoded, in a DataLoader worker. The recipe is the PyTorch
ImageNet example's, which SupSup's ImageNet experiments use: ``RandomResizedCrop(224)`` and
``RandomHorizontalFlip()`` for training, ``Resize(256)`` and ``CenterCrop(224)`` for evaluation.
The geometry follows torchvision's definitions of those four transforms:

* :func:`random_resized_crop_box` is ``RandomResizedCrop.get_params`` (up to 10 tries of a random
  area fraction and log-uniform aspect ratio, then a central fallback crop);
* :func:`train_transform` crops that box, resizes it bilinearly to ``size x size`` and mirrors it
  left-right with probability 0.5;
* :func:`eval_transform` resizes the shorter side to ``resize`` (256 for 224) keeping the aspect
  ratio, bilinearly, and cuts the centre ``size x size``.

Everything works on uint8 RGB and returns uint8: nothing is normalised here (the mean/std step
belongs to the model side). Randomness comes only from the numpy ``Generator`` passed in (the
streamed loader seeds one per image from its batch's seed and its position in the batch, so an
image's augmentation never depends on which worker process decodes it). The draws are float64
numpy draws, so the boxes follow torchvision's algorithm but not its torch random stream.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

__all__ = ["eval_transform", "fit_image", "random_resized_crop_box", "train_transform"]

_ATTEMPTS = 10  # torchvision's RandomResizedCrop.get_params tries 10 boxes before falling back


def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """Draw torchvision's ``RandomResizedCrop`` box for a ``width x height`` image.

    Each of up to 10 attempts draws ``rng.uniform(*scale)`` (the area fraction) and then
    ``rng.uniform(log(ratio[0]), log(ratio[1]))`` (the log aspect ratio ``w / h``); the first box
    that fits draws its top with ``rng.integers(0, height - h + 1)`` and then its left with
    ``rng.integers(0, width - w + 1)``. If none fits, the central crop of the whole image clamped
    to the ratio range is returned and nothing more is drawn.

    Returns:
        ``(left, top, crop_width, crop_height)`` in pixels.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not 0 < scale[0] <= scale[1]:
        raise ValueError(f"scale must satisfy 0 < scale[0] <= scale[1], got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < ratio[0] <= ratio[1], got {ratio}")
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(_ATTEMPTS):
        target_area = area * float(rng.uniform(scale[0], scale[1]))
        aspect = math.exp(float(rng.uniform(log_ratio[0], log_ratio[1])))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, w, h
    # Fallback: the central crop, as large as the image allows within the ratio range.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def train_transform(image: Image.Image, size: int, rng: np.random.Generator) -> np.ndarray:
    """``RandomResizedCrop(size)`` then ``RandomHorizontalFlip()`` on one image.

    The crop box is drawn first (:func:`random_resized_crop_box`), then the flip
    (``rng.random() < 0.5``). The box is resampled with Pillow's bilinear filter straight from the
    full image (``Image.resize(..., box=...)``): on a downscale the filter may read pixels just
    outside the box (up to about half the scale factor), where torchvision, which crops first,
    clamps at the box's border, so border pixels can differ from torchvision's by a level or so.

    Returns:
        A ``(size, size, 3)`` uint8 array.
    """
    _check_size(size)
    rgb = image.convert("RGB")
    left, top, w, h = random_resized_crop_box(rgb.width, rgb.height, rng)
    flip = bool(rng.random() < 0.5)
    out = rgb.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.array(out, dtype=np.uint8)


def eval_transform(image: Image.Image, size: int, resize: int | None = None) -> np.ndarray:
    """``Resize(resize)`` then ``CenterCrop(size)`` on one image, as torchvision computes them.

    The shorter side becomes ``resize`` (default ``round(size * 256 / 224)``: 256 for 224) and the
    longer ``int(resize * long / short)``, bilinearly; the crop's offsets are
    ``int(round((new - size) / 2))`` per side.

    Returns:
        A ``(size, size, 3)`` uint8 array.

    Raises:
        ValueError: if the resized image is smaller than ``size`` in a side.
    """
    _check_size(size)
    if resize is None:
        resize = round(size * 256 / 224)
    if resize <= 0:
        raise ValueError(f"resize must be positive, got {resize}")
    rgb = image.convert("RGB")
    width, height = rgb.size
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if width <= height:
        new_w, new_h = resize, int(resize * height / width)
    else:
        new_w, new_h = int(resize * width / height), resize
    if new_w < size or new_h < size:
        raise ValueError(
            f"a {width}x{height} image resized to {new_w}x{new_h} (shorter side {resize}) is "
            f"smaller than the {size}x{size} centre crop"
        )
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    resized = rgb.resize((new_w, new_h), Image.Resampling.BILINEAR)
    return np.array(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)


def fit_image(image: Image.Image, size: int) -> np.ndarray:
    """An image as a data set at ``size`` holds it: kept as it is when it is already ``size x
    size``, else :func:`eval_transform` (the evaluation images of both the in-memory and the
    streamed form of an image folder)."""
    rgb = image.convert("RGB")
    if rgb.size == (size, size):
        return np.array(rgb, dtype=np.uint8)
    return eval_transform(rgb, size)


def _check_size(size: int) -> None:
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
