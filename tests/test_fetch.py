"""Tests of data/fetch.py and ``impresslearn data``: downloads on request, verified, atomic.

The "internet" is a local HTTP server serving real MNIST files from ../shared/data (or a copy
with one file broken), so every path a real download takes is exercised: HTTP, streaming,
checksums, staging, moving into place, and the failures.
"""

from __future__ import annotations

import gzip
import http.server
import shutil
import socket
import threading
from pathlib import Path

import pytest

from impresslearn.cli import main
from impresslearn.data import load_dataset
from impresslearn.data.fetch import SOURCES, fetch, fetchable
from impresslearn.data.idx_datasets import IDX_FILES
from impresslearn.errors import ConfigError, DataError


class _Server:
    """A local HTTP server over one folder that counts the requests it gets."""

    def __init__(self, folder: Path):
        requests = self.requests = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):  # noqa: N802 (the http.server name)
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep the test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(folder: Path) -> _Server:
        servers.append(_Server(folder))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".fetch-"))


def test_fetch_downloads_verifies_and_places_mnist(shared_data_root, serve, tmp_path):
    server = serve(shared_data_root / "mnist")
    root = tmp_path / "new-root"  # created by the fetch
    result = fetch("mnist", root, mirror=server.url, progress=False)
    assert not result.already_present
    assert result.folder == root / "mnist"
    assert sorted(p.name for p in result.folder.iterdir()) == sorted(f"{n}.gz" for n in IDX_FILES)
    expected = sum((shared_data_root / "mnist" / f"{n}.gz").stat().st_size for n in IDX_FILES)
    assert result.downloaded_bytes == expected
    assert leftovers(root) == []
    fetched, shared = load_dataset("mnist", root), load_dataset("mnist", shared_data_root)
    assert fetched.train.images.equal(shared.train.images)
    assert fetched.test.labels.equal(shared.test.labels)

    # A verified copy is not downloaded again; --force does.
    again = fetch("mnist", root, mirror=server.url, progress=False)
    assert again.already_present and again.downloaded_bytes == 0
    assert len(server.requests) == 4
    forced = fetch("mnist", root, mirror=server.url, force=True, progress=False)
    assert forced.downloaded_bytes == expected and len(server.requests) == 8


def test_fetch_from_a_local_folder_mirror(shared_data_root, tmp_path):
    result = fetch("mnist", tmp_path, mirror=str(shared_data_root / "mnist"), progress=False)
    assert result.folder == tmp_path / "mnist"
    assert len(load_dataset("mnist", tmp_path).train) == 60_000


def test_a_corrupt_download_is_refused_and_leaves_nothing(shared_data_root, serve, tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(shared_data_root / "mnist", mirror)
    labels = mirror / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # one test label changed: a valid idx file, a wrong checksum
    labels.write_bytes(gzip.compress(bytes(raw)))
    server = serve(mirror)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*checksum|checksum.*t10k-labels"):
        fetch("mnist", root, mirror=server.url, progress=False)
    assert not root.exists()  # it did not exist before: no empty root is left either

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="do not load"):
        fetch("mnist", existing, mirror=server.url, progress=False)
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]


def test_missing_files_and_unreachable_servers_are_clear_errors(serve, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    server = serve(empty)
    with pytest.raises(DataError, match=r"cannot download .*train-images-idx3-ubyte\.gz.*HTTP 404"):
        fetch("mnist", tmp_path / "a", mirror=server.url, progress=False)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match="cannot download.*--mirror"):
        fetch("mnist", tmp_path / "b", mirror=f"http://127.0.0.1:{port}/", progress=False)
    with pytest.raises(DataError, match="is not a folder"):
        fetch("mnist", tmp_path / "c", mirror=str(tmp_path / "nowhere"), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_only_known_data_sets_can_be_fetched(tmp_path):
    assert fetchable() == ["cifar100", "fashion_mnist", "mnist"]
    with pytest.raises(ConfigError, match="cifar100, fashion_mnist, mnist"):
        fetch("mnist_embedded", tmp_path)
    # The published addresses and checksums are part of the contract.
    assert SOURCES["cifar100"].md5 == {
        "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"
    }
    assert SOURCES["mnist"].base_url.startswith("https://")


def test_cli_data_fetch_and_check(shared_data_root, serve, tmp_path, capsys):
    server = serve(shared_data_root / "mnist")
    root = tmp_path / "root"
    argv = ["data", "fetch", "mnist", "--data-root", str(root), "--mirror", server.url, "--quiet"]
    assert main(argv) == 0
    assert "11.4 MB downloaded, verified" in capsys.readouterr().out
    assert main(argv) == 0
    assert "already present" in capsys.readouterr().out

    assert main(["data", "check", "mnist", "mnist_embedded", "--data-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "mnist: ok, 60000 train / 10000 test images, 10 classes" in out
    assert main(["data", "check", "cifar100", "--data-root", str(root)]) == 1
    assert "cifar100: NOT USABLE: CIFAR-100 not found" in capsys.readouterr().out

    assert main(["data", "fetch", "imagenet", "--data-root", str(root)]) == 2
    assert "cannot fetch 'imagenet'" in capsys.readouterr().err
