"""Early stopping on a held-out part of the training set (issue 18): stop, resume, best weights, presets."""

from __future__ import annotations

import math
import shutil
import sqlite3
from pathlib import Path

import pytest

from noisynn.engine import ResultStore, TrainSpec, load_plan, load_trained, run_sweep, train
from noisynn.engine.checkpoint import load_checkpoint, read_metadata
from noisynn.engine.training import best_path, last_path, load_data, split_holdout
from noisynn.errors import CheckpointError, NoisynnError

ES = {"holdout": 150, "patience": 1}


def spec(epochs: int, lr: float = 0.1, **kw) -> TrainSpec:
    """A vanilla RNN on 600 digits, 150 of them held out: an epoch is a fraction of a second."""
    return TrainSpec("rnn-rows", "digits", "additive", 0.3, epochs=epochs, lr=lr, seed=2, train_limit=600,
                     early_stopping=kw.pop("early_stopping", ES), **kw)


def weights_sha(path: Path) -> str:
    return load_checkpoint(path)["sha256"]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """lr 0.1 is far too large: the held-out loss stops improving within a few epochs of a cap of 30."""
    ckpt = tmp_path_factory.mktemp("es") / "m.safetensors"
    epochs = []
    result = train(spec(30), ckpt, device="cpu", progress=False, on_epoch=epochs.append)
    return ckpt, result, epochs


@pytest.mark.slow
def test_stops_on_patience_before_the_cap_and_keeps_the_best_weights(stopped):
    ckpt, result, epochs = stopped
    es = result.stopping
    assert es["stopped"] == "patience" and result.epochs_run == es["epochs_run"] == len(epochs) < 30
    assert es["epochs_run"] == es["best_epoch"] + ES["patience"]
    best = min(epochs, key=lambda m: m["holdout_loss"])
    assert es["best_epoch"] == best["epoch"] and es["best_score"] == best["holdout_loss"]
    # the checkpoint (what evaluation loads) holds the best epoch's weights, not the last ones
    model, meta = load_trained(ckpt)
    assert meta["sha256"] == result.sha256 == best["checkpoint"] == weights_sha(best_path(ckpt))
    assert weights_sha(last_path(ckpt)) == epochs[-1]["checkpoint"] != result.sha256
    assert meta["early_stopping"] == es and meta["metrics"]["epoch"] == es["best_epoch"]
    assert meta["last_metrics"]["epoch"] == es["epochs_run"]


@pytest.mark.slow
def test_a_stopped_run_trains_no_more(stopped):
    ckpt, result, _ = stopped
    again = train(spec(30), ckpt, device="cpu", progress=False, on_epoch=lambda m: pytest.fail("trained again"))
    assert again.epochs_run == 0 and again.sha256 == result.sha256 and again.stopping == result.stopping


def _straight_and_killed(tmp_path: Path, s: TrainSpec, kill_after: int) -> tuple[Path, Path]:
    train(s, tmp_path / "straight.safetensors", device="cpu", progress=False)

    def kill(m: dict) -> None:
        if m["epoch"] == kill_after:  # the epoch's checkpoint is written: as SIGKILL right after it
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(s, tmp_path / "killed.safetensors", device="cpu", progress=False, on_epoch=kill)
    return tmp_path / "straight.safetensors", tmp_path / "killed.safetensors"


@pytest.mark.slow
def test_a_killed_run_resumes_bit_identically(tmp_path):
    s = spec(5, lr=0.1)
    straight, killed = _straight_and_killed(tmp_path, s, kill_after=1)
    assert read_metadata(killed)["early_stopping"]["stopped"] is None
    resumed = train(s, killed, device="cpu", progress=False)
    assert resumed.epochs_run == resumed.stopping["epochs_run"] - 1 >= 1
    assert read_metadata(killed)["early_stopping"] == read_metadata(straight)["early_stopping"]
    for a, b in ((straight, killed), (best_path(straight), best_path(killed)),
                 (last_path(straight), last_path(killed))):
        assert weights_sha(a) == weights_sha(b), a.name


@pytest.mark.slow
def test_raising_the_cap_goes_on_from_the_last_epoch_bit_identically(tmp_path):
    s8 = spec(4, lr=0.02, early_stopping={"holdout": 150, "patience": 4})  # patience = cap: stops at the cap
    first = train(spec(2, lr=0.02, early_stopping=s8.early_stopping), tmp_path / "a.safetensors", device="cpu",
                  progress=False)
    assert first.stopping["stopped"] == "cap" and first.stopping["epochs_run"] == 2
    resumed = train(s8, tmp_path / "a.safetensors", device="cpu", progress=False)
    straight = train(s8, tmp_path / "b.safetensors", device="cpu", progress=False)
    assert resumed.epochs_run == 2 and resumed.stopping == straight.stopping
    assert straight.stopping["stopped"] == "cap" and straight.stopping["epochs_run"] == 4
    assert resumed.sha256 == straight.sha256
    assert weights_sha(last_path(tmp_path / "a.safetensors")) == weights_sha(last_path(tmp_path / "b.safetensors"))


@pytest.mark.slow
def test_raising_patience_or_min_epochs_goes_on_bit_identically_and_lowering_them_is_refused(stopped, tmp_path):
    """A run stopped by patience sooner than a looser rule would stop it goes on from its last epoch, to
    the very weights, rows and record of a run trained with the looser rule from the start."""
    ckpt, result, _ = stopped
    n = result.stopping["epochs_run"]
    rules = {"min-epochs": {"holdout": 150, "patience": 1, "min_epochs": n + 3},
             "patience-3": {"holdout": 150, "patience": 3}}
    for name, rule in rules.items():
        work = tmp_path / name
        shutil.copytree(ckpt.parent, work)
        epochs: list[dict] = []
        resumed = train(spec(30, early_stopping=rule), work / ckpt.name, device="cpu", progress=False,
                        on_epoch=epochs.append)
        straight_ckpt = tmp_path / f"straight-{name}.safetensors"
        straight = train(spec(30, early_stopping=rule), straight_ckpt, device="cpu", progress=False)
        assert epochs and epochs[0]["epoch"] == n + 1 and resumed.epochs_run == len(epochs)
        assert resumed.stopping == straight.stopping and resumed.stopping["epochs_run"] > n
        assert resumed.sha256 == straight.sha256
        assert weights_sha(last_path(work / ckpt.name)) == weights_sha(last_path(straight_ckpt))
        assert read_metadata(work / ckpt.name)["spec"]["early_stopping"] == rule
    # a looser rule that still stops where the run stopped: nothing more to train
    same = train(spec(30, early_stopping={**ES, "min_epochs": n}), ckpt, device="cpu", progress=False,
                 on_epoch=lambda m: pytest.fail("trained again"))
    assert same.epochs_run == 0 and same.sha256 == result.sha256
    # back to a stricter rule (patience 3 -> 1), or another min_delta: those epochs are not the rule's
    work = tmp_path / "patience-3"  # went on to its stop under patience 3 above
    for rule in (ES, {"holdout": 150, "patience": 3, "min_delta": 0.1}):
        with pytest.raises(CheckpointError, match="other settings"):
            train(spec(30, early_stopping=rule), work / ckpt.name, device="cpu", progress=False)
    # the last state is gone: the run cannot go on, and says how to train longer
    work = tmp_path / "no-last"
    shutil.copytree(ckpt.parent, work)
    last_path(work / ckpt.name).unlink()
    with pytest.raises(CheckpointError, match="sooner than its new rule.*gone: use another --out"):
        train(spec(30, early_stopping={"holdout": 150, "patience": 1, "min_epochs": n + 3}), work / ckpt.name,
              device="cpu", progress=False)


@pytest.mark.slow
def test_min_epochs_stops_no_run_before_it_and_then_at_the_first_chance(stopped, tmp_path):
    n = stopped[1].stopping["epochs_run"]
    assert n < 9, "the patience-1 run must stop before epoch 9 for min_epochs 9 to matter"
    epochs: list[dict] = []
    result = train(spec(30, early_stopping={**ES, "min_epochs": 9}), tmp_path / "m.safetensors", device="cpu",
                   progress=False, on_epoch=epochs.append)
    best, since, first_chance = math.inf, 0, None
    for e in epochs:  # patience 1: the first epoch >= 9 that is no better than the best so far
        since = 0 if e["holdout_loss"] < best else since + 1
        best = min(best, e["holdout_loss"])
        if since >= 1 and e["epoch"] >= 9:
            first_chance = e["epoch"]
            break
    assert result.stopping["stopped"] == "patience" and result.stopping["epochs_run"] == first_chance >= 9


@pytest.mark.slow
def test_the_held_out_samples_are_the_last_ones_and_not_trained_on(stopped):
    full = load_data("rnn-rows", "digits", "train", limit=600)
    fit, held = split_holdout(spec(30), full)
    assert len(fit) == 450 and len(held) == 150
    assert (fit.x == full.x[:450]).all() and (held.x == full.x[450:]).all()
    _, _, epochs = stopped
    assert epochs[0]["batches"] == math.ceil(450 / 32)  # one epoch = the 450 kept samples only
    _, quarter = split_holdout(spec(30, early_stopping={"holdout": 0.25, "patience": 1}), full)
    assert len(quarter) == 150
    assert split_holdout(spec(30, early_stopping={}), full) == (full, None)


def test_identity_is_unchanged_without_early_stopping_and_settings_are_checked():
    plain = TrainSpec("rnn-rows", "digits", "additive", 0.3, epochs=4)
    assert "early_stopping" not in plain.identity()
    assert spec(4).identity()["early_stopping"] == ES
    for bad in ({"holdout": 10, "patience": 1, "patient": 3}, {"holdout": 10}, {"holdout": 0, "patience": 1},
                {"holdout": 1.5, "patience": 1}, {"holdout": 10, "patience": 0},
                {"holdout": 10, "patience": 1, "monitor": "f1"}, {"holdout": 10, "patience": 1, "min_epochs": 0},
                {"holdout": 10, "patience": 1, "min_epochs": True}, {"holdout": 10, "patience": 1, "min_epochs": 5}):
        with pytest.raises(NoisynnError) as err:
            spec(4, early_stopping=bad)
        assert "\n" not in str(err.value)
    with pytest.raises(NoisynnError, match="smaller holdout"):
        train(spec(4, early_stopping={"holdout": 600, "patience": 1}), "/nonexistent/x.safetensors", device="cpu",
              progress=False)


PRESET = """
name = "tiny-es"
title = "early stopping in a sweep"
model = "rnn-rows"
dataset = "digits"
noise = "additive"

[profile.quick]
sigma_train = "0"
sigma_val = "0,0.5"
epochs = 30
lr = 0.1
train_limit = 600
early_stopping = {holdout = 150, patience = 1}
runs = 2
"""


@pytest.mark.slow
def test_a_sweep_records_the_stop_and_evaluates_the_best_weights(tmp_path):
    preset = tmp_path / "es.toml"
    preset.write_text(PRESET)
    logs = []
    run_sweep(load_plan(preset, "quick"), tmp_path / "run", device="cpu", progress=False, log=logs.append)
    with ResultStore(tmp_path / "run" / "results.sqlite") as store:
        (row,) = store.stopping()
        epochs = store.epochs()
        points = store.points()
    assert row["stopped"] == "patience" and row["epochs_run"] == len(epochs) < 30
    assert all(e["holdout_loss"] is not None and e["holdout_accuracy"] is not None for e in epochs)
    best = [e for e in epochs if e["epoch"] == row["best_epoch"]]
    assert best[0]["checkpoint"] == row["checkpoint"] == points[0]["checkpoint"] == points[1]["checkpoint"]
    assert any("stopped: patience" in m for m in logs)
    # the model's files are those RunDir names: the checkpoint, early stopping's best and last states (+ sidecars)
    from noisynn.engine.rundir import RunDir

    rd, key = RunDir(tmp_path / "run"), load_plan(preset, "quick").train_spec(0.0, 0).key
    named = [rd.model_checkpoint(key), rd.best_checkpoint(key), rd.last_checkpoint(key)]
    sidecars = [named[0].with_suffix(".json"), named[1].with_suffix(".json")]  # the .last copy has none
    assert sorted(rd.models.iterdir()) == sorted([*named, *sidecars])
    assert rd.model_checkpoints() == [named[0]]


def _swept_once(tmp_path: Path) -> tuple[Path, Path, dict]:
    """PRESET swept into ``tmp_path/run`` (patience stops it within a few epochs): (preset, run, stopping row)."""
    preset = tmp_path / "es.toml"
    preset.write_text(PRESET)
    run = tmp_path / "run"
    run_sweep(load_plan(preset, "quick"), run, device="cpu", progress=False, log=lambda m: None)
    with ResultStore(run / "results.sqlite") as store:
        (first,) = store.stopping()
    return preset, run, first


def _with_min_epochs(preset: Path, floor: int) -> None:
    preset.write_text(PRESET.replace("patience = 1}", f"patience = 1, min_epochs = {floor}}}"))


@pytest.mark.slow
def test_a_kept_store_s_early_stopped_model_is_finished_only_under_a_rule_that_stops_it_there(tmp_path):
    """A store kept without its checkpoints: the model counts as done while the plan's rule would
    have stopped it where it stopped; raise min_epochs and it is trained again, its rows replaced."""
    preset, run, first = _swept_once(tmp_path)
    shutil.rmtree(run / "models")
    logs: list[str] = []
    run_sweep(load_plan(preset, "quick"), run, device="cpu", progress=False, log=logs.append)
    assert any("no longer needed" in m for m in logs)
    assert not list(run.glob("models/*.safetensors"))  # nothing trained again
    floor = first["epochs_run"] + 2
    _with_min_epochs(preset, floor)
    with pytest.warns(UserWarning, match="trained again from scratch"):
        run_sweep(load_plan(preset, "quick"), run, device="cpu", progress=False, log=lambda m: None)
    with ResultStore(run / "results.sqlite") as store:
        (again,) = store.stopping()
        epochs = store.epochs()
        points = store.points()
    assert again["epochs_run"] >= floor > first["epochs_run"]
    assert sorted(e["epoch"] for e in epochs) == list(range(1, again["epochs_run"] + 1))
    assert {p["checkpoint"] for p in points} == {again["checkpoint"]}


@pytest.mark.slow
def test_a_sweep_s_worker_goes_on_from_the_last_epoch_under_a_raised_min_epochs(tmp_path):
    """The epoch-granular worker path (compute in a scratch folder, files handed back) continues a
    patience-stopped model from its last state, to the run a sweep with the new rule makes from scratch."""
    import warnings

    from noisynn.engine.sweep import ProcessExecutor

    preset, run, first = _swept_once(tmp_path)
    floor = first["epochs_run"] + 2
    _with_min_epochs(preset, floor)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "trained again from scratch"
        run_sweep(load_plan(preset, "quick"), run, device="cpu", progress=False, log=lambda m: None,
                  executor=ProcessExecutor(2))
    run_sweep(load_plan(preset, "quick"), tmp_path / "straight", device="cpu", progress=False, log=lambda m: None)
    rows = []
    for d in (run, tmp_path / "straight"):
        with ResultStore(d / "results.sqlite") as store:
            rows.append((store.stopping(), [(e["epoch"], e["checkpoint"]) for e in store.epochs()],
                         sorted((p["sigma_val"], p["checkpoint"], p["accuracy"]) for p in store.points())))
    assert rows[0][0][0]["epochs_run"] >= floor
    assert rows[0] == rows[1]


def test_an_old_store_gains_the_holdout_columns(tmp_path):
    path = tmp_path / "results.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE epochs (experiment TEXT NOT NULL, model TEXT NOT NULL, noise TEXT NOT NULL, "
                     "sigma_train REAL NOT NULL, seed INTEGER NOT NULL, epoch INTEGER NOT NULL, "
                     "batches INTEGER NOT NULL, "
                     "train_loss REAL NOT NULL, train_accuracy REAL NOT NULL, val_loss REAL NOT NULL, "
                     "val_accuracy REAL NOT NULL, seconds REAL NOT NULL, checkpoint TEXT NOT NULL, "
                     "PRIMARY KEY (experiment, model, noise, sigma_train, seed, epoch))")
        conn.execute("INSERT INTO epochs VALUES ('e', 'm', 'additive', 0, 0, 1, 10, 1, 0.5, 1, 0.5, 1, 'abc')")
    conn.close()
    with ResultStore(path) as store:
        (row,) = store.epochs()
    assert row["holdout_loss"] is None and row["val_accuracy"] == 0.5


@pytest.mark.parametrize("name", ["paper1-lstm-rows", "paper1-lstm-strokes", "paper1-rnn-rows"])
def test_the_papers_profile_of_paper1(name):
    plan = load_plan(name, "papers")
    t = plan.train
    assert (t["optimizer"], t["batch_size"], t["lr"]) == ("adam", 32, 1e-4)
    assert t["early_stopping"]["holdout"] == 5000 and t["early_stopping"]["patience"] >= 1
    assert len(plan.sigma_train) == len(plan.sigma_val) == 11 and plan.runs == 40 and plan.eval_limit is None
    assert plan.train_spec(0.5, 0).early_stopping == t["early_stopping"]


def test_strokes_presets_read_movements_but_the_cpu_profile_positions():
    for name in ("paper1-lstm-strokes", "paper2-lstm-strokes-multiplicative"):
        for profile in ("paper", "quick", "papers"):
            if profile == "papers" and name.startswith("paper2"):
                continue
            assert load_plan(name, profile).train_spec(0.0, 0).data_options == {"coords": "offsets"}, (name, profile)
        # the cpu results of docs/reproduction.md: positions, and the same identity as their checkpoints
        assert load_plan(name, "cpu").train_spec(0.0, 0).identity()["data_options"] == {}
