"""A user's own model, data and noise through the engine, the Python API and the CLI (issue 14, point 4)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import noisynn
from noisynn.engine import TrainSpec, load_trained, train
from noisynn.engine.training import load_for_evaluation

HELPERS = Path(__file__).resolve().parent
sys.path.insert(0, str(HELPERS))
import helpers_user  # noqa: E402
from helpers_user import UniformNoise  # noqa: E402


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    """The embedded digits written as a user's .npz data set."""
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, **helpers_user.digits_arrays())
    return path


@pytest.fixture(scope="module")
def trained(npz, tmp_path_factory) -> Path:
    """The user's plain-torch MLP (converted by noisynn) trained with DNI on the .npz."""
    ckpt = tmp_path_factory.mktemp("model") / "mlp.safetensors"
    spec = TrainSpec("helpers_user:tiny_mlp", str(npz), "additive", 0.3, epochs=3, lr=3e-3, seed=1)
    result = train(spec, ckpt, device="cpu", progress=False)
    assert result.metrics["val_accuracy"] > 0.8  # it learns (chance: 0.1)
    return ckpt


@pytest.mark.slow
def test_factory_on_npz_learns_resumes_identically_and_detects_a_changed_file(npz, trained, tmp_path):
    spec = lambda epochs: TrainSpec("helpers_user:tiny_mlp", str(npz), "additive", 0.3, epochs=epochs,  # noqa: E731
                                    lr=3e-3, seed=1)
    train(spec(1), tmp_path / "a.safetensors", device="cpu", progress=False)  # "killed" after epoch 1
    resumed = train(spec(3), tmp_path / "a.safetensors", device="cpu", progress=False)
    assert resumed.epochs_run == 2
    a, meta = load_trained(tmp_path / "a.safetensors")
    b, _ = load_trained(trained)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert meta["model"] == "helpers_user:tiny_mlp" and meta["dataset"] == str(npz.resolve())
    assert len(meta["data_sha256"]) == 64 and meta["sample_shape"] == [1, 8, 8]
    assert spec(3).key == "tiny_mlp-additive-s0.30-seed1"
    # the same file name with other contents: refused on resume and on evaluation
    changed = tmp_path / "digits.npz"
    arrays = helpers_user.digits_arrays()
    np.savez(changed, **arrays)
    ckpt = tmp_path / "c.safetensors"
    train(TrainSpec("helpers_user:tiny_mlp", str(changed), "additive", 0.0, epochs=1, seed=0), ckpt,
          device="cpu", progress=False)
    np.savez(changed, **dict(arrays, y_test=arrays["y_test"][::-1].copy()))
    with pytest.raises(noisynn.CheckpointError, match="changed since"):
        train(TrainSpec("helpers_user:tiny_mlp", str(changed), "additive", 0.0, epochs=2, seed=0), ckpt,
              device="cpu", progress=False)
    with pytest.raises(noisynn.CheckpointError, match="changed since"):
        load_for_evaluation(ckpt, device="cpu")


@pytest.mark.slow
def test_evaluate_with_a_custom_noise_class_swept_by_its_own_parameter(trained, npz):
    table = noisynn.evaluate(trained, npz, noise=UniformNoise(0.0), sigmas=[0, 1.5, 4], runs=4, device="cpu")
    assert table.column("sigma_val") == [0.0, 1.5, 4.0] and table.column("noise") == ["UniformNoise"] * 3
    assert table.column("n_runs") == [1, 4, 4]  # width 0 is clean (is_clean): one exact run
    acc = table.column("accuracy")
    assert acc[0] > 0.8 and acc[2] < acc[1] < acc[0]  # the noise is applied, and grows with width
    again = noisynn.evaluate(trained, npz, noise="helpers_user:UniformNoise", sigmas=[0, 1.5, 4], runs=4,
                             device="cpu")
    assert again.column("accuracy") == acc  # the class by name: the same noise, the same seeded streams
    assert "sigma_val" in str(table) and table.to_csv().count("\n") == 4


@pytest.mark.slow
def test_evaluate_with_persite_and_a_plain_module_on_tensors(trained, npz):
    clean = noisynn.evaluate(trained, npz, noise="additive", sigmas=0, device="cpu").column("accuracy")[0]
    model, _ = load_trained(trained)
    sites = [name for name, _ in noisynn.noise_sites(model)]
    assert len(sites) == 2  # the converted MLP's two Linear layers
    all_clean = noisynn.evaluate(trained, npz, noise=noisynn.PerSite({"*": noisynn.Clean()}), sigmas=[2.0], runs=3,
                                 device="cpu")
    assert all_clean.column("accuracy") == [clean] and all_clean.column("n_runs") == [1]
    first_only = noisynn.PerSite({sites[1]: noisynn.Clean()}, default=noisynn.Additive(0.0))
    both = noisynn.evaluate(trained, npz, noise="additive", sigmas=[3.0], runs=3, device="cpu")
    one = noisynn.evaluate(trained, npz, noise=first_only, sigmas=[3.0], runs=3, device="cpu")
    assert one.column("n_runs") == [3] and one.column("accuracy")[0] < clean - 0.05
    assert one.column("accuracy") != both.column("accuracy")
    # a plain torch module (no noise site) and (x, y) tensors: converted, with a warning
    arrays = np.load(npz)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.warns(UserWarning, match="no noise site"):
        t = noisynn.evaluate(plain, (torch.tensor(arrays["x_test"]), torch.tensor(arrays["y_test"])),
                             sigmas="0,1", runs=2, device="cpu")
    assert t.column("model") == ["Sequential"] * 2 and t.column("n_runs") == [1, 2]


@pytest.mark.slow
def test_sweep_writes_the_store_the_table_shows_and_resumes(npz, tmp_path):
    kwargs = dict(noise="helpers_user:UniformNoise", sigma_train="0,1", sigma_val="0,2", runs=3, epochs=2, lr=3e-3,
                  votes=2, vote_sigma_val="2", out=tmp_path / "run", device="cpu")
    table = noisynn.sweep("helpers_user:tiny_mlp", npz, **kwargs)
    with sqlite3.connect(tmp_path / "run" / "results.sqlite") as conn:
        conn.row_factory = sqlite3.Row
        stored = [dict(r) for r in conn.execute("SELECT * FROM points ORDER BY id")]
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    assert len(table) == len(stored) == 2 * 2 + 2 * 2  # 4 noisy points, 2 voting curves K = 1, 2
    by_id = {r["id"]: r for r in table.rows}
    for row in stored:
        assert by_id[row["id"]]["accuracy"] == row["accuracy"] and row["noise"] == "UniformNoise"
    assert json.loads(meta["noise_config"]) == {"class": "helpers_user:UniformNoise", "params": {}, "sweep": "width"}
    grid = {(r["sigma_train"], r["sigma_val"]): r["accuracy"] for r in table if r["kind"] == "noisy"}
    assert grid[(0.0, 0.0)] > 0.7 and grid[(1.0, 2.0)] > grid[(0.0, 2.0)]  # DNI with the user's noise helps
    rerun = noisynn.sweep("helpers_user:tiny_mlp", npz, **kwargs)
    with sqlite3.connect(tmp_path / "run" / "results.sqlite") as conn:
        assert [tuple(r) for r in conn.execute("SELECT id, created, accuracy FROM points ORDER BY id")] == [
            (r["id"], r["created"], r["accuracy"]) for r in stored]  # nothing recomputed
    assert rerun.rows == table.rows


@pytest.mark.slow
def test_a_lambda_factory_works_in_process_and_its_checkpoint_names_the_fix(npz, tmp_path):
    factory = lambda: helpers_user.tiny_mlp(hidden=16)  # noqa: E731 - not importable
    table = noisynn.sweep(factory, npz, sigma_train="0", sigma_val="0", runs=1, epochs=1, lr=3e-3,
                          out=tmp_path / "run", device="cpu")
    assert len(table) == 1 and table[0]["model"].startswith("local:")
    ckpt = next((tmp_path / "run" / "models").glob("*.safetensors"))
    from noisynn.engine import plugins

    plugins._LOCAL_MODELS.clear()  # as in a new process
    with pytest.raises(noisynn.CheckpointError, match="pass the same callable"):
        load_trained(ckpt)
    model, _ = load_trained(ckpt, factory=factory)
    assert model[1].out_features == 16


PRESET = """
name = "user-tiny"
model = "helpers_user:tiny_mlp"
dataset = "digits.npz"
noise = "helpers_user:UniformNoise"

[model_options]
hidden = 32

[profile.quick]
sigma_train = "0,1"
sigma_val = "0,2"
epochs = 2
lr = 3e-3
runs = 2
"""


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "noisynn", *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd)


def _invoke(*args: str):
    """The CLI in this process (the real entry point is tested once, below)."""
    from typer.testing import CliRunner

    from noisynn.cli.main import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.slow
def test_cli_sweep_of_a_user_preset_then_evaluate_and_report(npz, tmp_path):
    (tmp_path / "digits.npz").write_bytes(npz.read_bytes())
    (tmp_path / "user.toml").write_text(PRESET)
    out = tmp_path / "run"
    result = _invoke("sweep", str(tmp_path / "user.toml"), "--out", str(out), "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["computed"] == 4
    points = json.loads(_invoke("results", str(out), "--json").stdout)
    assert {p["noise"] for p in points} == {"UniformNoise"} and len(points) == 4
    assert {p["dataset"] for p in points} == {str((tmp_path / "digits.npz").resolve())}  # relative to the preset
    ckpt = sorted((out / "models").glob("*.safetensors"))[0]
    assert ckpt.name == "tiny_mlp-UniformNoise-s0.00-seed0.safetensors"
    assert load_trained(ckpt)[0][1].out_features == 32  # [model_options]
    ev = _invoke("evaluate", str(ckpt), "--sigma", "0,2", "--runs", "2", "--json", "--device", "cpu")
    assert ev.exit_code == 0, ev.output
    assert [p["n_runs"] for p in json.loads(ev.stdout)["points"]] == [1, 2]
    assert json.loads(ev.stdout)["noise"] == "UniformNoise"  # the training noise by default
    rerun = _invoke("sweep", str(tmp_path / "user.toml"), "--out", str(out), "--device", "cpu", "--json")
    assert json.loads(rerun.stdout)["computed"] == 0
    other = _invoke("sweep", str(tmp_path / "user.toml"), "--out", str(tmp_path / "run2"), "--noise", "multiplicative",
                    "--device", "cpu", "--json")  # a preset's noise replaced on the command line
    assert other.exit_code == 0, other.output
    assert {p["noise"] for p in json.loads(_invoke("results", str(tmp_path / "run2"), "--json").stdout)} == {
        "multiplicative"}
    report = _invoke("report", str(out), "--softmax-runs", "20", "--state-samples", "20", "--json")
    assert report.exit_code == 0, report.output
    assert (out / "report" / "report.html").is_file()


def _errors(tmp_path: Path, npz: Path) -> list[tuple[list[str], str]]:
    arrays = helpers_user.digits_arrays()
    bad = {
        "missing": {k: v for k, v in arrays.items() if k != "y_test"},
        "floatlabels": dict(arrays, y_train=arrays["y_train"].astype(np.float32)),
        "lengths": dict(arrays, y_train=arrays["y_train"][:-5]),
    }
    for name, content in bad.items():
        np.savez(tmp_path / f"{name}.npz", **content)
    out = ["--epochs", "1"]
    mlp = "helpers_user:tiny_mlp"
    return [
        (["train", "nope.mod:f", "--dataset", str(npz), *out], "cannot import 'nope.mod'"),
        (["train", "math:pi", "--dataset", str(npz), *out], "not callable"),
        (["train", "helpers_user:not_a_module", "--dataset", str(npz), *out], "not a torch.nn.Module"),
        (["train", mlp, "--dataset", str(tmp_path / "missing.npz"), *out], "lacks y_test"),
        (["train", mlp, "--dataset", str(tmp_path / "floatlabels.npz"), *out], "integer class labels"),
        (["train", mlp, "--dataset", str(tmp_path / "lengths.npz"), *out], "one label per sample"),
        (["train", mlp, "--dataset", str(npz), "--noise", "helpers_user:UniformNoise", "--noise-param", "depth=1",
          *out], "no parameter 'depth'"),
        (["train", mlp, "--dataset", str(npz), "--noise", "math:pi", *out], "not a noisynn.NoiseModel"),
        (["train", mlp, *out], "give --dataset"),
        (["train", mlp, "--dataset", str(npz), "--noise-param", "width", *out], "give KEY=VALUE"),
    ]


def test_bad_factories_data_files_and_noise_parameters_are_one_line_errors(npz, tmp_path):
    for i, (args, fragment) in enumerate(_errors(tmp_path, npz)):
        result = _invoke(*args, "--out", str(tmp_path / f"out{i}"))
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], (args, lines)


@pytest.mark.slow
def test_a_bad_factory_through_the_real_entry_point_is_one_line(npz, tmp_path):
    result = _cli("train", "nope.mod:f", "--dataset", str(npz), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
