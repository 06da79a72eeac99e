"""Real image data sets for the continual-learning benchmarks: finding, reading, verifying.

MNIST and Fashion-MNIST are read from their idx files under a data root (see
:func:`resolve_data_root`) and checked against their published checksums; CIFAR-100 from its numpy
shards or the official python pickles; any tree of class folders through ``folder:PATH``;
``mnist_embedded`` ships with the package for offline quickstarts. Nothing is downloaded and nothing
is faked: a missing or corrupt data set raises :class:`~impresslearn.errors.DataError` naming the
paths. New data sets register a loader in :data:`DATASETS` (:func:`register_dataset`).
:func:`random_crop_flip` is the batched crop-and-flip augmentation for training.
"""

from impresslearn.data.augment import random_crop_flip
from impresslearn.data.cifar import load_cifar100
from impresslearn.data.datasets import (
    DATASETS,
    DatasetLoader,
    is_known_dataset,
    list_datasets,
    load_dataset,
    register_dataset,
)
from impresslearn.data.idx import read_idx
from impresslearn.data.image_data import ImageData, ImageSplit
from impresslearn.data.image_folder import export_image_folder, load_image_folder
from impresslearn.data.roots import existing_root, resolve_data_root

__all__ = [
    "DATASETS",
    "DatasetLoader",
    "ImageData",
    "ImageSplit",
    "export_image_folder",
    "is_known_dataset",
    "list_datasets",
    "load_cifar100",
    "load_dataset",
    "load_image_folder",
    "random_crop_flip",
    "read_idx",
    "register_dataset",
    "existing_root",
    "resolve_data_root",
]
