"""Issue 19, item 2: a stored point is reused only when everything that defines its measurement matches.

Rerunning a preset of the same name after changing ``runs`` or ``eval_limit`` used to report
"already done" and keep the old points. Now a point carries its measurement (runs, target,
limit, trials, the noise configuration, the SHA-256 of the test data) and is measured again,
with a message saying what changed, whenever that differs.
"""

from __future__ import annotations

import shutil
import sqlite3
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import noisynn
from noisynn.engine import load_plan, run_sweep
from noisynn.engine.store import Point, PointKey, ResultStore, measurement

PRESET = """
name = "identity"
title = "tiny sweep whose measurement is edited between runs"
model = "rnn-rows"
dataset = "digits"
noise = "additive"

[profile.quick]
sigma_train = "0.3"
sigma_val = "0,1"
epochs = 2
batch_size = 64
lr = 5e-3
train_limit = 256
runs = {runs}
{extra}
"""


def _sweep(tmp_path: Path, run: Path, runs: int = 4, extra: str = "") -> tuple[object, list[str]]:
    path = tmp_path / "identity.toml"
    path.write_text(PRESET.format(runs=runs, extra=extra))
    messages: list[str] = []
    summary = run_sweep(load_plan(path, "quick"), run, device="cpu", progress=False, log=messages.append)
    return summary, messages


def _rows(run: Path) -> dict[float, tuple[int, float, str]]:
    with ResultStore(run / "results.sqlite") as store:
        return {p["sigma_val"]: (p["n_runs"], p["created"], p["measurement"]) for p in store.points()}


@pytest.fixture(scope="module")
def swept_once(tmp_path_factory) -> Path:
    """The preset swept once for the module (a model trained, two points measured)."""
    root = tmp_path_factory.mktemp("identity")
    summary, _ = _sweep(root, root / "run")
    assert summary.computed == 2
    return root / "run"


@pytest.fixture
def first(swept_once, tmp_path) -> Path:
    """A private copy of that run directory: each test edits its preset and sweeps again over it."""
    run = tmp_path / "run"
    shutil.copytree(swept_once, run, symlinks=True)
    return run


def test_an_unchanged_preset_reuses_every_point(first, tmp_path):
    before = _rows(first)
    summary, messages = _sweep(tmp_path, first)
    assert summary.computed == 0 and summary.skipped == 2 and _rows(first) == before
    assert not [m for m in messages if "measured again" in m]


def test_changed_runs_remeasure_the_noisy_points_and_say_why(first, tmp_path):
    before = _rows(first)
    summary, messages = _sweep(tmp_path, first, runs=6)
    after = _rows(first)
    assert summary.computed == 2 and after[1.0][0] == 6 and after[1.0][1] > before[1.0][1]
    stale = [m for m in messages if "measured again" in m]
    assert len(stale) == 2 and all("runs 4 -> 6" in m for m in stale), messages
    assert after[0.0][0] == 1  # sigma_val 0 is one exact pass whatever runs says, but its record changed too


def test_a_changed_eval_limit_remeasures_on_the_new_test_set(first, tmp_path):
    summary, messages = _sweep(tmp_path, first, extra="eval_limit = 100")
    assert summary.computed == 2
    stale = [m for m in messages if "measured again" in m]
    assert stale and all("limit None -> 100" in m and "test data changed" in m for m in stale), messages
    summary, _ = _sweep(tmp_path, first, extra="eval_limit = 100")
    assert summary.computed == 0  # and the new measurement is then reused


def test_points_of_an_older_version_without_a_record_are_measured_again(first, tmp_path):
    with sqlite3.connect(first / "results.sqlite") as conn:
        conn.execute("UPDATE points SET measurement = NULL")
    summary, messages = _sweep(tmp_path, first)
    assert summary.computed == 2
    assert all("older noisynn" in m for m in messages if "measured again" in m)


def test_the_test_data_is_part_of_the_identity(tmp_path):
    data = SimpleNamespace(x=torch.rand(50, 8, 8), y=torch.randint(0, 10, (50,)))
    how = measurement(data, runs=5, limit=None, noise={"class": "additive"})
    assert how == measurement(SimpleNamespace(x=data.x.clone(), y=data.y.clone()), runs=5, limit=None,
                              noise={"class": "additive"})
    changed = SimpleNamespace(x=data.x, y=data.y.clone())
    changed.y[7] = (changed.y[7] + 1) % 10  # one label rewritten
    other = measurement(changed, runs=5, limit=None, noise={"class": "additive"})
    key = PointKey("e", "m", "d", "additive", 0.0, 0.5)
    notes: list[str] = []
    with ResultStore(tmp_path / "results.sqlite") as store:
        store.add_point(Point(key, 5, 0.9, 0.01, 1.0, "w", (0.9,) * 5, how))
        assert store.has_point(key, "w", how)
        assert not store.has_point(key, "w", other, on_stale=notes.append)
        assert store.point_record(key) is None  # the stale point is gone, to be measured again
    assert notes == ["e noisy point sigma_train 0, sigma_val 0.5: the test data changed; measured again"]


def test_the_python_api_remeasures_when_runs_change(tmp_path):
    torch.manual_seed(0)
    model = noisynn.convert(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)))
    data = noisynn.data.load("digits", "test")
    xy = (data.x[:60], data.y[:60])
    table = noisynn.evaluate(model, xy, noise="additive", sigmas="0.5", runs=3, out=tmp_path / "api", device="cpu")
    assert table.column("n_runs") == [3]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = noisynn.evaluate(model, xy, noise="additive", sigmas="0.5", runs=5, out=tmp_path / "api",
                                 device="cpu")
    assert again.column("n_runs") == [5]
    assert any("runs 3 -> 5" in str(w.message) for w in caught), [str(w.message) for w in caught]
