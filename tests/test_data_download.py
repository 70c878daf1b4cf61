"""``noisynn data fetch`` for real: pooch downloads from a local HTTP server on 127.0.0.1.

The server (python's ``http.server`` in a thread, port 0) serves a copy of the shared data
(``good/``) and a copy with one flipped byte per file (``bad/``). Good copies must download and
verify; corrupted ones must be rejected with :class:`DataError` and never land in the data dir.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from noisynn import data
from noisynn.data import mnist, store, strokes
from noisynn.errors import DataError


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature of the base)
        pass


def _flip(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def served(shared_data, tmp_path_factory) -> Path:
    """``good/`` = copy of the shared MNIST and strokes files; ``bad/`` = the same, one byte flipped."""
    root = tmp_path_factory.mktemp("www")
    for kind in ("good", "bad"):
        for folder in ("mnist", "mnist-strokes"):
            target = root / kind / folder
            target.mkdir(parents=True)
            for src in (shared_data / folder).iterdir():
                if src.name not in ("README.md", "SHA256SUMS"):
                    shutil.copy(src, target / src.name)
                    if kind == "bad":
                        _flip(target / src.name, (target / src.name).stat().st_size // 2)
    # not the canonical archive: a tarball of the partial subset, named like it
    cifar = root / "good" / "cifar10"
    cifar.mkdir()
    payload = gzip.open(shared_data / "cifar10" / "subset_data_batch_1_records_0000-3999.bin.gz").read()
    with tarfile.open(cifar / "cifar-10-binary.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    return root


@pytest.fixture(scope="module")
def server(served) -> Iterator[str]:
    """Base URL of a local HTTP server serving ``served``."""
    handler = functools.partial(_QuietHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv(store.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for var in (mnist.ENV_URL, strokes.ENV_URL, "NOISYNN_CIFAR10_URL", store.ENV_DATA_DIR):
        monkeypatch.delenv(var, raising=False)


def test_fetch_mnist_downloads_and_verifies(server, tmp_path):
    paths = data.fetch("mnist", data_dir=tmp_path / "d", base_url=f"{server}/good/mnist/")
    assert sorted(p.name for p in paths) == sorted(mnist.CONTENT_SHA256)
    assert not list((tmp_path / "d" / "mnist").glob("*.part"))
    assert data.check("mnist", data_dir=tmp_path / "d")[0].status == "OK"
    ds = data.load("mnist", "test", data_dir=tmp_path / "d")
    assert len(ds) == 10_000


def test_fetch_mnist_rejects_a_corrupted_copy(server, tmp_path):
    with pytest.raises(DataError) as err:
        data.fetch("mnist", data_dir=tmp_path / "d", base_url=f"{server}/bad/mnist/")
    text = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in text or "train-images-idx3-ubyte.gz" in text
    assert "\n" not in text
    folder = tmp_path / "d" / "mnist"
    assert not any(folder.glob("*.gz")) and not any(folder.glob("*.part"))  # nothing bad landed


@pytest.mark.slow
def test_fetch_mnist_falls_back_to_the_next_mirror(server, tmp_path, monkeypatch):
    monkeypatch.setenv(mnist.ENV_URL, f"{server}/bad/mnist/, {server}/missing/, {server}/good/mnist/")
    data.fetch("mnist", data_dir=tmp_path / "d")
    assert data.check("mnist", data_dir=tmp_path / "d")[0].status == "OK"


def test_fetch_strokes_downloads_verifies_and_rejects(server, tmp_path, monkeypatch):
    with pytest.raises(DataError, match="NOISYNN_STROKES_URL"):
        data.fetch("mnist-strokes", data_dir=tmp_path / "d")
    monkeypatch.setenv(strokes.ENV_URL, f"{server}/bad/mnist-strokes")
    with pytest.raises(DataError, match=r"mnist-strokes.npz.*checksum") as err:
        data.fetch("mnist-strokes", data_dir=tmp_path / "d")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "d" / "mnist-strokes" / "mnist-strokes.npz").exists()
    monkeypatch.setenv(strokes.ENV_URL, f"{server}/good/mnist-strokes")
    data.fetch("mnist-strokes", data_dir=tmp_path / "d")
    assert data.check("mnist-strokes", data_dir=tmp_path / "d")[0].status == "OK"
    assert data.load("mnist-strokes", "test", data_dir=tmp_path / "d").x.shape == (10_000, 50, 2)


def test_fetch_cifar10_checks_the_archive_md5(server, tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-binary.tar.gz.*checksum.*md5:c32a1d4a"):
        data.fetch("cifar10", data_dir=tmp_path / "d", base_url=f"{server}/good/cifar10/")
    assert not (tmp_path / "d" / "cifar10" / "data_batch_1.bin").exists()
    with pytest.raises(DataError, match=r"cifar-10-binary.tar.gz.*download .*failed.*404"):
        data.fetch("cifar10", data_dir=tmp_path / "d", base_url=f"{server}/nothing-here/")


@pytest.mark.slow
def test_cli_fetch(server, tmp_path):
    import typer
    from typer.testing import CliRunner

    from noisynn.cli import data_cmd

    app = typer.Typer()
    app.command("version")(lambda: None)
    data_cmd.register(app)
    ok = CliRunner().invoke(app, ["data", "fetch", "mnist", "--data-dir", str(tmp_path / "d"),
                                  "--base-url", f"{server}/good/mnist/"])
    assert ok.exit_code == 0, ok.output
    assert "4 files verified" in ok.stdout
    # the real entry point, on the corrupted copy: one error line, exit code 2, no traceback
    env = {**os.environ, mnist.ENV_URL: f"{server}/bad/mnist/"}
    bad = subprocess.run([sys.executable, "-m", "noisynn", "data", "fetch", "mnist", "--data-dir", str(tmp_path / "e")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in bad.stderr
