"""Sweeps: train one model per sigma_train, evaluate every (sigma_train, sigma_val) point.

The work is split into plain, picklable tasks (:class:`TrainTask`: train one model;
:class:`EvalTask`: evaluate one point; :class:`VoteTask`: one voting curve;
:class:`AttackTask`: transfer attacks). Each task is a *computation* that needs no
results store, and the *driver* (the process running :func:`run_sweep`, which holds the
run directory's lock) writes what it returns: the driver alone opens ``results.sqlite``.

The executor interface
----------------------
An executor has three members, and :func:`schedule` does everything else (dependencies,
priorities, the progress bar, failures):

* ``slots``: how many tasks may be in flight (read before every submission, so it may change);
* ``submit(task) -> concurrent.futures.Future`` of the task's result;
* ``close()``: release the workers.

:class:`LocalExecutor` runs ``task.run()`` in the driver itself: the computation in place
on the run directory (a training task trains to the end, writing each epoch's rows as
the epoch is committed by its checkpoint, as it always has). Every other executor runs
the task away from the driver, through :func:`execute`::

    execute(task, inputs, ship=...)   # in the worker; returns what the driver commits

``inputs`` are the files ``task.inputs()`` names (``{file name: driver path}``), handed
over either as their bytes (``ship=True``: no shared file system; Ray's object store) or
as paths every worker sees (``ship=False``: one machine, or ``--storage`` on a shared file
system). A training task then trains at most ``task.epochs`` epochs (one by default:
*epoch-granular*), starting from the checkpoint it was given, and returns a
:class:`TrainOutcome`: the epoch, learning-curve and early-stopping rows and the new
checkpoint files (bytes, or paths in a scratch folder beside the checkpoints). The driver
writes them exactly where and in the order the local executor would (checkpoint files
atomically, verified against their SHA-256, before the rows they commit) and submits the
model's next epochs. A killed driver therefore loses at most the epochs in flight, and a
killed worker loses only its task, which is run again. Evaluation tasks return their
points; the driver checks the store *before* submitting one (a finished point is never
submitted) and writes each point the moment it comes back.

:class:`ProcessExecutor` (local processes), :class:`noisynn.engine.ray_executor.RayExecutor`
(a Ray cluster) and :class:`noisynn.engine.submitit_executor.SubmititExecutor` (SLURM through
submitit) are such executors. Optional attributes tell the driver more: ``epochs_per_task``
(default 1; None: a model in one task), ``storage`` (a folder every worker sees: checkpoints go
to ``storage/models``), ``in_place`` (tasks run in the driver: ``task.run()``) and ``remote``
(workers may not see the run directory). The one exception to "the driver alone writes":
:class:`AttackTask` writes its points and its example cache itself (its ``writes_run_dir``), so
:func:`schedule` runs it in the driver on a ``remote`` executor, and in the worker processes of
:class:`ProcessExecutor`.

A sweep is a list of *stages*, each a list of chains for :func:`schedule`, run one after the
other: the models with their points (:func:`_measure_chains`, with the chips tasks of
:mod:`noisynn.engine.hardware_tasks`), or, for a transfer-attack preset, the training of
NN_adv and the NN_vals and then the attacks (:func:`attack_stages`).

Re-running a sweep on the same directory skips every finished training epoch (the
checkpoint) and every finished point (the store): it is how a killed sweep resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import ClassVar

import torch

from noisynn.engine import plugins
from noisynn.engine.atomic import HOST, pid_alive, remove_orphans, unique_tmp
from noisynn.engine.checkpoint_meta import CheckpointMeta, read_checkpoint_meta
from noisynn.engine.evaluation import evaluate_point, mean_stderr, vote_curve
from noisynn.engine.presets import Plan
from noisynn.engine.rundir import RunDir, checkpoint_in, is_last_copy, scratch_folder, scratch_folders
from noisynn.engine.store import CurveRow, EpochRow, Point, PointKey, ResultStore, StoppingRow, measurement, sigma_key
from noisynn.engine.training import (
    TrainSpec,
    best_path,
    last_path,
    load_data,
    load_for_evaluation,
    stop_reason,
    train,
)
from noisynn.errors import CheckpointError, NoisynnError

__all__ = ["TrainTask", "TrainOutcome", "EvalTask", "VoteTask", "AttackTask", "Workspace", "execute", "LocalExecutor",
           "ProcessExecutor", "make_executor", "schedule", "run_sweep", "SweepSummary", "attack_stages"]


# -- where a task runs away from the driver ----------------------------------------------
@dataclass
class Workspace:
    """A task's view of its input files away from the driver, and where it writes its output files.

    Attributes:
        inputs: ``{file name: content (bytes) or the path of a file every machine sees (str)}``.
        ship: hand output files back as bytes (no shared file system) rather than as paths
            in a scratch folder beside the driver's files (one machine, ``--storage``).
    """

    inputs: dict[str, bytes | str]
    ship: bool = False

    @classmethod
    def here(cls, task) -> Workspace:
        """The driver's own files, in place."""
        return cls({name: str(path) for name, path in task.inputs().items()}, ship=False)

    def file(self, name: str) -> Path:
        """A readable path of input ``name`` (a shipped file is written once per content, per process)."""
        blob = self.inputs[name]
        return Path(blob) if isinstance(blob, str) else _materialised(name, blob)

    def copy_into(self, name: str, dest: Path) -> None:
        """Put input ``name`` at ``dest`` for the task to modify (a hard link of a shared file: files are
        only ever replaced by a rename, never written in place, so the original is untouched)."""
        blob = self.inputs[name]
        if isinstance(blob, bytes):
            dest.write_bytes(blob)
            return
        try:
            os.link(blob, dest)
        except OSError:
            shutil.copyfile(blob, dest)

    def scratch(self, beside: Path) -> Path:
        """A new private folder for the task's files: a temporary folder of this machine when files are
        shipped, else a hidden folder beside ``beside`` (the same file system: the driver renames from it)."""
        if self.ship:
            _clean_dead_scratch()
            return Path(tempfile.mkdtemp(prefix=f"noisynn-task-{os.getpid()}-{_HOST_TAG}-"))
        folder = scratch_folder(beside)
        folder.mkdir(parents=True)
        return folder

    def keep(self, path: Path) -> bytes | str:
        """What to hand back for the output file ``path`` as it is now: its bytes, or a hard link (a copy
        where links are not supported) that later writes of ``path`` leave alone."""
        if self.ship:
            return path.read_bytes()
        snapshot = path.with_name(f"keep-{os.urandom(4).hex()}-{path.name}")
        try:
            os.link(path, snapshot)
        except OSError:
            shutil.copyfile(path, snapshot)
        return str(snapshot)


_MATERIALISED: dict[str, Path] = {}
_HOST_TAG = hashlib.sha256(HOST.encode()).hexdigest()[:8]  # a folder of another host (or container) is never ours


def _worker_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"noisynn-worker-{os.getpid()}-{_HOST_TAG}"


def _materialised(name: str, blob: bytes) -> Path:
    """A shipped input as a file of this process (one per content, the last few kept), for loaders that read paths."""
    digest = hashlib.sha256(blob).hexdigest()[:24]
    key = f"{digest}/{name}"
    path = _MATERIALISED.get(key)
    if path is not None and path.is_file():
        return path
    if not _MATERIALISED:
        _clean_dead_scratch()
    path = _worker_dir() / digest / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_tmp(path)
    tmp.write_bytes(blob)
    os.replace(tmp, path)
    _MATERIALISED[key] = path
    while len(_MATERIALISED) > 4:  # the oldest goes: a worker serves a few models at a time
        old = _MATERIALISED.pop(next(iter(_MATERIALISED)))
        shutil.rmtree(old.parent, ignore_errors=True)
    return path


def _clean_dead_scratch() -> None:
    """Remove the temporary folders of worker processes of this host that are gone (killed mid-task)."""
    for folder in Path(tempfile.gettempdir()).glob(f"noisynn-*-*-{_HOST_TAG}*"):
        parts = folder.name.split("-")
        if (len(parts) >= 4 and parts[1] in ("task", "worker") and parts[2].isdigit() and parts[3] == _HOST_TAG
                and not pid_alive(int(parts[2]))):
            shutil.rmtree(folder, ignore_errors=True)


def execute(task, inputs: dict[str, bytes | str], *, ship: bool = False, threads: int | None = None):
    """Run ``task`` away from the driver (in a worker process): what every remote executor calls.

    Args:
        task: a task object (``compute(workspace)``).
        inputs: the files ``task.inputs()`` names, as bytes (``ship``) or shared paths.
        ship: output files go back as bytes, not as paths.
        threads: torch threads of this worker (results are bitwise equal at equal thread counts).
    """
    if threads:
        torch.set_num_threads(int(threads))
    return task.compute(Workspace(dict(inputs), ship=ship))


def _epoch_row(task: TrainTask, m: dict) -> EpochRow:
    s = task.spec
    return EpochRow(experiment=task.experiment, model=s.model, noise=s.family.label, sigma_train=s.sigma_train,
                    seed=s.seed, epoch=m["epoch"], batches=m["batches"], train_loss=m["train_loss"],
                    train_accuracy=m["train_accuracy"], val_loss=m["val_loss"], val_accuracy=m["val_accuracy"],
                    seconds=m["seconds"], checkpoint=m["checkpoint"], holdout_loss=m.get("holdout_loss"),
                    holdout_accuracy=m.get("holdout_accuracy"))


def _curve_row(task: TrainTask, m: dict) -> CurveRow:
    s = task.spec
    return CurveRow(experiment=task.experiment, model=s.model, noise=s.family.label, sigma_train=s.sigma_train,
                    seed=s.seed, batches=m["batches"], epoch=m["epoch"], val_loss=m["val_loss"],
                    val_accuracy=m["val_accuracy"])


def _stopping_row(task: TrainTask, es: dict, sha: str) -> StoppingRow:
    s = task.spec
    return StoppingRow(experiment=task.experiment, model=s.model, noise=s.family.label, sigma_train=s.sigma_train,
                       seed=s.seed, monitor=es["monitor"], epochs_run=es["epochs_run"], best_epoch=es["best_epoch"],
                       best_score=es["best_score"], stopped=es["stopped"], checkpoint=sha)


@dataclass
class TrainOutcome:
    """What a training task did.

    Attributes:
        sha256: SHA-256 of the model's weights now.
        done: the model is finished (else the driver submits its next epochs).
        epochs_run: epochs trained by this task.
        events: for the driver to write, in order: ``("curve", {}, metrics)``, ``("epoch", files,
            metrics)``, ``("stop", files, early-stopping record)``; ``files`` maps a file name of
            the model's folder to its content (bytes) or to the path of a file to rename there.
        committed: everything was written already (the task ran in place, in the driver).
        scratch: the task's scratch folder on a shared file system, removed once committed.
        fresh: training began from no checkpoint: the store's older rows of this model go first.
    """

    sha256: str
    done: bool = True
    epochs_run: int = 0
    events: list = field(default_factory=list)
    committed: bool = False
    scratch: str | None = None
    fresh: bool = False


@dataclass(frozen=True)
class TrainTask:
    """Train (or resume) one model and record its learning curve.

    ``run()`` trains to the end in place (in the driver: :class:`LocalExecutor`);
    ``compute(workspace)`` trains at most ``epochs`` epochs (all when None) away from the
    driver and returns them (:class:`TrainOutcome`). ``models`` is the folder of the
    checkpoints (default ``RUN_DIR/models``; with ``--storage``, a folder every worker sees).
    """

    spec: TrainSpec
    run_dir: str
    experiment: str
    data_dir: str | None = None
    device: str = "auto"
    progress: bool = True
    curve_every: int = 0
    epochs: int | None = None
    models: str | None = None

    @property
    def checkpoint(self) -> Path:
        if self.models:
            return checkpoint_in(self.models, self.spec.key)
        return RunDir(Path(self.run_dir)).model_checkpoint(self.spec.key)

    def files(self) -> list[Path]:
        """The model's files: its checkpoint and early stopping's best and last states."""
        return [self.checkpoint, best_path(self.checkpoint), last_path(self.checkpoint)]

    def inputs(self) -> dict[str, Path]:
        """The files a run away from the driver starts from (those that exist)."""
        return {p.name: p for p in self.files() if p.is_file()}

    def describe(self) -> str:
        return f"training {self.spec.key}"

    def run(self) -> TrainOutcome:
        """Train to the end in place, writing each epoch's rows once its checkpoint is on disk (the driver)."""
        with ResultStore(RunDir(Path(self.run_dir)).store) as store:
            self.recover(store)
            result = train(self.spec, self.checkpoint, data_dir=self.data_dir, device=self.device,
                           on_epoch=lambda m: store.add_epoch(_epoch_row(self, m)), progress=self.progress,
                           curve_every=self.curve_every, on_curve=lambda m: store.add_curve(_curve_row(self, m)))
            if result.stopping:
                store.set_stopping(_stopping_row(self, result.stopping, result.sha256))
        return TrainOutcome(result.sha256, True, result.epochs_run, committed=True)

    def compute(self, ws: Workspace) -> TrainOutcome:
        """Train at most ``epochs`` epochs from the given checkpoint in a scratch folder; return what changed.

        The events mirror what :meth:`run` writes and when: curve rows during an epoch; the
        best state (if the epoch is the best), the checkpoint and the epoch row after it;
        early stopping's hand-over (the last state, the best weights as the checkpoint) and
        the stopping row at the end. A task of several epochs hands back only the files of
        its last one (and the best state if it changed): the rows of its earlier epochs are
        then written before the checkpoint that commits them, and a driver killed in between
        trains those epochs again from the older checkpoint, to the same rows.
        """
        work = ws.scratch(self.checkpoint)
        try:
            for name in ws.inputs:  # the files the driver has (not what this machine's disk holds)
                ws.copy_into(name, work / name)
            ckpt = work / self.checkpoint.name
            fresh = not ckpt.is_file()
            was_stopped = ckpt.is_file() and bool((read_checkpoint_meta(ckpt).early_stopping or {}).get("stopped"))
            events: list = []

            def on_epoch(m: dict) -> None:
                files: dict[str, bytes | str] = {}
                best = best_path(ckpt)
                earlier: dict[str, bytes | str] = next((e[1] for e in reversed(events) if e[0] == "epoch"), {})
                if self.spec.early_stopping and best.is_file() and read_checkpoint_meta(best).epoch == m["epoch"]:
                    files[best.name] = ws.keep(best)  # written before the checkpoint that names it the best
                    _discard(earlier.pop(best.name, None))
                elif best.name in earlier:
                    files[best.name] = earlier.pop(best.name)
                for blob in earlier.values():  # an earlier epoch of this task: its files are superseded
                    _discard(blob)
                earlier.clear()
                files[ckpt.name] = ws.keep(ckpt)
                events.append(("epoch", files, dict(m)))

            result = train(self.spec, ckpt, data_dir=self.data_dir, device=self.device, on_epoch=on_epoch,
                           progress=self.progress, curve_every=self.curve_every,
                           on_curve=lambda m: events.append(("curve", {}, dict(m))), max_epochs=self.epochs)
            if result.stopping:
                files = {}
                if result.epochs_run > 0 or not was_stopped:  # the hand-over happened in this task
                    files = {last_path(ckpt).name: ws.keep(last_path(ckpt)), ckpt.name: ws.keep(ckpt)}
                events.append(("stop", files, dict(result.stopping, checkpoint=result.sha256)))
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        if ws.ship:
            shutil.rmtree(work, ignore_errors=True)
        return TrainOutcome(result.sha256, result.finished, result.epochs_run, events,
                            scratch=None if ws.ship else str(work), fresh=fresh)

    def recover(self, store: ResultStore) -> None:
        """Write the epoch row of the checkpoint on disk if a kill came between the two.

        An epoch is committed by its checkpoint (the weights, optimizer and that epoch's
        metrics, in one file renamed into place); its row in the store is written just
        after. A process killed in between leaves the row missing: it is written here,
        from the checkpoint's own record, before training goes on, so every kill leaves
        the old epoch or the new one, never a checkpoint without its row.
        """
        if not self.checkpoint.exists():
            self.forget_old_rows(store)
            return
        meta = read_checkpoint_meta(self.checkpoint)
        metrics, epoch = meta.metrics or {}, meta.epoch
        if not metrics or epoch < 1 or not meta.weights_sha256:
            return
        if (meta.early_stopping or {}).get("stopped"):
            return  # a finished early-stopped model: its checkpoint holds the best epoch's metrics, its rows are in
        sigma = sigma_key(self.spec.sigma_train)
        have = {e["epoch"] for e in store.epochs(self.experiment) if e["sigma_train"] == sigma
                and e["model"] == self.spec.model and e["noise"] == self.spec.family.label
                and e["seed"] == self.spec.seed}
        if epoch not in have:
            store.add_epoch(_epoch_row(self, {**metrics, "epoch": epoch, "checkpoint": meta.weights_sha256}))

    def forget_old_rows(self, store: ResultStore) -> None:
        """Before training from scratch: drop the rows of an earlier model of this key whose checkpoint is gone."""
        gone = store.forget_training(self.experiment, self.spec.model, self.spec.family.label,
                                     self.spec.sigma_train, self.spec.seed)
        if gone:
            warnings.warn(f"noisynn: {self.spec.key}: trained again from scratch (its checkpoint is gone): "
                          f"its {gone} earlier epoch rows are replaced and its points measured again", stacklevel=2)

    _recover_epoch_row = recover  # the name of older versions


def _discard(blob: bytes | str | None) -> None:
    """Drop a snapshot that a later one supersedes (a hard link in the scratch folder; bytes just go)."""
    if isinstance(blob, str):
        with contextlib.suppress(OSError):
            os.unlink(blob)


def _verified(path: Path, target: Path) -> None:
    """Refuse a checkpoint file handed back by a worker whose weights or optimizer state do not match their hashes."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from noisynn.engine.checkpoint import optimizer_sha256, read_metadata, weights_sha256

    what = f"the {target.name} a worker handed back"
    try:
        meta = read_metadata(path)
        tensors = load_file(str(path))
    except (CheckpointError, SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{what} is corrupt ({str(exc).splitlines()[0]}); the one on disk is kept: "
                              "rerun to train that epoch again") from None
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    ok = meta.get("weights_sha256") == weights_sha256(model)
    if ok and "optimizer_state" in meta and meta.get("optimizer_sha256") is not None:
        optim = {k: v for k, v in tensors.items() if k.startswith("optim.")}
        ok = isinstance(meta["optimizer_state"], dict) and optimizer_sha256(optim, meta["optimizer_state"]) == meta[
            "optimizer_sha256"]
    if not ok:
        raise CheckpointError(f"{what} does not match its recorded SHA-256 (damaged on the way); the one on disk is "
                              "kept: rerun to train that epoch again")


def _place(target: Path, blob: bytes | str) -> None:
    """Write a checkpoint file handed back by a worker at ``target``: verified, renamed into place, then its sidecar."""
    from noisynn.engine.checkpoint import sync_sidecar

    target.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(target)
    if isinstance(blob, bytes):
        tmp = unique_tmp(target)
        try:
            with open(tmp, "wb") as handle:
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())
            _verified(tmp, target)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    else:
        _verified(Path(blob), target)
        os.replace(blob, target)
    if not is_last_copy(target):  # as save_checkpoint: a sidecar; the .last copy has none
        sync_sidecar(target)


def commit_training(task: TrainTask, outcome: TrainOutcome) -> None:
    """The driver's half of a training task run away from it: its files, then the rows they commit."""
    try:
        if outcome.committed or not outcome.events:
            return
        folder = task.checkpoint.parent
        with ResultStore(RunDir(Path(task.run_dir)).store) as store:
            if outcome.fresh:
                task.forget_old_rows(store)
            for kind, files, row in outcome.events:
                for name, blob in files.items():
                    _place(folder / name, blob)
                if kind == "curve":
                    store.add_curve(_curve_row(task, row))
                elif kind == "epoch":
                    store.add_epoch(_epoch_row(task, row))
                else:
                    store.set_stopping(_stopping_row(task, row, row["checkpoint"]))
    finally:
        if outcome.scratch:
            shutil.rmtree(outcome.scratch, ignore_errors=True)


@functools.lru_cache(maxsize=2)
def _model_and_test(checkpoint: str, file_stamp: str, device: str, data_dir: str | None, limit: int | None):
    """Load a trained model and its test split once per process."""
    return load_for_evaluation(checkpoint, data_dir=data_dir, device=device, limit=limit)


def _load(path: Path, task) -> tuple:
    """The model at ``path`` and the task's test set (the file's stat is in the cache key: retrained, it reloads)."""
    stat = os.stat(path)
    return _model_and_test(str(path), f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}", task.device, task.data_dir,
                           task.eval_limit)


def _check_expected(task, how: str) -> None:
    """A worker that would measure a point otherwise than the driver expects (other data, other version) stops."""
    if task.expect is not None and how != task.expect:
        from noisynn.engine.store import _differences

        raise NoisynnError(f"{task.describe()} on {HOST}: this machine would measure it otherwise than the driver "
                           f"({_differences(task.expect, how)}): give every machine the same data "
                           "(noisynn data check) and the same noisynn version")


def noisy_measurement(test, runs: int | str, target: float, limit: int | None, noise: dict) -> str:
    """The measurement identity of a noisy point (:func:`~noisynn.engine.store.measurement`)."""
    return measurement(test, runs=runs, target=target if runs == "auto" else None, limit=limit, noise=noise)


def vote_measurement(test, votes: int, trials: int, limit: int | None, noise: dict) -> str:
    """The measurement identity of a voting curve's points."""
    return measurement(test, votes=votes, trials=trials, limit=limit, noise=noise)


@dataclass(frozen=True)
class EvalTask:
    """Evaluate one trained model at one sigma_val (``runs`` noisy passes over the test set).

    ``expect`` is the measurement the driver expects (:func:`noisynn.engine.store.measurement`):
    a worker whose data differ refuses the task.
    """

    checkpoint: str
    run_dir: str
    experiment: str
    sigma_val: float
    runs: int | str = 40
    target: float = 0.0005
    seed: int = 0
    data_dir: str | None = None
    device: str = "auto"
    eval_limit: int | None = None
    expect: str | None = None

    def key(self, meta: CheckpointMeta) -> PointKey:
        return PointKey(self.experiment, meta.model, meta.dataset, plugins.noise_of(meta).label,
                        meta.sigma_train, self.sigma_val, votes=1, kind="noisy", seed=self.seed)

    def measurement(self, test, meta: CheckpointMeta) -> str:
        return noisy_measurement(test, self.runs, self.target, self.eval_limit, plugins.noise_of(meta).config())

    def inputs(self) -> dict[str, Path]:
        return {Path(self.checkpoint).name: Path(self.checkpoint)}

    def describe(self) -> str:
        return f"the evaluation of {Path(self.checkpoint).stem} at sigma_val {self.sigma_val:g}"

    def run(self) -> Point:
        """The point, measured in place (the driver checked the store before and writes the point after)."""
        return self.compute(Workspace.here(self))

    def compute(self, ws: Workspace) -> Point:
        model, test, meta = _load(ws.file(Path(self.checkpoint).name), self)
        key = self.key(meta)
        how = self.measurement(test, meta)
        _check_expected(self, how)
        result = evaluate_point(model, test, plugins.noise_of(meta), self.sigma_val, runs=self.runs, seed=self.seed,
                                stream=(meta.sha256,), target=self.target)
        return Point(key, result.n_runs, result.accuracy, result.stderr, result.seconds, meta.sha256,
                     result.accuracies, how)


@dataclass(frozen=True)
class VoteTask:
    """Accuracy of majority voting with K = 1..votes at one sigma_val (one row per K)."""

    checkpoint: str
    run_dir: str
    experiment: str
    sigma_val: float
    votes: int
    trials: int = 1
    seed: int = 0
    data_dir: str | None = None
    device: str = "auto"
    eval_limit: int | None = None
    expect: str | None = None

    def keys(self, meta: CheckpointMeta) -> list[PointKey]:
        family = plugins.noise_of(meta)
        return [PointKey(self.experiment, meta.model, meta.dataset, family.label, meta.sigma_train,
                         self.sigma_val, votes=k, kind="vote", seed=self.seed) for k in range(1, self.votes + 1)]

    def measurement(self, test, meta: CheckpointMeta) -> str:
        return vote_measurement(test, self.votes, self.trials, self.eval_limit, plugins.noise_of(meta).config())

    def inputs(self) -> dict[str, Path]:
        return {Path(self.checkpoint).name: Path(self.checkpoint)}

    def describe(self) -> str:
        return f"the voting curve of {Path(self.checkpoint).stem} at sigma_val {self.sigma_val:g}"

    def run(self) -> list[Point]:
        return self.compute(Workspace.here(self))

    def compute(self, ws: Workspace) -> list[Point]:
        model, test, meta = _load(ws.file(Path(self.checkpoint).name), self)
        family = plugins.noise_of(meta)
        how = self.measurement(test, meta)
        _check_expected(self, how)
        acc, seconds = vote_curve(model, test, family, self.sigma_val, self.votes, trials=self.trials,
                                  seed=self.seed, stream=(meta.sha256,))
        points = []
        for k, key in enumerate(self.keys(meta)):
            runs = tuple(acc[:, k].tolist())
            mean, se = mean_stderr(runs)
            points.append(Point(key, len(runs), mean, se, seconds / self.votes, meta.sha256, runs, how))
        return points


@dataclass(frozen=True)
class AttackTask:
    """Transfer PGD examples from NN_adv (``source``) to NN_val (``target``) under noise, plus EOT.

    See :func:`noisynn.engine.adversarial.run_transfer`; ``attack`` holds the PGD settings
    (``eps, alpha, steps, restarts``), ``limit`` and the optional EOT keys
    (``eot, eot_steps, eot_restarts, eot_limit``). Not split yet: it writes its points and
    its example cache into the run directory itself, so it runs where that directory is
    (the driver, or local worker processes), never on a remote executor (``writes_run_dir``).
    """

    source: str
    target: str
    run_dir: str
    experiment: str
    sigma_val: tuple[float, ...]
    runs: int
    attack: dict
    noise: str = "multiplicative"
    seed: int = 0
    data_dir: str | None = None
    device: str = "auto"
    writes_run_dir: ClassVar[bool] = True
    """It writes the run directory itself: on a ``remote`` executor it runs in the driver (:func:`schedule`)."""

    def inputs(self) -> dict[str, Path]:
        return {}

    def describe(self) -> str:
        return f"the attacks on {Path(self.target).stem}"

    def compute(self, ws: Workspace) -> list[dict]:
        return self.run()

    def run(self) -> list[dict]:
        from noisynn.engine.adversarial import run_transfer

        a = self.attack
        pgd = {k: a[k] for k in ("eps", "alpha", "steps", "restarts") if k in a}
        eot = {k[4:]: a[k] for k in ("eot_steps", "eot_restarts") if k in a}
        return run_transfer(self.source, self.target, self.run_dir, sigma_val=self.sigma_val, runs=self.runs,
                            limit=a.get("limit"), settings=pgd, eot=int(a.get("eot", 0)), eot_settings=eot,
                            eot_limit=a.get("eot_limit"), noise_kind=self.noise, experiment=self.experiment,
                            seed=self.seed, data_dir=self.data_dir, device=self.device).rows


def attack_stages(plan: Plan, trains: list[TrainTask], *, run_dir: str, experiment: str, seed: int, data_dir,
                  device: str, **_) -> list[list[list]]:
    """The chains of a transfer-attack preset (paper 2, sec. 4), in two stages run one after the other.

    First the training of NN_adv (``source_model`` at sigma_train 0, trained as the NN_vals
    are) and of every NN_val (``trains``), side by side on a multi-slot executor; then one
    :class:`AttackTask` per NN_val, which needs both models finished. No stage for a preset
    without an ``attack`` table.
    """
    attack = plan.attack
    if attack is None:
        return []
    if not isinstance(plan.runs, int):
        raise ValueError("an attack preset needs an integer runs")
    src_spec = dataclasses.replace(plan.train_spec(0.0, seed), model=attack.source_model)
    like = trains[0] if trains else TrainTask(src_spec, run_dir, experiment)
    source = dataclasses.replace(like, spec=src_spec, curve_every=0)
    attacks = [AttackTask(str(source.checkpoint), str(t.checkpoint), run_dir, experiment, plan.sigma_val, plan.runs,
                          attack.table(), plan.noise, seed, data_dir, device) for t in trains]
    return [[[source], *[[t] for t in trains]], [[a] for a in attacks]]


def _placed(executor, task):
    """Where ``task`` runs: in the driver, in place, when it writes the run directory itself
    (``writes_run_dir``: :class:`AttackTask`) and ``executor``'s workers may not see it (``remote``)."""
    if getattr(task, "writes_run_dir", False) and getattr(executor, "remote", False):
        return LocalExecutor()
    return executor


class LocalExecutor:
    """Runs tasks one after another in this process (the driver): ``task.run()``, in place.

    The executor interface is small: ``slots`` (how many tasks may be in flight),
    ``submit(task) -> concurrent.futures.Future`` and ``close()``. :func:`schedule`
    does the rest (dependencies, priorities, progress), so another back end is one class
    with these three members that runs :func:`execute` somewhere (see the module doc).
    """

    slots = 1
    in_place = True
    """Tasks run in the driver, in place (``task.run()``); else through :func:`execute`, epoch-granular."""
    remote = False
    """True for executors whose workers may not see the run directory (attack tasks then run in the driver)."""

    def submit(self, task) -> Future:
        future: Future = Future()
        try:
            future.set_result(task.run())
        except BaseException as exc:  # noqa: BLE001 - re-raised by future.result()
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            future.set_exception(exc)
        return future

    def close(self) -> None:
        pass

    def map(self, tasks: Sequence, *, desc: str = "", progress: bool = True,
            on_result: Callable | None = None) -> list:
        return schedule(self, [[t] for t in tasks], desc=desc, progress=progress, on_result=on_result)


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


class ProcessExecutor(LocalExecutor):
    """Runs tasks in ``workers`` local processes (spawned), splitting the CPU threads between them.

    The workers share the driver's file system: they read checkpoints in place and train
    ``epochs_per_task`` epochs per task in a scratch folder beside the checkpoints; the
    driver renames the new files into place and writes every row (:func:`execute`).
    """

    in_place = False
    epochs_per_task = 1

    def __init__(self, workers: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.slots = workers
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, task) -> Future:
        if self._pool is None:
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_worker_init,
                                             initargs=(threads,))
        return self._pool.submit(execute, task, {name: str(path) for name, path in task.inputs().items()}, ship=False)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def make_executor(executor=None, *, workers: int = 1, address: str | None = None, cpus_per_task: float | None = None,
                  gpus_per_task: float | None = None, storage: str | os.PathLike | None = None):
    """The executor of a sweep from the command line's / the API's options.

    ``executor``: None or ``"local"`` (this process, or ``workers`` local processes), ``"ray"``
    (:class:`~noisynn.engine.ray_executor.RayExecutor` with ``address``, ``cpus_per_task``,
    ``gpus_per_task``, ``storage``), or an executor object, returned as it is.

    Raises:
        NoisynnError: an unknown executor, options of another executor, Ray missing or unreachable.
    """
    ray_options = {"--address": address, "--cpus-per-task": cpus_per_task, "--gpus-per-task": gpus_per_task,
                   "--storage": storage}
    given = [name for name, value in ray_options.items() if value is not None]
    if executor is not None and not isinstance(executor, str):
        if given or workers != 1:
            raise NoisynnError(f"{', '.join(given) or 'workers'}: set these on the executor object itself")
        return executor
    kind = (executor or "local").strip().lower()
    if kind == "local":
        if given:
            raise NoisynnError(f"{', '.join(given)}: only with --executor ray")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise NoisynnError(f"--workers must be an integer >= 1, got {workers!r}")
        return LocalExecutor() if workers == 1 else ProcessExecutor(workers)
    if kind == "ray":
        if workers != 1:
            raise NoisynnError("--workers is for the local executor: on Ray the cluster's CPUs set how many tasks run "
                               "at once (--cpus-per-task each)")
        from noisynn.engine.ray_executor import RayExecutor

        return RayExecutor(address, cpus_per_task=1 if cpus_per_task is None else cpus_per_task,
                           gpus_per_task=gpus_per_task or 0.0, storage=storage)
    raise NoisynnError(f"unknown executor {executor!r}: use local or ray")


def schedule(executor, chains: Sequence[Sequence], *, desc: str = "", progress: bool = True,
             on_result: Callable | None = None, prepare: Callable | None = None) -> list:
    """Run chains of tasks: a chain's first task, then (once it has finished) the rest of it.

    A chain is ``[head, *followers]``: the followers need the head's output on disk (a
    trained model's evaluation points). A follower of a finished head is always started
    before the next chain's head, so model k's points are measured while model k+1
    trains (on a multi-slot executor) or right after it (on one slot): a sweep killed at
    any moment has finished whole models, not eleven half-trained ones. At most
    ``executor.slots`` tasks are in flight.

    ``prepare(task)`` (in this process, just before a task would be submitted) returns the
    task to submit, or None when there is nothing to do (a finished point): the task then
    counts as done with the result None. ``on_result(task, result)`` runs in this process
    as each task returns; when it returns a task, that task is submitted next, in the
    same place of its chain (a training task's next epochs), before any other, and the
    chain's followers wait for it. The first task (or ``prepare``, or ``on_result``) that
    raises stops the schedule: queued tasks are not started, the ones in flight are
    waited for and handled, and the exception propagates.

    Returns:
        The results, in the order of the tasks in ``chains`` (flattened): each the last
        result of its place.
    """
    from collections import deque

    from tqdm.auto import tqdm

    order: dict[tuple[int, int], int] = {}
    for ci, chain in enumerate(chains):
        for ti, _ in enumerate(chain):
            order[(ci, ti)] = len(order)
    results: list = [None] * len(order)
    heads = deque(ci for ci, chain in enumerate(chains) if chain)
    followers: deque = deque()
    again: deque = deque()  # (ci, ti, task) handed back by on_result
    running: dict[Future, tuple[int, int, object]] = {}
    bar = tqdm(total=len(order), desc=desc, disable=not progress or len(order) < 2, unit="task")

    def finished(ci: int, ti: int, task, result) -> None:
        follow = on_result(task, result) if on_result is not None else None
        if follow is not None:
            again.append((ci, ti, follow))
            return
        results[order[(ci, ti)]] = result
        bar.update(1)
        if ti == 0:
            followers.extend((ci, k) for k in range(1, len(chains[ci])))

    def fill() -> None:
        while len(running) < executor.slots and (again or followers or heads):
            if again:
                ci, ti, task = again.popleft()
            else:
                ci, ti = followers.popleft() if followers else (heads.popleft(), 0)
                task = chains[ci][ti]
            ready = prepare(task) if prepare is not None else task
            if ready is None:
                finished(ci, ti, task, None)
                continue
            running[_placed(executor, ready).submit(ready)] = (ci, ti, ready)

    failure: BaseException | None = None
    try:
        while failure is None and (heads or followers or again or running):
            try:
                fill()
            except Exception as exc:  # noqa: BLE001 - handled like a failing task
                failure = exc
                break
            if not running:
                continue
            pending = len(again) + len(followers) + sum(len(chains[c]) for c in heads)
            bar.set_postfix_str(f"running {len(running)}, pending {pending}", refresh=True)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: order[running[f][:2]]):
                ci, ti, task = running.pop(future)
                try:
                    result = future.result()
                    finished(ci, ti, task, result)
                except Exception as exc:  # noqa: BLE001 - re-raised below, after the other results
                    failure = failure or exc
        if failure is not None:
            for future in list(running):
                future.cancel()
            for future, (_, _, task) in list(running.items()):
                try:
                    result = future.result()
                    if on_result is not None:
                        on_result(task, result)  # kept; a follow-up it asks for is not started
                except Exception:  # noqa: BLE001 - the first failure is the one reported
                    continue
            raise failure
    finally:
        bar.close()
    return results


@dataclass
class SweepSummary:
    """What a sweep did: trained models, points computed now and points found done."""

    run_dir: Path
    checkpoints: dict[float, str] = field(default_factory=dict)
    computed: int = 0
    skipped: int = 0


def run_sweep(plan: Plan, run_dir: str | Path, **options) -> SweepSummary:
    """Run (or resume) the whole grid of ``plan`` in ``run_dir``, holding its write lock throughout.

    Options as :func:`_run_sweep` (``seed, data_dir, device, executor, progress, log``). Only
    this process writes the store; an executor's workers write nothing but their scratch
    files, under this process's lock (they take none).

    Raises:
        RunDirLocked: another process is writing into ``run_dir`` (one line naming it).
        StoreError: ``run_dir`` holds another experiment, profile or seed.
    """
    from noisynn.engine.rundir_lock import run_dir_lock

    with run_dir_lock(run_dir, log=options.get("log", print)):
        return _run_sweep(plan, run_dir, **options)


class _Driver:
    """The driver's side of a sweep: what to submit (the store checked first), and writing what comes back."""

    def __init__(self, plan: Plan, run_dir: Path, data_dir, summary: SweepSummary, log: Callable[[str], None]) -> None:
        self.plan, self.run_dir, self.data_dir, self.summary, self.log = plan, run_dir, data_dir, summary, log
        self._tests: dict[tuple, object] = {}
        self._hows: dict[tuple, str] = {}

    def store(self) -> ResultStore:
        return ResultStore(RunDir(self.run_dir).store)

    def _measurement(self, task, meta: CheckpointMeta) -> str:
        """How ``task`` will measure (the test data by content): computed here, once per model and kind."""
        spec = meta.spec
        data = (meta.model, meta.dataset, task.eval_limit, bool(spec.get("allow_partial", False)),
                json.dumps(spec.get("data_options") or {}, sort_keys=True))
        settings = (type(task).__name__, json.dumps(plugins.noise_of(meta).config(), sort_keys=True, default=str),
                    str(getattr(task, "runs", None)), getattr(task, "target", None), getattr(task, "votes", None),
                    getattr(task, "trials", None))
        if (data, settings) not in self._hows:
            if data not in self._tests:
                if len(self._tests) > 2:
                    self._tests.clear()
                self._tests[data] = load_data(meta.model, meta.dataset, "test", data_dir=self.data_dir,
                                              limit=task.eval_limit, allow_partial=data[3],
                                              data_options=spec.get("data_options") or {})
            self._hows[(data, settings)] = task.measurement(self._tests[data], meta)
        return self._hows[(data, settings)]

    def prepare(self, task):
        """The task to submit, or None when the store has its result (stale points are deleted and said so)."""
        if isinstance(task, TrainTask):
            with self.store() as store:
                task.recover(store)
            return task
        if hasattr(task, "prepare_in_driver"):  # a task that checks the store itself (hardware_tasks.ChipsTask)
            return task.prepare_in_driver(self.store, self.log)
        if not isinstance(task, (EvalTask, VoteTask)):
            return task
        meta = read_checkpoint_meta(task.checkpoint)
        sha = meta.weights_sha256
        if sha is None:
            raise CheckpointError(f"{task.checkpoint} records no weights hash (an old noisynn wrote it): retrain it")
        how = self._measurement(task, meta)
        with self.store() as store:
            if isinstance(task, EvalTask):
                if store.has_point(task.key(meta), sha, how, on_stale=self.log):
                    return None
            else:
                notes: list[str] = []
                found = [store.has_point(k, sha, how, on_stale=notes.append) for k in task.keys(meta)]  # each checked
                if all(found):
                    return None
                for note in notes[:1]:
                    self.log(note)
        return dataclasses.replace(task, expect=how)

    def done(self, task, result):
        """Write what ``task`` returned; a training task that has epochs left is handed back to go on."""
        if isinstance(task, TrainTask):
            if result is None:
                return None
            commit_training(task, result)
            if not result.done:
                return task  # its next epochs, from the checkpoint just written
            self.trained(task)
            return None
        if isinstance(task, AttackTask):  # it wrote its points itself
            self.summary.computed += 1
            for r in result:
                err = f" +- {100 * r['stderr']:.2f}" if r["n_runs"] > 1 else ""
                self.log(f"{r['kind']:>18} {r['model']} sigma_val {r['sigma_val']:g}: {100 * r['accuracy']:.2f}%{err}")
            return None
        points = result if isinstance(result, list) else [result] if result else []
        if not points:
            self.summary.skipped += 1
            return None
        with self.store() as store:
            if hasattr(task, "commit"):  # a task that writes its own rows (hardware_tasks.ChipsTask)
                task.commit(store, points)
            elif isinstance(task, VoteTask):
                store.replace_points(points)
            else:
                for point in points:
                    store.add_point(point)
        for point in points:
            for note in getattr(point, "notes", ()):
                self.log(note)
        self.summary.computed += 1
        return None

    def trained(self, task: TrainTask) -> None:
        plan, sigma = self.plan, sigma_key(task.spec.sigma_train)
        with self.store() as store:
            last = [e for e in store.epochs(plan.name) if e["sigma_train"] == sigma and e["model"] == task.spec.model]
            stop = [r for r in store.stopping(plan.name) if r["sigma_train"] == sigma and r["model"] == task.spec.model]
        if stop:
            r = stop[-1]
            best = [e for e in last if e["epoch"] == r["best_epoch"]]
            acc = f", clean test accuracy {100 * best[0]['val_accuracy']:.2f}%" if best else ""
            self.log(f"trained {task.spec.key}: {r['epochs_run']} epochs (stopped: {r['stopped']}), "
                     f"best epoch {r['best_epoch']} (held-out {r['monitor']} {r['best_score']:.4f}){acc}")
        elif last:
            e = last[-1]
            self.log(f"trained {task.spec.key}: {e['epoch']} epochs, clean test accuracy "
                     f"{100 * e['val_accuracy']:.2f}%")
        if plan.attack is not None:  # NN_adv and the NN_vals of a transfer-attack preset
            for e in last:
                if e["epoch"] == plan.train.epochs:
                    self.log(f"trained {e['model']} (adversarially, sigma_train {e['sigma_train']:g}): clean test "
                             f"accuracy {100 * e['val_accuracy']:.2f}%")


def _clean_scratch(folder: Path) -> None:
    """Remove scratch folders of training tasks that died (their driver held the lock: no task of theirs is running)."""
    for work in scratch_folders(folder):
        shutil.rmtree(work, ignore_errors=True)


def _run_sweep(
    plan: Plan,
    run_dir: str | Path,
    *,
    seed: int = 0,
    data_dir: str | None = None,
    device: str = "auto",
    executor=None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> SweepSummary:
    """Run (or resume) the whole grid of ``plan`` in ``run_dir``.

    ``executor``: :class:`LocalExecutor` (default), :class:`ProcessExecutor`, a
    :class:`~noisynn.engine.ray_executor.RayExecutor` or any object with the executor
    interface (see the module doc); an executor with a ``storage`` folder puts the
    checkpoints there; ``epochs_per_task`` bounds a remote training task.

    Raises:
        StoreError: ``run_dir`` holds another experiment, profile or seed.
    """
    run_dir = Path(run_dir)
    executor = executor or LocalExecutor()
    try:
        return _sweep_with(executor, plan, run_dir, seed, data_dir, device, progress, log)
    finally:
        executor.close()


def _sweep_with(executor, plan: Plan, run_dir: Path, seed: int, data_dir, device: str, progress: bool,
                log: Callable[[str], None]) -> SweepSummary:
    family = plan.train_spec(plan.sigma_train[0], seed).family
    with ResultStore(RunDir(run_dir).store) as store:
        store.claim(experiment=plan.name, profile=plan.profile, seed=str(seed), model=plan.model,
                    dataset=plan.dataset, noise=plan.noise)
        if not family.builtin:  # the noise column holds a label; its whole configuration is here
            store.claim(noise_config=json.dumps(family.config(), sort_keys=True))
    models = RunDir(run_dir).models_for(getattr(executor, "storage", None))
    _clean_scratch(models)
    log(f"{plan.name} ({plan.profile}): {len(plan.sigma_train)} models x {len(plan.sigma_val)} sigma_val, "
        f"{plan.runs} runs/point{f', voting up to K={plan.votes}' if plan.votes else ''} -> {run_dir}")
    summary = SweepSummary(run_dir)
    driver = _Driver(plan, run_dir, data_dir, summary, log)
    in_place = getattr(executor, "in_place", False)
    chunk = None if in_place else getattr(executor, "epochs_per_task", 1)
    trains = [TrainTask(plan.train_spec(s, seed), str(run_dir), plan.name, data_dir, device, progress and in_place,
                        plan.curve_every, chunk, None if models == RunDir(run_dir).models else str(models))
              for s in plan.sigma_train]
    summary.checkpoints = {t.spec.sigma_train: str(t.checkpoint) for t in trains}

    common = dict(run_dir=str(run_dir), experiment=plan.name, seed=seed, data_dir=data_dir, device=device,
                  eval_limit=plan.eval_limit)
    stages = [*attack_stages(plan, trains, **common), _measure_chains(plan, trains, summary, log, **common)]
    for chains in stages:  # one after another: a stage may use what the earlier ones made (NN_adv's checkpoint)
        schedule(executor, chains, desc="sweep", progress=progress, on_result=driver.done, prepare=driver.prepare)
    _clean_scratch(models)
    return summary


def _measure_chains(plan: Plan, trains: list[TrainTask], summary: SweepSummary, log: Callable[[str], None],
                    **common) -> list[list]:
    """Each model's training followed by its points: noisy evaluation, voting, chips (``hardware_tasks``).

    A model whose points are all in the store and whose checkpoint is gone is left out (and
    said so). An attack preset's models are measured by their attacks (:func:`attack_stages`):
    none here.
    """
    if plan.attack is not None:
        return []
    seed = common["seed"]
    vote_common = {**common, "eval_limit": plan.vote_limit or plan.eval_limit}
    from noisynn.engine import hardware_tasks  # a preset's [hardware] table: chips tasks, hardware-aware models

    aware = hardware_tasks.aware_train_tasks(plan, trains[0], seed) if trains else []
    chains: list[list] = []
    for t in [*trains, *aware]:
        evals = [EvalTask(checkpoint=str(t.checkpoint), sigma_val=v, runs=plan.runs, target=plan.target, **common)
                 for v in plan.sigma_val] if t not in aware else []
        votes = [VoteTask(checkpoint=str(t.checkpoint), sigma_val=v, votes=plan.votes, trials=plan.vote_trials,
                          **vote_common) for v in plan.vote_sigma_val] if plan.votes and t not in aware else []
        chips = hardware_tasks.chip_tasks(plan, t, **common)
        if not t.checkpoint.exists() and (t in aware or _measured_without_checkpoint(plan, t, seed)) \
                and hardware_tasks.measured_without_checkpoint(plan, t, chips, seed):
            summary.skipped += len(evals) + len(votes) + len(chips)
            log(f"{t.spec.key}: every point is in the store and the model is finished; its checkpoint is not "
                "here, and no longer needed")
            continue
        chains.append([t, *evals, *votes, *chips])
    return chains


def _measured_without_checkpoint(plan: Plan, task: TrainTask, seed: int) -> bool:
    """True when ``task``'s model finished training and every one of its points is in the store.

    A run directory whose store was kept (say, committed) but whose checkpoints were not
    can then be resumed without retraining models that need nothing more. The points
    must all name one checkpoint hash, that hash must be the finished model's (the
    stopping row of an early-stopped run, else the epoch row of the last planned epoch),
    and each must have been measured as this plan would measure it (runs, limits, noise,
    the test data's content). An early-stopped model that this plan's rule would have
    trained further (its cap, ``patience`` or ``min_epochs`` raised since) is not finished.
    """
    spec = task.spec
    path = RunDir(Path(task.run_dir)).store
    if not path.exists():
        return False
    label = spec.family.label
    wanted: dict[PointKey, str] = {}
    test = load_data(spec.model, plan.dataset, "test", data_dir=task.data_dir, limit=plan.eval_limit,
                     allow_partial=spec.allow_partial, data_options=spec.data_options)
    noisy = noisy_measurement(test, plan.runs, plan.target, plan.eval_limit, spec.family.config())
    for v in plan.sigma_val:
        wanted[PointKey(plan.name, spec.model, plan.dataset, label, spec.sigma_train, v, 1, "noisy", seed)] = noisy
    if plan.votes:
        limit = plan.vote_limit or plan.eval_limit
        vtest = test if limit == plan.eval_limit else load_data(
            spec.model, plan.dataset, "test", data_dir=task.data_dir, limit=limit, allow_partial=spec.allow_partial,
            data_options=spec.data_options)
        voted = vote_measurement(vtest, plan.votes, plan.vote_trials, limit, spec.family.config())
        for v in plan.vote_sigma_val:
            for k in range(1, plan.votes + 1):
                key = PointKey(plan.name, spec.model, plan.dataset, label, spec.sigma_train, v, k, "vote", seed)
                wanted[key] = voted
    with ResultStore(path) as store:
        records = {key: r for key in wanted if (r := store.point_record(key)) is not None}
        if len(records) < len(wanted) or any(r[1] != wanted[key] for key, r in records.items()):
            return False
        hashes = {r[0] for r in records.values()}
        if len(hashes) != 1:
            return False
        sha = hashes.pop()
        sigma = sigma_key(spec.sigma_train)
        stops = [r for r in store.stopping(plan.name) if r["sigma_train"] == sigma and r["model"] == spec.model
                 and r["noise"] == label and r["seed"] == seed]
        if stops:
            row = stops[-1]
            if stop_reason(spec, row["epochs_run"], row["epochs_run"] - row["best_epoch"]) is None:
                return False  # this plan's rule (a raised cap, patience or min_epochs) trains it further
            return row["checkpoint"] == sha
        epochs = plan.train.epochs
        return any(e["checkpoint"] == sha and e["epoch"] == epochs for e in store.epochs(plan.name)
                   if e["sigma_train"] == sigma and e["model"] == spec.model and e["noise"] == label
                   and e["seed"] == seed)
