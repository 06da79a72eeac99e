"""Download a data set into the data root, only when the user asks (``impresslearn data fetch``).

Nothing else in the package touches the network. A fetch stages every file in a temporary folder
inside the data root, checks the published checksums, loads the staged copy with the very loader a
run uses (so "fetched" means "a run can read it"), and only then moves the files into place, each
with an atomic rename. An interrupted or failed fetch leaves nothing behind but what was there.

Sources, where the files are published:

- MNIST (LeCun, Cortes and Burges): the four idx ``.gz`` files from the mirror torchvision uses,
  verified by the MD5 of their decompressed content.
- Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): the four idx ``.gz`` files from Zalando's bucket.
- CIFAR-100 (Krizhevsky, 2009): the official ``cifar-100-python.tar.gz``, verified by its published
  MD5, of which only the ``train``, ``test`` and ``meta`` files are unpacked.

``mirror`` replaces the base address: another ``http(s)://`` or ``file://`` address, or a local
folder, holding the same file names (for clusters without internet access).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from tqdm import tqdm

from impresslearn.data.cifar import PICKLE_FOLDER, PICKLE_TEST, PICKLE_TRAIN, load_cifar100
from impresslearn.data.idx_datasets import (
    FASHION_MNIST,
    IDX_FILES,
    MNIST,
    IdxDatasetSpec,
    load_idx_dataset,
)
from impresslearn.data.image_data import ImageData
from impresslearn.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

Loader = Callable[[Path | None, Sequence[Path] | None], ImageData]

CHUNK = 1 << 20
TIMEOUT_S = 60.0
USER_AGENT = "impresslearn-data-fetch"


@dataclass(frozen=True)
class Source:
    """Where one data set is published and how a download of it is recognised.

    Attributes:
        name: the registry name (``impresslearn list``).
        title: the data set's own name, for messages.
        base_url: the files are fetched from ``base_url + file``.
        files: the file names to fetch.
        folder: the folder under the data root that receives the files (for an archive: the
            archive's top folder, which is what it unpacks to).
        md5: file name -> published MD5 of the downloaded bytes; a file not listed is verified by
            its content when the staged copy is loaded (MNIST's gzip wrappers vary by mirror, so
            its files are checked by the MD5 of the decompressed bytes).
        members: for a ``.tar.gz``: the archive members to unpack (paths inside the archive);
            empty for plain files.
        load: the data set's loader (``root``, ``system_dirs``), used to check both the copy
            already under the data root and the staged download.
    """

    name: str
    title: str
    base_url: str
    files: tuple[str, ...]
    folder: str
    load: Loader
    md5: Mapping[str, str] = field(default_factory=dict)
    members: tuple[str, ...] = ()


def _idx_source(spec: IdxDatasetSpec, base_url: str, folder: str) -> Source:
    """The four ``.gz`` idx files of an MNIST-format data set, checked by their content."""
    load = partial(load_idx_dataset, spec)
    files = tuple(f"{name}.gz" for name in IDX_FILES)
    return Source(spec.name, spec.title, base_url, files, folder, load)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        _idx_source(MNIST, "https://ossci-datasets.s3.amazonaws.com/mnist/", "mnist"),
        _idx_source(
            FASHION_MNIST,
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "fashion-mnist",
        ),
        Source(
            name="cifar100",
            title="CIFAR-100",
            base_url="https://www.cs.toronto.edu/~kriz/",
            files=("cifar-100-python.tar.gz",),
            folder=PICKLE_FOLDER,
            load=load_cifar100,
            md5={"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
            members=tuple(f"{PICKLE_FOLDER}/{n}" for n in (PICKLE_TRAIN, PICKLE_TEST, "meta")),
        ),
    )
}


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch` did: where the data set is and how many bytes were downloaded."""

    name: str
    folder: Path  # the folder the files went to; the data root when already present
    downloaded_bytes: int  # 0 when the data set was already present
    already_present: bool


def fetchable() -> list[str]:
    """Return the names of the data sets :func:`fetch` can download, sorted."""
    return sorted(SOURCES)


def fetch(
    name: str | Source,
    root: Path,
    *,
    mirror: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> FetchResult:
    """Download the data set ``name`` into ``root`` (unless it is already there) and verify it.

    Args:
        name: one of :func:`fetchable`, or a :class:`Source`.
        root: the data root; created if missing. The files land in ``root / source.folder``.
        mirror: replaces ``source.base_url``: an ``http(s)://`` or ``file://`` address, or a local
            folder, holding the same file names.
        force: download even when a complete, verified copy is already under ``root``.
        progress: show a progress bar per file.

    Returns:
        a :class:`FetchResult`.

    Raises:
        ConfigError: ``name`` cannot be fetched (the message lists the ones that can).
        DataError: a download failed, a checksum did not match, or the downloaded files do not
            load; the message names the address or file. Nothing is left under ``root``.
    """
    source = name if isinstance(name, Source) else _source(name)
    root = Path(root).absolute()
    base_url = source.base_url if mirror is None else _mirror_url(mirror)
    target = root / source.folder
    if not force:
        if _present(source, root):
            return FetchResult(source.name, root, 0, already_present=True)
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".fetch-{source.name}-", dir=root))
    try:
        staged = staging / source.folder
        staged.mkdir(parents=True)
        total = 0
        for file in source.files:
            destination = (staging if source.members else staged) / file
            total += _download(source, base_url + file, destination, progress)
            if source.members:
                _unpack(source, destination, staging)
                destination.unlink()
        _verify_staged(source, staged, base_url)
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(staged.iterdir()):
            os.replace(path, target / path.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:  # leave no empty data root behind either (never a non-empty one)
            with contextlib.suppress(OSError):
                root.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)
    _check_in_place(source, root, target)
    logger.info(
        "%s: %d bytes fetched from %s into %s, verified", source.title, total, base_url, target
    )
    return FetchResult(source.name, target, total, already_present=False)


def _source(name: str) -> Source:
    if name not in SOURCES:
        raise ConfigError(
            f"cannot fetch {name!r}: the data sets that can be downloaded are "
            f"{', '.join(fetchable())} ('mnist_embedded' ships with the package; for a tree of "
            "class folders, point scenario.dataset=folder:PATH at it)"
        )
    return SOURCES[name]


def _mirror_url(mirror: str) -> str:
    if "://" in mirror:
        return mirror.rstrip("/") + "/"
    folder = Path(mirror).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(
            f"mirror {folder} is not a folder: pass a folder holding the files, or an "
            "http(s):// or file:// address"
        )
    return folder.as_uri() + "/"


def _present(source: Source, root: Path) -> bool:
    """Whether a complete, verified copy is already under ``root`` (its own search rules)."""
    if not root.is_dir():
        return False
    try:
        source.load(root, ())
    except DataError as error:
        logger.info("%s: no usable copy under %s yet (%s)", source.title, root, error)
        return False
    return True


def _download(source: Source, url: str, destination: Path, progress: bool) -> int:
    """Stream ``url`` into ``destination``; check its MD5 when published; return its size."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            bar = tqdm(
                total=int(length) if length and length.isdigit() else None,
                unit="B",
                unit_scale=True,
                desc=destination.name,
                disable=not progress,
                leave=False,
            )
            with bar, open(destination, "wb") as out:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as error:
        raise _download_error(source, url, f"HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise _download_error(source, url, str(reason)) from error
    expected = source.md5.get(destination.name)
    if expected is not None and digest.hexdigest() != expected:
        raise DataError(
            f"{source.title}: the file downloaded from {url} has MD5 {digest.hexdigest()}, the "
            f"published one is {expected}; the download is corrupt or the address serves another "
            "file: try again, or pass --mirror with a correct copy"
        )
    return size


def _download_error(source: Source, url: str, reason: str) -> DataError:
    return DataError(
        f"{source.title}: cannot download {url} ({reason}). Check the network connection, or "
        f"pass --mirror with an address or folder holding {', '.join(source.files)}, or put the "
        f"files under the data root by hand (see `impresslearn data check {source.name}`)"
    )


def _unpack(source: Source, archive: Path, into: Path) -> None:
    """Unpack ``source.members`` (regular files only) from the ``.tar.gz`` ``archive``."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {m.name: m for m in tar.getmembers()}
            missing = [m for m in source.members if m not in members]
            if missing:
                raise DataError(
                    f"{source.title}: the archive {archive.name} lacks {', '.join(missing)}; it "
                    "is not the published archive"
                )
            for name in source.members:  # fixed names: nothing can land outside ``into``
                if not members[name].isfile():
                    raise DataError(f"{source.title}: {name} in {archive.name} is not a file")
                destination = into / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(members[name]) as data, open(destination, "wb") as out:
                    shutil.copyfileobj(data, out, CHUNK)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(
            f"{source.title}: cannot unpack {archive.name} ({type(error).__name__}: {error}); "
            "the download is corrupt: try again"
        ) from error


def _verify_staged(source: Source, staged: Path, base_url: str) -> None:
    try:
        source.load(None, (staged,))
    except DataError as error:
        raise DataError(
            f"{source.title}: the files fetched from {base_url} do not load: {error}"
        ) from error


def _check_in_place(source: Source, root: Path, target: Path) -> None:
    """The data root must now load: an older, broken copy searched first would shadow the fetch."""
    try:
        source.load(root, ())
    except DataError as error:
        raise DataError(
            f"{source.title}: fetched and verified into {target}, but the data root still does not "
            f"load, because a broken copy elsewhere under {root} is found first: {error} Remove "
            "that copy."
        ) from error
