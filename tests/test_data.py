"""Data sets on the real files: shapes, counts, stroke encoding, CIFAR-10, bad input, cache, CLI."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from noisynn import data
from noisynn.data import digits, store
from noisynn.errors import DataError, NoisynnError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One decoded cache for the whole session, so MNIST is decoded once."""
    return tmp_path_factory.mktemp("noisynn-cache")


@pytest.fixture
def shared_env(shared_data, session_cache, monkeypatch) -> Path:
    """NOISYNN_DATA_DIR = the shared folder, NOISYNN_CACHE_DIR = the session cache."""
    monkeypatch.setenv(store.ENV_DATA_DIR, str(shared_data))
    monkeypatch.setenv(store.ENV_CACHE_DIR, str(session_cache))
    return shared_data


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """A fresh, private cache directory."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(store.ENV_CACHE_DIR, str(cache))
    return cache


def _npz(shared: Path) -> dict[str, np.ndarray]:
    with np.load(shared / "mnist-strokes" / "mnist-strokes.npz") as z:
        return {k: z[k] for k in z.files}


def _idx(path: Path, offset: int) -> np.ndarray:
    return np.frombuffer(gzip.open(path).read(), dtype=np.uint8, offset=offset)


# ------------------------------------------------------------------ digits (embedded)


def test_digits_shapes_ranges_and_held_out_split():
    from sklearn.datasets import load_digits

    train, test = data.load("digits", "train"), data.load("digits", "test")
    assert train.x.shape == (1437, 1, 8, 8) and test.x.shape == (360, 1, 8, 8)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert float(train.x.min()) == 0.0 and float(train.x.max()) == 1.0
    # stratified: every class has 35..37 of the 360 test images; the split is fixed and disjoint
    assert all(35 <= c <= 37 for c in test.y.bincount().tolist())
    tr, te = digits.split_indices(load_digits().target)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 1797
    ref = load_digits()
    assert torch.equal(test.x[:, 0], torch.from_numpy(ref.images[te] / 16).float())
    assert torch.equal(data.load("digits", "test").y, test.y)  # same split every time
    rows = data.load("digits", "train", layout="rows")
    assert rows.x.shape == (1437, 8, 8) and torch.equal(rows.x, train.x[:, 0])


# ------------------------------------------------------------------ MNIST


@pytest.mark.parametrize("split,counts", [pytest.param("train", MNIST_TRAIN_COUNTS, marks=pytest.mark.slow),
                                          ("test", MNIST_TEST_COUNTS)])
def test_mnist_shapes_ranges_and_label_counts(shared_env, split, counts):
    ds = data.load("mnist", split)
    n = sum(counts)
    assert ds.x.shape == (n, 1, 28, 28) and ds.x.dtype == torch.float32
    assert ds.y.shape == (n,) and ds.y.dtype == torch.int64
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    assert ds.y.bincount(minlength=10).tolist() == counts
    prefix = "train" if split == "train" else "t10k"
    raw = _idx(shared_env / "mnist" / f"{prefix}-images-idx3-ubyte.gz", 16)[: 3 * 784]
    assert torch.equal(ds.x[:3].reshape(-1) * 255, torch.from_numpy(raw.astype(np.float32)))
    rows = data.load("mnist", split, layout="rows")
    assert rows.x.shape == (n, 28, 28) and torch.equal(rows.x[:5], ds.x[:5, 0])


@pytest.mark.slow
def test_mnist_reload_from_cache_is_fast(shared_env):
    data.load("mnist", "train")
    start = time.perf_counter()
    ds = data.load("mnist", "train")
    assert time.perf_counter() - start < 1.0
    assert ds.meta["cache"] == "hit"
    assert len(ds) == 60_000


# ------------------------------------------------------------------ strokes


def _expected_sequence(rows: np.ndarray, coords: str, markers: str) -> np.ndarray:
    """Independent per-digit reference: the papers' first 50 points, zero-padded."""
    if markers == "drop":
        rows = rows[rows[:, 2] == 0]
    pts = rows[:, :2].astype(np.float32)
    if coords == "absolute":
        pts = np.cumsum(pts, axis=0)
    out = np.zeros((50, 2), np.float32)
    out[: min(len(pts), 50)] = pts[:50]
    return out


@pytest.mark.slow
def test_strokes_shapes_labels_and_length_histogram(shared_env):
    train, test = data.load("mnist-strokes", "train"), data.load("mnist-strokes", "test")
    assert train.x.shape == (60_000, 50, 2) and test.x.shape == (10_000, 50, 2)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    # absolute positions are 1-based pixel coordinates (1..28); 0 only in the padding
    assert float(train.x.min()) == 0.0 and float(train.x.max()) == 28.0
    mnist_labels = _idx(shared_env / "mnist" / "train-labels-idx1-ubyte.gz", 8)
    assert np.array_equal(train.y.numpy(), mnist_labels)
    lengths = train.meta["lengths"]
    assert lengths.shape == (60_000,) and lengths.dtype == torch.int64
    inside = ((lengths >= 20) & (lengths <= 60)).double().mean().item()
    assert inside > 0.85  # paper 1, fig. 6: "the majority of length resides between 20 to 60"
    assert 30 <= lengths.double().median().item() <= 50
    assert 0.05 < (lengths > 50).double().mean().item() < 0.3  # some are truncated


@pytest.mark.slow
def test_strokes_padding_is_exactly_zero_after_the_last_point(shared_env):
    ds = data.load("mnist-strokes", "train")
    steps = ds.meta["lengths"].clamp(max=50)
    t = torch.arange(50)
    after = t[None, :] >= steps[:, None]  # (N, 50) padding positions
    assert torch.all(ds.x[after] == 0)
    assert torch.all(ds.x[~after].abs().sum(-1) > 0)  # every real point is a position >= 1


@pytest.mark.parametrize("coords", ["absolute", "offsets"])
@pytest.mark.parametrize("markers", ["drop", "keep"])
def test_strokes_first_50_points_match_the_npz_rows(shared_env, coords, markers):
    z = _npz(shared_env)
    off = np.concatenate([[0], np.cumsum(z["test_lengths"].astype(np.int64))])
    ds = data.load("mnist-strokes", "test", coords=coords, markers=markers)
    lengths = z["test_lengths"]
    long_ones = np.flatnonzero(lengths > 70)[:5]
    short_ones = np.flatnonzero(lengths < 25)[:5]
    assert len(long_ones) == 5 and len(short_ones) == 5
    for i in [*long_ones, *short_ones, 0, 9999]:
        rows = z["test_rows"][off[i] : off[i + 1]]
        assert np.array_equal(ds.x[i].numpy(), _expected_sequence(rows, coords, markers)), i
        n_points = len(rows) if markers == "keep" else int((rows[:, 2] == 0).sum())
        assert int(ds.meta["lengths"][i]) == n_points
    if markers == "keep" and coords == "offsets":  # raw rows: eos rows appear as (0, 0) points
        assert torch.equal(ds.meta["lengths"], torch.from_numpy(lengths.astype(np.int64)))


@pytest.mark.slow
def test_strokes_from_original_text_tarballs_equal_the_npz(shared_env, tmp_path, own_cache):
    folder = tmp_path / "mnist-strokes"
    folder.mkdir()
    for name in ("test-inputdata.tar.gz", "test-labels.txt"):
        shutil.copy(shared_env / "mnist-strokes" / name, folder / name)
    from_text = data.load("mnist-strokes", "test", data_dir=tmp_path)
    assert from_text.meta["files"] == ["test-inputdata.tar.gz", "test-labels.txt"]
    from_npz = data.load("mnist-strokes", "test")
    assert torch.equal(from_text.x, from_npz.x) and torch.equal(from_text.y, from_npz.y)
    assert torch.equal(from_text.meta["lengths"], from_npz.meta["lengths"])


def test_strokes_rejects_bad_options(shared_env):
    with pytest.raises(DataError, match="coords"):
        data.load("mnist-strokes", "test", coords="polar")
    with pytest.raises(DataError, match="layout"):
        data.load("mnist-strokes", "test", layout="image")


# ------------------------------------------------------------------ CIFAR-10


def _subset_records(shared: Path) -> np.ndarray:
    raw = gzip.open(shared / "cifar10" / "subset_data_batch_1_records_0000-3999.bin.gz").read()
    return np.frombuffer(raw, np.uint8).reshape(-1, 3073)


@pytest.fixture
def cifar_dir(shared_data, tmp_path) -> Path:
    """A data dir whose cifar10/data_batch_1.bin holds the 4,000 real records (canonical format)."""
    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    _subset_records(shared_data).tofile(folder / "data_batch_1.bin")
    return tmp_path / "data"


def test_cifar10_canonical_file_gives_the_known_labels_and_pixels(shared_data, cifar_dir, own_cache):
    with pytest.warns(UserWarning, match="PARTIAL"):
        ds = data.load("cifar10", "train", data_dir=cifar_dir, allow_partial=True, normalize=False)
    labels = np.loadtxt(shared_data / "cifar10" / "train_labels_all_50000.txt", dtype=np.int64)
    assert ds.x.shape == (4000, 3, 32, 32) and ds.x.dtype == torch.float32
    assert np.array_equal(ds.y.numpy(), labels[:4000])
    r = _subset_records(shared_data)  # the README's quick reader
    images = r[:, 1:].reshape(-1, 3, 32, 32)
    assert torch.equal((ds.x * 255).round().to(torch.uint8), torch.from_numpy(images.copy()))
    assert ds.x[0, 0, 0, :3].mul(255).round().tolist() == [59, 43, 50]  # README: image 0 starts 59 43 50
    assert ds.meta["partial"] is True and ds.meta["classes"][0] == "airplane"


def test_cifar10_normalisation_and_rows_layout(cifar_dir, own_cache):
    with pytest.warns(UserWarning, match="PARTIAL"):
        ds = data.load("cifar10", "train", data_dir=cifar_dir, allow_partial=True)
    assert torch.allclose(ds.x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(ds.x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    assert np.allclose(ds.meta["mean"], [0.4916, 0.4818, 0.4447], atol=1e-3)
    with pytest.warns(UserWarning):
        rows = data.load("cifar10", "train", data_dir=cifar_dir, allow_partial=True, layout="rows")
    assert rows.x.shape == (4000, 32, 96)
    assert torch.equal(rows.x[7, 5, 3 * 4 : 3 * 5], ds.x[7, :, 5, 4])  # row 5, pixel 4: R, G, B


def test_cifar10_partial_needs_the_explicit_opt_in(cifar_dir, shared_env):
    with pytest.raises(DataError, match="data_batch_1.bin.*size mismatch.*allow-partial"):
        data.load("cifar10", "train", data_dir=cifar_dir)
    with pytest.raises(DataError, match="test_batch.bin.*file not found"):
        data.load("cifar10", "test", data_dir=cifar_dir)
    with pytest.raises(DataError, match="data_batch_1.bin.*4,000-image subset.*allow-partial"):
        data.load("cifar10", "train")  # the shared folder
    with pytest.warns(UserWarning, match="PARTIAL"):
        smoke = data.load("cifar10", "train", allow_partial=True)
    assert len(smoke) == 4000 and smoke.meta["partial"]


def test_cifar10_partial_copy_without_test_images_stands_in_its_last_training_tenth(cifar_dir, own_cache):
    with pytest.warns(UserWarning, match="PARTIAL.*last 400 training images stand in"):
        test = data.load("cifar10", "test", data_dir=cifar_dir, allow_partial=True)
    with pytest.warns(UserWarning, match="PARTIAL"):
        train = data.load("cifar10", "train", data_dir=cifar_dir, allow_partial=True)
    assert test.split == "test" and test.meta["partial"] and "stand in" in test.meta["stand_in"]
    assert torch.equal(test.x, train.x[-400:]) and torch.equal(test.y, train.y[-400:])
    assert test.meta["mean"] == train.meta["mean"]  # normalised like the training images


def test_random_crop_flip_is_a_shifted_or_mirrored_window():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) + 1
    flipped_only = data.random_crop_flip(x, g, padding=0)
    for i in range(2):
        assert torch.equal(flipped_only[i], x[i]) or torch.equal(flipped_only[i], x[i].flip(-1))
    out = data.random_crop_flip(x.repeat(50, 1, 1, 1), torch.Generator().manual_seed(1), padding=2)
    assert out.shape == (100, 3, 8, 8)
    padded = torch.nn.functional.pad(x[0], (2, 2, 2, 2))
    windows = [padded[:, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
    windows += [w.flip(-1) for w in windows]
    for img in out[0::2]:  # each output is one of the 50 shifted / mirrored windows
        assert any(torch.equal(img, w) for w in windows)
    assert not torch.equal(out[0], out[2]) or not torch.equal(out[2], out[4])


# ------------------------------------------------------------------ bad input


def _mnist_copy(shared: Path, root: Path) -> Path:
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(shared / "mnist" / name, folder / name)
    return folder


def _rewrite_gz(path: Path, content: bytes) -> None:
    path.write_bytes(gzip.compress(content, mtime=0))


def _flip(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


IMAGES, LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"


def _missing(f: Path) -> str:
    f.unlink()
    return f.name


def _truncated(f: Path) -> str:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return f.name


def _corrupt(f: Path) -> str:
    _flip(f, f.stat().st_size // 2)
    return f.name


def _not_gzip(f: Path) -> str:
    _flip(f, 0)
    return f.name


def _wrong_magic(f: Path) -> str:
    raw = bytearray(gzip.open(f).read())
    raw[3] = 0x01  # images file with the labels magic
    _rewrite_gz(f, bytes(raw))
    return f.name


def _size_mismatch(f: Path) -> str:
    _rewrite_gz(f, gzip.open(f).read()[:-784])
    return f.name


def _checksum_mismatch(f: Path) -> str:
    raw = bytearray(gzip.open(f).read())
    raw[16 + 300] ^= 0x01  # one pixel off by one: structure fine, content not canonical
    _rewrite_gz(f, bytes(raw))
    return f.name


@pytest.mark.parametrize(
    "damage,target,message",
    [
        (_missing, LABELS, "file not found"),
        (_truncated, IMAGES, "truncated gzip"),
        (_corrupt, IMAGES, "corrupt gzip"),
        (_not_gzip, LABELS, "corrupt gzip"),
        pytest.param(_wrong_magic, IMAGES, "wrong magic number", marks=pytest.mark.slow),
        pytest.param(_size_mismatch, IMAGES, "size mismatch", marks=pytest.mark.slow),
        (_checksum_mismatch, IMAGES, "SHA-256 .*mismatch"),
    ],
    ids=["missing", "truncated", "corrupt", "not-gzip", "wrong-magic", "size-mismatch", "checksum"],
)
def test_mnist_bad_files_raise_one_line_data_error(shared_data, tmp_path, own_cache, damage, target, message):
    folder = _mnist_copy(shared_data, tmp_path)
    name = damage(folder / target)
    with pytest.raises(DataError, match=message) as err:
        data.load("mnist", "test", data_dir=tmp_path)
    text = str(err.value)
    assert name in text and "\n" not in text
    assert "noisynn data fetch mnist" in text and "NOISYNN_DATA_DIR" in text
    assert isinstance(err.value, NoisynnError)
    status = data.check("mnist", data_dir=tmp_path)[0].status
    assert status == ("missing" if damage is _missing else "corrupt")


def test_strokes_and_cifar_bad_files(shared_data, tmp_path, own_cache):
    folder = tmp_path / "mnist-strokes"
    folder.mkdir()
    with pytest.raises(DataError, match="mnist-strokes.npz: file not found"):
        data.load("mnist-strokes", "test", data_dir=tmp_path)
    shutil.copy(shared_data / "mnist-strokes" / "mnist-strokes.npz", folder)
    _flip(folder / "mnist-strokes.npz", 1000)
    with pytest.raises(DataError, match=r"mnist-strokes.npz: SHA-256 mismatch"):
        data.load("mnist-strokes", "test", data_dir=tmp_path)
    _truncated(folder / "mnist-strokes.npz")
    with pytest.raises(DataError, match=r"mnist-strokes.npz: unreadable npz"):
        data.load("mnist-strokes", "test", data_dir=tmp_path, verify=False)
    bad = tmp_path / "cifar10"
    bad.mkdir()
    _subset_records(shared_data)[:100].tofile(bad / "data_batch_1.bin")
    with open(bad / "data_batch_1.bin", "ab") as f:
        f.write(b"\0" * 5)
    with pytest.raises(DataError, match=r"data_batch_1.bin: size mismatch"):
        data.load("cifar10", data_dir=tmp_path, allow_partial=True)
    assert data.check("cifar10", data_dir=tmp_path)[0].status == "corrupt"


def test_cifar10_content_checksum(shared_data, cifar_dir, own_cache):
    path = cifar_dir / "cifar10" / "data_batch_1.bin"
    _flip(path, 3073 * 10 + 100)  # a pixel of image 10
    with pytest.raises(DataError, match=r"data_batch_1.bin: SHA-256 of the first 4,000 records mismatch"):
        data.load("cifar10", data_dir=cifar_dir, allow_partial=True)


def test_unknown_names_raise_data_error():
    with pytest.raises(DataError, match="unknown dataset 'fashion'.*mnist-strokes"):
        data.load("fashion")
    with pytest.raises(DataError, match="unknown dataset"):
        data.fetch("svhn")
    with pytest.raises(DataError, match="unknown dataset"):
        data.check("svhn")
    with pytest.raises(DataError, match="split"):
        data.load("digits", "validation")
    with pytest.raises(DataError, match="layout"):
        data.load("digits", layout="columns")


# ------------------------------------------------------------------ cache


def test_stale_cache_is_rebuilt_when_the_source_changes(shared_data, tmp_path, own_cache):
    folder = _mnist_copy(shared_data, tmp_path)
    first = data.load("mnist", "test", data_dir=tmp_path)
    assert first.meta["cache"] == "built"
    assert data.load("mnist", "test", data_dir=tmp_path).meta["cache"] == "hit"

    # same content, other gzip bytes (like the rebuilt train-images file): rebuilt, still valid
    labels = folder / LABELS
    content = gzip.open(labels).read()
    labels.write_bytes(gzip.compress(content, compresslevel=1, mtime=0))
    again = data.load("mnist", "test", data_dir=tmp_path)
    assert again.meta["cache"] == "built" and torch.equal(again.y, first.y)
    entries = list((own_cache / "decoded" / "mnist").glob("test-*"))
    assert len(entries) == 1  # the stale entry was removed

    # changed content: the cache must not be trusted (verify=False lets a custom file load)
    changed = bytearray(content)
    changed[8] = (changed[8] + 1) % 10
    _rewrite_gz(labels, bytes(changed))
    os.utime(labels, ns=(1_000_000_000, 1_000_000_000))
    fresh = data.load("mnist", "test", data_dir=tmp_path, verify=False)
    assert fresh.meta["cache"] == "built"
    assert int(fresh.y[0]) == (int(first.y[0]) + 1) % 10
    assert torch.equal(fresh.y[1:], first.y[1:])
    with pytest.raises(DataError, match="SHA-256"):
        data.load("mnist", "test", data_dir=tmp_path)


def test_unwritable_cache_falls_back_to_memory(shared_data, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv(store.ENV_CACHE_DIR, str(blocker / "cache"))
    _mnist_copy(shared_data, tmp_path)
    with pytest.warns(UserWarning, match="cannot write the decoded cache"):
        ds = data.load("mnist", "test", data_dir=tmp_path)
    assert ds.meta["cache"] == "uncached" and ds.y.bincount().tolist() == MNIST_TEST_COUNTS


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv(store.ENV_DATA_DIR, raising=False)
    assert data.data_dir() == store.default_dir()
    assert store.default_dir().name == "noisynn"
    monkeypatch.setenv(store.ENV_DATA_DIR, str(tmp_path / "env"))
    assert data.data_dir() == tmp_path / "env"
    assert data.data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data.data_dir_for("mnist-strokes") == tmp_path / "env" / "mnist-strokes"


# ------------------------------------------------------------------ batching


def test_batches_cover_each_sample_once_and_are_reproducible():
    ds = data.load("digits", "test")
    loader = data.batches(ds, 64, shuffle=True, generator=torch.Generator().manual_seed(3), device="cpu")
    assert len(loader) == 6
    epoch1 = list(loader)
    epoch2 = list(loader)
    assert [len(yb) for _, yb in epoch1] == [64] * 5 + [40]
    for epoch in (epoch1, epoch2):
        xs = torch.cat([xb for xb, _ in epoch])
        ys = torch.cat([yb for _, yb in epoch])
        order = torch.argsort(ys, stable=True)
        ref = torch.argsort(ds.y, stable=True)
        assert torch.equal(ys[order], ds.y[ref])
        sums = torch.sort(xs.reshape(len(xs), -1).sum(1)).values
        assert torch.equal(sums, torch.sort(ds.x.reshape(360, -1).sum(1)).values)
    assert not torch.equal(epoch1[0][1], epoch2[0][1])  # a new order each epoch
    again = list(data.batches(ds, 64, generator=torch.Generator().manual_seed(3)))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(epoch1, again, strict=True))
    plain = list(data.batches(ds, 100, shuffle=False, drop_last=True))
    assert len(plain) == 3 and torch.equal(plain[1][0], ds.x[100:200])
    aug = next(iter(data.batches(ds, 32, augment=True, generator=torch.Generator().manual_seed(0))))
    assert aug[0].shape == (32, 1, 8, 8)


# ------------------------------------------------------------------ command line


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the real entry point, ``python -m noisynn``."""
    return subprocess.run([sys.executable, "-m", "noisynn", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def _data_app():
    """Only the ``data`` group, in-process (cheap), for the checks that need no entry point."""
    import typer
    from typer.testing import CliRunner

    from noisynn.cli import data_cmd

    app = typer.Typer()
    app.command("version")(lambda: None)  # a second command keeps `data` a sub-command
    data_cmd.register(app)
    return app, CliRunner()


@pytest.mark.slow
def test_cli_data_check_on_the_shared_folder(shared_data, session_cache):
    env = {store.ENV_DATA_DIR: str(shared_data), store.ENV_CACHE_DIR: str(session_cache)}
    table = _cli("data", "check", env=env)
    assert table.returncode == 0, table.stderr
    rows = {line.split()[1]: line.split()[5] for line in table.stdout.splitlines()
            if line.startswith("│ ") and line.split()[1] in data.DATASETS}
    assert rows == {"digits": "OK", "mnist": "OK", "mnist-strokes": "OK", "cifar10": "partial"}

    app, runner = _data_app()
    result = runner.invoke(app, ["data", "check", "--json", "--data-dir", str(shared_data)], env=env)
    assert result.exit_code == 0, result.output
    status = {r["name"]: r["status"] for r in json.loads(result.stdout)}
    assert status == {"digits": "OK", "mnist": "OK", "mnist-strokes": "OK", "cifar10": "partial"}


@pytest.mark.slow
def test_cli_reports_data_errors_in_one_line(shared_data, tmp_path, session_cache):
    folder = _mnist_copy(shared_data, tmp_path)
    _truncated(folder / IMAGES)
    env = {store.ENV_CACHE_DIR: str(session_cache)}
    result = _cli("data", "info", "mnist", "--split", "test", "--data-dir", str(tmp_path), env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and IMAGES in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr

    app, runner = _data_app()
    check = runner.invoke(app, ["data", "check", "mnist", "--json", "--data-dir", str(tmp_path)], env=env)
    assert check.exit_code == 1 and json.loads(check.stdout)[0]["status"] == "corrupt"
    unknown = runner.invoke(app, ["data", "fetch", "fashion"], env=env)
    assert unknown.exit_code == 2 and unknown.stderr.startswith("error: unknown dataset")
    info = runner.invoke(app, ["data", "info", "digits", "--split", "test", "--layout", "rows"], env=env)
    assert info.exit_code == 0 and "(360, 8, 8)" in info.stdout
