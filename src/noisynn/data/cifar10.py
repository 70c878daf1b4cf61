"""CIFAR-10, binary version (``cifar-10-binary.tar.gz``), and its partial shared subset.

Files (in ``<data_dir>/cifar10/``, flat, as extracted from the archive's
``cifar-10-batches-bin/``): ``data_batch_1.bin`` … ``data_batch_5.bin`` (10,000 training records
each) and ``test_batch.bin`` (10,000 test records); a record is 1 label byte then 3,072 pixel bytes
(the R, G and B planes, 32 x 32 each, row-major).

Integrity: the archive's published MD5 is checked on download. The extracted files are checked
by size, by the SHA-256 of each training batch's label sequence, by the SHA-256 of the first
4,000 records of ``data_batch_1.bin``, and by the test set's 1,000 images per class.

A *partial* copy (some batch files, shorter batch files, or only
``subset_data_batch_1_records_0000-3999.bin.gz`` as in the shared folder) is refused unless
``allow_partial=True`` is given; it then loads the training images that are there, for smoke
runs only, and says so with a warning and ``meta["partial"] = True``. Such a copy usually has
no test images: its test split is then the last tenth of its training images
(``meta["stand_in"]`` says so), so that a smoke run can train, evaluate and attack.

Images come as ``uint8`` (N, 3, 32, 32); normalisation (per channel, with the mean and standard
deviation of the training images that were loaded, on the [0, 1] scale) is applied by
:func:`noisynn.data.load`. No augmentation here; see :func:`noisynn.data.loader.random_crop_flip`.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tarfile
import zlib
from pathlib import Path

import numpy as np

from noisynn.data import store
from noisynn.data.fetch import CORRUPT, MISSING, OK, PARTIAL, CheckResult, base_urls, download_first
from noisynn.errors import DataError

NAME = "cifar10"
FOLDER = "cifar10"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RECORD = 3073
PER_BATCH = 10_000
BATCH_BYTES = RECORD * PER_BATCH
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"
TRAIN_LABELS_SHA256 = (
    "d829dbdf32167c9d7b3687cee66d92d80d46c441308b5aca0d11e8b69e27dac9",
    "5d18f7371ed35ea9ade77952fe958b0660a45cd6c8b8a8970030f21612cfd7e3",
    "32cf77b0ee2e790b1c4384d2d82e42dc1571b87e67f6da8f444b2725b2973f65",
    "d2815e3f8f656272864920fc0edde56b04ec9cf81bf397c0dd3069f4aea51aeb",
    "2ddf3ab27d5d04409c94ce7b56849c243129c10de1058ae0bfe14c77e934800c",
)
"""SHA-256 of the 10,000 label bytes of each training batch (canonical order)."""
PREFIX_RECORDS = 4000
PREFIX_SHA256 = "0993cf8b8e43bc207603aef9787006995746513f5e3fa5a52e06d1b069926330"
"""SHA-256 of the first 4,000 records of ``data_batch_1.bin``."""
SUBSET = "subset_data_batch_1_records_0000-3999.bin.gz"
SUBSET_SHA256 = "0bb145d179ecb2a750190e62493390eeb7162bf39f48bbe8e48630dd27a8a1ba"
ARCHIVE = "cifar-10-binary.tar.gz"
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
URL = "https://www.cs.toronto.edu/~kriz/"
ENV_URL = "NOISYNN_CIFAR10_URL"
"""Environment variable overriding the base URL of the archive."""

_PARTIAL_HINT = (
    "run `noisynn data fetch cifar10` for the full set, or pass allow_partial=True / "
    "--allow-partial for a smoke run on the partial data"
)


def parse_records(raw: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Split a flat ``uint8`` record stream into images (N, 3, 32, 32) and int64 labels (N,)."""
    if raw.size == 0 or raw.size % RECORD:
        raise DataError(
            f"{path}: size mismatch, {raw.size} bytes is not a whole number of {RECORD}-byte "
            f"records; {store.fix_hint(NAME)}"
        )
    rec = raw.reshape(-1, RECORD)
    y = rec[:, 0].astype(np.int64)
    if int(y.max()) > 9:
        raise DataError(f"{path}: label {int(y.max())} out of range 0..9, not a CIFAR-10 batch; {store.fix_hint(NAME)}")
    return rec[:, 1:].reshape(-1, 3, 32, 32), y


def _read(path: Path) -> np.ndarray:
    if path.name.endswith(".gz"):
        return np.frombuffer(store.read_gzip(path, NAME), dtype=np.uint8)
    return np.fromfile(store.require(path, NAME), dtype=np.uint8)


def verify_records(raw: np.ndarray, path: Path) -> None:
    """Check a batch's content against what is known of the canonical file named like it.

    Raises:
        DataError: Label sequence, first-4,000-record hash or test class counts differ.
    """
    name = path.name
    rec = raw.reshape(-1, RECORD)
    n = len(rec)
    if name == TEST_FILE and n == PER_BATCH:
        counts = np.bincount(rec[:, 0], minlength=10)
        if not (counts == PER_BATCH // 10).all():
            raise DataError(
                f"{path}: checksum mismatch, class counts {counts.tolist()} are not 1000 each; {store.fix_hint(NAME)}"
            )
    if name in TRAIN_FILES and n == PER_BATCH:
        got = hashlib.sha256(rec[:, 0].tobytes()).hexdigest()
        store.check_digest(path, got, TRAIN_LABELS_SHA256[TRAIN_FILES.index(name)], NAME, "label SHA-256")
    if name in (TRAIN_FILES[0], SUBSET) and n >= PREFIX_RECORDS:
        got = hashlib.sha256(rec[:PREFIX_RECORDS].tobytes()).hexdigest()
        store.check_digest(path, got, PREFIX_SHA256, NAME, "SHA-256 of the first 4,000 records")


def _sources(folder: Path, split: str, allow_partial: bool) -> tuple[list[Path], bool]:
    """The files to read for ``split`` and whether they form only a partial set."""
    if split == "test":
        path = folder / TEST_FILE
        if not path.is_file():
            why = "no test images in this partial copy" if (folder / SUBSET).is_file() else "file not found"
            raise DataError(f"{path}: {why}; {store.fix_hint(NAME)}")
        size = path.stat().st_size
        if size != BATCH_BYTES and not allow_partial:
            raise DataError(f"{path}: size mismatch, {size} bytes, expected {BATCH_BYTES}; {_PARTIAL_HINT}")
        return [path], size != BATCH_BYTES
    present = [folder / f for f in TRAIN_FILES if (folder / f).is_file()]
    if len(present) == len(TRAIN_FILES) and all(p.stat().st_size == BATCH_BYTES for p in present):
        return present, False
    if not allow_partial:
        for f in TRAIN_FILES:
            path = folder / f
            if not path.is_file():
                what = "only the 4,000-image subset is here" if (folder / SUBSET).is_file() else "file not found"
                raise DataError(f"{path}: {what}; {_PARTIAL_HINT}")
            if path.stat().st_size != BATCH_BYTES:
                raise DataError(
                    f"{path}: size mismatch, {path.stat().st_size} bytes, expected {BATCH_BYTES}; {_PARTIAL_HINT}"
                )
    if present:
        return present, True
    if (folder / SUBSET).is_file():
        return [folder / SUBSET], True
    raise DataError(f"{folder / TRAIN_FILES[0]}: file not found; {store.fix_hint(NAME)}")


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std (population) of uint8 images, on the [0, 1] scale."""
    mean, std = np.empty(3), np.empty(3)
    values = np.arange(256, dtype=np.float64) / 255.0
    for c in range(3):
        hist = np.bincount(np.ascontiguousarray(x[:, c]).reshape(-1), minlength=256).astype(np.float64)
        hist /= hist.sum()
        mean[c] = hist @ values
        std[c] = np.sqrt(hist @ (values - mean[c]) ** 2)
    return mean, std


def _decode(sources: list[Path], verify: bool, with_stats: bool) -> dict[str, np.ndarray]:
    xs, ys = [], []
    for path in sources:
        raw = _read(path)
        x, y = parse_records(raw, path)
        if verify:
            verify_records(raw, path)
        xs.append(x)
        ys.append(y)
    out = {"x": np.concatenate(xs), "y": np.concatenate(ys)}
    if with_stats:
        out["mean"], out["std"] = _channel_stats(out["x"])
    return out


def _decoded(
    folder: Path, split: str, allow_partial: bool, verify: bool
) -> tuple[dict[str, np.ndarray], list[Path], bool, str]:
    sources, partial = _sources(folder, split, allow_partial)
    if verify and sources == [folder / SUBSET]:
        store.check_digest(sources[0], store.sha256(sources[0]), SUBSET_SHA256, NAME)
    parts: dict[str, object] = {p.name: store.sha256(p) for p in sources}
    parts["verify"] = verify
    arrays, status = store.cached_arrays(
        NAME, split + ("-partial" if partial else ""), parts,
        lambda: _decode(sources, verify, with_stats=split == "train"),
    )
    return arrays, sources, partial, status


def load(
    folder: Path, split: str, *, allow_partial: bool = False, normalize: bool = True, verify: bool = True
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Load one split as ``uint8`` images (N, 3, 32, 32) and int64 labels.

    Args:
        folder: ``<data_dir>/cifar10``.
        split: ``"train"`` or ``"test"``.
        allow_partial: Accept an incomplete copy (smoke runs only; see the module docstring).
        normalize: Put the training set's per-channel ``mean``/``std`` in ``meta`` so that
            :func:`noisynn.data.load` normalises with them.
        verify: Check the content against the known hashes.

    Returns:
        ``(x, y, meta)``; ``meta`` has ``partial``, ``files``, ``classes`` and, if ``normalize``,
        ``mean`` and ``std`` (lists of 3 floats).
    """
    if split == "test" and allow_partial and not (folder / TEST_FILE).is_file():
        return _stand_in_test(folder, normalize=normalize, verify=verify)
    arrays, sources, partial, status = _decoded(folder, split, allow_partial, verify)
    meta: dict = {"cache": status, "files": [p.name for p in sources], "partial": partial, "classes": _classes(folder)}
    if normalize:
        train = arrays if split == "train" else _decoded(folder, "train", allow_partial, verify)[0]
        meta["mean"] = [float(v) for v in train["mean"]]
        meta["std"] = [float(v) for v in train["std"]]
    return arrays["x"], arrays["y"], meta


def _stand_in_test(folder: Path, *, normalize: bool, verify: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """The test split of a partial copy that has no test images: its last tenth of training images.

    For smoke runs only (``allow_partial``): these images may have been trained on, which
    ``meta["stand_in"]`` and the PARTIAL warning of :func:`noisynn.data.load` say.
    """
    x, y, meta = load(folder, "train", allow_partial=True, normalize=normalize, verify=verify)
    n = max(1, len(y) // 10)
    meta["partial"] = True
    meta["stand_in"] = f"no test images here: the last {n:,} training images stand in for them"
    return x[-n:], y[-n:], meta


def _classes(folder: Path) -> list[str]:
    try:
        names = [s.strip() for s in (folder / META_FILE).read_text(encoding="utf-8").splitlines() if s.strip()]
    except (OSError, UnicodeDecodeError):
        names = []
    return names if len(names) == 10 else list(CLASSES)


def _verified(path: Path) -> bool:
    """Whether ``path`` passes its checks (result remembered per size + mtime)."""
    if store.memo_get(path, "cifar_check") == "ok":
        return True
    try:
        raw = _read(path)
        parse_records(raw, path)
        verify_records(raw, path)
        if path.name == SUBSET:
            store.check_digest(path, store.sha256(path), SUBSET_SHA256, NAME)
    except DataError:
        return False
    store.memo_put(path, "cifar_check", "ok")
    return True


def check(folder: Path) -> CheckResult:
    """Classify the folder as OK (full set, verified), partial, corrupt or missing."""
    names = (*TRAIN_FILES, TEST_FILE)
    present = [folder / n for n in names if (folder / n).is_file()]
    subset = folder / SUBSET
    candidates = present + ([subset] if subset.is_file() else [])
    files = f"{len(present)}/{len(names)}"
    if not candidates:
        return CheckResult(NAME, MISSING, files, "no data; run `noisynn data fetch cifar10`", str(folder))
    bad = [p.name for p in candidates if not _verified(p)]
    if bad:
        detail = f"bad: {', '.join(bad)}; run `noisynn data fetch cifar10`"
        return CheckResult(NAME, CORRUPT, files, detail, str(folder))
    full = len(present) == len(names) and all(p.stat().st_size == BATCH_BYTES for p in present)
    if full:
        return CheckResult(NAME, OK, files, "sizes, label hashes and class counts verified", str(folder))
    if present:
        n_train = sum(p.stat().st_size // RECORD for p in present if p.name != TEST_FILE)
        n_test = sum(p.stat().st_size // RECORD for p in present if p.name == TEST_FILE)
        what = f"{n_train:,} of 50,000 train and {n_test:,} of 10,000 test images"
    else:
        what = f"only the {PREFIX_RECORDS:,}-image training subset ({SUBSET}), no test images"
    return CheckResult(NAME, PARTIAL, files, f"{what}; --allow-partial loads it for smoke runs only", str(folder))


def fetch(folder: Path, base_url: str | None = None, progress: bool = False) -> list[Path]:
    """Download ``cifar-10-binary.tar.gz`` (MD5-verified by pooch) and extract the batch files.

    Raises:
        DataError: Download failed, MD5 mismatch, or the extracted files fail :func:`check`.
    """
    if check(folder).status == OK:
        return [folder / n for n in (*TRAIN_FILES, TEST_FILE)]
    archive = download_first(base_urls(base_url, ENV_URL, (URL,)), folder / ARCHIVE, NAME,
                             known_hash=f"md5:{ARCHIVE_MD5}", progress=progress, env=ENV_URL)
    wanted = {*TRAIN_FILES, TEST_FILE, META_FILE, "readme.html"}
    try:
        with tarfile.open(archive, "r:gz") as tf:
            for member in tf:
                base = posixpath.basename(member.name)
                if not member.isfile() or base not in wanted:
                    continue
                src = tf.extractfile(member)
                assert src is not None
                tmp = folder / f".{base}.part"
                with open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(tmp, folder / base)
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        raise DataError(f"{archive}: cannot extract ({type(exc).__name__}: {exc}); delete it and fetch again") from exc
    result = check(folder)
    if result.status != OK:
        raise DataError(f"{folder}: extracted CIFAR-10 is {result.status} ({result.detail})")
    archive.unlink()
    return [folder / n for n in (*TRAIN_FILES, TEST_FILE)]
