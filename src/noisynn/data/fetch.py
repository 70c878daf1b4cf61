"""Downloading with pooch, and the result type of ``noisynn data check``."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pooch

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


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
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
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet_pooch():
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
