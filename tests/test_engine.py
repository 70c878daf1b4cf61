"""The experiment engine: training, evaluation, voting, the store, sweeps, resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import noisynn
from noisynn.engine import (
    ResultStore,
    TrainSpec,
    evaluate_point,
    load_plan,
    load_trained,
    mean_stderr,
    parse_range,
    run_sweep,
    train,
    vote_curve,
)
from noisynn.engine.evaluation import majority_vote
from noisynn.engine.sweep import LocalExecutor, schedule
from noisynn.engine.training import load_data

TINY_PRESET = """
name = "tiny"
title = "tiny digits sweep for tests"
model = "lstm-rows"
dataset = "digits"
noise = "additive"

[profile.quick]
sigma_train = "0,0.8"
sigma_val = "0,0.5,1"
epochs = 4
batch_size = 32
lr = 5e-3
runs = 5
votes = 3
vote_sigma_val = "1"
vote_limit = 100
curve_every = 20
"""


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("preset") / "tiny.toml"
    path.write_text(TINY_PRESET)
    return path


@pytest.fixture(scope="module")
def reference_run(tiny_preset, tmp_path_factory) -> Path:
    """The tiny sweep, run once without interruption."""
    run = tmp_path_factory.mktemp("reference") / "run"
    summary = run_sweep(load_plan(tiny_preset, "quick"), run, device="cpu", progress=False, log=lambda m: None)
    assert summary.computed == 2 * 3 + 2 and summary.skipped == 0
    return run


@pytest.fixture(scope="module")
def trained_digits(tmp_path_factory):
    """An LSTM trained conventionally (sigma_train = 0) on the embedded digits."""
    ckpt = tmp_path_factory.mktemp("model") / "m.safetensors"
    spec = TrainSpec("lstm-rows", "digits", "additive", 0.0, epochs=6, lr=5e-3, seed=1)
    result = train(spec, ckpt, device="cpu", progress=False)
    model, meta = load_trained(ckpt)
    test = load_data("lstm-rows", "digits", "test")
    return result, model, meta, test


def grid(run_dir: Path) -> list[tuple]:
    with ResultStore(run_dir / "results.sqlite") as store:
        return [(p["kind"], p["sigma_train"], p["sigma_val"], p["votes"], p["n_runs"], p["accuracy"], p["stderr"],
                 p["checkpoint"]) for p in store.points()]


@pytest.mark.slow
def test_training_learns_and_checkpoint_round_trips(trained_digits):
    result, model, meta, test = trained_digits
    assert result.epochs_run == 6
    assert result.metrics["val_accuracy"] > 0.8  # chance: 0.1
    assert meta["model"] == "lstm-rows" and meta["epoch"] == 6 and meta["sigma_train"] == 0.0
    assert meta["package_version"] == noisynn.__version__
    with torch.no_grad():
        acc = (model(test.x).argmax(1) == test.y).float().mean().item()
    assert acc == pytest.approx(result.metrics["val_accuracy"], abs=1e-6)


def test_checkpoint_meta_is_the_checkpoints_json_unchanged(trained_digits):
    """CheckpointMeta reads a checkpoint's metadata and writes back exactly the same JSON object."""
    from noisynn.engine.checkpoint import read_metadata
    from noisynn.engine.checkpoint_meta import CheckpointMeta, read_checkpoint_meta

    result, _, meta, _ = trained_digits
    assert isinstance(meta, CheckpointMeta) and meta.sha256 == result.sha256 == meta.weights_sha256
    document = read_metadata(result.checkpoint)
    typed = read_checkpoint_meta(result.checkpoint)
    assert typed.to_dict() == document  # every key, the optimizer's JSON part (kept in ``extra``) included
    assert (typed.model, typed.epoch, typed.epochs, typed.seed, typed.metrics) == (
        "lstm-rows", 6, 6, 1, document["metrics"])
    assert meta["model"] == meta.model and meta.get("noise_config") is None and "sha256" in meta  # the dict view
    older = {k: v for k, v in document.items() if k not in ("epochs", "seed", "package_version")}
    older |= {"from_the_future": [1, 2], "early_stopping": None}  # unknown keys and explicit nulls survive
    assert CheckpointMeta.from_dict(older).to_dict() == older
    with pytest.raises(KeyError, match="sample_shape"):
        CheckpointMeta.from_dict({k: v for k, v in document.items() if k != "sample_shape"})


@pytest.mark.slow
def test_resumed_training_equals_uninterrupted(tmp_path):
    spec2 = TrainSpec("rnn-rows", "digits", "multiplicative", 0.5, epochs=2, lr=3e-3, seed=3)
    spec4 = TrainSpec("rnn-rows", "digits", "multiplicative", 0.5, epochs=4, lr=3e-3, seed=3)
    train(spec2, tmp_path / "a.safetensors", device="cpu", progress=False)  # "interrupted" after 2 epochs
    resumed = train(spec4, tmp_path / "a.safetensors", device="cpu", progress=False)
    assert resumed.epochs_run == 2
    straight = train(spec4, tmp_path / "b.safetensors", device="cpu", progress=False)
    a, _ = load_trained(tmp_path / "a.safetensors")
    b, _ = load_trained(tmp_path / "b.safetensors")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert resumed.metrics["val_accuracy"] == straight.metrics["val_accuracy"]


@pytest.mark.slow
def test_learning_curve_within_epochs_learns_and_leaves_the_weights_unchanged(tmp_path):
    """curve_every records clean validation every N mini-batches (paper 2, fig. 3) without touching training."""
    spec = TrainSpec("lstm-rows", "digits", "additive", 0.5, epochs=2, batch_size=32, lr=5e-3, seed=4)
    points: list[dict] = []
    train(spec, tmp_path / "curve.safetensors", device="cpu", progress=False, curve_every=10,
          curve_samples=300, on_curve=points.append)
    train(spec, tmp_path / "plain.safetensors", device="cpu", progress=False)
    a, _ = load_trained(tmp_path / "curve.safetensors")
    b, _ = load_trained(tmp_path / "plain.safetensors")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    per_epoch = -(-1437 // 32)  # 45 mini-batches of the 1,437 training digits
    assert [p["batches"] for p in points] == list(range(10, 2 * per_epoch + 1, 10))
    assert [p["epoch"] for p in points] == [1 + (p["batches"] - 1) // per_epoch for p in points]
    assert all(abs(300 * p["val_accuracy"] - round(300 * p["val_accuracy"])) < 1e-9 for p in points)  # 300 samples
    assert points[-1]["val_accuracy"] > points[0]["val_accuracy"] + 0.2  # it is a learning curve
    assert points[-1]["val_loss"] < points[0]["val_loss"]


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    train(TrainSpec("rnn-rows", "digits", "additive", 0.0, epochs=1, seed=0), tmp_path / "m.safetensors",
          device="cpu", progress=False)
    with pytest.raises(noisynn.CheckpointError, match="other settings.*sigma_train: 0.0 -> 0.5"):
        train(TrainSpec("rnn-rows", "digits", "additive", 0.5, epochs=2, seed=0), tmp_path / "m.safetensors",
              device="cpu", progress=False)


@pytest.mark.slow
def test_evaluation_runs_statistics_and_reproducibility(trained_digits):
    _, model, meta, test = trained_digits
    clean = evaluate_point(model, test, "additive", 0.0, runs=40)
    assert clean.n_runs == 1  # deterministic: one run is exact
    a = evaluate_point(model, test, "additive", 0.8, runs=12, seed=5)
    b = evaluate_point(model, test, "additive", 0.8, runs=12, seed=5)
    c = evaluate_point(model, test, "additive", 0.8, runs=12, seed=6)
    assert a.accuracies == b.accuracies  # same seed, same numbers
    assert a.accuracies != c.accuracies
    assert len(set(a.accuracies)) > 6  # independent runs differ
    assert a.accuracy < clean.accuracy - 0.05  # sigma_train = 0 degrades under noise
    mean, se = mean_stderr(a.accuracies)
    assert a.stderr == pytest.approx(torch.tensor(a.accuracies).std().item() / 12**0.5, rel=1e-6)
    assert mean == pytest.approx(sum(a.accuracies) / 12)


@pytest.mark.slow
def test_runs_auto_stops_at_the_target(trained_digits):
    _, model, _, test = trained_digits
    loose = evaluate_point(model, test, "additive", 0.3, runs="auto", target=0.05, max_runs=100)
    assert loose.n_runs == 20  # two groups, then 1.96 * se < 5 points
    tight = evaluate_point(model, test, "additive", 0.3, runs="auto", target=1e-6, max_runs=40)
    assert tight.n_runs == 40  # never reaches the target: capped
    assert 1.96 * loose.stderr < 0.05


def test_majority_vote_counts_and_breaks_ties_by_summed_softmax():
    # 3 inferences of 2 samples over 3 classes
    logits = torch.tensor([
        [[5.0, 0.0, 0.0], [0.0, 3.0, 0.0]],
        [[0.0, 5.0, 0.0], [0.0, 0.0, 1.0]],
        [[0.0, 4.0, 0.0], [0.0, 2.0, 0.0]],
    ])
    decisions = majority_vote(logits)
    assert decisions[:, 0].tolist() == [0, 0, 1]  # K=2 tie 0 vs 1: equal softmax sums -> first; K=3 class 1
    assert decisions[:, 1].tolist() == [1, 1, 1]  # K=2 tie 1 vs 2: class 1 has the larger summed softmax
    tie = torch.tensor([[[0.0, 1.0]], [[3.0, 0.0]]])  # one vote each; class 0's softmax sum is larger
    assert majority_vote(tie)[1].item() == 0


@pytest.mark.slow
def test_voting_accuracy_rises_with_k_at_high_sigma(trained_digits):
    _, model, _, test = trained_digits
    acc, _ = vote_curve(model, test, "additive", 1.0, 15, trials=3, seed=2)
    curve = acc.mean(0)
    assert curve[-1] > curve[0] + 0.08, curve
    assert curve[-5:].mean() > curve[:5].mean()
    clean, _ = vote_curve(model, test, "additive", 0.0, 5)
    assert torch.all(clean == clean[0, 0])  # without noise every K gives the clean accuracy


def test_parse_range():
    assert parse_range("0:1:0.1") == [round(0.1 * i, 9) for i in range(11)]
    assert parse_range("0, 0.5,1") == [0.0, 0.5, 1.0]
    for bad in ("1:0:0.1", "0:1", "a:b:c", "0:1:0", "", "0,-1"):
        with pytest.raises(ValueError):
            parse_range(bad)


@pytest.mark.slow
def test_sweep_records_the_learning_curve_within_epochs(reference_run):
    with ResultStore(reference_run / "results.sqlite") as store:
        curve = store.curve()
    for st in (0.0, 0.8):  # 4 epochs x 45 mini-batches of the digits: a point every 20
        assert [c["batches"] for c in curve if c["sigma_train"] == st] == list(range(20, 181, 20))


def test_the_run_directory_holds_exactly_what_rundir_names(tiny_preset, reference_run):
    """Every file of a finished sweep is one that RunDir names, and every name RunDir gives it exists."""
    from noisynn.engine.rundir import RunDir, best_path, is_main_checkpoint, last_path

    plan = load_plan(tiny_preset, "quick")
    rd = RunDir(reference_run)
    keys = [plan.train_spec(s, 0).key for s in plan.sigma_train]
    checkpoints = [rd.model_checkpoint(k) for k in keys]
    named = {rd.store, rd.lock, *checkpoints, *(c.with_suffix(".json") for c in checkpoints)}  # + the sidecars
    found = {p for p in reference_run.rglob("*") if p.is_file() or p.is_dir() and p.parent == reference_run}
    assert found == named | {rd.models}
    assert rd.model_checkpoints() == sorted(checkpoints)
    assert rd.store.name == "results.sqlite" and rd.models.name == "models" and rd.report == reference_run / "report"
    assert rd.best_checkpoint(keys[0]) == best_path(checkpoints[0]) != checkpoints[0]
    assert rd.last_checkpoint(keys[0]) == last_path(checkpoints[0]) != checkpoints[0]
    assert not is_main_checkpoint(best_path(checkpoints[0])) and not is_main_checkpoint(last_path(checkpoints[0]))
    with ResultStore(rd.store, readonly=True) as store:  # the store's rows name these very checkpoints' weights
        from noisynn.engine.checkpoint import read_metadata

        last = {e["checkpoint"] for e in store.epochs() if e["epoch"] == plan.train["epochs"]}
    assert last == {read_metadata(c)["weights_sha256"] for c in checkpoints}


@pytest.mark.slow
def test_voting_uses_the_profiles_vote_limit_and_evaluation_the_whole_test_set(reference_run):
    with ResultStore(reference_run / "results.sqlite") as store:
        votes, noisy = store.points(kind="vote"), store.points(kind="noisy")
    assert len(votes) == 2 * 3 and noisy  # 2 models x K = 1..3
    # one trial on the first 100 of the 360 test digits: every accuracy is a whole percentage
    assert all(abs(100 * p["accuracy"] - round(100 * p["accuracy"])) < 1e-9 for p in votes)
    # the noisy points use all 360 (runs' accuracies in 1/360 steps, not all whole percentages)
    runs = [a for p in noisy for a in store_runs(reference_run, p["id"])]
    assert all(abs(360 * a - round(360 * a)) < 1e-9 for a in runs)
    assert any(abs(100 * a - round(100 * a)) > 1e-9 for a in runs)


def store_runs(run: Path, point_id: int) -> list[float]:
    with ResultStore(run / "results.sqlite") as store:
        return store.run_accuracies(point_id)


@pytest.mark.slow
def test_sweep_skips_finished_work_and_owns_its_directory(tiny_preset, reference_run):
    before = grid(reference_run)
    again = run_sweep(load_plan(tiny_preset, "quick"), reference_run, device="cpu", progress=False,
                      log=lambda m: None)
    assert again.computed == 0 and again.skipped == 8
    assert grid(reference_run) == before
    rows = {(r[0], r[1], r[2], r[3]): r for r in before}
    assert len(rows) == 6 + 2 * 3 and {r[1] for r in before} == {0.0, 0.8}  # 6 points, 2 voting curves K=1..3
    assert rows[("noisy", 0.0, 1.0, 1)][5] < rows[("noisy", 0.8, 1.0, 1)][5]  # DNI holds up under noise
    with pytest.raises(noisynn.NoisynnError, match="holds experiment 'tiny'"):
        run_sweep(load_plan("demo", "quick"), reference_run, device="cpu", progress=False)


def _count(db: Path, table: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _kill_when(cmd: list[str], db: Path, table: str, at_least: int, timeout: float = 120) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while _count(db, table) < at_least:
            assert proc.poll() is None, "the sweep finished before it could be killed"
            assert time.monotonic() < deadline, "timed out waiting to kill the sweep"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_sigkill_mid_training_and_mid_evaluation_then_resume(tiny_preset, reference_run, tmp_path):
    run = tmp_path / "killed"
    db = run / "results.sqlite"
    cmd = [sys.executable, "-m", "noisynn", "sweep", str(tiny_preset), "--profile", "quick", "--out", str(run),
           "--device", "cpu"]
    _kill_when(cmd, db, "epochs", 2)  # inside the training of the first model
    epochs_before = _count(db, "epochs")
    assert 2 <= epochs_before < 8
    _kill_when(cmd, db, "points", 2)  # a model trained, in the middle of its evaluation
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT id, created, accuracy FROM points").fetchall()
    assert 2 <= len(before) < 8
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(db) as conn:
        after = {row[0]: row for row in conn.execute("SELECT id, created, accuracy FROM points")}
    for row in before:  # no finished point was recomputed
        assert after[row[0]] == row
    # the killed-and-resumed grid equals an uninterrupted one with the same seed (reproducibility)
    assert grid(run) == grid(reference_run)


@dataclass(frozen=True)
class _Step:
    """A task that records that it ran (in a list shared with the test) and may fail."""

    name: str
    log: list = field(compare=False, hash=False)
    fail: bool = False

    def run(self) -> str:
        self.log.append(self.name)
        if self.fail:
            raise noisynn.NoisynnError(f"{self.name} failed")
        return self.name.upper()


def test_schedule_measures_each_model_before_training_the_next():
    log: list = []
    chains = [[_Step(f"train{m}", log), *(_Step(f"eval{m}.{v}", log) for v in range(3))] for m in range(3)]
    handled: list = []
    results = schedule(LocalExecutor(), chains, progress=False, on_result=lambda t, r: handled.append(r))
    assert log == [f"{kind}{m}{suffix}" for m in range(3)
                   for kind, suffix in [("train", ""), ("eval", ".0"), ("eval", ".1"), ("eval", ".2")]]
    assert results == [name.upper() for name in log] and handled == results


def test_schedule_stops_at_the_first_failure_after_handling_what_finished():
    log: list = []
    chains = [[_Step("train0", log), _Step("eval0", log)], [_Step("train1", log, fail=True), _Step("eval1", log)],
              [_Step("train2", log)]]
    handled: list = []
    with pytest.raises(noisynn.NoisynnError, match="train1 failed"):
        schedule(LocalExecutor(), chains, progress=False, on_result=lambda t, r: handled.append(t.name))
    assert log == ["train0", "eval0", "train1"] and handled == ["train0", "eval0"]


@pytest.mark.slow
def test_a_kept_store_resumes_without_checkpoints(tiny_preset, reference_run, tmp_path):
    """A committed results.sqlite (checkpoints are never committed) is enough to go on from."""
    import shutil

    run = tmp_path / "kept"
    run.mkdir()
    shutil.copy(reference_run / "results.sqlite", run / "results.sqlite")
    again = run_sweep(load_plan(tiny_preset, "quick"), run, device="cpu", progress=False, log=lambda m: None)
    assert again.computed == 0 and again.skipped == 8
    assert not (run / "models").exists() or not any((run / "models").iterdir())  # nothing was retrained
    with sqlite3.connect(run / "results.sqlite") as conn:  # one point of the second model is missing
        conn.execute("DELETE FROM points WHERE sigma_train = 0.8 AND sigma_val = 0.5 AND kind = 'noisy'")
        # and its earlier run went on longer than the retrained one will: a row of an epoch it never reaches
        conn.execute("INSERT INTO epochs SELECT experiment, model, noise, sigma_train, seed, 99, batches, train_loss, "
                     "train_accuracy, val_loss, val_accuracy, seconds, 'old', holdout_loss, holdout_accuracy "
                     "FROM epochs WHERE sigma_train = 0.8 AND epoch = 1")
    epochs_before = [e for e in ResultStore(run / "results.sqlite").epochs() if e["sigma_train"] == 0.8]
    with pytest.warns(UserWarning, match=r"trained again from scratch .*its 5 earlier epoch rows are replaced"):
        again = run_sweep(load_plan(tiny_preset, "quick"), run, device="cpu", progress=False, log=lambda m: None)
    assert again.computed == 1 and again.skipped == 7  # only that model is retrained, only that point measured
    epochs_after = [e for e in ResultStore(run / "results.sqlite").epochs() if e["sigma_train"] == 0.8]
    assert [e["epoch"] for e in epochs_after] == [1, 2, 3, 4]  # the stale epoch-99 row went with the old model
    assert [e["checkpoint"] for e in epochs_after] == [e["checkpoint"] for e in epochs_before[:4]]
    assert sorted(p.name for p in (run / "models").iterdir() if p.suffix == ".safetensors") == [
        "lstm-rows-additive-s0.80-seed0.safetensors"]
    assert grid(run) == grid(reference_run)  # the retrained model is the same model, to the bit


@pytest.mark.slow
def test_a_sweep_in_two_worker_processes_equals_the_one_in_this_process(tiny_preset, reference_run, tmp_path):
    from noisynn.engine.sweep import ProcessExecutor

    run = tmp_path / "workers"
    summary = run_sweep(load_plan(tiny_preset, "quick"), run, device="cpu", progress=False, log=lambda m: None,
                        executor=ProcessExecutor(2))
    assert summary.computed == 8
    threads = torch.get_num_threads()  # each of 2 workers on a 2-core machine runs 1 thread: compare like with like
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    try:
        run_sweep(load_plan(tiny_preset, "quick"), tmp_path / "here", device="cpu", progress=False, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    assert grid(run) == grid(tmp_path / "here")
    assert [r[:4] for r in grid(run)] == [r[:4] for r in grid(reference_run)]


MNIST_PRESET = """
name = "rows-mini"
title = "paper1-lstm-rows reduced to fit the test suite: real MNIST"
model = "lstm-rows"
dataset = "mnist"
noise = "additive"

[profile.quick]
sigma_train = "0,0.7"
sigma_val = "0,1"
epochs = 1
batch_size = 64
lr = 3e-3
train_limit = 20000
eval_limit = 2000
runs = 3
"""


@pytest.mark.slow
def test_real_mnist_lstm_rows_sweep_degrades_without_dni_and_holds_with_it(shared_data, tmp_path, monkeypatch):
    """paper1-lstm-rows in miniature on real MNIST: the paper's qualitative result, asserted."""
    monkeypatch.setenv("NOISYNN_DATA_DIR", str(shared_data))
    preset = tmp_path / "rows.toml"
    preset.write_text(MNIST_PRESET)
    run_sweep(load_plan(preset, "quick"), tmp_path / "run", device="cpu", progress=False, log=lambda m: None)
    acc = {(r[1], r[2]): r[5] for r in grid(tmp_path / "run")}
    assert acc[(0.0, 0.0)] > 0.8 and acc[(0.7, 0.0)] > 0.8  # both learned (chance: 0.1)
    assert acc[(0.0, 1.0)] < acc[(0.0, 0.0)] - 0.3  # conventional training collapses at sigma_val = 1
    assert acc[(0.7, 1.0)] > acc[(0.0, 1.0)] + 0.2  # Deep Noise Injection holds up


def test_every_shipped_preset_loads_in_every_profile():
    """A typo in a shipped preset (unknown key, bad sigma range, unknown model) fails here, not hours into a run."""
    from noisynn.engine.presets import list_presets

    presets = list_presets()
    assert len(presets) >= 10
    for row in presets:
        for profile in row["profiles"]:
            plan = load_plan(row["name"], profile)
            assert plan.sigma_train and plan.sigma_val, (row["name"], profile)
            if profile == "cpu" and row["name"].startswith("paper1-"):  # issue 9: the full grid, 40 runs
                assert len(plan.sigma_train) == len(plan.sigma_val) == 11 and plan.runs == 40


def test_the_reproduction_check_presets_load():
    """docs/checks/*.toml are the commands quoted in docs/reproduction.md and docs/hardware.md:
    they must stay loadable (the reproduction checks: one conventional model over sigma_val up
    to 1; the hardware check: chips read up to a year after programming; issue 18's: one
    model of a papers grid with a longer patience)."""
    import tomllib

    checks = sorted((Path(__file__).resolve().parents[1] / "docs" / "checks").glob("*.toml"))
    assert len(checks) >= 5
    for path in checks:
        if "papers" in tomllib.loads(path.read_text())["profile"]:
            # issue 18: one model of a papers grid, stopped later than the grid's rule stops it
            plan = load_plan(path, "papers")
            grid = load_plan(f"paper1-{plan.model}", "papers")
            assert len(plan.sigma_train) == 1 and plan.sigma_val == grid.sigma_val and plan.runs == grid.runs
            ours, theirs = plan.train["early_stopping"], grid.train["early_stopping"]
            assert ours["patience"] > theirs["patience"] and ours["holdout"] == theirs["holdout"], path.name
            continue
        plan = load_plan(path, "cpu")
        if plan.hardware is None:
            assert plan.sigma_train == (0.0,) and plan.sigma_val[-1] == 1.0, path.name
        else:
            assert plan.hardware.chips > 1 and max(plan.hardware.times) == 31_536_000, path.name
