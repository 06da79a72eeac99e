"""Tests of data/cifar.py, data/image_folder.py and data/augment.py.

CIFAR-100 is the real data set in ../shared/data/cifar100 (the ``shared_data_root`` fixture),
loaded once per module; the official pickle form and image-folder trees are written from it into
tmp_path, so every format is checked against the same real pixels.
"""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from impresslearn.data import (
    export_image_folder,
    is_known_dataset,
    list_datasets,
    load_cifar100,
    load_dataset,
    load_image_folder,
    random_crop_flip,
)
from impresslearn.data.cifar import NPZ_TEST, NPZ_TRAIN, read_cifar100_npz, read_cifar100_pickle
from impresslearn.data.fetch import SOURCES, fetch
from impresslearn.errors import ConfigError, DataError

# README facts: the per-channel mean of the training pixels scaled to 0..1.
README_TRAIN_MEAN = (0.5070751592, 0.4865488733, 0.4409178434)


@pytest.fixture(scope="module")
def cifar_root(shared_data_root: Path) -> Path:
    if not (shared_data_root / "cifar100").is_dir():
        pytest.skip(f"CIFAR-100 not found at {shared_data_root / 'cifar100'}")
    return shared_data_root


@pytest.fixture(scope="module")
def cifar(cifar_root: Path):
    return load_dataset("cifar100", cifar_root)


def write_cifar_pickle(path: Path, images: torch.Tensor, labels: torch.Tensor, protocol=2):
    """Write ``images`` (N, 32, 32, 3) in the official cifar-100-python format (a dict whose
    b'data' rows are the red, green and blue planes, each row-major)."""
    n = len(images)
    batch = {
        b"batch_label": b"written by the tests",
        b"filenames": [f"{i}.png".encode() for i in range(n)],
        b"fine_labels": labels.tolist(),
        b"coarse_labels": [0] * n,
        b"data": np.ascontiguousarray(images.numpy().transpose(0, 3, 1, 2).reshape(n, -1)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def class_multisets(images: torch.Tensor, labels: torch.Tensor) -> list[tuple[int, str]]:
    """The sorted (label, image hash) pairs: equal for the same images per class in any order."""
    rows = images.reshape(len(images), -1).numpy()
    hashes = [hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in rows]
    return sorted(zip(labels.tolist(), hashes, strict=True))


# --- CIFAR-100: the numpy shards ------------------------------------------------------------------


def test_cifar100_from_the_shards(cifar):
    assert "cifar100" in list_datasets()
    assert cifar.name == "cifar100" and cifar.num_classes == 100
    assert cifar.train.images.shape == (50_000, 32, 32, 3)
    assert cifar.test.images.shape == (10_000, 32, 32, 3)
    assert cifar.train.images.dtype == torch.uint8 and cifar.train.labels.dtype == torch.int64
    assert torch.bincount(cifar.train.labels, minlength=100).eq(500).all()
    assert torch.bincount(cifar.test.labels, minlength=100).eq(100).all()
    sums = cifar.train.images.numpy().sum(axis=(0, 1, 2), dtype=np.float64)  # no float copy
    assert (sums / (50_000 * 32 * 32 * 255)).tolist() == pytest.approx(README_TRAIN_MEAN, abs=1e-9)
    assert cifar.mean == pytest.approx(README_TRAIN_MEAN, abs=1e-4)


def test_cifar100_shards_are_concatenated_in_order(cifar, cifar_root):
    x, y = read_cifar100_npz(cifar_root / "cifar100" / NPZ_TRAIN[3])
    assert torch.equal(cifar.train.images[30_000:40_000], torch.from_numpy(x))
    assert torch.equal(cifar.train.labels[30_000:40_000], torch.from_numpy(y).long())


# --- CIFAR-100: the official pickles ---------------------------------------------------------------


def test_pickle_rows_are_rgb_planes_row_major(tmp_path):
    red = np.arange(1024) % 256
    row = np.concatenate([red, np.full(1024, 7), np.full(1024, 9)]).astype(np.uint8)
    path = tmp_path / "train"
    path.write_bytes(pickle.dumps({b"data": row[None], b"fine_labels": [5]}, protocol=2))
    images, labels = read_cifar100_pickle(path)
    assert images.shape == (1, 32, 32, 3) and labels.tolist() == [5]
    assert images[0, 1, 2].tolist() == [34, 7, 9]  # row 1, column 2: red value 1 * 32 + 2


def test_pickle_form_matches_the_shards(cifar, tmp_path):
    # The full official form, rows in another order than the shards: the same images per class.
    folder = tmp_path / "cifar-100-python"
    for name, split, seed in (("train", cifar.train, 0), ("test", cifar.test, 1)):
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
        write_cifar_pickle(folder / name, split.images[order], split.labels[order])
    data = load_cifar100(folder)  # the pickle folder itself as the root
    assert data.train.images.shape == (50_000, 32, 32, 3)
    assert not torch.equal(data.train.labels, cifar.train.labels)  # another row order
    for mine, reference in ((data.train, cifar.train), (data.test, cifar.test)):
        assert class_multisets(mine.images, mine.labels) == class_multisets(
            reference.images, reference.labels
        )


def test_pickle_reader_on_a_class_subset_with_numpy1_names_and_protocol_5(cifar, tmp_path):
    keep = torch.isin(cifar.test.labels, torch.tensor([4, 30, 99]))
    images, labels = cifar.test.images[keep], cifar.test.labels[keep]
    write_cifar_pickle(tmp_path / "p2", images, labels)
    # Files pickled under numpy 1 name its array module numpy.core, not numpy._core.
    raw = (
        (tmp_path / "p2").read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    )
    assert b"numpy.core.multiarray" in raw
    (tmp_path / "p2").write_bytes(raw)
    write_cifar_pickle(tmp_path / "p5", images, labels, protocol=5)
    for name in ("p2", "p5"):
        x, y = read_cifar100_pickle(tmp_path / name)
        assert torch.equal(torch.from_numpy(x), images) and torch.equal(torch.from_numpy(y), labels)
    # Found under the data root, but a folder holding only these 300 images is not CIFAR-100.
    write_cifar_pickle(tmp_path / "cifar-100-python" / "train", images, labels)
    write_cifar_pickle(tmp_path / "cifar-100-python" / "test", images, labels)
    with pytest.raises(DataError, match=r"should hold 500 images of each of the 100 classes"):
        load_cifar100(tmp_path)


def test_fetch_unpacks_the_official_archive_and_checks_its_md5(cifar, tmp_path):
    # An archive laid out like the published cifar-100-python.tar.gz, made from the real images.
    folder = tmp_path / "made" / "cifar-100-python"
    for name, split in (("train", cifar.train), ("test", cifar.test)):
        write_cifar_pickle(folder / name, split.images, split.labels)
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"apple"] * 100}))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    archive = mirror / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(folder, arcname="cifar-100-python")
    official = SOURCES["cifar100"]
    # The archive is not byte-identical to the published one: its MD5 is refused, nothing stays.
    with pytest.raises(DataError, match="has MD5 .* the published one is eb9058c3"):
        fetch(official, tmp_path / "refused", mirror=str(mirror), progress=False)
    assert not (tmp_path / "refused").exists()

    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    source = replace(official, md5={"cifar-100-python.tar.gz": md5})
    result = fetch(source, tmp_path / "root", mirror=mirror.as_uri(), progress=False)
    assert result.folder == tmp_path / "root" / "cifar-100-python"
    assert sorted(p.name for p in result.folder.iterdir()) == ["meta", "test", "train"]
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["cifar-100-python"]
    data = load_dataset("cifar100", tmp_path / "root")
    assert data.train.images.equal(cifar.train.images)
    assert data.test.labels.equal(cifar.test.labels)


# --- CIFAR-100: missing and corrupt files ----------------------------------------------------------


def test_missing_cifar_lists_every_folder_and_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as info:
        load_cifar100(tmp_path / "nowhere", [tmp_path / "system"])
    message = str(info.value)
    for folder in ("nowhere/cifar100", "nowhere/cifar-100-python", "nowhere", "system"):
        assert f"{tmp_path}/{folder} (does not exist)" in message
    assert "IMPRESSLEARN_DATA" in message and "cifar-100-python.tar.gz" in message


def test_incomplete_shard_folder_is_named(tmp_path):
    (tmp_path / "cifar100").mkdir()
    (tmp_path / "cifar100" / NPZ_TEST).write_bytes(b"")
    with pytest.raises(DataError, match=r"Incomplete: .*cifar100 lacks cifar100-train-0.npz"):
        load_cifar100(tmp_path)


def shard_folder(tmp_path: Path, first_shard: bytes) -> Path:
    """A complete set of shard files whose first (the first read) holds ``first_shard``."""
    folder = tmp_path / "cifar100"
    folder.mkdir()
    for name in (*NPZ_TRAIN, NPZ_TEST):
        (folder / name).write_bytes(b"")
    (folder / NPZ_TRAIN[0]).write_bytes(first_shard)
    return folder / NPZ_TRAIN[0]


@pytest.mark.parametrize("damage", ["truncated", "flipped bytes", "empty"])
def test_corrupt_shard_is_named(cifar_root, tmp_path, damage):
    raw = bytearray((cifar_root / "cifar100" / NPZ_TEST).read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    elif damage == "flipped bytes":
        raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)
    else:
        raw = b""
    path = shard_folder(tmp_path, bytes(raw))
    with pytest.raises(DataError, match=r"replace the file") as info:
        load_cifar100(tmp_path)
    assert str(path) in str(info.value)


def test_shard_with_wrong_arrays_is_named(tmp_path):
    path = tmp_path / "shard.npz"
    np.savez(path, x=np.zeros((2, 28, 28), np.uint8), y=np.zeros(2, np.uint8))
    with pytest.raises(DataError, match=r"should hold x uint8 \(N, 32, 32, 3\)"):
        read_cifar100_npz(path)
    np.savez(path, images=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=str(path)):
        read_cifar100_npz(path)


@pytest.mark.parametrize(
    "content",
    [
        b"\x80\x02 this is not a pickle at all",
        pickle.dumps({b"data": [1, 2, 3]}, protocol=2)[:-5],  # truncated
        pickle.dumps([b"a list, not a dict"]),
        pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 1]}),
    ],
    ids=["garbage", "truncated", "not a dict", "wrong shape"],
)
def test_corrupt_pickle_is_named(tmp_path, content):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(content)
    (folder / "test").write_bytes(content)
    with pytest.raises(DataError) as info:
        load_cifar100(tmp_path)
    assert str(folder / "train") in str(info.value)


def test_pickle_with_other_globals_is_refused(tmp_path):
    from collections import OrderedDict  # harmless, but not a numpy array: must not be loaded

    path = tmp_path / "train"
    path.write_bytes(pickle.dumps({b"data": OrderedDict(), b"fine_labels": []}, protocol=2))
    with pytest.raises(DataError, match=r"refusing the global collections.OrderedDict"):
        read_cifar100_pickle(path)


# --- image folders ---------------------------------------------------------------------------------

# Three CIFAR-100 classes under names whose alphabetical order is not their label order.
FOLDER_CLASSES = {"worm": 99, "apple": 0, "mouse": 50}


def pick(split, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` images of each of FOLDER_CLASSES from ``split``, labelled 0, 1, 2 in the
    order of FOLDER_CLASSES (so worm is 0 here but 2 once read back)."""
    images, labels = [], []
    for index, label in enumerate(FOLDER_CLASSES.values()):
        images.append(split.images[split.labels == label][:per_class])
        labels.append(torch.full((per_class,), index))
    return torch.cat(images), torch.cat(labels)


def by_sorted_class(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The rows of ``images`` in the order a reader of the exported tree should return them."""
    names = list(FOLDER_CLASSES)
    order = sorted(range(len(labels)), key=lambda i: (names[labels[i]], i))
    return images[order]


@pytest.fixture(scope="module")
def split_tree(cifar, tmp_path_factory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """Layout A: 3 classes x 20 train / 5 test; returns the root and the expected images."""
    root = tmp_path_factory.mktemp("split_tree")
    train_images, train_labels = pick(cifar.train, 20)
    test_images, test_labels = pick(cifar.test, 5)
    export_image_folder(train_images, train_labels, list(FOLDER_CLASSES), root / "train")
    export_image_folder(test_images, test_labels, list(FOLDER_CLASSES), root / "test")
    return (
        root,
        by_sorted_class(train_images, train_labels),
        by_sorted_class(test_images, test_labels),
    )


@pytest.fixture(scope="module")
def flat_tree(cifar, tmp_path_factory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """Layout B: 3 classes x 20 images, no split folders."""
    root = tmp_path_factory.mktemp("flat_tree")
    images, labels = pick(cifar.train, 20)
    export_image_folder(images, labels, list(FOLDER_CLASSES), root)
    return root, images, labels


def test_split_tree_reads_back_bit_identical(split_tree):
    root, train_images, test_images = split_tree
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(FOLDER_CLASSES)
    assert len(list((root / "train" / "apple").glob("*.png"))) == 20
    data = load_image_folder(root)
    assert data.num_classes == 3 and data.name == root.name
    assert torch.equal(data.train.images, train_images)
    assert torch.equal(data.test.images, test_images)
    # Labels follow the sorted class names: apple 0, mouse 1, worm 2.
    assert data.train.labels.tolist() == [0] * 20 + [1] * 20 + [2] * 20
    assert data.test.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    pixels = train_images.reshape(-1, 3).to(torch.float64) / 255
    assert data.mean == pytest.approx(pixels.mean(0).tolist(), abs=1e-12)
    assert data.std == pytest.approx(pixels.std(0, correction=0).tolist(), abs=1e-12)


def test_val_folder_serves_as_test_split(split_tree, tmp_path):
    root, _, test_images = split_tree
    (tmp_path / "train").symlink_to(root / "train")
    (tmp_path / "val").symlink_to(root / "test")
    assert torch.equal(load_image_folder(tmp_path).test.images, test_images)


def test_flat_tree_is_split_per_class_by_seed(flat_tree):
    root, images, labels = flat_tree
    first, again, other = (load_image_folder(root, seed=s) for s in (0, 0, 1))
    assert torch.equal(first.train.images, again.train.images)
    assert torch.equal(first.test.images, again.test.images)
    assert not torch.equal(first.test.images, other.test.images)
    for data in (first, other):
        assert torch.bincount(data.test.labels).tolist() == [4, 4, 4]  # round(0.2 * 20)
        assert torch.bincount(data.train.labels).tolist() == [16, 16, 16]
        # Together the two splits are exactly the exported images of each class.
        remapped = torch.tensor([sorted(FOLDER_CLASSES).index(n) for n in FOLDER_CLASSES])[labels]
        both = torch.cat([data.train.images, data.test.images])
        both_labels = torch.cat([data.train.labels, data.test.labels])
        assert class_multisets(both, both_labels) == class_multisets(images, remapped)
    half = load_image_folder(root, test_fraction=0.5)
    assert torch.bincount(half.test.labels).tolist() == [10, 10, 10]


def test_folder_names_in_the_registry(split_tree, monkeypatch):
    root, train_images, _ = split_tree
    data = load_dataset(f"folder:{root}", None)
    assert data.name == f"folder:{root}" and torch.equal(data.train.images, train_images)
    assert torch.equal(load_dataset(f"folder:{root.name}", root.parent).train.images, train_images)
    monkeypatch.chdir(root.parent)
    assert torch.equal(load_dataset(f"folder:{root.name}", None).train.images, train_images)
    assert is_known_dataset(f"folder:{root}@8") and is_known_dataset("cifar100")
    assert not is_known_dataset("folder:") and not is_known_dataset("cifar1000")


def test_folder_at_size_resizes_and_centre_crops(split_tree):
    """@16 on 32x32 images: the shorter side resized (bilinear) to round(16 * 256 / 224) = 18,
    then the centre 16x16 (offset round((18 - 16) / 2) = 1), as streamed folders evaluate."""
    root, train_images, _ = split_tree
    data = load_dataset(f"folder:{root}@16", None)
    assert data.train.images.shape == (60, 16, 16, 3) and data.test.images.shape == (15, 16, 16, 3)
    resized = Image.fromarray(train_images[7].numpy()).resize((18, 18), Image.Resampling.BILINEAR)
    expected = np.asarray(resized)[1:17, 1:17]
    assert np.array_equal(data.train.images[7].numpy(), expected)
    same = load_dataset(f"folder:{root}@32", None)  # resizing to the stored size changes nothing
    assert torch.equal(same.train.images, train_images)


def test_unknown_or_missing_folder_names(tmp_path):
    with pytest.raises(ConfigError, match=r"folder:PATH\[@SIZE\]"):
        load_dataset("cifar1000", None)
    with pytest.raises(DataError, match=r"not found: looked in .*nope"):
        load_dataset("folder:nope@32", tmp_path)
    with pytest.raises(ConfigError, match="names no folder"):
        load_dataset("folder:@32", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "nope")


def test_mixed_sizes_need_an_image_size(cifar, tmp_path):
    export_image_folder(*pick(cifar.test, 2), list(FOLDER_CLASSES), tmp_path)
    small = Image.fromarray(cifar.test.images[0].numpy()).resize((20, 24))
    small.save(tmp_path / "mouse" / "small.png")
    with pytest.raises(DataError, match=r"differ in size: .* is 20x24; pass an image size"):
        load_image_folder(tmp_path)
    data = load_image_folder(tmp_path, image_size=24)
    assert data.train.images.shape[1:] == (24, 24, 3)


@pytest.mark.parametrize("content", [b"not an image", "truncated"], ids=["garbage", "truncated"])
def test_undecodable_image_is_named(cifar, tmp_path, content):
    written = export_image_folder(*pick(cifar.test, 2), list(FOLDER_CLASSES), tmp_path)
    bad = tmp_path / "worm" / "bad.png"
    bad.write_bytes(content if isinstance(content, bytes) else written[0].read_bytes()[:300])
    with pytest.raises(DataError, match=rf"cannot decode the image {bad}"):
        load_image_folder(tmp_path)


def test_grey_and_other_formats_become_rgb(cifar, tmp_path):
    grey = cifar.test.images[:4, :, :, 0].contiguous()  # (4, 32, 32)
    export_image_folder(grey, torch.tensor([0, 0, 1, 1]), ["a", "b"], tmp_path)
    Image.fromarray(cifar.test.images[4].numpy()).save(tmp_path / "b" / "x.bmp")
    (tmp_path / "b" / "notes.txt").write_text("not an image, skipped")
    data = load_image_folder(tmp_path, test_fraction=0.4)
    images = torch.cat([data.train.images, data.test.images])
    labels = torch.cat([data.train.labels, data.test.labels])
    assert images.shape == (5, 32, 32, 3) and sorted(labels.tolist()) == [0, 0, 1, 1, 1]
    as_rgb = grey[:2, :, :, None].expand(2, 32, 32, 3)
    assert class_multisets(images[labels == 0], labels[labels == 0]) == class_multisets(
        as_rgb, torch.zeros(2, dtype=torch.long)
    )


def test_tree_errors(tmp_path):
    with pytest.raises(DataError, match="holds no class folders"):
        load_image_folder(tmp_path)
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError, match=r"class folder .*cat holds no images"):
        load_image_folder(tmp_path)
    Image.new("RGB", (4, 4)).save(tmp_path / "cat" / "0.png")
    with pytest.raises(DataError, match="at least two"):
        load_image_folder(tmp_path)
    for split, classes in (("train", ["cat", "dog"]), ("test", ["cat", "eel"])):
        for name in classes:
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / split / name / "0.png")
    with pytest.raises(DataError, match=r"only in train/: \['dog'\]; only in test/: \['eel'\]"):
        load_image_folder(tmp_path)
    with pytest.raises(ConfigError, match="test_fraction"):
        load_image_folder(tmp_path, test_fraction=1.0)


def test_export_refuses_bad_class_names():
    images = torch.zeros(1, 2, 2, 3, dtype=torch.uint8)
    for names in (["a/b"], [".hidden"], ["a", "a"]):
        with pytest.raises(ValueError):
            export_image_folder(images, torch.tensor([0]), names, Path("/nonexistent"))


# --- augmentation ----------------------------------------------------------------------------------


def candidates(image: torch.Tensor, padding: int) -> list[torch.Tensor]:
    """Slow reference: every crop of the zero-padded image, and the mirror of each."""
    _, height, width = image.shape
    padded = F.pad(image, (padding,) * 4)
    crops = [
        padded[:, dy : dy + height, dx : dx + width]
        for dy in range(2 * padding + 1)
        for dx in range(2 * padding + 1)
    ]
    return crops + [crop.flip(2) for crop in crops]


def normalised(images: torch.Tensor, data) -> torch.Tensor:
    x = images.permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(data.mean)[:, None, None]) / torch.tensor(data.std)[:, None, None]


def test_crop_flip_gives_crops_of_the_padded_image_or_their_mirrors(cifar):
    x = normalised(cifar.test.images[:12], cifar)
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    for image, result in zip(x, out, strict=True):
        assert any(torch.equal(result, c) for c in candidates(image, 4))
    assert not torch.equal(out, x)


def test_crop_flip_is_deterministic_per_generator(cifar):
    x = normalised(cifar.test.images[:64], cifar)
    first = random_crop_flip(x, torch.Generator().manual_seed(3))
    assert torch.equal(first, random_crop_flip(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, random_crop_flip(x, torch.Generator().manual_seed(4)))
    assert torch.equal(x, normalised(cifar.test.images[:64], cifar))  # the input is untouched


def test_crop_flip_without_padding_or_flips():
    x = torch.randn(8, 3, 5, 7)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(random_crop_flip(x, generator, 0, flip_probability=0.0), x)
    assert torch.equal(random_crop_flip(x, generator, 0, flip_probability=1.0), x.flip(3))
    images = torch.randint(0, 256, (4, 3, 6, 6), dtype=torch.uint8)
    assert random_crop_flip(images, generator, 2).dtype == torch.uint8
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        random_crop_flip(x[0], generator)


def test_crop_offsets_and_flips_are_uniform():
    # Random images are told apart by every crop and mirror, so each output names its draw.
    batch, padding = 5000, 2
    x = torch.randn(batch, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    out = random_crop_flip(x, torch.Generator().manual_seed(2), padding)
    padded = F.pad(x, (padding,) * 4)
    counts = torch.zeros(2, 2 * padding + 1, 2 * padding + 1, dtype=torch.long)
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[:, :, dy : dy + 6, dx : dx + 6]
            counts[0, dy, dx] = (out == crop).flatten(1).all(1).sum()
            counts[1, dy, dx] = (out == crop.flip(3)).flatten(1).all(1).sum()
    assert counts.sum() == batch  # every output is exactly one crop or mirror
    assert counts[1].sum().item() / batch == pytest.approx(0.5, abs=0.03)  # flip rate
    per_offset = counts.sum(0)  # expected 200 each of 25 offsets
    assert per_offset.min() > 140 and per_offset.max() < 260
