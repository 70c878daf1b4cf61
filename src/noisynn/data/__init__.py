"""Data sets for noisynn: loading, caching, batching, downloading and checking.

>>> from noisynn import data
>>> train = data.load("digits", "train")          # embedded, always available
>>> train.x.shape, train.y.shape
(torch.Size([1437, 1, 8, 8]), torch.Size([1437]))
>>> for xb, yb in data.batches(train, 256, generator=torch.Generator().manual_seed(0)):
...     pass

Data sets (:data:`DATASETS`): ``"digits"`` (scikit-learn's 8x8 digits, embedded), ``"mnist"``
(the four IDX files), ``"mnist-strokes"`` (de Jong's pen-stroke sequences, as (N, 50, 2) point
sequences, see :mod:`noisynn.data.strokes`), ``"cifar10"`` (binary version).

Where the files are: ``<data_dir>/<name>/`` where the data directory is ``data_dir=`` /
``--data-dir``, else ``$NOISYNN_DATA_DIR``, else the per-user cache directory; decoded arrays
are cached under ``$NOISYNN_CACHE_DIR`` (see :mod:`noisynn.data.store`). Every problem with the
files raises :class:`noisynn.errors.DataError` with a one-line message naming the file and the fix.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from noisynn.data import cifar10, digits, mnist, strokes
from noisynn.data.fetch import CheckResult
from noisynn.data.loader import TensorLoader, random_crop_flip
from noisynn.data.store import cache_dir, data_dir, verify_cache
from noisynn.errors import DataError

__all__ = [
    "DATASETS",
    "CheckResult",
    "Dataset",
    "TensorLoader",
    "batches",
    "cache_dir",
    "check",
    "data_dir",
    "fetch",
    "load",
    "random_crop_flip",
]

DATASETS: tuple[str, ...] = ("digits", "mnist", "mnist-strokes", "cifar10")
"""Names accepted by :func:`load`, :func:`fetch` and :func:`check`."""
SPLITS = ("train", "test")
LAYOUTS = ("image", "rows")
_MODULES = {"mnist": mnist, "mnist-strokes": strokes, "cifar10": cifar10}


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split of a data set as two whole tensors.

    Attributes:
        x: Inputs, float32: images (N, C, H, W), rows (N, H, W*C), or point sequences (N, T, 2).
        y: Labels, int64 (N,), values 0..9.
        name: Data set name.
        split: ``"train"`` or ``"test"``.
        meta: Extra facts: ``classes``, ``layout``, ``partial`` (bool), ``cache`` (``"hit"``,
            ``"built"``, ...), ``files``; strokes add ``lengths`` (int64 tensor of full point
            counts), ``coords``, ``markers``, ``max_len``; CIFAR-10 adds ``mean``/``std`` when
            normalised.
    """

    x: torch.Tensor
    y: torch.Tensor
    name: str
    split: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes (10 for every built-in data set)."""
        return len(self.meta.get("classes", range(10)))

    def to(self, device: torch.device | str) -> Dataset:
        """The same data set with ``x`` and ``y`` on ``device``."""
        return dataclasses.replace(self, x=self.x.to(device), y=self.y.to(device))


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return name


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor from a (possibly read-only, memory-mapped) array, without a copy if possible."""
    with warnings.catch_warnings():  # read-only mmap: the tensor is converted or only read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.asarray(a))


def _images(x: np.ndarray, meta: dict) -> torch.Tensor:
    """uint8 or float (N, C, H, W) -> float32 in [0, 1], normalised if meta has mean/std."""
    t = _tensor(x)
    t = t.to(torch.float32).div_(255.0) if t.dtype == torch.uint8 else t.to(torch.float32, copy=True)
    if "mean" in meta:
        mean = torch.tensor(meta["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(meta["std"], dtype=torch.float32).view(1, -1, 1, 1)
        t = t.sub_(mean).div_(std)
    return t


def load(
    name: str,
    split: str = "train",
    *,
    data_dir: str | Path | None = None,
    layout: str | None = None,
    device: torch.device | str | None = None,
    allow_partial: bool = False,
    **opts: Any,
) -> Dataset:
    """Load one split of a data set as whole tensors.

    The first call decodes the source files and caches the result as ``.npy``; later calls
    memory-map the cache (well under a second for MNIST).

    Args:
        name: One of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        data_dir: Data directory (default: ``$NOISYNN_DATA_DIR`` or the per-user cache dir).
        layout: ``"image"`` for (N, C, H, W) (the default for image data sets) or ``"rows"`` for
            (N, H, W*C), one image row per time step (what the recurrent models take).
            Stroke sequences are always (N, max_len, 2), one point per time step (``None``,
            ``"rows"`` and ``"sequence"`` all mean that; ``"image"`` is refused).
        device: Where to put the tensors (default: CPU).
        allow_partial: CIFAR-10: accept an incomplete copy for smoke runs (warns, and sets
            ``meta["partial"]``); the test split of a copy without test images is then its last
            tenth of training images (``meta["stand_in"]``). Ignored by the other data sets,
            which are never partial.
        **opts: Per data set: mnist ``verify``; mnist-strokes ``coords`` (``"absolute"`` |
            ``"offsets"``), ``markers`` (``"drop"`` | ``"keep"``), ``max_len``, ``verify``;
            cifar10 ``normalize``, ``verify``; digits ``test_size``, ``seed``.

    Returns:
        A :class:`Dataset` with float32 ``x`` and int64 ``y``.

    Raises:
        DataError: Unknown name, split or layout; missing, corrupt or partial files.
    """
    _check_name(name)
    if split not in SPLITS:
        raise DataError(f"{name}: unknown split {split!r}; choose train or test")
    if name == "mnist-strokes":
        if layout not in (None, "rows", "sequence"):
            raise DataError(f"mnist-strokes is always (N, max_len, 2) sequences; layout={layout!r} does not apply")
    elif layout is not None and layout not in LAYOUTS:
        raise DataError(f"{name}: unknown layout {layout!r}; choose {' or '.join(LAYOUTS)}")

    if name == "digits":
        x_np, y_np, meta = digits.load(split, **opts)
        meta["files"] = []
    else:
        folder = data_dir_for(name, data_dir)
        module = _MODULES[name]
        if name == "cifar10":
            opts["allow_partial"] = allow_partial
        x_np, y_np, meta = module.load(folder, split, **opts)
        meta["folder"] = str(folder)
    meta.setdefault("classes", [str(i) for i in range(10)])
    meta.setdefault("partial", False)

    if name == "mnist-strokes":
        x = _tensor(x_np).clone()
        meta["lengths"] = _tensor(meta["lengths"]).clone()
        meta["layout"] = "sequence"
    else:
        x = _images(x_np, meta)
        meta["layout"] = layout or "image"
        if meta["layout"] == "rows":
            n, c, h, w = x.shape
            x = x.permute(0, 2, 3, 1).reshape(n, h, w * c)
    y = _tensor(y_np).to(torch.int64).clone()
    if meta["partial"]:
        stand_in = f"; {meta['stand_in']}" if "stand_in" in meta else ""
        warnings.warn(
            f"noisynn: {name} {split} is PARTIAL ({len(y):,} images from {', '.join(meta['files'])}{stand_in}): "
            "for smoke runs only, not for experiments",
            stacklevel=2,
        )
    if device is not None:
        x, y = x.to(device), y.to(device)
    return Dataset(x=x.contiguous(), y=y, name=name, split=split, meta=meta)


def data_dir_for(name: str, override: str | Path | None = None) -> Path:
    """The folder of data set ``name`` under the data directory (``<data_dir>/<name>``)."""
    if _check_name(name) == "digits":
        raise DataError("digits is embedded in scikit-learn: it has no folder in the data directory")
    return data_dir(override) / _MODULES[name].FOLDER


def batches(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    drop_last: bool = False,
    augment: bool = False,
) -> TensorLoader:
    """Mini-batches of a :class:`Dataset` (re-iterable, one pass per epoch).

    Args:
        dataset: The data.
        batch_size: Samples per batch.
        shuffle: New random order each epoch (from ``generator``).
        generator: ``torch.Generator`` (any device) for a reproducible order.
        device: Device of the batches (the whole data is moved there once).
        drop_last: Skip the last, smaller batch.
        augment: Random crop (4 px padding) + horizontal flip per batch; images only (off by default).

    Returns:
        A :class:`TensorLoader` yielding ``(x, y)``.
    """
    return TensorLoader(
        dataset.x, dataset.y, batch_size, shuffle=shuffle, generator=generator,
        device=device, drop_last=drop_last, augment=augment,
    )


def fetch(
    name: str, *, data_dir: str | Path | None = None, base_url: str | None = None, progress: bool = False
) -> list[Path]:
    """Download a data set into ``<data_dir>/<name>/`` and verify it (see ``noisynn data fetch``).

    Args:
        name: One of :data:`DATASETS` (``"digits"`` is embedded: nothing to download).
        data_dir: Data directory (default: ``$NOISYNN_DATA_DIR`` or the per-user cache dir).
        base_url: Base URL(s) of the files, overriding the defaults and the environment
            (``NOISYNN_MNIST_URL``, ``NOISYNN_STROKES_URL``, ``NOISYNN_CIFAR10_URL``).
        progress: Show download progress bars.

    Returns:
        The verified files.

    Raises:
        DataError: Unknown name, download failure or checksum mismatch.
    """
    if _check_name(name) == "digits":
        return []
    folder = data_dir_for(name, data_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{folder}: cannot create the data folder ({exc}); choose a writable --data-dir") from exc
    return _MODULES[name].fetch(folder, base_url=base_url, progress=progress)


def check(name: str | None = None, *, data_dir: str | Path | None = None) -> list[CheckResult]:
    """Verify what is present: one :class:`CheckResult` per data set (or only ``name``).

    Status is ``"OK"``, ``"missing"``, ``"corrupt"`` or ``"partial"``; never raises for bad files.
    The decoded caches (``$NOISYNN_CACHE_DIR/decoded/NAME``) are re-hashed too: one that no
    longer matches the hash recorded when it was built makes the data set ``"corrupt"``.
    """
    names = DATASETS if name is None else (_check_name(name),)
    results = []
    for n in names:
        result = digits.check() if n == "digits" else _MODULES[n].check(data_dir_for(n, data_dir))
        problems = [] if n == "digits" else verify_cache(n)
        if problems and result.status != "corrupt":  # the originals are fine, a decoded copy is not
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            result = dataclasses.replace(result, status="corrupt", detail=(
                f"{problems[0]}{more}; the next load rebuilds it, or delete it"))
        results.append(result)
    return results
