"""Issue 19 (identity and integrity): non-finite weights are refused; a non-finite loss stops training
with one line, keeping the last good checkpoint."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

import noisynn
from noisynn.cli.main import app
from noisynn.engine import TrainSpec, load_trained, train
from noisynn.engine import training as training_module
from noisynn.engine.checkpoint import load_checkpoint, save_checkpoint
from noisynn.errors import CheckpointError, NoisynnError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("nan") / "m.safetensors"
    train(TrainSpec("rnn-rows", "digits", "additive", 0.0, epochs=1, lr=5e-3, train_limit=64), ckpt, device="cpu",
          progress=False)  # weights to poison: two mini-batches are enough
    return ckpt


def _poisoned(trained, tmp_path, value: float):
    state = load_checkpoint(trained)
    model, meta = load_trained(trained)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if n.endswith("weight")).view(-1)[3] = value
    meta = {k: v for k, v in state["meta"].items() if k not in ("weights_sha256", "package_version")}
    out = tmp_path / "poisoned.safetensors"
    save_checkpoint(out, model, meta)  # a consistent file (its hash matches): only the values are bad
    return out


@pytest.mark.parametrize("value", [pytest.param(float("nan"), marks=pytest.mark.slow), float("inf")])
def test_a_checkpoint_with_non_finite_weights_is_refused(trained, tmp_path, value):
    bad = _poisoned(trained, tmp_path, value)
    with pytest.raises(CheckpointError, match=r"non-finite weights \(1 NaN/inf values in '.*weight"):
        load_trained(bad)
    args = ["evaluate", str(bad), "--sigma", "0.5", "--runs", "2", "--device", "cpu"]
    if value != value:  # NaN: through the real entry point, a new process
        done = subprocess.run([sys.executable, "-m", "noisynn", *args], capture_output=True, text=True, timeout=300)
        code, err = done.returncode, done.stderr
    else:  # inf: the same app in this process (no new interpreter and torch import)
        done = CliRunner().invoke(app, args)
        code, err = done.exit_code, done.stderr
    assert code == 2 and err.count("\n") == 1 and "non-finite weights" in err
    assert "Traceback" not in err


def test_a_python_model_with_nan_weights_is_refused(trained):
    model, _ = load_trained(trained)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    data = noisynn.data.load("digits", "test", layout="rows")
    with pytest.raises(CheckpointError, match="non-finite weights"):
        noisynn.evaluate(model, (data.x, data.y), sigmas="0.5", runs=2, device="cpu")


def test_a_diverging_loss_stops_training_and_keeps_the_last_good_epoch(tmp_path, monkeypatch):
    ckpt = tmp_path / "div.safetensors"
    spec = TrainSpec("rnn-rows", "digits", "additive", 0.0, epochs=3, lr=5e-3, train_limit=320)
    real = training_module.F.cross_entropy
    calls = {"n": 0}
    per_epoch = -(-spec.train_limit // spec.batch_size)  # 10 mini-batches of the first 320 digits

    def diverging(*args, **kwargs):  # the training loss becomes NaN in the 5th batch of epoch 2
        loss = real(*args, **kwargs)
        if not torch.is_grad_enabled():  # clean evaluation after an epoch
            return loss
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == per_epoch + 5 else loss

    monkeypatch.setattr(training_module.F, "cross_entropy", diverging)
    with pytest.raises(NoisynnError, match=r"diverged \(loss nan\) in epoch 2, batch 5; epoch 1 is kept in"):
        train(spec, ckpt, device="cpu", progress=False)
    monkeypatch.setattr(training_module.F, "cross_entropy", real)
    kept = load_checkpoint(ckpt)
    assert kept["meta"]["epoch"] == 1
    training_module.check_finite(kept["model"], "kept")  # the last good weights, finite
