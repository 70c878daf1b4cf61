"""MNIST pen-stroke sequences (E. D. de Jong, "MNIST digits stroke sequence data", 2016).

Each MNIST digit is a sequence of rows ``dx dy eos eod`` (pen movement in pixels, y pointing
down; ``eos`` = 1 ends a stroke with ``dx = dy = 0``; the last row, ``0 0 1 1``, ends the digit).
Files (in ``<data_dir>/mnist-strokes/``, as in the shared copy, see its README):
``mnist-strokes.npz`` (all rows + lengths + labels as numpy arrays, read by default),
``train-inputdata.tar.gz`` / ``test-inputdata.tar.gz`` (the original per-digit text files, read
when the ``.npz`` is absent) and ``train-labels.txt`` / ``test-labels.txt``.

**What the model sees** (Qin & Vucinic 2018, sec. III-B: "a sequence of 2-D coordinates ... the
first 50 pen points ... padded with 0s"; Qin & Vucinic, *Noisy inference*, sec. 3.1: "the first
50 two dimensional coordinates of pen-points ... padded with (0, 0)'s"): a float32 tensor
(N, 50, 2) built as follows.

* ``markers="drop"`` (default): the ``eos``/``eod`` marker rows are removed. They are not pen
  points: they carry no position (``dx = dy = 0``) and the original ``*-points.txt`` files list
  them as ``-1,-1`` / ``-2,-2`` sentinels rather than coordinates. What is left is one row per
  skeleton pixel visited by the pen (a stroke change shows up as a jump). ``markers="keep"``
  keeps every raw row in order instead: an ``eos`` row is then a (0, 0) offset, or a repeat of
  the previous position in absolute coordinates.
* ``coords="absolute"`` (default): the pen position (x, y) = running sum of (dx, dy) from the
  implicit start (0, 0), i.e. the 1-based (column, row) of the MNIST pixel under the pen, values
  1..28. The papers speak of "coordinates of pen-points" (the quantity the data set's
  ``*-points.txt`` files list), not of movements, and with absolute positions the (0, 0)
  padding can never be confused with a real point. ``coords="offsets"`` gives the raw (dx, dy)
  of each kept row instead (de Jong's own input representation; the first row is the start
  position). The values are not rescaled.

  **The presets read movements**: the strokes presets (``paper1-lstm-strokes``,
  ``paper2-lstm-strokes-multiplicative``) set ``data_options = {coords = "offsets"}`` in
  every profile but ``cpu`` (issue 18), whose results in ``docs/reproduction.md`` were made
  with positions. This loader's own default stays ``"absolute"``, so that a checkpoint
  trained without ``data_options`` keeps meaning what it meant (its test split is loaded
  the same way at evaluation); positions remain available everywhere with
  ``coords="absolute"``.
* The first ``max_len`` (50) points are kept; shorter sequences are zero-padded at the end.

``meta["lengths"]`` holds each digit's full number of points (before truncation, counted after
the ``markers`` choice); paper 1, fig. 6 is the histogram of these lengths ("the majority of
length resides between 20 to 60": about 91 % of the training digits with the default choice).
"""

from __future__ import annotations

import re
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from noisynn.data import store
from noisynn.data.fetch import CheckResult, base_urls, check_files, download_first
from noisynn.errors import DataError

NAME = "mnist-strokes"
FOLDER = "mnist-strokes"
NPZ = "mnist-strokes.npz"
TARBALLS = {"train": "train-inputdata.tar.gz", "test": "test-inputdata.tar.gz"}
LABELS = {"train": "train-labels.txt", "test": "test-labels.txt"}
SHA256 = {
    "mnist-strokes.npz": "17bb9091632fd94873539025832f2835c0d6ce0d3f5b88214738afc36e7b9532",
    "test-inputdata.tar.gz": "09448efc705e977a750fa403e3c47af2410346c4ac64429701c8229b02ab3147",
    "test-labels.txt": "b00c1c90c51a6005aa65dbdac2843589c7580a99541ad50ec435a545b6c25947",
    "train-inputdata.tar.gz": "83387c708fea427954c328bd9d029ae0205677c0da231f76f288a7dda48cee8f",
    "train-labels.txt": "3a59b521d740e5f50843de7eb9045de3f84d2abd4e87841e7b2b699e67bb7958",
}
"""SHA-256 of the five files (the shared copy's ``SHA256SUMS``)."""
COUNT = {"train": 60_000, "test": 10_000}
ENV_URL = "NOISYNN_STROKES_URL"
"""Environment variable: base URL of a folder serving the five files."""
UPSTREAM = "https://github.com/edwin-de-jong/mnist-digits-stroke-sequence-data"
COORDS = ("absolute", "offsets")
MARKERS = ("drop", "keep")
MAX_LEN = 50


def _corrupt(path: Path, why: str) -> DataError:
    return DataError(f"{path}: {why}; {store.fix_hint(NAME)}")


def _verify(path: Path) -> None:
    store.check_digest(path, store.sha256(path), SHA256[path.name], NAME)


def validate(rows: np.ndarray, lengths: np.ndarray, labels: np.ndarray, path: Path, split: str) -> None:
    """Check the structure of decoded sequences; raise :class:`DataError` naming ``path`` if bad."""
    n = COUNT[split]
    if rows.ndim != 2 or rows.shape[1] != 4 or lengths.shape != (n,) or labels.shape != (n,):
        raise _corrupt(path, f"size mismatch: {split} rows {rows.shape}, lengths {lengths.shape}, "
                             f"labels {labels.shape}, expected {n} digits of 4-column rows")
    if lengths.min() < 2 or int(lengths.sum()) != rows.shape[0]:
        raise _corrupt(path, f"size mismatch: {split} lengths add up to {int(lengths.sum())}, rows {rows.shape[0]}")
    ends = np.cumsum(lengths.astype(np.int64)) - 1
    if not (rows[ends, 3] == 1).all() or int(rows[:, 3].sum()) != n:
        raise _corrupt(path, f"{split} sequences do not each end with one eod row")
    if labels.min() < 0 or labels.max() > 9:
        raise _corrupt(path, f"{split} label out of range 0..9")


def read_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``<split>_rows``, ``<split>_lengths``, ``<split>_labels`` from ``mnist-strokes.npz``."""
    try:
        with np.load(path) as z:
            rows, lengths, labels = (np.asarray(z[f"{split}_{k}"]) for k in ("rows", "lengths", "labels"))
    except KeyError as exc:
        raise _corrupt(path, f"array {exc} missing, not the mnist-strokes npz") from exc
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise _corrupt(path, f"unreadable npz ({type(exc).__name__}: {exc})") from exc
    return rows.astype(np.int8), lengths.astype(np.int64), labels.astype(np.int64)


def read_text(tar_path: Path, labels_path: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse the original text format: one ``<prefix>img-<i>-inputdata.txt`` per digit in a tarball."""
    n = COUNT[split]
    try:
        labels = np.array(labels_path.read_text(encoding="ascii").split(), dtype=np.int64)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _corrupt(labels_path, f"not one integer label per line ({exc})") from exc
    pattern = re.compile(rf"sequences/{split}img-(\d+)-inputdata\.txt")
    seqs: list[np.ndarray | None] = [None] * n
    try:
        with tarfile.open(tar_path, "r:gz") as tf:
            for member in tf:
                match = pattern.fullmatch(member.name)
                if not match or not member.isfile() or int(match.group(1)) >= n:
                    continue
                f = tf.extractfile(member)
                assert f is not None
                seqs[int(match.group(1))] = np.array(f.read().split(), dtype=np.int64).reshape(-1, 4)
    except EOFError as exc:
        raise _corrupt(tar_path, f"truncated gzip/tar ({exc})") from exc
    except (tarfile.TarError, zlib.error, OSError, ValueError) as exc:
        raise _corrupt(tar_path, f"corrupt tarball ({type(exc).__name__}: {exc})") from exc
    absent = [i for i, s in enumerate(seqs) if s is None]
    if absent:
        raise _corrupt(tar_path, f"{len(absent)} of {n} sequences missing (first: {split}img-{absent[0]})")
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)  # type: ignore[arg-type]
    rows = np.concatenate(seqs).astype(np.int8)  # type: ignore[arg-type]
    return rows, lengths, labels


def to_sequences(
    rows: np.ndarray, lengths: np.ndarray, *, coords: str, markers: str, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Turn concatenated ``dx dy eos eod`` rows into padded 2-D point sequences.

    Args:
        rows: (R, 4) rows of all digits, concatenated.
        lengths: (N,) rows per digit.
        coords: ``"absolute"`` (running sum of dx, dy) or ``"offsets"`` (dx, dy).
        markers: ``"drop"`` (remove eos/eod rows) or ``"keep"``.
        max_len: Points kept per digit; shorter sequences are zero-padded.

    Returns:
        ``(x, n_points)``: float32 (N, max_len, 2) and int64 (N,) full point counts.
    """
    n = len(lengths)
    digit = np.repeat(np.arange(n), lengths)
    d = rows[:, :2].astype(np.int64)
    if coords == "absolute":
        total = np.cumsum(d, axis=0)
        starts = np.cumsum(lengths) - lengths
        d = total - (total[starts] - d[starts])[digit]
    keep = rows[:, 2] == 0 if markers == "drop" else np.ones(len(rows), dtype=bool)
    kept_digit = digit[keep]
    n_points = np.bincount(kept_digit, minlength=n).astype(np.int64)
    pos = np.arange(len(kept_digit)) - (np.cumsum(n_points) - n_points)[kept_digit]
    sel = pos < max_len
    x = np.zeros((n, max_len, 2), dtype=np.float32)
    x[kept_digit[sel], pos[sel]] = d[keep][sel]
    return x, n_points


def load(
    folder: Path,
    split: str,
    *,
    coords: str = "absolute",
    markers: str = "drop",
    max_len: int = MAX_LEN,
    verify: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Load one split as float32 (N, max_len, 2) point sequences and int64 labels.

    Args:
        folder: ``<data_dir>/mnist-strokes``.
        split: ``"train"`` or ``"test"``.
        coords: ``"absolute"`` or ``"offsets"`` (see the module docstring).
        markers: ``"drop"`` or ``"keep"`` the eos/eod rows (see the module docstring).
        max_len: Number of time steps (the papers use 50).
        verify: Check the source files' SHA-256.

    Returns:
        ``(x, y, meta)`` with ``meta["lengths"]`` the full (untruncated) point counts.
    """
    if coords not in COORDS:
        raise DataError(f"mnist-strokes: coords={coords!r} is not one of {', '.join(COORDS)}")
    if markers not in MARKERS:
        raise DataError(f"mnist-strokes: markers={markers!r} is not one of {', '.join(MARKERS)}")
    if int(max_len) < 1:
        raise DataError(f"mnist-strokes: max_len={max_len} must be at least 1")
    npz = folder / NPZ
    if npz.is_file():
        sources = [npz]
    else:
        tar, lab = folder / TARBALLS[split], folder / LABELS[split]
        if not (tar.is_file() and lab.is_file()):
            store.require(npz, NAME)  # raises, naming the main file
        sources = [tar, lab]
    if verify:
        for path in sources:
            _verify(path)
    parts: dict[str, object] = {p.name: store.sha256(p) for p in sources}
    parts.update(coords=coords, markers=markers, max_len=int(max_len))

    def build() -> dict[str, np.ndarray]:
        rows, lengths, labels = read_npz(npz, split) if sources == [npz] else read_text(sources[0], sources[1], split)
        validate(rows, lengths, labels, sources[0], split)
        x, n_points = to_sequences(rows, lengths, coords=coords, markers=markers, max_len=int(max_len))
        return {"x": x, "y": labels, "lengths": n_points}

    tag = f"{split}-{coords}-{markers}-{int(max_len)}"
    arrays, status = store.cached_arrays(NAME, tag, parts, build)
    meta = {"cache": status, "files": [p.name for p in sources], "coords": coords,
            "markers": markers, "max_len": int(max_len), "lengths": arrays["lengths"]}
    return arrays["x"], arrays["y"], meta


def check(folder: Path) -> CheckResult:
    """Verify the five files against their SHA-256."""
    return check_files(NAME, folder, list(SHA256), lambda p: store.sha256(p) == SHA256[p.name], "SHA-256 verified",
                       bad="bad SHA-256")


def fetch(folder: Path, base_url: str | None = None, progress: bool = False) -> list[Path]:
    """Download the five files from ``base_url`` (or ``$NOISYNN_STROKES_URL``), verifying SHA-256.

    There is no default URL: the upstream data repository ships a single ``sequences.tar.gz``
    in a different layout (and of unpublished hash), not these files, so a folder serving them
    (such as a copy of the shared data) must be named.

    Raises:
        DataError: No URL configured, download failed, or a checksum mismatch.
    """
    urls = base_urls(base_url, ENV_URL, ())
    if not urls:
        raise DataError(
            f"{folder / NPZ}: no download URL for {NAME}; the upstream repository ({UPSTREAM}) "
            f"has another layout, so set {ENV_URL} (or --base-url) to a folder URL serving "
            f"{', '.join(SHA256)}, or copy those files into {folder}"
        )
    out = []
    for name, digest in SHA256.items():
        dest = folder / name
        out.append(dest)
        if dest.is_file() and store.sha256(dest) == digest:
            continue
        download_first(urls, dest, NAME, known_hash=f"sha256:{digest}", progress=progress, env=ENV_URL)
        store.memo_put(dest, "sha256", digest)
    return out
