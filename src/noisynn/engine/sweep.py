"""Sweeps: train one model per sigma_train, evaluate every (sigma_train, sigma_val) point.

The work is split into plain, picklable tasks whose inputs are their fields and whose
outputs go to the results store (:class:`TrainTask`: train one model;
:class:`EvalTask`: evaluate one point; :class:`VoteTask`: one voting curve). An
*executor* runs a list of tasks: :class:`LocalExecutor` in this process,
:class:`ProcessExecutor` in worker processes. Another executor (e.g. on Ray) only
has to call ``task.run()`` somewhere that sees the run directory.

Re-running a sweep on the same directory skips every finished training epoch (the
checkpoint) and every finished point (the store): it is how a killed sweep resumes.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import torch

from noisynn.engine import plugins
from noisynn.engine.evaluation import evaluate_point, mean_stderr, vote_curve
from noisynn.engine.presets import Plan
from noisynn.engine.store import CurveRow, EpochRow, Point, PointKey, ResultStore, StoppingRow, measurement
from noisynn.engine.training import TrainSpec, load_data, load_for_evaluation, train

__all__ = ["TrainTask", "EvalTask", "VoteTask", "AttackTask", "LocalExecutor", "ProcessExecutor", "schedule", "run_sweep",
           "SweepSummary"]

STORE = "results.sqlite"


@dataclass(frozen=True)
class TrainTask:
    """Train (or resume) one model and record its learning curve."""

    spec: TrainSpec
    run_dir: str
    experiment: str
    data_dir: str | None = None
    device: str = "auto"
    progress: bool = True
    curve_every: int = 0

    @property
    def checkpoint(self) -> Path:
        return Path(self.run_dir) / "models" / f"{self.spec.key}.safetensors"

    def run(self) -> str:
        with ResultStore(Path(self.run_dir) / STORE) as store:
            def record(m: dict) -> None:
                store.add_epoch(EpochRow(
                    experiment=self.experiment, model=self.spec.model, noise=self.spec.family.label,
                    sigma_train=self.spec.sigma_train, seed=self.spec.seed, epoch=m["epoch"], batches=m["batches"],
                    train_loss=m["train_loss"], train_accuracy=m["train_accuracy"], val_loss=m["val_loss"],
                    val_accuracy=m["val_accuracy"], seconds=m["seconds"], checkpoint=m["checkpoint"],
                    holdout_loss=m.get("holdout_loss"), holdout_accuracy=m.get("holdout_accuracy"),
                ))

            def curve(m: dict) -> None:
                store.add_curve(CurveRow(
                    experiment=self.experiment, model=self.spec.model, noise=self.spec.family.label,
                    sigma_train=self.spec.sigma_train, seed=self.spec.seed, batches=m["batches"], epoch=m["epoch"],
                    val_loss=m["val_loss"], val_accuracy=m["val_accuracy"],
                ))

            self._recover_epoch_row(store, record)
            result = train(self.spec, self.checkpoint, data_dir=self.data_dir, device=self.device,
                           on_epoch=record, progress=self.progress, curve_every=self.curve_every, on_curve=curve)
            if result.stopping:
                es = result.stopping
                store.set_stopping(StoppingRow(
                    experiment=self.experiment, model=self.spec.model, noise=self.spec.family.label,
                    sigma_train=self.spec.sigma_train, seed=self.spec.seed, monitor=es["monitor"],
                    epochs_run=es["epochs_run"], best_epoch=es["best_epoch"], best_score=es["best_score"],
                    stopped=es["stopped"], checkpoint=result.sha256,
                ))
        return result.sha256


    def _recover_epoch_row(self, store: ResultStore, record: Callable[[dict], None]) -> None:
        """Write the epoch row of the checkpoint on disk if a kill came between the two.

        An epoch is committed by its checkpoint (the weights, optimizer and that epoch's
        metrics, in one file renamed into place); its row in the store is written just
        after. A process killed in between leaves the row missing: it is written here,
        from the checkpoint's own record, before training goes on, so every kill leaves
        the old epoch or the new one, never a checkpoint without its row.
        """
        if not self.checkpoint.exists():
            return
        from noisynn.engine.checkpoint import read_metadata

        meta = read_metadata(self.checkpoint)
        metrics, epoch = meta.get("metrics") or {}, meta.get("epoch")
        if not metrics or not isinstance(epoch, int) or epoch < 1 or not meta.get("weights_sha256"):
            return
        sigma = round(self.spec.sigma_train, 9)
        have = {e["epoch"] for e in store.epochs(self.experiment) if e["sigma_train"] == sigma
                and e["model"] == self.spec.model and e["noise"] == self.spec.family.label and e["seed"] == self.spec.seed}
        if epoch not in have:
            record({**metrics, "epoch": epoch, "checkpoint": meta["weights_sha256"]})


@functools.lru_cache(maxsize=2)
def _model_and_test(checkpoint: str, file_stamp: str, device: str, data_dir: str | None, limit: int | None):
    """Load a trained model and its test split once per process."""
    return load_for_evaluation(checkpoint, data_dir=data_dir, device=device, limit=limit)


def _load(task) -> tuple:
    """The task's model and test set; the file's stat is in the cache key, so a retrained model is reloaded."""
    stat = os.stat(task.checkpoint)
    return _model_and_test(str(task.checkpoint), f"{stat.st_size}:{stat.st_mtime_ns}", task.device, task.data_dir,
                           task.eval_limit)


@dataclass(frozen=True)
class EvalTask:
    """Evaluate one trained model at one sigma_val (``runs`` noisy passes over the test set)."""

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

    def key(self, meta: dict) -> PointKey:
        return PointKey(self.experiment, meta["model"], meta["dataset"], plugins.noise_of(meta).label,
                        meta["sigma_train"], self.sigma_val, votes=1, kind="noisy", seed=self.seed)

    def measurement(self, test, meta: dict) -> str:
        return measurement(test, runs=self.runs, target=self.target if self.runs == "auto" else None,
                           limit=self.eval_limit, noise=plugins.noise_of(meta).config())

    def run(self) -> Point | None:
        """The new point, or None when the store has it (same weights, same measurement).

        A stale point's reason is in the returned point's ``notes``.
        """
        model, test, meta = _load(self)
        key = self.key(meta)
        how = self.measurement(test, meta)
        notes: list[str] = []
        with ResultStore(Path(self.run_dir) / STORE) as store:
            if store.has_point(key, meta["sha256"], how, on_stale=notes.append):
                return None
            result = evaluate_point(model, test, plugins.noise_of(meta), self.sigma_val, runs=self.runs, seed=self.seed,
                                    stream=(meta["sha256"],), target=self.target)
            point = Point(key, result.n_runs, result.accuracy, result.stderr, result.seconds, meta["sha256"],
                          result.accuracies, how, tuple(notes))
            store.add_point(point)
        return point


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

    def run(self) -> list[Point]:
        model, test, meta = _load(self)
        family = plugins.noise_of(meta)
        keys = [PointKey(self.experiment, meta["model"], meta["dataset"], family.label, meta["sigma_train"],
                         self.sigma_val, votes=k, kind="vote", seed=self.seed) for k in range(1, self.votes + 1)]
        how = measurement(test, votes=self.votes, trials=self.trials, limit=self.eval_limit, noise=family.config())
        notes: list[str] = []
        with ResultStore(Path(self.run_dir) / STORE) as store:
            if all([store.has_point(k, meta["sha256"], how, on_stale=notes.append) for k in keys]):
                return []
            acc, seconds = vote_curve(model, test, family, self.sigma_val, self.votes, trials=self.trials,
                                      seed=self.seed, stream=(meta["sha256"],))
            points = []
            for k, key in enumerate(keys):
                runs = tuple(acc[:, k].tolist())
                mean, se = mean_stderr(runs)
                points.append(Point(key, len(runs), mean, se, seconds / self.votes, meta["sha256"], runs, how,
                                    tuple(notes[:1]) if k == 0 else ()))
            store.replace_points(points)
        return points


@dataclass(frozen=True)
class AttackTask:
    """Transfer PGD examples from NN_adv (``source``) to NN_val (``target``) under noise, plus EOT.

    See :func:`noisynn.engine.adversarial.run_transfer`; ``attack`` holds the PGD settings
    (``eps, alpha, steps, restarts``), ``limit`` and the optional EOT keys
    (``eot, eot_steps, eot_restarts, eot_limit``).
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

    def run(self) -> list[dict]:
        from noisynn.engine.adversarial import run_transfer

        a = self.attack
        pgd = {k: a[k] for k in ("eps", "alpha", "steps", "restarts") if k in a}
        eot = {k[4:]: a[k] for k in ("eot_steps", "eot_restarts") if k in a}
        return run_transfer(self.source, self.target, self.run_dir, sigma_val=self.sigma_val, runs=self.runs,
                            limit=a.get("limit"), settings=pgd, eot=int(a.get("eot", 0)), eot_settings=eot,
                            eot_limit=a.get("eot_limit"), noise_kind=self.noise, experiment=self.experiment,
                            seed=self.seed, data_dir=self.data_dir, device=self.device).rows


def _attack_tasks(plan: Plan, trains: list[TrainTask], run_dir: Path, seed: int, data_dir, device: str,
                  progress: bool) -> tuple[TrainTask, list[AttackTask]]:
    """NN_adv's training task (sigma_train 0, same adversarial training) and one attack task per NN_val."""
    import dataclasses

    src_spec = dataclasses.replace(plan.train_spec(0.0, seed), model=plan.extra["source_model"])
    source = TrainTask(src_spec, str(run_dir), plan.name, data_dir, device, progress)
    if plan.runs == "auto":
        raise ValueError("an attack preset needs an integer runs")
    tasks = [AttackTask(str(source.checkpoint), str(t.checkpoint), str(run_dir), plan.name, plan.sigma_val, plan.runs,
                        plan.extra["attack"], plan.noise, seed, data_dir, device) for t in trains]
    return source, tasks


class LocalExecutor:
    """Runs tasks one after another in this process.

    The executor interface is small: ``slots`` (how many tasks may be in flight),
    ``submit(task) -> concurrent.futures.Future`` and ``close()``. :func:`schedule`
    does the rest (dependencies, priorities, progress), so another back end (Ray,
    SLURM) is one class with these three members.
    """

    slots = 1

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


def _run(task):
    return task.run()


class ProcessExecutor(LocalExecutor):
    """Runs tasks in ``workers`` local processes (spawned), splitting the CPU threads between them."""

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
        return self._pool.submit(_run, task)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def schedule(executor, chains: Sequence[Sequence], *, desc: str = "", progress: bool = True,
             on_result: Callable | None = None) -> list:
    """Run chains of tasks: a chain's first task, then (once it has finished) the rest of it.

    A chain is ``[head, *followers]``: the followers need the head's output on disk (a
    trained model's evaluation points). A follower of a finished head is always started
    before the next chain's head, so model k's points are measured while model k+1
    trains (on a multi-slot executor) or right after it (on one slot): a sweep killed at
    any moment has finished whole models, not eleven half-trained ones. At most
    ``executor.slots`` tasks are in flight. ``on_result(task, result)`` runs in this
    process as each task returns; the first task that raises stops the schedule
    (queued tasks are not started) and its exception propagates, after every result
    that had come back was handled.

    Returns:
        The results, in the order of the tasks in ``chains`` (flattened).
    """
    from collections import deque

    from tqdm.auto import tqdm

    order = {}
    for ci, chain in enumerate(chains):
        for ti, _ in enumerate(chain):
            order[(ci, ti)] = len(order)
    results: list = [None] * len(order)
    heads = deque(ci for ci, chain in enumerate(chains) if chain)
    followers: deque = deque()
    running: dict[Future, tuple[int, int]] = {}
    bar = tqdm(total=len(order), desc=desc, disable=not progress or len(order) < 2, unit="task")
    try:
        while heads or followers or running:
            while len(running) < executor.slots and (followers or heads):
                ci, ti = followers.popleft() if followers else (heads.popleft(), 0)
                running[executor.submit(chains[ci][ti])] = (ci, ti)
            pending = len(followers) + sum(len(chains[c]) for c in heads)
            bar.set_postfix_str(f"running {len(running)}, pending {pending}", refresh=False)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            failure = None
            for future in sorted(done, key=lambda f: order[running[f]]):
                ci, ti = running.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - re-raised below, after the other results
                    failure = failure or exc
                    continue
                results[order[(ci, ti)]] = result
                bar.update(1)
                if on_result is not None:
                    on_result(chains[ci][ti], result)
                if ti == 0:
                    followers.extend((ci, k) for k in range(1, len(chains[ci])))
            if failure is not None:
                heads.clear()
                followers.clear()
                for future in list(running):
                    future.cancel()
                for future in list(running):
                    try:
                        result = future.result()
                    except Exception:  # noqa: BLE001 - the first failure is the one reported
                        continue
                    ci, ti = running[future]
                    if on_result is not None:
                        on_result(chains[ci][ti], result)
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

    Options as :func:`_run_sweep` (``seed, data_dir, device, executor, progress, log``). Worker
    processes of the executor write under this process's lock (they take none).

    Raises:
        RunDirLocked: another process is writing into ``run_dir`` (one line naming it).
        StoreError: ``run_dir`` holds another experiment, profile or seed.
    """
    from noisynn.engine.rundir_lock import run_dir_lock

    with run_dir_lock(run_dir, log=options.get("log", print)):
        return _run_sweep(plan, run_dir, **options)


def _run_sweep(
    plan: Plan,
    run_dir: str | Path,
    *,
    seed: int = 0,
    data_dir: str | None = None,
    device: str = "auto",
    executor: LocalExecutor | ProcessExecutor | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> SweepSummary:
    """Run (or resume) the whole grid of ``plan`` in ``run_dir``.

    Raises:
        StoreError: ``run_dir`` holds another experiment, profile or seed.
    """
    run_dir = Path(run_dir)
    executor = executor or LocalExecutor()
    family = plan.train_spec(plan.sigma_train[0], seed).family
    with ResultStore(run_dir / STORE) as store:
        store.claim(experiment=plan.name, profile=plan.profile, seed=str(seed), model=plan.model,
                    dataset=plan.dataset, noise=plan.noise)
        if not family.builtin:  # the noise column holds a label; its whole configuration is here
            store.claim(noise_config=json.dumps(family.config(), sort_keys=True))
    log(f"{plan.name} ({plan.profile}): {len(plan.sigma_train)} models x {len(plan.sigma_val)} sigma_val, "
        f"{plan.runs} runs/point{f', voting up to K={plan.votes}' if plan.votes else ''} -> {run_dir}")
    summary = SweepSummary(run_dir)

    trains = [TrainTask(plan.train_spec(s, seed), str(run_dir), plan.name, data_dir, device, progress,
                        plan.curve_every)
              for s in plan.sigma_train]

    def trained(task: TrainTask, sha: str) -> None:
        with ResultStore(run_dir / STORE) as store:
            last = [e for e in store.epochs(plan.name) if e["sigma_train"] == round(task.spec.sigma_train, 9)]
            stop = [r for r in store.stopping(plan.name) if r["sigma_train"] == round(task.spec.sigma_train, 9)]
        if stop:
            r = stop[-1]
            best = [e for e in last if e["epoch"] == r["best_epoch"]]
            acc = f", clean test accuracy {100 * best[0]['val_accuracy']:.2f}%" if best else ""
            log(f"trained {task.spec.key}: {r['epochs_run']} epochs (stopped: {r['stopped']}), "
                f"best epoch {r['best_epoch']} (held-out {r['monitor']} {r['best_score']:.4f}){acc}")
        elif last:
            e = last[-1]
            log(f"trained {task.spec.key}: {e['epoch']} epochs, clean test accuracy {100 * e['val_accuracy']:.2f}%")

    if plan.extra.get("attack"):  # paper 2, sec. 4: NN_adv + NN_val(s), then transfer attacks
        source, attacks = _attack_tasks(plan, trains, run_dir, seed, data_dir, device, progress)
        executor.map([source, *trains], desc="training", progress=progress)
        with ResultStore(run_dir / STORE) as store:
            for e in store.epochs(plan.name):
                if e["epoch"] == plan.train["epochs"]:
                    log(f"trained {e['model']} (adversarially, sigma_train {e['sigma_train']:g}): clean test accuracy "
                        f"{100 * e['val_accuracy']:.2f}%")
        summary.checkpoints = {t.spec.sigma_train: str(t.checkpoint) for t in trains}
        for task, rows in zip(attacks, executor.map(attacks, desc="attacking", progress=progress)):
            summary.computed += 1
            for r in rows:
                err = f" +- {100 * r['stderr']:.2f}" if r["n_runs"] > 1 else ""
                log(f"{r['kind']:>18} {r['model']} sigma_val {r['sigma_val']:g}: {100 * r['accuracy']:.2f}%{err}")
        return summary

    summary.checkpoints = {t.spec.sigma_train: str(t.checkpoint) for t in trains}
    common = dict(run_dir=str(run_dir), experiment=plan.name, seed=seed, data_dir=data_dir, device=device,
                  eval_limit=plan.eval_limit)
    vote_common = {**common, "eval_limit": plan.vote_limit or plan.eval_limit}
    chains = []
    for t in trains:
        evals = [EvalTask(checkpoint=str(t.checkpoint), sigma_val=v, runs=plan.runs, target=plan.target, **common)
                 for v in plan.sigma_val]
        votes = [VoteTask(checkpoint=str(t.checkpoint), sigma_val=v, votes=plan.votes, trials=plan.vote_trials,
                          **vote_common) for v in plan.vote_sigma_val] if plan.votes else []
        if not t.checkpoint.exists() and _measured_without_checkpoint(plan, t, seed):
            summary.skipped += len(evals) + len(votes)
            log(f"{t.spec.key}: every point is in the store and the model is finished; its checkpoint is not here, "
                "and no longer needed")
            continue
        chains.append([t, *evals, *votes])

    def done(task, result) -> None:
        if isinstance(task, TrainTask):
            trained(task, result)
            return
        for point in (result if isinstance(result, list) else [result] if result else []):
            for note in point.notes:
                log(note)
        if result:
            summary.computed += 1
        else:
            summary.skipped += 1

    try:
        schedule(executor, chains, desc="sweep", progress=progress, on_result=done)
    finally:
        executor.close()
    return summary


def _measured_without_checkpoint(plan: Plan, task: TrainTask, seed: int) -> bool:
    """True when ``task``'s model finished training and every one of its points is in the store.

    A run directory whose store was kept (say, committed) but whose checkpoints were not
    can then be resumed without retraining models that need nothing more. The points
    must all name one checkpoint hash, that hash must be the finished model's (the
    stopping row of an early-stopped run, else the epoch row of the last planned epoch),
    and each must have been measured as this plan would measure it (runs, limits, noise,
    the test data's content).
    """
    spec = task.spec
    path = Path(task.run_dir) / STORE
    if not path.exists():
        return False
    label = spec.family.label
    wanted: dict[PointKey, str] = {}
    test = load_data(spec.model, plan.dataset, "test", data_dir=task.data_dir, limit=plan.eval_limit,
                     allow_partial=spec.allow_partial, data_options=spec.data_options)
    noisy = measurement(test, runs=plan.runs, target=plan.target if plan.runs == "auto" else None,
                        limit=plan.eval_limit, noise=spec.family.config())
    for v in plan.sigma_val:
        wanted[PointKey(plan.name, spec.model, plan.dataset, label, spec.sigma_train, v, 1, "noisy", seed)] = noisy
    if plan.votes:
        limit = plan.vote_limit or plan.eval_limit
        vtest = test if limit == plan.eval_limit else load_data(
            spec.model, plan.dataset, "test", data_dir=task.data_dir, limit=limit, allow_partial=spec.allow_partial,
            data_options=spec.data_options)
        voted = measurement(vtest, votes=plan.votes, trials=plan.vote_trials, limit=limit, noise=spec.family.config())
        for v in plan.vote_sigma_val:
            for k in range(1, plan.votes + 1):
                wanted[PointKey(plan.name, spec.model, plan.dataset, label, spec.sigma_train, v, k, "vote", seed)] = voted
    with ResultStore(path) as store:
        records = {key: store.point_record(key) for key in wanted}
        if any(r is None or r[1] != wanted[key] for key, r in records.items()):
            return False
        hashes = {r[0] for r in records.values()}
        if len(hashes) != 1:
            return False
        sha = hashes.pop()
        sigma = round(spec.sigma_train, 9)
        stops = [r for r in store.stopping(plan.name) if r["sigma_train"] == sigma and r["model"] == spec.model
                 and r["noise"] == label and r["seed"] == seed]
        if stops:
            return stops[-1]["checkpoint"] == sha
        epochs = plan.train.get("epochs")
        return any(e["checkpoint"] == sha and e["epoch"] == epochs for e in store.epochs(plan.name)
                   if e["sigma_train"] == sigma and e["model"] == spec.model and e["noise"] == label
                   and e["seed"] == seed)
