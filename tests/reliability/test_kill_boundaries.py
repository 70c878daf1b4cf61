"""Issue 19, item 5: atomic epochs. A sweep killed at any write boundary, or at random moments,
resumes to exactly the table of an uninterrupted run: no epoch row missing, no sidecar behind its
checkpoint, no temporary file left, no point lost or measured on the wrong weights.

The kills are real ``SIGKILL``s of a ``python -m noisynn sweep`` process. At the exact call sites
they are injected by a small wrapper (:data:`KILLER`) that patches one function of noisynn to kill
its own process at the N-th call, before or after the real work; the random ones come from a
seeded schedule.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from noisynn.engine.checkpoint import read_metadata

pytestmark = pytest.mark.slow  # real sweeps in subprocesses, killed and resumed: minutes

PRESET = """
name = "kills"
title = "tiny sweep killed at every write boundary"
model = "rnn-rows"
dataset = "digits"
noise = "additive"

[profile.quick]
sigma_train = "0,0.5"
sigma_val = "0,1"
epochs = 4
batch_size = 64
lr = 5e-3
early_stopping = {holdout = 200, patience = 2}
runs = 3
votes = 2
vote_sigma_val = "1"
vote_limit = 100
"""

KILLER = r'''
import os, signal, sys
boundary, n, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
calls = [0]

def patch(owner, name, accept=lambda *a, **k: True):
    real = getattr(owner, name)
    def wrapper(*args, **kwargs):
        hit = accept(*args, **kwargs)
        if hit:
            calls[0] += 1
        if hit and calls[0] == n and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        out = real(*args, **kwargs)
        if hit and calls[0] == n and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    setattr(owner, name, wrapper)

import noisynn.engine.store as store, noisynn.engine.training as training
if boundary == "checkpoint":   # os.replace of a model's .safetensors (then its sidecar's)
    patch(os, "replace", lambda src, dst, *a, **k: str(dst).endswith(".safetensors"))
elif boundary == "sidecar":
    patch(os, "replace", lambda src, dst, *a, **k: str(dst).endswith(".json"))
elif boundary == "epoch-row":
    patch(store.ResultStore, "add_epoch")
elif boundary == "best-copy":  # early stopping's .last copy before the best weights are written back
    patch(training, "_atomic_copy")
elif boundary == "stopping-row":
    patch(store.ResultStore, "set_stopping")
elif boundary == "point-row":  # inside the point's transaction, before its commit
    patch(store.ResultStore, "_insert")
elif boundary == "curve-row":
    patch(store.ResultStore, "add_curve")
sys.argv = ["noisynn", *sys.argv[4:]]
from noisynn.cli.main import app
app()
'''


def _cmd(preset: Path, run: Path) -> list[str]:
    return ["sweep", str(preset), "--profile", "quick", "--out", str(run), "--device", "cpu"]


def _sweep(preset: Path, run: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "noisynn", *_cmd(preset, run)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def state(run: Path) -> dict:
    """Everything a run directory holds that must not depend on kills (times excluded)."""
    with sqlite3.connect(run / "results.sqlite") as conn:
        points = conn.execute(
            "SELECT kind, sigma_train, sigma_val, votes, n_runs, accuracy, stderr, checkpoint, measurement "
            "FROM points ORDER BY kind, sigma_train, sigma_val, votes").fetchall()
        runs = conn.execute(
            "SELECT p.kind, p.sigma_train, p.sigma_val, p.votes, r.run, r.accuracy FROM runs r "
            "JOIN points p ON p.id = r.point_id ORDER BY 1, 2, 3, 4, 5").fetchall()
        epochs = conn.execute(
            "SELECT sigma_train, epoch, batches, train_loss, train_accuracy, val_loss, val_accuracy, checkpoint, "
            "holdout_loss, holdout_accuracy FROM epochs ORDER BY sigma_train, epoch").fetchall()
        stopping = conn.execute("SELECT * FROM stopping ORDER BY sigma_train").fetchall()
    models = {}
    for path in sorted((run / "models").glob("*.safetensors")):
        meta = read_metadata(path)
        models[path.name] = meta["weights_sha256"]
        if path.name.count(".") == 1:  # a model's checkpoint: its sidecar is up to date
            sidecar = json.loads(path.with_suffix(".json").read_text())
            assert sidecar["weights_sha256"] == meta["weights_sha256"] and sidecar["epoch"] == meta["epoch"]
    leftovers = [p.name for p in run.rglob("*") if p.name.endswith(".tmp")]
    return {"points": points, "runs": runs, "epochs": epochs, "stopping": stopping, "models": models,
            "leftovers": leftovers}


@pytest.fixture(scope="module")
def preset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("preset") / "kills.toml"
    path.write_text(PRESET)
    return path


@pytest.fixture(scope="module")
def reference(preset, tmp_path_factory) -> dict:
    run = tmp_path_factory.mktemp("reference") / "run"
    _sweep(preset, run)
    ref = state(run)
    assert len(ref["points"]) == 2 * 2 + 2 * 2 and len(ref["epochs"]) == 8 and len(ref["stopping"]) == 2
    assert ref["leftovers"] == []
    return ref


BOUNDARIES = [
    ("checkpoint", 3, "after"),   # model 0's epoch 2 is on disk; its sidecar, its epoch row not yet
    ("sidecar", 3, "before"),     # the checkpoint renamed into place, the sidecar not
    ("epoch-row", 2, "before"),   # the checkpoint of epoch 2 written, its row not
    ("epoch-row", 2, "after"),    # the row written, epoch 3 not begun
    ("best-copy", 1, "after"),    # early stopping finishing: .last kept, best weights not yet written back
    ("stopping-row", 1, "before"),
    ("point-row", 2, "after"),    # a point's row inserted, its transaction not committed
    ("point-row", 5, "after"),    # inside a voting curve's transaction (K = 1 written, K = 2 not)
    ("checkpoint", 7, "after"),   # model 1 in training, model 0 measured
]


@pytest.mark.parametrize("boundary,n,when", BOUNDARIES, ids=[f"{b}-{n}-{w}" for b, n, w in BOUNDARIES])
def test_a_kill_at_each_write_boundary_resumes_to_the_uninterrupted_table(boundary, n, when, preset, reference,
                                                                          tmp_path):
    run = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILLER, boundary, str(n), when, *_cmd(preset, run)],
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    _sweep(preset, run)
    assert state(run) == reference


def _started(run: Path, proc: subprocess.Popen) -> bool:
    """The sweep holds its run directory's lock: past its imports and checks, writing."""
    try:
        return f'"pid": {proc.pid},' in (run / ".noisynn.lock").read_text()
    except OSError:
        return False


def _progress(run: Path) -> int:
    """Rows the store holds (epochs and points): what a run has committed so far."""
    try:
        with sqlite3.connect(run / "results.sqlite", timeout=30) as conn:
            return sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("epochs", "points"))
    except sqlite3.OperationalError:
        return 0


def test_twenty_random_sigkills_lose_nothing(preset, reference, tmp_path):
    """At least 20 SIGKILLs at seeded random moments of the work (after start-up), over as many trials as
    it takes; every trial's resumed table equals the uninterrupted one. The window a kill is drawn from
    doubles after a kill that found nothing new committed, so a slow (loaded) machine still progresses."""
    rng = random.Random(19)
    kills = trials = 0
    while kills < 20:
        trials += 1
        run = tmp_path / f"trial{trials}"
        window = 1.0
        while True:
            before = _progress(run)
            proc = subprocess.Popen([sys.executable, "-m", "noisynn", *_cmd(preset, run)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            while proc.poll() is None and not _started(run, proc):
                time.sleep(0.005)
            deadline = time.monotonic() + rng.uniform(0.0, window)
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            err = proc.communicate(timeout=600)[1].decode()
            if proc.returncode == -signal.SIGKILL:
                kills += 1
                window = 1.0 if _progress(run) > before else 2 * window
                continue
            assert proc.returncode == 0, err[-2000:]
            break
        assert state(run) == reference, f"trial {trials} after {kills} kills in all"
    assert kills >= 20
