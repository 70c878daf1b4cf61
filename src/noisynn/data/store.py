"""Where data lives: the data directory, the decoded-array cache, file hashing and safe file reading.

Two folders matter:

* the **data directory** holds the original files, one sub-folder per data set
  (``mnist/``, ``mnist-strokes/``, ``cifar10/``, with the same file names as the canonical
  downloads). It is chosen by ``--data-dir`` on the command line, else the ``NOISYNN_DATA_DIR``
  environment variable, else the per-user cache directory ``platformdirs.user_cache_dir("noisynn")``.
  It may be read-only (a shared copy): nothing is ever written beside the originals except by
  ``noisynn data fetch``.
* the **cache directory** (``NOISYNN_CACHE_DIR``, else the same per-user cache directory) holds
  ``decoded/<dataset>/<split>-<key>/*.npy`` (arrays decoded once, then memory-mapped) and
  ``hashes.json`` (SHA-256 of source files, keyed by path, size and mtime so that a file is hashed
  once). The decoded cache key is a hash of the source files' SHA-256s and the decoding options,
  so a cache whose source changed is rebuilt, never trusted. Each entry's ``arrays.json``
  records the SHA-256 and size of every ``.npy`` it holds, computed when it was built; an
  entry is verified against them before its first use in a process (SHA-256 of MNIST's
  47 MB of training arrays: ~0.1 s measured on a busy 2-core machine, a fifth of the
  load; later loads in the same process compare size, mtime and inode only),
  and an entry that fails (a rewritten ``y.npy``, say) is rebuilt with a one-line warning,
  never used. ``noisynn data check`` re-hashes every entry and reports such a cache as
  corrupt. If the cache directory is not writable, data are decoded in memory every time
  (with a warning) instead of failing.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from noisynn import _extras
from noisynn.errors import DataError

ENV_DATA_DIR = "NOISYNN_DATA_DIR"
"""Environment variable naming the data directory."""
ENV_CACHE_DIR = "NOISYNN_CACHE_DIR"
"""Environment variable naming the cache directory (decoded arrays, hash sidecar)."""
CACHE_FORMAT = 2
"""Bumped whenever the decoded layout changes, so old caches are ignored (2: content hashes in arrays.json)."""

_CHUNK = 1 << 20


def default_dir() -> Path:
    """The per-user cache directory of noisynn (``platformdirs.user_cache_dir("noisynn")``)."""
    platformdirs = _extras.require("platformdirs", "data", "the default data and cache directory")
    return Path(platformdirs.user_cache_dir("noisynn"))


def data_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the data directory.

    Args:
        override: An explicit folder (``--data-dir`` / ``data_dir=``); wins over everything.

    Returns:
        ``override``, else ``$NOISYNN_DATA_DIR``, else the per-user cache directory.
    """
    if override is not None and str(override) != "":
        return Path(override).expanduser()
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    return default_dir()


def cache_dir() -> Path:
    """Resolve the cache directory: ``$NOISYNN_CACHE_DIR``, else the per-user cache directory."""
    env = os.environ.get(ENV_CACHE_DIR)
    return Path(env).expanduser() if env else default_dir()


def fix_hint(dataset: str) -> str:
    """The standard 'how to fix it' tail of a data error message."""
    return (
        f"run `noisynn data fetch {dataset}`, or point --data-dir / {ENV_DATA_DIR} "
        f"at a folder that holds {dataset}/"
    )


def require(path: Path, dataset: str) -> Path:
    """Return ``path`` if it is a file, else raise a :class:`DataError` naming it and the fix."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; {fix_hint(dataset)}")
    return path


# ----------------------------------------------------------------------------- hashing


def _hash_stream(path: Path, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _memo_path() -> Path:
    return cache_dir() / "hashes.json"


def _read_memo() -> dict[str, dict]:
    try:
        with open(_memo_path(), encoding="utf-8") as f:
            memo = json.load(f)
        return memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_memo(memo: dict[str, dict]) -> None:
    target = _memo_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".hashes-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(memo, f, indent=0, sort_keys=True)
        os.replace(tmp, target)
    except OSError:  # read-only cache: hashes are simply recomputed next time
        pass


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def memo_get(path: Path, kind: str) -> str | None:
    """A hash of ``path`` remembered earlier, if the file's size and mtime are unchanged.

    Args:
        path: The file.
        kind: Which hash (``"sha256"``, ``"content_sha256"``, ...).
    """
    key, size, mtime = _stamp(path)
    rec = _read_memo().get(key)
    if rec and rec.get("size") == size and rec.get("mtime_ns") == mtime:
        value = rec.get(kind)
        return value if isinstance(value, str) else None
    return None


def memo_put(path: Path, kind: str, value: str) -> None:
    """Remember a hash of ``path`` (valid while its size and mtime stay the same)."""
    key, size, mtime = _stamp(path)
    memo = _read_memo()
    rec = memo.get(key)
    if not rec or rec.get("size") != size or rec.get("mtime_ns") != mtime:
        rec = {"size": size, "mtime_ns": mtime}
    rec[kind] = value
    memo[key] = rec
    _write_memo(memo)


def sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, computed once and then remembered (keyed on size + mtime_ns)."""
    known = memo_get(path, "sha256")
    if known is None:
        known = _hash_stream(path)
        memo_put(path, "sha256", known)
    return known


def md5(path: Path) -> str:
    """MD5 of a file's bytes (not remembered; used for the one archive whose MD5 is published)."""
    return _hash_stream(path, "md5")


# ----------------------------------------------------------------------------- reading


def read_gzip(path: Path, dataset: str, fix: str | None = None) -> bytes:
    """Decompress a whole ``.gz`` file, turning every gzip failure into a :class:`DataError`.

    Args:
        path: The ``.gz`` file (must exist).
        dataset: Data set name, for the fix hint.
        fix: The fix to suggest (default: :func:`fix_hint`).

    Raises:
        DataError: Missing, not a gzip file, truncated, or failing its CRC.
    """
    require(path, dataset)
    fix = fix or fix_hint(dataset)
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except EOFError as exc:
        raise DataError(f"{path}: truncated gzip ({exc}); {fix}") from exc
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise DataError(f"{path}: corrupt gzip ({exc}); {fix}") from exc


def check_digest(
    path: Path, actual: str, expected: str, dataset: str, what: str = "SHA-256", fix: str | None = None
) -> None:
    """Raise a :class:`DataError` naming ``path`` if ``actual`` differs from ``expected``."""
    if actual != expected:
        raise DataError(
            f"{path}: {what} mismatch (got {actual[:12]}…, expected {expected[:12]}…), "
            f"the file is corrupt or not the canonical one; {fix or fix_hint(dataset)}"
        )


# ----------------------------------------------------------------------------- decoded cache


def cache_key(parts: dict) -> str:
    """A short stable hash of JSON-able ``parts`` (source hashes + options + format version)."""
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


_VERIFIED: dict[str, tuple[int, int, int, str]] = {}
"""Cache files verified in this process: path -> (size, mtime_ns, inode, SHA-256)."""


class CacheCorrupt(Exception):
    """A decoded cache file does not match the hash recorded when it was built."""


def _file_record(path: Path) -> dict:
    return {"sha256": _hash_stream(path), "size": path.stat().st_size}


def _verify_file(path: Path, record: object, force: bool = False) -> None:
    """Raise :class:`CacheCorrupt` unless ``path`` has the recorded size and SHA-256.

    Hashed once per process; afterwards an unchanged size, mtime and inode is enough
    (``force`` hashes again).
    """
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        raise CacheCorrupt(f"{path.parent / 'arrays.json'} records no hash for {path.name}")
    st = path.stat()
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    known = _VERIFIED.get(str(path))
    if not force and known is not None and known[:3] == stamp and known[3] == record["sha256"]:
        return
    if st.st_size != record.get("size") or _hash_stream(path) != record["sha256"]:
        _VERIFIED.pop(str(path), None)
        raise CacheCorrupt(f"{path} does not match the hash recorded when it was built")
    _VERIFIED[str(path)] = (*stamp, record["sha256"])


def _entry_records(folder: Path) -> dict:
    doc = json.loads((folder / "arrays.json").read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("arrays"), dict) or not doc["arrays"]:
        raise ValueError(f"{folder / 'arrays.json'} is not a cache index of format {CACHE_FORMAT}")
    return doc["arrays"]


def _load_entry(folder: Path, force: bool = False) -> dict[str, np.ndarray] | None:
    """The entry's arrays, memory-mapped after verification; None if unreadable.

    Raises:
        CacheCorrupt: a file does not match its recorded hash.
    """
    try:
        records = _entry_records(folder)
        for n, record in records.items():
            _verify_file(folder / f"{n}.npy", record, force)
        return {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in records}
    except (OSError, ValueError):
        return None


def verify_cache(dataset: str) -> list[str]:
    """Re-hash every decoded cache entry of ``dataset``; one line per entry that fails (what ``data check`` reports)."""
    problems: list[str] = []
    root = cache_dir() / "decoded" / dataset
    try:
        entries = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return problems
    for folder in entries:
        if not (folder / "arrays.json").is_file():
            continue
        try:
            if _load_entry(folder, force=True) is None:
                problems.append(f"decoded cache {folder} is unreadable or of an old format")
        except CacheCorrupt as exc:
            problems.append(f"decoded cache {exc}")
    return problems


def cached_arrays(
    dataset: str,
    tag: str,
    parts: dict,
    build: Callable[[], dict[str, np.ndarray]],
) -> tuple[dict[str, np.ndarray], str]:
    """Return arrays decoded earlier, or decode them with ``build`` and store them.

    Entries live in ``<cache_dir>/decoded/<dataset>/<tag>-<key>/`` as one ``.npy`` per array plus
    ``arrays.json`` (written last, so a half-written entry is never used). Other entries with the
    same tag (older keys) are deleted when a new one is written.

    Args:
        dataset: Data set name (a folder under ``decoded/``).
        tag: What is cached (``"train"``, ``"test-absolute-drop-50"``, ...).
        parts: Everything the decoded result depends on (source SHA-256s, options).
        build: Decodes from the source files; returns named arrays.

    Returns:
        ``(arrays, status)``: arrays memory-mapped read-only (``np.load(mmap_mode="r")``), or the
        freshly built in-memory arrays when the cache is not writable; status is ``"hit"``,
        ``"built"`` or ``"uncached"``.
    """
    root = cache_dir() / "decoded" / dataset
    folder = root / f"{tag}-{cache_key(parts)}"
    if (folder / "arrays.json").is_file():
        try:
            arrays = _load_entry(folder)
        except CacheCorrupt as exc:
            warnings.warn(f"noisynn: decoded cache {exc} (modified since); rebuilding it from the source files",
                          stacklevel=3)
            arrays = None
        if arrays is not None:
            return arrays, "hit"
        shutil.rmtree(folder, ignore_errors=True)  # unreadable or altered entry: rebuild it
    arrays = build()
    tmp: Path | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{tag}-"))
        records = {}
        for n, a in arrays.items():
            np.save(tmp / f"{n}.npy", np.ascontiguousarray(a))
            records[n] = _file_record(tmp / f"{n}.npy")
        index = {"format": CACHE_FORMAT, "arrays": records}
        (tmp / "arrays.json").write_text(json.dumps(index, indent=1, sort_keys=True), encoding="utf-8")
        for old in root.glob(f"{tag}-*"):
            if old.name.rsplit("-", 1)[0] == tag and old != folder:
                shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, folder)
            tmp = None
        except OSError:
            if not (folder / "arrays.json").is_file():
                raise  # else another process stored the same entry first: use theirs
    except OSError as exc:
        warnings.warn(
            f"noisynn: cannot write the decoded cache under {root} ({exc}); decoding in memory. "
            f"Set {ENV_CACHE_DIR} to a writable folder to cache.",
            stacklevel=3,
        )
        return arrays, "uncached"
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    try:
        loaded = _load_entry(folder)
    except CacheCorrupt:  # an altered entry we could not replace (read-only): use what was just decoded
        loaded = None
    return (loaded, "built") if loaded is not None else (arrays, "uncached")
