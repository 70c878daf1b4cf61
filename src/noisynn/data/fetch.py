"""Downloading with pooch (trying mirrors in turn), and the result type of ``noisynn data check``."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

from noisynn._extras import require
from noisynn.errors import DataError

OK = "OK"
MISSING = "missing"
CORRUPT = "corrupt"
PARTIAL = "partial"


@dataclass(frozen=True)
class CheckResult:
    """What ``noisynn data check`` found for one data set."""

    name: str
    """Data set name (``"mnist"``, ...)."""
    status: str
    """``"OK"``, ``"missing"``, ``"corrupt"`` or ``"partial"``."""
    files: str
    """Files found over files expected (``"4/4"``), or a word for the embedded set."""
    detail: str
    """One line: what is wrong and how to fix it, or what was verified."""
    folder: str
    """The folder that was checked."""

    def as_dict(self) -> dict[str, str]:
        """The result as a JSON-able dict."""
        return asdict(self)


def check_files(
    dataset: str, folder: Path, names: Sequence[str], good: Callable[[Path], bool], verified: str, bad: str = "bad"
) -> CheckResult:
    """Check that each of ``names`` is in ``folder`` and passes ``good``: what ``noisynn data check`` prints.

    Args:
        dataset: Data set name.
        folder: Its folder in the data directory.
        names: The files it must hold.
        good: Whether a present file is valid (its hash, its content).
        verified: The detail of an OK result (what was verified).
        bad: How the detail introduces the corrupt files.

    Returns:
        ``corrupt`` if any file fails ``good``, else ``missing`` if any is absent, else ``OK``.
    """
    missing, corrupt = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            missing.append(name)
        elif not good(path):
            corrupt.append(name)
    files = f"{len(names) - len(missing)}/{len(names)}"
    fix = f"run `noisynn data fetch {dataset}`"
    if corrupt:
        return CheckResult(dataset, CORRUPT, files, f"{bad}: {', '.join(corrupt)}; {fix}", str(folder))
    if missing:
        return CheckResult(dataset, MISSING, files, f"missing: {', '.join(missing)}; {fix}", str(folder))
    return CheckResult(dataset, OK, files, verified, str(folder))


def base_urls(explicit: str | Sequence[str] | None, env: str, defaults: Sequence[str]) -> list[str]:
    """The base URLs to try, in order: the argument, else ``$env``, else the defaults.

    A string may hold several URLs separated by commas or spaces (a mirror list). Each URL is
    returned with a trailing slash so that a file name can be appended.
    """
    source: str | Sequence[str] | None = explicit if explicit else os.environ.get(env) or None
    if source is None:
        items = list(defaults)
    elif isinstance(source, str):
        items = source.replace(",", " ").split()
    else:
        items = list(source)
    return [u if u.endswith("/") else u + "/" for u in items]


def _pooch() -> ModuleType:
    return require("pooch", "data", "downloading data sets")


@contextlib.contextmanager
def _quiet_pooch(pooch: ModuleType) -> Iterator[None]:
    """Silence pooch's INFO lines (the progress bar stays); restore the level afterwards."""
    logger = pooch.get_logger()
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


def download(url: str, dest: Path, known_hash: str | None, dataset: str, progress: bool) -> Path:
    """Download ``url`` to ``dest`` with :func:`pooch.retrieve`, verifying ``known_hash``.

    pooch downloads to a temporary file and moves it into place only when the hash matches, so a
    corrupt download never lands at ``dest``.

    Args:
        url: Full URL of the file.
        dest: Where to put it.
        known_hash: ``"sha256:<hex>"``, ``"md5:<hex>"`` or ``None`` (the caller verifies).
        dataset: Data set name, for messages.
        progress: Show pooch's tqdm progress bar.

    Raises:
        DataError: Download failed, or the hash does not match (the message names the file).
    """
    pooch = _pooch()
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet_pooch(pooch):
            got = pooch.retrieve(
                url, known_hash=known_hash, fname=dest.name, path=dest.parent, progressbar=progress
            )
    except Exception as exc:  # hash mismatch (pooch), network (requests), file system
        if isinstance(exc, ValueError) and "hash of downloaded file" in str(exc):
            raise DataError(
                f"{dest.name}: the file downloaded from {url} fails its checksum "
                f"({known_hash}); the source is corrupt or not canonical, try another mirror "
                f"(see `noisynn data fetch --help`)"
            ) from exc
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise DataError(
            f"{dest.name}: download from {url} failed ({type(exc).__name__}: {first}); "
            f"check the network or the base URL of {dataset}"
        ) from exc
    return Path(got)


def download_first(
    urls: Sequence[str],
    dest: Path,
    dataset: str,
    *,
    known_hash: str | None = None,
    verify: Callable[[Path, str], None] | None = None,
    progress: bool = False,
    env: str | None = None,
) -> Path:
    """Download ``dest.name`` from the first of ``urls`` that gives a valid copy.

    Each base URL is tried in turn: the file is downloaded to ``<dest>.part`` (checked against
    ``known_hash`` by pooch), then passed to ``verify``; only a copy that passes both is moved
    to ``dest``. A failed copy is deleted before the next URL is tried, so nothing bad lands.

    Args:
        urls: Base URLs ending in ``/`` (see :func:`base_urls`).
        dest: Where the file goes; its name is appended to each base URL.
        dataset: Data set name, for messages.
        known_hash: ``"sha256:<hex>"``, ``"md5:<hex>"`` or ``None``.
        verify: Further check ``verify(part, url)`` of the file downloaded from ``url``, raising
            :class:`DataError` if it is bad.
        progress: Show pooch's progress bar.
        env: The environment variable naming the mirrors, for the message.

    Returns:
        ``dest``.

    Raises:
        DataError: No URL gave a valid copy (the message names the last error).
    """
    part = dest.with_name(dest.name + ".part")
    errors = []
    for base in urls:
        part.unlink(missing_ok=True)
        try:
            download(base + dest.name, part, known_hash, dataset, progress)
            if verify is not None:
                verify(part, base + dest.name)
        except DataError as exc:
            errors.append(str(exc))
            part.unlink(missing_ok=True)
            continue
        os.replace(part, dest)
        return dest
    where = f"set {env} or --base-url to a working mirror" if env else "set --base-url to a working mirror"
    last = f" (last error: {errors[-1]})" if errors else ""
    raise DataError(f"{dest}: no mirror gave a valid copy{last}; {where}")
