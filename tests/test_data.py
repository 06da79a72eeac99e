"""Tests for impresslearn.data: idx reading, data roots, the data set registry, the embedded set.

Real-data tests read ../shared/data (the ``shared_data_root`` fixture); layouts and corruptions are
built in tmp_path from the real files, never from made-up data sets.
"""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from impresslearn.data import (
    ImageData,
    ImageSplit,
    list_datasets,
    load_dataset,
    read_idx,
    resolve_data_root,
)
from impresslearn.data.idx import IDX_DTYPES, read_idx_bytes
from impresslearn.data.idx_datasets import (
    IDX_FILES,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
)
from impresslearn.errors import ConfigError, DataError

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
REPO_ROOT = Path(__file__).resolve().parents[1]
EMBEDDED_NPZ = REPO_ROOT / "src" / "impresslearn" / "data" / "embedded" / "mnist-t10k.npz"


@pytest.fixture(scope="session")
def mnist_dir(shared_data_root: Path) -> Path:
    return shared_data_root / "mnist"


@pytest.fixture(scope="session")
def mnist_raw(mnist_dir: Path) -> dict[str, bytes]:
    """The decompressed bytes of the four real MNIST files."""
    return {name: read_idx_bytes(mnist_dir / f"{name}.gz") for name in IDX_FILES}


@pytest.fixture(scope="session")
def mnist_reference(shared_data_root: Path) -> ImageData:
    return load_dataset("mnist", shared_data_root)


@pytest.fixture(scope="session")
def mnist_plain(mnist_raw: dict[str, bytes], tmp_path_factory) -> Path:
    """The four real MNIST files, decompressed once per session."""
    folder = tmp_path_factory.mktemp("mnist-plain")
    for name, raw in mnist_raw.items():
        (folder / name).write_bytes(raw)
    return folder


def write_mnist(
    folder: Path,
    mnist_plain: Path,
    replace: dict[str, bytes] | None = None,
    names: tuple[str, ...] = IDX_FILES,
) -> dict[str, Path]:
    """Fill ``folder`` with the uncompressed MNIST files ``names``: the files in ``replace`` get the
    given bytes, the others link to the real ones (saves copying 55 MB per test)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in names}
    for name, path in paths.items():
        if replace and name in replace:
            path.write_bytes(replace[name])
        else:
            path.symlink_to(mnist_plain / name)
    return paths


def assert_same_split(a: ImageSplit, b: ImageSplit) -> None:
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)


# --- read_idx ------------------------------------------------------------------------------------


def test_read_idx_reads_real_mnist_labels_gz_and_plain(mnist_dir, mnist_raw, tmp_path):
    labels = read_idx(mnist_dir / f"{TEST_LABELS}.gz")
    assert labels.shape == (10_000,) and labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) == set(range(10))
    plain = tmp_path / TEST_LABELS
    plain.write_bytes(mnist_raw[TEST_LABELS])
    np.testing.assert_array_equal(read_idx(plain), labels)


@pytest.mark.parametrize("code", sorted(IDX_DTYPES))
def test_read_idx_decodes_every_type_code(tmp_path, code):
    dtype = IDX_DTYPES[code]
    values = np.arange(24).reshape(2, 3, 4).astype(dtype)  # big-endian where multi-byte
    path = tmp_path / "values.idx"
    path.write_bytes(
        bytes([0, 0, code, 3]) + np.array([2, 3, 4], ">u4").tobytes() + values.tobytes()
    )
    array = read_idx(path)
    assert array.shape == (2, 3, 4) and array.flags.writeable
    assert array.dtype == dtype.newbyteorder("=")
    np.testing.assert_array_equal(array, np.arange(24).reshape(2, 3, 4))


MALFORMED = {
    "empty": (lambda raw: b"", "empty"),
    "no magic": (lambda raw: raw[:3], "truncated"),
    "cut header": (lambda raw: raw[:6], "truncated"),
    "cut payload": (lambda raw: raw[:-1], "truncated"),
    "extra bytes": (lambda raw: raw + b"\x00", "too long"),
    "wrong magic": (lambda raw: b"\x12" + raw[1:], "magic number"),
    "unknown type": (lambda raw: raw[:2] + b"\x07" + raw[3:], "type code"),
    "zero dims": (lambda raw: raw[:3] + b"\x00" + raw[4:], "0 dimensions"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_read_idx_rejects_malformed_file(mnist_raw, tmp_path, case):
    mutate, phrase = MALFORMED[case]
    path = tmp_path / TEST_LABELS
    path.write_bytes(mutate(mnist_raw[TEST_LABELS]))
    with pytest.raises(DataError, match=phrase) as info:
        read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("case", ["cut stream", "not gzip", "flipped byte"])
def test_read_idx_rejects_corrupt_gzip(mnist_dir, tmp_path, case):
    packed = (mnist_dir / f"{TEST_LABELS}.gz").read_bytes()
    if case == "cut stream":
        packed = packed[: len(packed) // 2]
    elif case == "not gzip":
        packed = b"this is not gzip data"
    else:
        middle = len(packed) // 2
        packed = packed[:middle] + bytes([packed[middle] ^ 0xFF]) + packed[middle + 1 :]
    path = tmp_path / f"{TEST_LABELS}.gz"
    path.write_bytes(packed)
    with pytest.raises(DataError, match="gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read") as info:
        read_idx(tmp_path / "absent.gz")
    assert str(tmp_path / "absent.gz") in str(info.value)


# --- resolve_data_root ---------------------------------------------------------------------------


def test_resolve_data_root_precedence(tmp_path, monkeypatch):
    flag_dir, env_dir, home = tmp_path / "flag", tmp_path / "env", tmp_path / "home"
    for folder in (flag_dir, env_dir):
        folder.mkdir()
    env = {"IMPRESSLEARN_DATA": str(env_dir), "HOME": str(home)}
    assert resolve_data_root(flag_dir, env) == flag_dir
    assert resolve_data_root(str(flag_dir), env) == flag_dir
    assert resolve_data_root(None, env) == env_dir
    assert (
        resolve_data_root("", {**env, "IMPRESSLEARN_DATA": ""}) == home / ".cache" / "impresslearn"
    )
    # The cache default need not exist; XDG_CACHE_HOME wins over HOME when absolute.
    assert resolve_data_root(None, {"HOME": str(home)}) == home / ".cache" / "impresslearn"
    xdg = {"HOME": str(home), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert resolve_data_root(None, xdg) == tmp_path / "xdg" / "impresslearn"
    relative_xdg = {"HOME": str(home), "XDG_CACHE_HOME": "relative"}
    assert resolve_data_root(None, relative_xdg) == home / ".cache" / "impresslearn"
    # Only the mapping passed in counts, never the process environment.
    monkeypatch.setenv("IMPRESSLEARN_DATA", str(env_dir))
    assert resolve_data_root(None, {"HOME": str(home)}) == home / ".cache" / "impresslearn"


def test_resolve_data_root_rejects_missing_roots(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(DataError, match="--data-root") as info:
        resolve_data_root(missing, {"IMPRESSLEARN_DATA": str(tmp_path)})
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)
    with pytest.raises(DataError, match="IMPRESSLEARN_DATA") as info:
        resolve_data_root(None, {"IMPRESSLEARN_DATA": str(missing)})
    assert str(missing) in str(info.value)
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(DataError, match="not a folder"):
        resolve_data_root(a_file, {})
    with pytest.raises(DataError, match="HOME"):
        resolve_data_root(None, {})


# --- registry ------------------------------------------------------------------------------------


def test_list_datasets_and_unknown_name():
    assert list_datasets() == [
        "cifar100",
        "cifar100_subset",
        "fashion_mnist",
        "mnist",
        "mnist_embedded",
    ]
    with pytest.raises(ConfigError) as info:
        load_dataset("cifar1000", None)
    assert all(name in str(info.value) for name in list_datasets())


def test_image_split_checks_its_tensors():
    images = torch.zeros(3, 2, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        ImageSplit(images, torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="int64"):
        ImageSplit(images, torch.zeros(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="uint8"):
        ImageSplit(images.float(), torch.zeros(3, dtype=torch.int64))


# --- MNIST ---------------------------------------------------------------------------------------


def test_mnist_loads_verified_from_shared_data(mnist_reference):
    data = mnist_reference
    assert data.name == "mnist" and data.num_classes == 10
    assert data.mean == (0.1307,) and data.std == (0.3081,)
    assert data.train.images.shape == (60_000, 28, 28)
    assert data.test.images.shape == (10_000, 28, 28)
    assert data.train.images.dtype == torch.uint8 and data.train.labels.dtype == torch.int64
    for split in (data.train, data.test):
        assert torch.equal(split.labels.unique(), torch.arange(10))
    # The published normalisation constants are the statistics of these very pixels.
    pixels = data.train.images.float() / 255
    assert pixels.mean().item() == pytest.approx(0.1307, abs=1e-4)
    assert pixels.std().item() == pytest.approx(0.3081, abs=1e-4)


@pytest.mark.parametrize(
    ("subdir", "compressed"),
    [("MNIST/raw", True), ("MNIST/raw", False), ("mnist", False), (".", True)],
)
def test_mnist_found_in_standard_layouts(
    mnist_dir, mnist_plain, mnist_reference, tmp_path, subdir, compressed
):
    folder = tmp_path / subdir
    folder.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        if compressed:
            shutil.copyfile(mnist_dir / f"{name}.gz", folder / f"{name}.gz")
        else:
            shutil.copyfile(mnist_plain / name, folder / name)
    data = load_dataset("mnist", tmp_path)
    assert_same_split(data.train, mnist_reference.train)
    assert_same_split(data.test, mnist_reference.test)


def test_mnist_missing_root_names_the_paths_and_the_remedy(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_dataset("mnist", root)
    message = str(info.value)
    for folder in (root / "mnist", root / "MNIST" / "raw", root):
        assert f"{folder} (does not exist)" in message
    assert "train-images-idx3-ubyte" in message and "IMPRESSLEARN_DATA" in message


def test_mnist_missing_file_is_named(mnist_plain, tmp_path):
    folder = tmp_path / "mnist"
    write_mnist(folder, mnist_plain, names=(TRAIN_IMAGES, TRAIN_LABELS, TEST_LABELS))
    with pytest.raises(DataError, match="not found") as info:
        load_dataset("mnist", tmp_path)
    assert f"{folder} lacks {TEST_IMAGES}" in str(info.value)


def _cut(raw: bytes) -> bytes:
    return raw[: len(raw) - 100]


def _flip_pixel(raw: bytes) -> bytes:
    at = 16 + 28 * 28 * 5_000 + 400  # a pixel in the middle of image 5000
    return raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1 :]


CORRUPTIONS = {
    "truncated": (TEST_IMAGES, _cut, "truncated"),
    "wrong magic": (TEST_LABELS, lambda raw: b"\x08\x00" + raw[2:], "magic number"),
    "corrupted byte": (TEST_IMAGES, _flip_pixel, "checksum mismatch"),
    "empty": (TRAIN_LABELS, lambda raw: b"", "empty"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_mnist_corrupt_file_is_named(mnist_raw, mnist_plain, tmp_path, case):
    name, corrupt, phrase = CORRUPTIONS[case]
    paths = write_mnist(tmp_path / "mnist", mnist_plain, {name: corrupt(mnist_raw[name])})
    with pytest.raises(DataError, match=phrase) as info:
        load_dataset("mnist", tmp_path)
    assert str(paths[name]) in str(info.value)


def test_mnist_images_labels_count_mismatch(mnist_raw, mnist_plain, tmp_path):
    paths = write_mnist(tmp_path / "mnist", mnist_plain, {TRAIN_LABELS: mnist_raw[TEST_LABELS]})
    with pytest.raises(DataError, match="60000 images but .* 10000 labels") as info:
        load_dataset("mnist", tmp_path)
    assert str(paths[TRAIN_LABELS]) in str(info.value)


def test_mnist_corrupt_gzip_in_data_set(mnist_dir, mnist_plain, tmp_path):
    folder = tmp_path / "mnist"
    write_mnist(folder, mnist_plain, names=(TRAIN_IMAGES, TRAIN_LABELS, TEST_LABELS))
    packed = (mnist_dir / f"{TEST_IMAGES}.gz").read_bytes()
    (folder / f"{TEST_IMAGES}.gz").write_bytes(packed[:-1000])
    with pytest.raises(DataError, match="gzip") as info:
        load_dataset("mnist", tmp_path)
    assert str(folder / f"{TEST_IMAGES}.gz") in str(info.value)


# --- Fashion-MNIST -------------------------------------------------------------------------------


@pytest.mark.skipif(
    not FASHION_SYSTEM_DIR.is_dir(), reason="apt package dataset-fashion-mnist not installed"
)
def test_fashion_mnist_from_debian_package(tmp_path):
    data = load_dataset("fashion_mnist", tmp_path)  # nothing under the root: the system dir
    assert data.name == "fashion_mnist" and data.num_classes == 10
    assert data.train.images.shape == (60_000, 28, 28)
    assert data.test.images.shape == (10_000, 28, 28)
    assert torch.equal(data.test.labels.unique(), torch.arange(10))
    pixels = data.train.images.float() / 255
    assert pixels.mean().item() == pytest.approx(data.mean[0], abs=1e-4)
    assert pixels.std().item() == pytest.approx(data.std[0], abs=1e-4)


def test_fashion_mnist_not_found_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as info:
        load_dataset("fashion_mnist", tmp_path, system_dirs=[tmp_path / "system"])
    for folder in ("fashion-mnist", "FashionMNIST/raw", "fashion_mnist", "system"):
        assert str(tmp_path / folder) in str(info.value)


def test_fashion_mnist_checksums_reject_mnist_files(mnist_plain, tmp_path):
    """MNIST files where Fashion-MNIST is expected are well-formed idx files: only the checksum
    can tell them apart. Also checks that system_dirs is searched."""
    paths = write_mnist(tmp_path / "system", mnist_plain)
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_dataset("fashion_mnist", tmp_path / "root", system_dirs=[tmp_path / "system"])
    assert str(paths[IDX_FILES[0]]) in str(info.value)


# --- embedded ------------------------------------------------------------------------------------


def test_embedded_equals_real_t10k(mnist_dir, tmp_path):
    data = load_dataset("mnist_embedded", tmp_path / "ignored")
    assert data.name == "mnist_embedded" and data.num_classes == 10
    assert data.mean == (0.1307,) and data.std == (0.3081,)
    images = torch.from_numpy(read_idx(mnist_dir / f"{TEST_IMAGES}.gz"))
    labels = torch.from_numpy(read_idx(mnist_dir / f"{TEST_LABELS}.gz")).long()
    assert_same_split(data.train, ImageSplit(images[:8000], labels[:8000]))
    assert_same_split(data.test, ImageSplit(images[8000:], labels[8000:]))


def test_make_embedded_reproduces_the_shipped_arrays(mnist_dir, tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_embedded", REPO_ROOT / "scripts" / "make_embedded.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "out.npz"
    assert script.main([str(mnist_dir), "--out", str(out)]) == 0
    # Compare arrays, not bytes: another zlib build may deflate the same data differently.
    with (
        np.load(out, allow_pickle=False) as made,
        np.load(EMBEDDED_NPZ, allow_pickle=False) as shipped,
    ):
        assert sorted(made.files) == sorted(shipped.files) == ["x", "y"]
        for key in ("x", "y"):
            assert made[key].dtype == shipped[key].dtype == np.uint8
            np.testing.assert_array_equal(made[key], shipped[key])
