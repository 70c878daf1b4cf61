"""Atomic file writes with unique temporary names, and clean-up of what a killed writer left.

Every temporary file is ``.<target name>.<host>-<pid>-<random>.tmp`` in the target's folder, so
two writers of one target never share a temporary name (each renames its own complete file
into place; the last rename wins), and a temporary file whose writer process is gone (same
host, PID no longer alive) is recognisably an orphan that :func:`remove_orphans` deletes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import socket
from pathlib import Path

__all__ = ["unique_tmp", "pid_alive", "remove_orphans", "atomic_write_text", "atomic_copy", "HOST"]

HOST = socket.gethostname()
_HOST_TAG = hashlib.sha256(HOST.encode()).hexdigest()[:8]


def unique_tmp(path: str | os.PathLike[str]) -> Path:
    """A temporary name for ``path`` in its folder, unique to this process and call."""
    path = Path(path)
    return path.with_name(f".{path.name}.{_HOST_TAG}-{os.getpid()}-{secrets.token_hex(4)}.tmp")


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists on this host (a process of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # pragma: no cover - e.g. platforms without signals: assume alive, never delete
        return True
    return True


def remove_orphans(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of ``path`` left by writers that are gone (this host, dead PID).

    Also removes the fixed-name ``<name>.tmp`` of older noisynn versions when it is more
    than a minute old. Never raises; returns what it removed.
    """
    import time

    path = Path(path)
    removed: list[Path] = []
    try:
        candidates = list(path.parent.glob(f".{path.name}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        tag = tmp.name[len(path.name) + 2:-len(".tmp")]
        host, _, rest = tag.partition("-")
        pid = rest.partition("-")[0]
        if host != _HOST_TAG or not pid.isdigit() or pid_alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    legacy = path.with_name(path.name + ".tmp")
    with contextlib.suppress(OSError):
        if time.time() - legacy.stat().st_mtime > 60:
            legacy.unlink()
            removed.append(legacy)
    return removed


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through a unique temporary file and a rename."""
    path = Path(path)
    tmp = unique_tmp(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy ``src`` to ``dst`` through a unique temporary file (fsynced) and a rename."""
    dst = Path(dst)
    tmp = unique_tmp(dst)
    try:
        shutil.copyfile(src, tmp)
        _fsync(tmp)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
