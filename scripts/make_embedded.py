"""Regenerate the embedded quickstart data set ``src/impresslearn/data/embedded/mnist-t10k.npz``.

Reads the MNIST test files (``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``) from
the given folder, checks them against the published MD5s, and writes the arrays ``x`` (uint8,
10000 x 28 x 28) and ``y`` (uint8, 10000) as a compressed numpy archive. The zip entries get a fixed
timestamp, so the same input always gives byte-identical output (no churn in git).

    python scripts/make_embedded.py ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import io
import logging
import zipfile
from pathlib import Path

import numpy as np

from impresslearn.data.embedded import EMBEDDED_MNIST_NAME, load_embedded_mnist
from impresslearn.data.idx_datasets import (
    MNIST,
    TEST_IMAGES,
    TEST_LABELS,
    find_idx_file,
    read_idx_verified,
)
from impresslearn.errors import DataError

logger = logging.getLogger("make_embedded")

DEFAULT_OUT = (
    Path(__file__).resolve().parents[1]
    / "src"
    / "impresslearn"
    / "data"
    / "embedded"
    / EMBEDDED_MNIST_NAME
)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as a deflate-compressed .npz with fixed timestamps, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue(), compresslevel=9)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mnist_dir", type=Path, help="folder holding the MNIST t10k idx files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="archive to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        arrays = {}
        for key, name in (("x", TEST_IMAGES), ("y", TEST_LABELS)):
            path = find_idx_file(args.mnist_dir, name)
            if path is None:
                raise DataError(f"{args.mnist_dir / name}[.gz] not found")
            arrays[key] = read_idx_verified(path, MNIST.md5[name])
    except DataError as error:
        logger.error("error: %s", error)
        return 1
    write_npz(args.out, arrays)
    logger.info("wrote %s (%d bytes)", args.out, args.out.stat().st_size)
    if args.out.resolve() == DEFAULT_OUT:
        data = load_embedded_mnist()  # read back through the package, as users will
        logger.info("read back: %d train / %d test images", len(data.train), len(data.test))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
