"""Real image data sets for the continual-learning benchmarks: finding, reading, verifying.

MNIST and Fashion-MNIST are read from their idx files under a data root (see
:func:`resolve_data_root`) and checked against their published checksums; ``mnist_embedded`` ships
with the package for offline quickstarts. Nothing is downloaded and nothing is faked: a missing or
corrupt data set raises :class:`~impresslearn.errors.DataError` naming the paths.
"""

from impresslearn.data.datasets import list_datasets, load_dataset
from impresslearn.data.idx import read_idx
from impresslearn.data.image_data import ImageData, ImageSplit
from impresslearn.data.roots import resolve_data_root

__all__ = [
    "ImageData",
    "ImageSplit",
    "list_datasets",
    "load_dataset",
    "read_idx",
    "resolve_data_root",
]
