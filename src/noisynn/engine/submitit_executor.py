"""Sweeps on SLURM without Ray: :class:`SubmititExecutor`, every task a job submitted with submitit.

The executor interface of :mod:`noisynn.engine.sweep` in one small class: ``submit`` sends
:func:`noisynn.engine.sweep.execute` as a submitit job and returns a future of its result;
the driver (this process) writes everything, as with every executor. submitit pickles jobs
into its ``folder`` and the jobs read the checkpoints by path, so the folder and the run
directory must be on a file system the nodes share (as usual on a SLURM cluster).

A SLURM job has a scheduling latency of seconds to minutes, so a training task trains
``epochs_per_task`` epochs (10 by default) before handing back; a killed driver then redoes
at most that many epochs per model in flight. ``pip install submitit`` (``noisynn[slurm]``).
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from noisynn.errors import NoisynnError

__all__ = ["SubmititExecutor"]


def _job(task, inputs: dict, threads: int | None):
    """The job: ``execute``, with a noisynn error handed back as itself (submitit would keep only its traceback)."""
    from noisynn.engine.sweep import execute

    try:
        return "ok", execute(task, inputs, ship=False, threads=threads)
    except NoisynnError as exc:
        return "error", exc


class SubmititExecutor:
    """Runs each sweep task as a submitit job (SLURM, or submitit's ``local`` back end).

    Args:
        folder: submitit's job folder (on the shared file system).
        slots: jobs in flight at once.
        epochs_per_task: epochs per training job (None: a model in one job).
        cluster: submitit's ``cluster`` (None: SLURM when available, ``"local"``: processes of
            this machine, ``"debug"``: this process).
        threads: torch threads of each job (default: ``cpus_per_task`` when given).
        **parameters: submitit's ``update_parameters`` (``timeout_min``, ``cpus_per_task``,
            ``gpus_per_node``, ``slurm_partition``, ...).
    """

    in_place = False
    remote = True  # attack tasks (which write the run directory themselves) stay in the driver
    storage = None  # the jobs see the run directory: checkpoints stay in RUN_DIR/models

    def __init__(self, folder: str | os.PathLike, *, slots: int = 8, epochs_per_task: int | None = 10,
                 cluster: str | None = None, threads: int | None = None, **parameters) -> None:
        try:
            import submitit
        except ImportError:
            raise NoisynnError('SubmititExecutor needs submitit: pip install "noisynn[slurm]"') from None
        if not isinstance(slots, int) or slots < 1:
            raise NoisynnError(f"slots must be an integer >= 1, got {slots!r}")
        self.slots = slots
        self.epochs_per_task = epochs_per_task
        self.threads = threads or parameters.get("cpus_per_task")
        self._submitit = submitit.AutoExecutor(folder=str(Path(folder)), cluster=cluster)
        if parameters:
            self._submitit.update_parameters(**parameters)
        self._waiters: ThreadPoolExecutor | None = None

    def submit(self, task) -> Future:
        if self._waiters is None:
            self._waiters = ThreadPoolExecutor(self.slots, thread_name_prefix="noisynn-submitit")
        inputs = {name: str(path) for name, path in task.inputs().items()}
        job = self._submitit.submit(_job, task, inputs, self.threads)
        return self._waiters.submit(self._result, job)

    @staticmethod
    def _result(job):
        status, value = job.result()
        if status == "error":
            raise value
        return value

    def close(self) -> None:
        if self._waiters is not None:
            self._waiters.shutdown(wait=True)
            self._waiters = None
