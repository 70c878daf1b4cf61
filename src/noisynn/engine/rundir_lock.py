"""One writer per run directory: a lock file ``DIR/.noisynn.lock`` naming its holder.

A process that trains or sweeps into ``--out DIR`` holds the lock for as long as it writes;
a second writer is refused at once with one line naming the holder (PID, host, command,
start time). Readers (``results``, ``report``) take no lock.

On Linux and macOS the lock is an ``fcntl.flock`` on the file, which the kernel releases
when the holder dies, even by SIGKILL: the next process takes it over, and says whose
stale lock it was (the record the dead holder left). The file is never deleted (deleting
a flock file lets two processes lock two different files); released, it is emptied.
Elsewhere (no ``fcntl``) the lock is the file itself, created exclusively; a lock whose
holder PID is gone on this host is stale and taken over, one held on another host has to
be deleted by hand (the message says so).

The lock is re-entrant within a process (a sweep that trains in-process takes it once),
and forked or spawned workers of the holder do not take it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from noisynn.engine.atomic import HOST, pid_alive
from noisynn.engine.rundir import LOCK_NAME  # the file name belongs to the run directory
from noisynn.errors import NoisynnError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]  # the module or None: checked before each use

__all__ = ["LOCK_NAME", "RunDirLock", "RunDirLocked", "run_dir_lock", "holder"]


_HELD: dict[str, tuple[int, int]] = {}  # resolved lock path -> (fd or -1, depth), this process
_GUARD = threading.Lock()


class RunDirLocked(NoisynnError):
    """Another process is writing into this run directory."""


def _record(command: str | None) -> dict:
    return {"pid": os.getpid(), "host": HOST, "started": time.time(),
            "command": command or " ".join(["noisynn", *sys.argv[1:]])[:200]}


def _describe(rec: dict | None) -> str:
    if not rec:
        return "another process"
    started = rec.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {rec.get('pid')} on {rec.get('host')} (`{rec.get('command')}`, started {when})"


def _parse(text: str) -> dict | None:
    try:
        rec = json.loads(text)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def holder(run_dir: str | os.PathLike[str]) -> dict | None:
    """The record in ``DIR/.noisynn.lock`` (who holds or last held the lock), or None."""
    try:
        return _parse((Path(run_dir) / LOCK_NAME).read_text(encoding="utf-8"))
    except OSError:
        return None


class RunDirLock:
    """The write lock of one run directory (a context manager; see the module docstring).

    Args:
        run_dir: the ``--out`` directory (created if missing).
        command: what to show a refused writer (default: this process's command line).

    Attributes:
        stale: the record of a dead holder whose lock this process took over, else None.

    Raises:
        RunDirLocked: another live process holds the lock.
        NoisynnError: the directory cannot be created or the lock file not written.
    """

    def __init__(self, run_dir: str | os.PathLike[str], command: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.command = command
        self.stale: dict | None = None
        self._key: str | None = None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _refuse(self, rec: dict | None, extra: str = "") -> RunDirLocked:
        return RunDirLocked(f"{self.run_dir} is in use by {_describe(rec)}: wait for it to finish or stop it, "
                            f"or use another --out directory{extra}")

    def acquire(self) -> RunDirLock:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            key = str(self.path.resolve())
        except OSError as exc:
            raise NoisynnError(f"cannot create {self.run_dir} ({exc.strerror or exc}): use a writable --out "
                               f"directory") from None
        with _GUARD:
            if key in _HELD:  # re-entrant in this process
                fd, depth = _HELD[key]
                _HELD[key] = (fd, depth + 1)
                self._key = key
                return self
            try:
                fd = self._lock_flock() if fcntl is not None else self._lock_exclusive()
            except OSError as exc:
                raise NoisynnError(f"cannot lock {self.path} ({exc.strerror or exc}): use a writable --out "
                                   f"directory") from None
            _HELD[key] = (fd, 1)
            self._key = key
        return self

    def _lock_flock(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            rec = _parse(self._read(fd))
            os.close(fd)
            raise self._refuse(rec) from None
        except BaseException:
            os.close(fd)
            raise
        previous = _parse(self._read(fd))
        if previous and previous.get("pid") != os.getpid():
            self.stale = previous  # its holder died without releasing: the kernel released the flock
        self._write(fd, _record(self.command))
        return fd

    def _lock_exclusive(self) -> int:  # pragma: no cover - exercised on platforms without fcntl
        warnings.warn("noisynn: no fcntl on this platform: the run-directory lock is an exclusive lock file; "
                      f"if a holder on another host dies, delete {self.path} by hand", RuntimeWarning, stacklevel=4)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                rec = holder(self.run_dir)
                pid = rec.get("pid") if rec else None
                if rec and rec.get("host") == HOST and isinstance(pid, int) and not pid_alive(pid):
                    self.stale = rec
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                raise self._refuse(rec, f" (if that process is gone, delete {self.path})") from None
            self._write(fd, _record(self.command))
            os.close(fd)
            return -1
        raise self._refuse(holder(self.run_dir))

    @staticmethod
    def _read(fd: int) -> str:
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")

    @staticmethod
    def _write(fd: int, rec: dict) -> None:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(rec) + "\n").encode())
        os.fsync(fd)

    def release(self) -> None:
        if self._key is None:
            return
        with _GUARD:
            held = _HELD.get(self._key)
            if held is not None:
                fd, depth = held
                if depth > 1:
                    _HELD[self._key] = (fd, depth - 1)
                else:
                    del _HELD[self._key]
                    with contextlib.suppress(OSError):
                        if fd >= 0:
                            os.ftruncate(fd, 0)  # free: an empty record
                            os.close(fd)  # releases the flock
                        else:
                            self.path.unlink()
            self._key = None


@contextlib.contextmanager
def run_dir_lock(run_dir: str | os.PathLike[str], command: str | None = None,
                 log=None) -> Iterator[RunDirLock]:
    """``with run_dir_lock(out):`` hold the write lock of ``out``; ``log`` hears of a stale lock taken over."""
    lock = RunDirLock(run_dir, command)
    with lock:
        if lock.stale is not None and log is not None:
            log(f"took over the stale lock of {_describe(lock.stale)} in {lock.run_dir}: that process is gone")
        yield lock
