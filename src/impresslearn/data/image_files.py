"""An index of an image-folder data set: its files and labels, nothing decoded.

Data sets too large to decode into memory (ImageNet at 224 px is about 190 GB) are indexed here
and decoded batch by batch while training (:mod:`impresslearn.data.streaming`). The layouts read:

- **class folders**: ``PATH/train/<class>/...`` and ``PATH/test/<class>/...`` (or ``val/``);
- **a flat validation folder with a labels file** (ImageNet): ``PATH/train/<class>/...`` and
  ``PATH/val/<images>`` with one of :data:`LABEL_FILES` in ``val/`` or ``PATH``: a line per image,
  its file name (with or without the extension) and its class, separated by a tab or a comma
  (``LOC_val_solution.csv``: ``ImageId,PredictionString`` whose first word is the class);
- **TinyImageNet**: ``PATH/train/<wnid>/images/...`` and ``PATH/val/images/...`` with
  ``PATH/val/val_annotations.txt``;
- **flat**: ``PATH/<class>/...`` only, each class split into train and test by a seeded shuffle.

Class names sorted alphabetically give the label indices (a scenario's class-order file can
reorder them into tasks). Image files are found recursively in each class folder.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from impresslearn.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")
TEST_FOLDERS = ("test", "val")  # the first one present is the test split of the split layout

ClassFiles = dict[str, list[Path]]  # class name -> its image files, sorted

LABEL_FILES = ("val_annotations.txt", "LOC_val_solution.csv", "val_labels.txt", "labels.txt")


@dataclass(frozen=True, eq=False)
class FileSplit:
    """One split: image file paths (a NumPy array of str) and their labels, int64 ``(N,)``."""

    paths: np.ndarray
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class TreeIndex:
    """A tree's files by split, the class names (index = label) and the layout found."""

    train: FileSplit
    test: FileSplit
    class_names: tuple[str, ...]
    layout: str

    @property
    def num_images(self) -> int:
        return len(self.train) + len(self.test)


def index_image_tree(path: Path, *, test_fraction: float = 0.2, seed: int = 0) -> TreeIndex:
    """Index the tree at ``path`` in whichever layout it has (see the module's docstring).

    Raises:
        DataError: the tree fits no layout (the message names the folder or file that does not
            fit and what was expected), a class holds no images, or a labels file names an
            unknown class or an image that is not there.
    """
    start = time.perf_counter()
    path = Path(path)
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise DataError(f"image folder data set {path} {state}: name a folder of class folders")
    if (path / "train").is_dir():
        train = find_class_files(path / "train")
        test_dir = next((path / name for name in TEST_FOLDERS if (path / name).is_dir()), None)
        if test_dir is None:
            raise DataError(
                f"{path} has a train/ folder but neither test/ nor val/: add one (class folders, "
                "or images with a labels file), or put the class folders directly in "
                f"{path} to split them"
            )
        test, layout = _test_split(path, test_dir, sorted(train))
    else:
        train, test = split_class_files(find_class_files(path), test_fraction, seed)
        layout = "flat"
    class_names = tuple(sorted(train))
    index = TreeIndex(_split(train, class_names), _split(test, class_names), class_names, layout)
    logger.info(
        "indexed %s (%s layout): %d classes, %d train / %d test images (%.2f s)",
        path,
        layout,
        len(class_names),
        len(index.train),
        len(index.test),
        time.perf_counter() - start,
    )
    return index


def find_class_files(folder: Path) -> ClassFiles:
    """Return each class folder's image files under ``folder``, classes and files sorted.

    Raises:
        DataError: ``folder`` holds no class folders, or a class folder holds no image files.
    """
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(
            f"{folder} holds no class folders: expected {folder}/<class name>/<image files>"
        )
    files: ClassFiles = {}
    for class_dir in classes:
        found = sorted(
            p
            for p in class_dir.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)
            and p.is_file()
        )
        if not found:
            raise DataError(
                f"class folder {class_dir} holds no images (files ending in "
                f"{', '.join(IMAGE_SUFFIXES)}): add some or remove the folder"
            )
        files[class_dir.name] = found
    return files


def split_class_files(
    files: ClassFiles, test_fraction: float, seed: int
) -> tuple[ClassFiles, ClassFiles]:
    """Split each class's files into train and test as :func:`load_image_folder` describes.

    Raises:
        DataError: a class has fewer than two images.
    """
    generator = torch.Generator().manual_seed(seed)
    train: ClassFiles = {}
    test: ClassFiles = {}
    for name in sorted(files):
        paths = files[name]
        if len(paths) < 2:
            raise DataError(
                f"class {name!r} has only {len(paths)} image ({paths[0]}): a class needs at least "
                "two to be split into train and test"
            )
        num_test = min(max(1, round(test_fraction * len(paths))), len(paths) - 1)
        order = torch.randperm(len(paths), generator=generator).tolist()
        test[name] = [paths[i] for i in sorted(order[:num_test])]
        train[name] = [paths[i] for i in sorted(order[num_test:])]
    return train, test


def _test_split(root: Path, test_dir: Path, classes: list[str]) -> tuple[ClassFiles, str]:
    """The test split of a tree with ``train/``: class folders, or images with labels."""
    subfolders = [d for d in test_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if subfolders and not (test_dir / "images").is_dir():
        test = find_class_files(test_dir)
        _check_same_classes(root / "train", classes, test_dir, sorted(test))
        return test, "class folders"
    images_dir = test_dir / "images" if (test_dir / "images").is_dir() else test_dir
    labels_file = _labels_file(root, test_dir)
    images = _image_files(images_dir)
    if labels_file is None or not images:
        raise DataError(
            f"{test_dir} fits no layout: expected the same class folders as {root / 'train'}, "
            f"or its images (in {test_dir} or {test_dir / 'images'}) with a labels file, one of "
            f"{', '.join(LABEL_FILES)} in {test_dir} or {root}"
        )
    by_name = {p.name: p for p in images} | {p.stem: p for p in images}
    labels = _read_labels(labels_file, set(classes), set(by_name))
    test: ClassFiles = {name: [] for name in classes}
    for image_name, class_name in labels.items():
        file = by_name.get(image_name)
        if file is None:
            raise DataError(
                f"{labels_file} labels {image_name!r}, which is not an image in {images_dir}"
            )
        test[class_name].append(file)
    labelled = {p for files in test.values() for p in files}
    unlabelled = [p for p in images if p not in labelled]
    if unlabelled:
        raise DataError(
            f"{len(unlabelled)} image(s) in {images_dir} have no line in {labels_file}, e.g. "
            f"{unlabelled[0].name}: add their labels or remove them"
        )
    layout = "TinyImageNet" if images_dir != test_dir else "flat validation folder with labels"
    return {k: sorted(v) for k, v in test.items()}, layout


def _labels_file(root: Path, test_dir: Path) -> Path | None:
    for folder in (test_dir, root):
        for name in LABEL_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _read_labels(file: Path, classes: set[str], images: set[str]) -> dict[str, str]:
    """``{image name or stem: class}`` from a labels file (see the module's docstring); a first
    line that names no image (``images``: names and stems) is a header."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read the labels file {file}: {e}") from None
    labels: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t") if "\t" in line else line.split(",")
        words = fields[1].split() if len(fields) > 1 else []
        if not words:
            raise DataError(f"{file} line {number} is not 'image<TAB or ,>class': {line!r}")
        image_name, class_name = fields[0].strip(), words[0]
        if number == 1 and image_name not in images:  # a header (ImageId,PredictionString)
            continue
        if class_name not in classes:
            raise DataError(
                f"{file} line {number} labels {image_name} with {class_name!r}, which is not a "
                "class folder of train/"
            )
        labels[image_name] = class_name
    if not labels:
        raise DataError(f"{file} holds no labels")
    return labels


def _check_same_classes(train_dir: Path, train: list[str], test_dir: Path, test: list[str]) -> None:
    if set(train) == set(test):
        return
    only_train, only_test = sorted(set(train) - set(test)), sorted(set(test) - set(train))
    raise DataError(
        f"{train_dir} and {test_dir} must hold the same class folders; only in {train_dir.name}/: "
        f"{only_train or 'none'}; only in {test_dir.name}/: {only_test or 'none'}"
    )


def _split(files: ClassFiles, class_names: tuple[str, ...]) -> FileSplit:
    paths, labels = [], []
    for label, name in enumerate(class_names):
        paths += [str(p) for p in files.get(name, [])]
        labels += [label] * len(files.get(name, []))
    return FileSplit(np.array(paths, dtype=object), torch.tensor(labels, dtype=torch.int64))
