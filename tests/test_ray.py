"""Issue 15: sweeps on Ray (engine/ray_executor.py), on a local Ray instance of 2 CPUs started once for the module.

A tiny digits sweep (2 models of rnn-rows, early stopping, learning curve, voting) run through Ray must
give the table of the local executor at the same torch thread count (1), bit for bit, with the driver
alone opening the store; a worker SIGKILLed mid-task is retried and changes nothing; a SIGKILLed driver
resumes without recomputing a finished point or retraining a finished epoch; a task failing with a
noisynn error ends the sweep with that one line and keeps what finished; an unreachable head node is one
line naming it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray", reason='Ray is not installed: pip install "noisynn[ray]"')

import noisynn  # noqa: E402
from noisynn.engine import load_plan, run_sweep  # noqa: E402
from noisynn.engine.checkpoint import load_checkpoint  # noqa: E402
from noisynn.engine.ray_executor import RayExecutor  # noqa: E402
from noisynn.engine.sweep import EvalTask, TrainTask, VoteTask  # noqa: E402

PRESET = """
name = "onray"
title = "tiny digits sweep run on Ray"
model = "rnn-rows"
dataset = "digits"
noise = "additive"

[profile.quick]
sigma_train = "0,0.8"
sigma_val = "0,1"
epochs = 3
batch_size = 64
lr = 5e-3
early_stopping = {holdout = 200, patience = 2}
runs = 3
votes = 2
vote_sigma_val = "1"
vote_limit = 100
curve_every = 10
"""

# the tasks below are pickled by value: the workers cannot import this test module
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("preset") / "onray.toml"
    path.write_text(PRESET)
    return path


@pytest.fixture(scope="module")
def cluster():
    """A Ray instance of 2 CPUs for the whole module; its GCS address for the command-line drivers."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def reference(preset, tmp_path_factory) -> Path:
    """The sweep in this process at 1 torch thread: what every Ray task runs with (--cpus-per-task 1)."""
    run = tmp_path_factory.mktemp("local") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = run_sweep(load_plan(preset, "quick"), run, device="cpu", progress=False, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    assert summary.computed == 2 * 2 + 2
    return run


def table(run: Path) -> dict:
    """Everything a run holds that does not depend on how or when it ran (times excluded)."""
    with sqlite3.connect(run / "results.sqlite") as conn:
        q = conn.execute
        return {
            "points": q("SELECT kind, sigma_train, sigma_val, votes, n_runs, accuracy, stderr, checkpoint, measurement "
                        "FROM points ORDER BY 1, 2, 3, 4").fetchall(),
            "runs": q("SELECT p.kind, p.sigma_train, p.sigma_val, p.votes, r.run, r.accuracy FROM runs r "
                      "JOIN points p ON p.id = r.point_id ORDER BY 1, 2, 3, 4, 5").fetchall(),
            "epochs": q("SELECT sigma_train, epoch, batches, train_loss, train_accuracy, val_loss, val_accuracy, "
                        "checkpoint, holdout_loss, holdout_accuracy FROM epochs ORDER BY 1, 2").fetchall(),
            "curve": q("SELECT sigma_train, batches, epoch, val_loss, val_accuracy FROM curve "
                       "ORDER BY 1, 2").fetchall(),
            "stopping": q("SELECT * FROM stopping ORDER BY sigma_train").fetchall(),
        }


@dataclasses.dataclass(frozen=True)
class InWorker:
    """A task run on a Ray worker under test conditions: the results store may not be opened there; optionally
    the worker SIGKILLs itself after computing (its result lost) the first time, or the task fails."""

    task: object
    driver: int
    kill_marker: str | None = None
    fail: str | None = None

    def inputs(self):
        return self.task.inputs()

    def describe(self):
        return self.task.describe()

    def compute(self, ws):
        from unittest import mock

        import noisynn.engine.store as store

        assert os.getpid() != self.driver, "the task ran in the driver"

        def refuse(*args, **kwargs):
            raise AssertionError(f"a worker (pid {os.getpid()}) opened the results store")

        if self.fail:
            raise noisynn.errors.DataError(self.fail)
        with mock.patch.object(store.ResultStore, "__init__", refuse):
            result = self.task.compute(ws)
        if self.kill_marker and not os.path.exists(self.kill_marker):
            Path(self.kill_marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)  # mid-task for Ray: the work is done, nothing was handed back
        return result


class Wrapping:
    """An executor that hands its tasks, wrapped by ``wrap``, to another (here: a RayExecutor)."""

    def __init__(self, inner, wrap):
        self.inner, self.wrap = inner, wrap

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @property
    def slots(self):
        return self.inner.slots

    def submit(self, task):
        return self.inner.submit(self.wrap(task))

    def close(self):
        self.inner.close()


def _sigma(task) -> float:
    if isinstance(task, TrainTask):
        return task.spec.sigma_train
    return float(Path(task.checkpoint).stem.split("-s")[1][:4])


@pytest.mark.slow
def test_a_ray_sweep_equals_the_local_one_and_only_the_driver_writes(preset, reference, cluster, tmp_path):
    run = tmp_path / "ray"
    executor = RayExecutor(cpus_per_task=1)
    assert executor.slots == 2 and executor.storage is None  # checkpoints through the object store
    summary = run_sweep(load_plan(preset, "quick"), run, device="cpu", progress=False, log=lambda m: None,
                        executor=Wrapping(executor, lambda t: InWorker(t, os.getpid())))
    assert summary.computed == 2 * 2 + 2 and summary.skipped == 0
    assert table(run) == table(reference)
    with sqlite3.connect(run / "results.sqlite") as conn:
        used = {r[0] for r in conn.execute("SELECT checkpoint FROM points")}
    models = sorted((run / "models").glob("*.safetensors"))
    names = sorted(p.name for p in models)
    assert names == sorted(p.name for p in (reference / "models").glob("*.safetensors"))
    for path in models:  # checkpoints that came through the object store verify against their recorded hash
        state = load_checkpoint(path)
        assert state["sha256"] == state["meta"]["weights_sha256"]
        assert load_checkpoint(reference / "models" / path.name)["sha256"] == state["sha256"]
        if not path.name.endswith((".best.safetensors", ".last.safetensors")):
            assert state["sha256"] in used and path.with_suffix(".json").is_file()
    assert not [p for p in run.rglob("*") if p.name.endswith((".tmp", ".work"))]
    again = run_sweep(load_plan(preset, "quick"), run, device="cpu", progress=False, log=lambda m: None,
                      executor=RayExecutor())
    assert again.computed == 0 and again.skipped == 2 * 2 + 2  # nothing finished is submitted again


@pytest.mark.slow
def test_a_worker_killed_mid_task_is_retried_and_the_table_is_unchanged(preset, reference, cluster, tmp_path):
    """SIGKILLed Ray workers (a training epoch of model 0.8, the evaluation of model 0 at sigma_val 1), with the
    checkpoints on a folder every worker sees (--storage): Ray runs both tasks again, nothing differs."""
    markers = tmp_path / "markers"
    markers.mkdir()

    def wrap(task):
        doomed = (isinstance(task, TrainTask) and task.spec.sigma_train == 0.8) or (
            isinstance(task, EvalTask) and task.sigma_val == 1.0 and _sigma(task) == 0.0)
        name = f"{type(task).__name__}-{_sigma(task)}"
        return InWorker(task, os.getpid(), kill_marker=str(markers / name) if doomed else None)

    run, storage = tmp_path / "run", tmp_path / "shared"
    executor = RayExecutor(cpus_per_task=1, storage=storage, max_retries=2)
    summary = run_sweep(load_plan(preset, "quick"), run, device="cpu", progress=False, log=lambda m: None,
                        executor=Wrapping(executor, wrap))
    assert summary.computed == 2 * 2 + 2
    killed = sorted(p.name for p in markers.iterdir())
    assert killed == ["EvalTask-0.0", "TrainTask-0.8"]
    assert {int(p.read_text()) for p in markers.iterdir()}.isdisjoint({os.getpid()})
    assert table(run) == table(reference)
    assert (run / "models").is_symlink() and (run / "models").resolve() == (storage / "models").resolve()
    assert sorted(p.name for p in (storage / "models").glob("*.safetensors")) == sorted(
        p.name for p in (reference / "models").glob("*.safetensors"))
    assert not [p for p in storage.rglob("*") if p.name.endswith((".tmp", ".work")) or p.name.startswith("keep-")]


@pytest.mark.slow
def test_a_noisynn_error_in_a_task_ends_the_sweep_in_one_line_and_keeps_what_finished(preset, reference, cluster,
                                                                                       tmp_path):
    message = "digits test split is corrupt (injected on the worker): run noisynn data check"

    def wrap(task):  # the last task of the sweep fails: model 0.8's voting curve
        bad = isinstance(task, VoteTask) and _sigma(task) == 0.8
        return InWorker(task, os.getpid(), fail=message if bad else None)

    run = tmp_path / "run"
    with pytest.raises(noisynn.NoisynnError) as caught:
        run_sweep(load_plan(preset, "quick"), run, device="cpu", progress=False, log=lambda m: None,
                  executor=Wrapping(RayExecutor(), wrap))
    assert type(caught.value) is noisynn.errors.DataError and str(caught.value) == message  # not a Ray traceback
    with sqlite3.connect(run / "results.sqlite") as conn:
        kept = conn.execute("SELECT id, created, kind, sigma_train, sigma_val, votes FROM points").fetchall()
    ref = table(reference)["points"]
    assert {(0.8, 0.0), (0.8, 1.0)} <= {(k[3], k[4]) for k in kept if k[2] == "noisy"}  # ahead of it in its chain
    assert not [k for k in kept if k[2] == "vote" and k[3] == 0.8]
    assert all(p in ref for p in table(run)["points"])  # what is kept is right
    tasks_kept = len({(k[2], k[3], k[4]) for k in kept})
    done = run_sweep(load_plan(preset, "quick"), run, device="cpu", progress=False, log=lambda m: None,
                     executor=RayExecutor())
    assert done.computed == 2 * 2 + 2 - tasks_kept and done.skipped == tasks_kept  # nothing kept is measured again
    with sqlite3.connect(run / "results.sqlite") as conn:
        rows = conn.execute("SELECT id, created, kind, sigma_train, sigma_val, votes FROM points")
        after = {row[0]: row for row in rows}
    assert all(after[k[0]] == k for k in kept)
    assert table(run) == table(reference)


def _count(db: Path, what: str) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(f"SELECT COUNT(*) FROM {what}").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _cli(preset: Path, run: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "noisynn", "sweep", str(preset), "--profile", "quick", "--out", str(run),
            "--device", "cpu", "--executor", "ray", *more]


def _kill_when(cmd: list[str], db: Path, what: str, at_least: int, timeout: float = 300) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while _count(db, what) < at_least:
            assert proc.poll() is None, "the sweep finished before it could be killed"
            assert time.monotonic() < deadline, "timed out waiting to kill the sweep"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # this driver's pid only
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_a_killed_driver_resumes_without_recomputing_or_retraining(preset, reference, cluster, tmp_path):
    run = tmp_path / "run"
    db = run / "results.sqlite"
    cmd = _cli(preset, run, "--address", cluster)
    _kill_when(cmd, db, "epochs", 1)  # a training epoch committed, the sweep in full swing
    _kill_when(cmd, db, "points", 2)  # a model trained, its points being measured
    with sqlite3.connect(db) as conn:
        points = conn.execute("SELECT id, created, accuracy FROM points").fetchall()
        epochs = conn.execute("SELECT sigma_train, epoch, seconds, checkpoint FROM epochs").fetchall()
    assert 2 <= len(points) < 2 * 2 + 2 * 2 and epochs
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(db) as conn:
        after = {row[0]: row for row in conn.execute("SELECT id, created, accuracy FROM points")}
        trained = {row[:2]: row for row in conn.execute("SELECT sigma_train, epoch, seconds, checkpoint FROM epochs")}
    for row in points:  # no finished point was measured again (same row, same timestamp)
        assert after[row[0]] == row
    for row in epochs:  # no finished epoch was trained again (its row, timing included, is the first run's)
        assert trained[row[:2]] == row
    assert table(run) == table(reference)


@pytest.mark.slow
def test_an_unreachable_head_node_is_one_line_naming_it(preset, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    run = tmp_path / "run"
    done = subprocess.run(_cli(preset, run, "--address", address), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and address in lines[0] and "Ray head node" in lines[0], done.stderr
    assert not run.exists()  # refused before the run directory was made


def test_ray_options_need_the_ray_executor_and_ray_itself(monkeypatch):
    from noisynn.engine.sweep import make_executor

    with pytest.raises(noisynn.NoisynnError, match="--address: only with --executor ray"):
        make_executor("local", address="auto")
    with pytest.raises(noisynn.NoisynnError, match="--workers is for the local executor"):
        make_executor("ray", workers=2)
    with pytest.raises(noisynn.NoisynnError, match="unknown executor 'spark'"):
        make_executor("spark")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(noisynn.NoisynnError, match=r'pip install "noisynn\[ray\]"'):
        make_executor("ray")


@pytest.mark.slow
def test_a_checkpoint_damaged_on_the_way_is_refused_and_the_one_on_disk_kept(reference, tmp_path):
    from noisynn.engine.sweep import _place

    source = next(p for p in (reference / "models").glob("*.safetensors") if p.name.count(".") == 2)
    target = tmp_path / "models" / source.name
    _place(target, source.read_bytes())
    assert load_checkpoint(target)["sha256"] == load_checkpoint(source)["sha256"]
    before = target.read_bytes()
    damaged = bytearray(before)
    damaged[-100] ^= 0xFF  # one flipped byte in the tensors
    with pytest.raises(noisynn.CheckpointError, match="does not match its recorded SHA-256"):
        _place(target, bytes(damaged))
    assert target.read_bytes() == before and not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_a_submitit_executor_is_one_small_class_and_gives_the_same_table(preset, reference, tmp_path):
    """The executor interface on another back end: every task a job of submitit's local back end (SLURM's stand-in).
    One model of the same preset (the 0.8 row: seeding by coordinates makes it the same model and the same points)."""
    pytest.importorskip("submitit", reason='submitit is not installed: pip install "noisynn[slurm]"')
    from noisynn.engine.submitit_executor import SubmititExecutor

    one = tmp_path / "one.toml"
    one.write_text(PRESET.replace('sigma_train = "0,0.8"', 'sigma_train = "0.8"'))
    run = tmp_path / "run"
    executor = SubmititExecutor(tmp_path / "jobs", cluster="local", slots=2, threads=1, timeout_min=20)
    summary = run_sweep(load_plan(one, "quick"), run, device="cpu", progress=False, log=lambda m: None,
                        executor=executor)
    assert summary.computed == 2 + 1
    ours, ref = table(run), table(reference)
    for name, rows in ours.items():
        assert rows and rows == [r for r in ref[name] if (r[1] if name in ("points", "runs") else
                                                          r[3] if name == "stopping" else r[0]) == 0.8], name


@pytest.mark.slow
def test_the_python_api_takes_the_ray_executor(cluster, tmp_path):
    kwargs = dict(noise="additive", sigma_train="0.5", sigma_val="0,1", runs=2, epochs=1, train_limit=300,
                  device="cpu", experiment="api")
    table_ = noisynn.sweep("rnn-rows", "digits", executor="ray", out=tmp_path / "ray", **kwargs)
    assert len(table_.rows) == 2 and ray.is_initialized()  # it joined the module's instance and left it running
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = noisynn.sweep("rnn-rows", "digits", out=tmp_path / "here", **kwargs)
    finally:
        torch.set_num_threads(threads)
    assert [(r["sigma_val"], r["accuracy"], r["checkpoint"]) for r in table_.rows] == [
        (r["sigma_val"], r["accuracy"], r["checkpoint"]) for r in here.rows]
