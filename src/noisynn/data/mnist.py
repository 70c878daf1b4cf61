"""MNIST from the four canonical gzipped IDX files.

Files (in ``<data_dir>/mnist/``): ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``; 60,000 training and 10,000 test
images of 28x28 ``uint8`` pixels.

Integrity is checked on the **decompressed** content (SHA-256 below), not on the ``.gz`` bytes:
a re-compressed copy (for instance a ``train-images-idx3-ubyte.gz`` rebuilt with another gzip)
has different compressed bytes but the same canonical content, and both the canonical download
and such a copy are accepted. The verified digest is remembered per file (size + mtime), so the
check costs one decompression per file, once.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np

from noisynn.data import store
from noisynn.data.fetch import CheckResult, base_urls, check_files, download_first
from noisynn.errors import DataError

NAME = "mnist"
FOLDER = "mnist"
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
"""Image and label file of each split."""
COUNT = {"train": 60_000, "test": 10_000}
CONTENT_SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
"""SHA-256 of the decompressed canonical IDX files."""
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
"""Default download mirrors, tried in order."""
ENV_URL = "NOISYNN_MNIST_URL"
"""Environment variable overriding the mirror list (URLs separated by commas or spaces)."""

_MAGIC = {"images": (0x00000803, 3), "labels": (0x00000801, 1)}


def parse_idx(raw: bytes, path: Path, kind: str, count: int) -> np.ndarray:
    """Parse decompressed IDX bytes, checking magic number, dimensions and size.

    Args:
        raw: The decompressed file.
        path: The file, for messages.
        kind: ``"images"`` (magic ``0x803``, N x 28 x 28) or ``"labels"`` (magic ``0x801``, N).
        count: The number of items the split must have.

    Returns:
        A read-only ``uint8`` array of shape (N, 28, 28) or (N,).

    Raises:
        DataError: Wrong magic number, unexpected dimensions, or size mismatch.
    """
    magic, ndim = _MAGIC[kind]
    header = 4 + 4 * ndim
    hint = store.fix_hint(NAME)
    if len(raw) < header:
        raise DataError(f"{path}: size mismatch, {len(raw)} bytes is shorter than the IDX header; {hint}")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise DataError(
            f"{path}: wrong magic number 0x{got:08x} (expected 0x{magic:08x} for MNIST {kind}); {hint}"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    want = (count, 28, 28) if kind == "images" else (count,)
    if dims != want:
        raise DataError(f"{path}: dimensions {dims} in the header, expected {want}; {hint}")
    size = header + int(np.prod(dims))
    if len(raw) != size:
        raise DataError(
            f"{path}: size mismatch, {len(raw)} bytes after decompression but the header "
            f"implies {size}; {hint}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read(path: Path, kind: str, count: int, verify: bool) -> np.ndarray:
    raw = store.read_gzip(path, NAME)
    arr = parse_idx(raw, path, kind, count)
    if verify:
        digest = hashlib.sha256(raw).hexdigest()
        store.memo_put(path, "content_sha256", digest)
        store.check_digest(path, digest, CONTENT_SHA256[path.name], NAME, "SHA-256 of the decompressed content")
    return arr


def _verified(path: Path) -> bool:
    return store.memo_get(path, "content_sha256") == CONTENT_SHA256[path.name]


def load(folder: Path, split: str, *, verify: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """Load one split as ``uint8`` images (N, 1, 28, 28) and ``int64`` labels (N,).

    Args:
        folder: ``<data_dir>/mnist``.
        split: ``"train"`` or ``"test"``.
        verify: Check the decompressed SHA-256 against the canonical one (once per file).

    Returns:
        ``(images, labels, meta)``; the arrays are memory-mapped from the decoded cache.
    """
    img, lab = (store.require(folder / f, NAME) for f in FILES[split])
    parts = {"images": store.sha256(img), "labels": store.sha256(lab), "verify": verify}

    def build() -> dict[str, np.ndarray]:
        x = _read(img, "images", COUNT[split], verify)
        y = _read(lab, "labels", COUNT[split], verify)
        if int(y.max()) > 9:
            raise DataError(f"{lab}: label {int(y.max())} out of range 0..9; {store.fix_hint(NAME)}")
        return {"x": x[:, None], "y": y.astype(np.int64)}

    # The key holds the files' SHA-256 and `verify`: a hit was verified when it was built.
    arrays, status = store.cached_arrays(NAME, split, parts, build)
    return arrays["x"], arrays["y"], {"cache": status, "files": [img.name, lab.name]}


def check(folder: Path) -> CheckResult:
    """Verify the four files: present, valid gzip, canonical decompressed SHA-256."""
    names = [n for pair in FILES.values() for n in pair]
    return check_files(NAME, folder, names, check_one, "decompressed SHA-256 verified")


def fetch(folder: Path, base_url: str | None = None, progress: bool = False) -> list[Path]:
    """Download the four files, trying each mirror in turn until one verifies.

    A file already present with the canonical content is kept. A downloaded file is accepted
    only if it decompresses and its decompressed SHA-256 is canonical.

    Args:
        folder: ``<data_dir>/mnist``.
        base_url: Mirror URL(s), overriding ``$NOISYNN_MNIST_URL`` and :data:`MIRRORS`.
        progress: Show a progress bar.

    Returns:
        The paths of the four files.

    Raises:
        DataError: No mirror gave a valid copy of some file.
    """
    urls = base_urls(base_url, ENV_URL, MIRRORS)
    out = []
    for name in (n for pair in FILES.values() for n in pair):
        dest = folder / name
        out.append(dest)
        if not (dest.is_file() and check_one(dest)):
            download_first(urls, dest, NAME, verify=_check_download, progress=progress, env=ENV_URL)
            store.memo_put(dest, "content_sha256", CONTENT_SHA256[name])  # what _check_download verified
    return out


def _check_download(part: Path, url: str) -> None:
    """Raise :class:`DataError` unless ``NAME.part`` (from ``url``) decompresses to NAME's canonical content."""
    name = part.name.removesuffix(".part")
    bad = f"the copy at {url} is bad"
    digest = hashlib.sha256(store.read_gzip(part, NAME, fix=bad)).hexdigest()
    store.check_digest(part, digest, CONTENT_SHA256[name], NAME, "decompressed SHA-256", fix=bad)


def check_one(path: Path) -> bool:
    """True if ``path`` decompresses to the canonical content of its file name."""
    if _verified(path):
        return True
    try:
        digest = hashlib.sha256(store.read_gzip(path, NAME)).hexdigest()
    except DataError:
        return False
    store.memo_put(path, "content_sha256", digest)
    return digest == CONTENT_SHA256.get(path.name)
