"""Sweeps on a Ray cluster: :class:`RayExecutor`, the executor of ``noisynn sweep --executor ray``.

It is the executor interface of :mod:`noisynn.engine.sweep` (``slots``, ``submit(task) ->
Future``, ``close()``) on Ray tasks, so the sweep's one scheduler (:func:`~noisynn.engine.sweep.schedule`)
runs unchanged: model k's points are measured while model k+1 trains, across the cluster.

* **The driver owns the store.** Workers run :func:`noisynn.engine.sweep.execute`: a
  training task trains one epoch (``epochs_per_task``) from the checkpoint it is given and
  returns the new checkpoint files and the epoch's rows; an evaluation task returns its
  points. The driver (the process running the sweep) writes them, as the local executor
  would, and submits the model's next epoch: a killed driver loses at most the epochs and
  points in flight, and rerunning the command resumes.
* **No shared file system needed.** Checkpoints travel through Ray's object store: the
  driver ``ray.put``\\ s each checkpoint file once (an evaluation task of the same model
  reuses it), a worker writes it to a temporary file of its own, and the files a training
  task hands back are verified against their recorded SHA-256 before the driver renames
  them into ``RUN_DIR/models``. With ``storage=DIR`` (``--storage``), a folder every machine
  sees at the same path, checkpoints stay on that file system instead (``DIR/models``,
  linked from ``RUN_DIR/models``); they are verified the same way.
* **Faults.** A worker process that dies mid-task (killed, out of memory, its node lost)
  is retried by Ray (``max_retries``); the task's result does not depend on the attempt,
  since every random stream is seeded by its coordinates, so the table equals an
  uninterrupted run's bit for bit (at the same torch thread count: each task runs
  ``cpus_per_task`` threads). A task failing with a noisynn error (corrupt data, say) is
  not retried: the sweep ends with that one-line error after writing every result that
  came back.

Without an address, a Ray instance is started on this machine (all its CPUs): the same
code path as a cluster. ``address="auto"`` joins the cluster this machine belongs to
(``ray start``), ``HOST:PORT`` a head node (``ray start --head`` prints it); an address
that cannot be reached is a one-line error naming it. See ``docs/cluster.md``.

Ray is imported only when an executor is made: ``pip install "noisynn[ray]"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import CancelledError, Future
from pathlib import Path
from typing import Any

from noisynn.errors import NoisynnError

__all__ = ["RayExecutor", "INSTALL"]

INSTALL = 'pip install "noisynn[ray]"'


def _import_ray():
    try:
        import ray
    except ImportError:
        raise NoisynnError(f"--executor ray needs Ray, which is not installed here: {INSTALL}") from None
    return ray


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail in one line when nothing answers at ``HOST:PORT`` (``ray.init`` would retry for minutes)."""
    text = address.split("://", 1)[-1]
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise NoisynnError(f"--address {address}: give auto or HOST:PORT, the head node's address "
                           "(`ray start --head` prints it, e.g. 10.0.0.1:6379)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise NoisynnError(f"cannot reach the Ray head node at {address} ({reason}): start it there with "
                           f"`ray start --head --port={port}`, or check the address and that the port is open"
                           ) from None


class _Held:
    """What :func:`_stderr_held` holds: ``last()`` is the last line written so far."""

    failed = False
    sink = None

    def last(self) -> str:
        if self.sink is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        self.sink.seek(0)
        text = self.sink.read().decode(errors="replace")
        lines = [line.split("] ", 1)[-1].strip() for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else ""


@contextlib.contextmanager
def _stderr_held():
    """Hold what is written to file descriptor 2 (by C++ too) meanwhile; let it through unless ``failed``."""
    held = _Held()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (captured): nothing to hold
        yield held
        return
    with tempfile.TemporaryFile() as sink:
        held.sink = sink
        os.dup2(sink.fileno(), 2)
        try:
            yield held
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not held.failed:
                sink.seek(0)
                text = sink.read().decode(errors="replace")
                if text:
                    sys.stderr.write(text)
            held.sink = None


def _run_on_worker(task, names: list[str], ship: bool, threads: int, *blobs):
    """The Ray task: ``execute`` with the checkpoint files Ray resolved (bytes) or their shared paths."""
    from noisynn.engine.sweep import execute

    return execute(task, {name: bytes(b) if isinstance(b, (bytearray, memoryview)) else b
                          for name, b in zip(names, blobs, strict=True)}, ship=ship, threads=threads)


class RayExecutor:
    """Runs sweep tasks as Ray tasks (see the module doc).

    Args:
        address: None (default): start a Ray instance on this machine; ``"auto"``: the
            cluster this machine joined; ``HOST:PORT`` (or ``ray://HOST:PORT``): that head node.
        cpus_per_task: CPUs Ray reserves for each task, and the torch threads it runs.
        gpus_per_task: GPUs per task; a fraction lets several tasks share one device
            (0.25: four evaluation tasks per GPU). 0: CPU only.
        storage: a folder every machine sees at the same path: checkpoints go there
            (``storage/models``) instead of through the object store.
        max_retries: attempts after a worker dies mid-task (Ray's ``max_retries``).
        epochs_per_task: epochs a training task trains before handing its checkpoint back.
        num_cpus: CPUs of a Ray instance started here (default: all of this machine's).

    Raises:
        NoisynnError: Ray is not installed, the address cannot be reached, or the cluster has
            no GPU while ``gpus_per_task`` asks for one (one line each).
    """

    in_place = False
    remote = True

    def __init__(self, address: str | None = None, *, cpus_per_task: float = 1, gpus_per_task: float = 0.0,
                 storage: str | os.PathLike | None = None, max_retries: int = 3, epochs_per_task: int | None = 1,
                 num_cpus: int | None = None) -> None:
        for name, value, low in (("cpus-per-task", cpus_per_task, 0.0), ("gpus-per-task", gpus_per_task, -1e-12)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > low or value != value:
                raise NoisynnError(f"--{name} must be a number {'> 0' if low == 0 else '>= 0'}, got {value!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise NoisynnError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if epochs_per_task is not None and (not isinstance(epochs_per_task, int) or epochs_per_task < 1):
            raise NoisynnError(f"epochs_per_task must be an integer >= 1 (or None), got {epochs_per_task!r}")
        self.address = address or None
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = float(gpus_per_task)
        self.storage = str(Path(storage).resolve()) if storage else None
        self.max_retries = max_retries
        self.epochs_per_task = epochs_per_task
        self.num_cpus = num_cpus
        self._ray: Any = None  # the ray module once connected (Ray ships no type information)
        self._owns = False
        self._remote: Any = None  # ray.remote(_run_on_worker)
        self._puts: dict[str, tuple[tuple, object]] = {}
        self._slots = (1, -1e9)
        self._inflight: set = set()
        self._lock = threading.Lock()
        self._connect()

    # -- the cluster ---------------------------------------------------------------------
    def _connect(self) -> None:
        ray = _import_ray()
        if not ray.is_initialized():
            if self.address is None:
                ray.init(num_cpus=self.num_cpus or os.cpu_count() or 1, include_dashboard=False,
                         logging_level=logging.ERROR)
            else:
                if self.address != "auto":
                    _probe(self.address)
                with _stderr_held() as held:  # Ray's C++ client retries noisily on a port that is not a Ray head
                    try:
                        ray.init(address=self.address, logging_level=logging.ERROR)
                    except Exception as exc:  # noqa: BLE001 - any failure to join is one line naming the address
                        held.failed = True
                        if self.address == "auto" and isinstance(exc, ConnectionError):
                            raise NoisynnError("--address auto: no running Ray cluster found from this machine (start "
                                               "one with `ray start --head`, or give HOST:PORT)") from None
                        why = held.last() or (str(exc).splitlines() or [type(exc).__name__])[0]
                        raise NoisynnError(f"cannot join a Ray cluster at {self.address}: something answers there, "
                                           f"but not a Ray head node of this version ({why[:160]}): check the "
                                           "address (`ray status` on the head node)") from None
            self._owns = True
        self._ray = ray
        self._remote = ray.remote(_run_on_worker)
        if self.gpus_per_task and not ray.cluster_resources().get("GPU"):
            self.close()
            raise NoisynnError(f"--gpus-per-task {self.gpus_per_task:g}: the Ray cluster has no GPU; "
                               "drop the option or add GPU nodes (`ray start --num-gpus N`)")

    @property
    def slots(self) -> int:
        """Tasks that fit on the cluster at once (its CPUs / cpus_per_task, and GPUs / gpus_per_task), re-read
        every few seconds: a node that joins adds slots."""
        count, when = self._slots
        now = time.monotonic()
        if self._ray is not None and now - when > 5:
            resources = self._ray.cluster_resources()
            count = int(resources.get("CPU", 0) / self.cpus_per_task + 1e-9)
            if self.gpus_per_task:
                count = min(count, int(resources.get("GPU", 0) / self.gpus_per_task + 1e-9))
            count = max(1, count)
            self._slots = (count, now)
        return count

    def _put(self, path: Path):
        """The object-store copy of a checkpoint file, put once per version of the file."""
        stat = path.stat()
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        key = str(path)
        hit = self._puts.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        ref = self._ray.put(path.read_bytes())
        self._puts.pop(key, None)
        self._puts[key] = (stamp, ref)
        while len(self._puts) > 16:
            self._puts.pop(next(iter(self._puts)))
        return ref

    # -- the executor interface ----------------------------------------------------------
    def submit(self, task) -> Future:
        if self._ray is None:
            self._connect()
        if dataclasses.is_dataclass(task) and not isinstance(task, type) and getattr(task, "progress", False):
            task = dataclasses.replace(task, progress=False)  # no progress bars in worker logs
        names, blobs = [], []
        for name, path in task.inputs().items():
            names.append(name)
            blobs.append(str(path) if self.storage else self._put(Path(path)))
        describe = getattr(task, "describe", None)
        options = dict(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task, max_retries=self.max_retries,
                       retry_exceptions=False)
        if describe is not None:
            options["name"] = describe()
        ref = self._remote.options(**options).remote(task, names, self.storage is None,
                                                     max(1, int(self.cpus_per_task)), *blobs)
        return self._future(ref, task)

    def _future(self, ref, task) -> Future:
        out: Future = Future()
        out.set_running_or_notify_cancel()  # a task Ray started cannot be taken back: the scheduler waits for it
        with self._lock:
            self._inflight.add(ref)

        def relay(inner: Future) -> None:
            with self._lock:
                self._inflight.discard(ref)
            try:
                out.set_result(inner.result())
            except BaseException as exc:  # noqa: BLE001 - handed to the scheduler
                out.set_exception(self._error(exc, task))

        ref.future().add_done_callback(relay)
        return out

    def _error(self, exc: BaseException, task) -> BaseException:
        """A task's failure as the scheduler reports it: a noisynn error as itself (one line), a dead worker
        (after the retries) as one line, anything else with its remote traceback."""
        from ray import exceptions as rex

        what = task.describe() if hasattr(task, "describe") else type(task).__name__
        if isinstance(exc, rex.RayTaskError):
            cause = getattr(exc, "cause", None)
            return cause if isinstance(cause, NoisynnError) else exc
        if isinstance(exc, rex.TaskCancelledError):
            return CancelledError(what)
        if isinstance(exc, rex.RayError):
            first = (str(exc).splitlines() or [""])[0][:200]
            return NoisynnError(f"{what}: its Ray worker died {self.max_retries + 1} times ({type(exc).__name__}: "
                                f"{first}); everything finished is kept: rerun the same command to resume")
        return exc

    def close(self) -> None:
        """Drop the object-store copies; shut Ray down if this executor started it (not a cluster it joined)."""
        self._puts.clear()
        if self._ray is not None and self._owns:
            self._ray.shutdown()
            self._owns = False
        self._ray = None
