"""Image-folder data read from its files batch by batch, in DataLoader worker processes.

A :class:`StreamedImageData` holds only the index of a tree (paths and labels, see
:mod:`impresslearn.data.image_files`); a task's files are decoded (Pillow) and transformed when a
batch is needed, by ``workers`` worker processes of a :class:`torch.utils.data.DataLoader` (0: in
this process). Resident memory is bounded by the batches in flight (two per worker) and one
pass's order, whatever the size of the tree or the number of epochs: the batches are planned
lazily, as the loader asks for them.

* **Training** batches: the order is drawn exactly as for data held in memory (a reshuffle per
  pass, from the task's batch generator), and one augmentation seed per batch is drawn from the
  same generator. Each image is transformed by :func:`~impresslearn.data.imagenet_augment.
  train_transform` (random resized crop and flip) from a generator seeded by (batch seed, its
  position in the batch), so the batches do not depend on the number of workers, nor on which
  process decodes which image. Without augmentation the evaluation transform is used.
* **Evaluation** batches: consecutive files, resized (shorter side ``size * 256 / 224``) and
  centre-cropped to ``size`` (:func:`~impresslearn.data.imagenet_augment.eval_transform`).
* Under ``torch.distributed`` each process decodes only its share of every batch (the rows the
  training step will take); the other rows of the batch it holds stay zero and are never read.
* On CUDA the batches are pinned and copied without blocking.

A file that cannot be decoded is a :class:`~impresslearn.errors.DataError` naming it: before a
task starts, every file of the task is opened and its header verified; a file damaged further in
is found when its batch is decoded, and the run stops there with its last checkpoint intact.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from impresslearn.data.image_files import FileSplit, TreeIndex
from impresslearn.data.imagenet_augment import fit_image, train_transform
from impresslearn.errors import DataError

logger = logging.getLogger(__name__)

STATS_IMAGES = 1000  # training images decoded to measure the normalisation mean and std
SEED_RANGE = 2**62


def _open_rgb(path: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _decode_error(path: str, error: Exception) -> str:
    return (
        f"cannot decode the image {path} ({type(error).__name__}: {error}): replace or remove the "
        "file, then resume the run"
    )


class _Decoder(Dataset):
    """Decodes one item of the loader's sampler, ``(paths, seed, first, extra)``: the uint8
    images ``(B, size, size, 3)`` of ``paths`` (``seed`` None: the evaluation transform; else
    image i is augmented from a generator seeded by (seed, first + i)), or an error message;
    returned with ``extra`` (what the consumer needs of the batch, passed through)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:  # the sampler gives the items; the length is not used
        return 0

    def __getitem__(self, item: tuple[list[str], int | None, int, Any]) -> tuple[Any, Any]:
        paths, seed, first, extra = item
        out = np.empty((len(paths), self.size, self.size, 3), dtype=np.uint8)
        for i, path in enumerate(paths):
            try:
                image = _open_rgb(path)
                if seed is None:
                    out[i] = fit_image(image, self.size)
                else:
                    rng = np.random.default_rng([seed, first + i])
                    out[i] = train_transform(image, self.size, rng)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                return _decode_error(path, error), extra
        return torch.from_numpy(out), extra


class _Verifier(Dataset):
    """Opens each file of an item (a list of paths) and verifies its header: None, or the
    error message of the first that fails."""

    def __len__(self) -> int:
        return 0

    def __getitem__(self, paths: list[str]) -> str | None:
        for path in paths:
            try:
                with Image.open(path) as image:
                    image.verify()
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                return _decode_error(path, error)
        return None


@dataclass(frozen=True, eq=False)
class FileSource:
    """Decodes a split's files for a task's :class:`~impresslearn.scenarios.TaskData`, whose
    ``x`` holds indices into ``paths``."""

    paths: np.ndarray
    size: int
    augment: bool
    workers: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def _loader(self, dataset: Dataset, items: list[Any]) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=None,
            sampler=items,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=2 if self.workers else None,
        )

    def _to_device(self, batch: torch.Tensor | str) -> torch.Tensor:
        if isinstance(batch, str):
            raise DataError(batch)
        return batch.to(self.device, non_blocking=True)

    def check(self, indices: torch.Tensor) -> None:
        """Open every file of ``indices`` and verify its header (before a task trains on it)."""
        paths = self.paths[indices.cpu().numpy()].tolist()
        chunk = 256
        items = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
        for message in self._loader(_Verifier(), items):
            if message is not None:
                raise DataError(message)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """The evaluation-transformed uint8 images of ``indices``, in this process."""
        paths = self.paths[indices.reshape(-1).cpu().numpy()].tolist()
        return self._to_device(_Decoder(self.size)[(paths, None, 0, None)][0])

    def eval_batches(
        self,
        indices: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        select: Callable[[int], bool] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images, labels) of consecutive batches (those whose number ``select`` accepts,
        when given), decoded by the workers."""
        paths = self.paths[indices.cpu().numpy()].tolist()
        starts = [
            s for i, s in enumerate(range(0, len(paths), batch_size)) if select is None or select(i)
        ]
        items = [(paths[s : s + batch_size], None, 0, s) for s in starts]
        for batch, start in self._loader(_Decoder(self.size), items):
            yield self._to_device(batch), labels[start : start + batch_size].to(self.device)

    def train_batches(
        self,
        indices: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        num_steps: int,
        gen: torch.Generator,
        share: Callable[[int], slice] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``num_steps`` (uint8 images, labels) batches: reshuffled passes as for data in memory,
        each batch with its own augmentation seed drawn from ``gen``; with ``share`` (this
        process's rows of a batch of a given size, under torch.distributed) only those rows are
        decoded."""
        self.check(indices)
        plan = self._plan(indices, labels, batch_size, num_steps, gen, share)
        for decoded, (y, first, size) in self._loader(_Decoder(self.size), plan):
            images = self._to_device(decoded)
            if len(images) != size:  # another process decodes the other rows
                full = torch.zeros((size, *images.shape[1:]), dtype=images.dtype)
                full = full.to(self.device)
                full[first : first + len(images)] = images
                images = full
            yield images, y.to(self.device)

    def _plan(
        self,
        indices: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        num_steps: int,
        gen: torch.Generator,
        share: Callable[[int], slice] | None,
    ) -> Iterator[tuple[list[str], int | None, int, tuple[torch.Tensor, int, int]]]:
        """The sampler's items, drawn lazily (one pass's order held at a time): per pass a
        permutation, then one augmentation seed per batch, from ``gen``."""
        n, made = len(indices), 0
        while made < num_steps:
            order = torch.randperm(n, generator=gen)
            count = min(math.ceil(n / batch_size), num_steps - made)
            seeds = torch.randint(0, SEED_RANGE, (count,), generator=gen).tolist()
            for k in range(count):
                batch = order[k * batch_size : (k + 1) * batch_size]
                mine = share(len(batch)) if share is not None else slice(0, len(batch))
                paths = self.paths[indices[batch[mine]].cpu().numpy()].tolist()
                seed = seeds[k] if self.augment else None
                yield paths, seed, mine.start, (labels[batch], mine.start, len(batch))
            made += count


@dataclass(frozen=True, eq=False)
class StreamedImageData:
    """A data set decoded from its files as batches are needed (see the module's docstring):
    the index of its two splits, the class names, the size images are cropped to, the
    normalisation statistics, and where and with how many workers batches are decoded."""

    name: str
    train: FileSplit
    test: FileSplit
    class_names: tuple[str, ...]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    workers: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to(self, device: torch.device | str) -> StreamedImageData:
        """Batches are decoded on the CPU and moved to ``device``."""
        return replace(self, device=torch.device(device))

    def with_workers(self, workers: int) -> StreamedImageData:
        return replace(self, workers=workers)

    def source(self, split: str, augment: bool) -> FileSource:
        """The decoder of the ``train`` or ``test`` split's files."""
        files = self.train if split == "train" else self.test
        return FileSource(files.paths, self.image_size, augment, self.workers, self.device)


def streamed_image_data(
    index: TreeIndex, name: str, image_size: int, *, seed: int = 0
) -> StreamedImageData:
    """A :class:`StreamedImageData` of an indexed tree; the normalisation mean and std are
    measured on :data:`STATS_IMAGES` training images drawn with ``seed`` (evaluation
    transform), a sample instead of the whole split."""
    start = time.perf_counter()
    n = len(index.train)
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randperm(n, generator=gen)[: min(STATS_IMAGES, n)].sort().values
    decoder = _Decoder(image_size)
    sums = np.zeros(3)
    squares = np.zeros(3)
    count = 0
    for chunk in torch.split(sample, 128):
        batch, _ = decoder[(index.train.paths[chunk.numpy()].tolist(), None, 0, None)]
        if isinstance(batch, str):
            raise DataError(batch)
        pixels = batch.reshape(-1, 3).double() / 255.0
        sums += pixels.sum(0).numpy()
        squares += (pixels**2).sum(0).numpy()
        count += len(pixels)
    mean = sums / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0))
    if std.min() == 0:
        raise DataError(f"the sampled training images of {name} are constant in a channel")
    logger.info(
        "%s: normalisation measured on %d training images (%.2f s)",
        name,
        len(sample),
        time.perf_counter() - start,
    )
    return StreamedImageData(
        name,
        index.train,
        index.test,
        index.class_names,
        image_size,
        tuple(float(m) for m in mean),
        tuple(float(s) for s in std),
    )
