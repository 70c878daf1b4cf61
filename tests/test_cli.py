"""The command-line tool and its user errors.

The commands run in this process through typer's CliRunner: the very app ``python -m noisynn``
runs (``noisynn.cli.main.app``, whose group turns every error into one ``error:`` line and exit
code 2), without paying a new interpreter and a torch import for each call. The real entry point
is run as a subprocess where the process boundary is the point: ``--version`` and a corrupt
checkpoint refused by a real ``python -m noisynn evaluate``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PRESET = """
name = "cli-tiny"
model = "rnn-rows"
dataset = "digits"
noise = "multiplicative"

[profile.quick]
sigma_train = "0.3"
sigma_val = "0,0.5"
epochs = 1
lr = 5e-3
runs = 3
votes = 2
vote_sigma_val = "0.5"
"""


def entry_point(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real entry point, ``python -m noisynn``, in a subprocess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "noisynn", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def noisynn(*args: str) -> subprocess.CompletedProcess:
    """The same app in this process; an exception that escapes it (a traceback for a user) fails the test."""
    from typer.testing import CliRunner

    from noisynn.cli.main import app

    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, one line on stderr starting with 'error:', naming the problem; no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint for the error checks, trained on two mini-batches (it need not have learnt anything)."""
    out = tmp_path_factory.mktemp("tiny")
    result = noisynn("train", "rnn-rows", "--dataset", "digits", "--noise", "additive", "--sigma", "0.5",
                     "--epochs", "1", "--train-limit", "64", "--lr", "5e-3", "--out", str(out), "--device", "cpu",
                     "--json")
    assert result.returncode == 0, result.stderr
    return Path(json.loads(result.stdout)["checkpoint"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train")
    result = noisynn("train", "rnn-rows", "--dataset", "digits", "--noise", "additive", "--sigma", "0.5",
                     "--epochs", "2", "--lr", "5e-3", "--out", str(out), "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["epochs_run"] == 2 and info["metrics"]["val_accuracy"] > 0.3
    return Path(info["checkpoint"])


COMMANDS = ["models", "train", "evaluate", "vote", "sweep", "presets", "results", "demo", "data", "report"]


def test_every_command_has_help():
    from typer.testing import CliRunner

    from noisynn.cli.main import app

    runner = CliRunner()
    listing = runner.invoke(app, ["--help"])
    assert listing.exit_code == 0
    for command in COMMANDS:
        assert command in listing.output
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert "Usage" in result.output


@pytest.mark.slow
def test_the_real_entry_point_answers():
    version = entry_point("--version")
    assert version.returncode == 0 and version.stdout.startswith("noisynn ")


def test_models_lists_the_papers_networks_with_exact_counts():
    rows = {r["name"]: r for r in json.loads(noisynn("models", "--json").stdout)}
    assert rows["lstm-rows"]["params"] == 81_674 and rows["lstm-rows"]["input"] == [28, 28]
    assert rows["lstm-strokes"]["params"] == 68_362 and rows["rnn-rows"]["params"] == 21_386


def test_presets_lists_every_paper_experiment():
    names = {r["name"] for r in json.loads(noisynn("presets", "--json").stdout)}
    assert {"paper1-lstm-rows", "paper1-lstm-strokes", "paper1-rnn-rows", "paper2-cnn6-multiplicative",
            "paper2-cnn6-additive", "paper2-densenet40-multiplicative", "paper2-lstm-strokes-multiplicative",
            "paper2-voting", "demo"} <= names


@pytest.mark.slow
def test_train_resumes_and_evaluate_and_vote_read_the_checkpoint(trained):
    again = noisynn("train", "rnn-rows", "--dataset", "digits", "--noise", "additive", "--sigma", "0.5",
                    "--epochs", "2", "--lr", "5e-3", "--out", str(trained.parent.parent), "--device", "cpu", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["epochs_run"] == 0  # nothing left to do
    ev = noisynn("evaluate", str(trained), "--sigma", "0:1:0.5", "--runs", "4", "--json", "--device", "cpu")
    assert ev.returncode == 0, ev.stderr
    points = json.loads(ev.stdout)["points"]
    assert [p["sigma_val"] for p in points] == [0.0, 0.5, 1.0]
    assert [p["n_runs"] for p in points] == [1, 4, 4]
    assert all(0 <= p["accuracy"] <= 1 and p["stderr"] >= 0 for p in points)
    auto = noisynn("evaluate", str(trained), "--sigma", "0.5", "--runs", "auto", "--target", "50", "--json")
    assert json.loads(auto.stdout)["points"][0]["n_runs"] == 20
    vote = noisynn("vote", str(trained), "--sigma", "1", "--votes", "1:3", "--json")
    assert vote.returncode == 0, vote.stderr
    assert [p["votes"] for p in json.loads(vote.stdout)["points"]] == [1, 2, 3]
    table = noisynn("evaluate", str(trained), "--sigma", "0", "--runs", "2")
    assert table.returncode == 0 and "accuracy" in table.stdout


@pytest.mark.slow
def test_sweep_results_csv_and_json(tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text(PRESET)
    out = tmp_path / "run"
    result = noisynn("sweep", str(preset), "--out", str(out), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "cli-tiny" in result.stdout and "σ_train" in result.stdout
    listing = noisynn("results", str(out), "--csv", str(tmp_path / "grid.csv"))
    assert listing.returncode == 0
    with open(tmp_path / "grid.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["kind"], r["sigma_val"], r["votes"]) for r in rows} == {
        ("noisy", "0.0", "1"), ("noisy", "0.5", "1"), ("vote", "0.5", "1"), ("vote", "0.5", "2")}
    points = json.loads(noisynn("results", str(out), "--json").stdout)
    assert len(points) == 4 and all(p["checkpoint"] == points[0]["checkpoint"] for p in points)
    rerun = noisynn("sweep", str(preset), "--out", str(out), "--json")
    assert json.loads(rerun.stdout)["computed"] == 0


def test_user_errors_are_one_line(tmp_path, checkpoint):
    assert_user_error(noisynn("evaluate", str(checkpoint), "--sigma", "1:0:0.1"), "malformed sigma range", "1:0:0.1")
    assert_user_error(noisynn("evaluate", str(checkpoint), "--sigma", "abc"), "malformed sigma range")
    assert_user_error(noisynn("evaluate", str(checkpoint), "--runs", "zero"), "--runs")
    assert_user_error(noisynn("sweep", "no-such-preset", "--out", str(tmp_path / "x")), "unknown preset",
                      "noisynn presets")
    assert_user_error(noisynn("sweep", "demo", "--profile", "huge", "--out", str(tmp_path / "x")), "no profile 'huge'")
    assert_user_error(noisynn("train", "lstm", "--out", str(tmp_path / "t")), "unknown model 'lstm'")
    assert_user_error(noisynn("train", "rnn-rows", "--dataset", "digits", "--sigma", "-1", "--out",
                              str(tmp_path / "t")), "sigma must be a finite number >= 0", "-1")
    assert_user_error(noisynn("train", "rnn-rows", "--dataset", "digits", "--sigma", "nan", "--out",
                              str(tmp_path / "t")), "sigma must be a finite number >= 0", "nan")
    assert_user_error(noisynn("train", "rnn-rows", "--dataset", "imagenet", "--out", str(tmp_path / "t")),
                      "unknown dataset 'imagenet'")
    # a checkpoint of other settings in the out dir
    assert_user_error(noisynn("train", "rnn-rows", "--dataset", "digits", "--noise", "additive", "--sigma", "0.5",
                              "--epochs", "3", "--train-limit", "64", "--lr", "1e-3", "--out",
                              str(checkpoint.parent.parent)), "other settings", "lr")
    # a corrupt checkpoint file
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(checkpoint.read_bytes()[: len(checkpoint.read_bytes()) // 2])
    assert_user_error(noisynn("evaluate", str(broken)), "corrupt", str(broken))
    assert_user_error(noisynn("evaluate", str(tmp_path / "missing.safetensors")), "not found")
    # an out dir holding another experiment
    preset = tmp_path / "p.toml"
    preset.write_text(PRESET)
    out = tmp_path / "run"
    (out / "models").mkdir(parents=True)
    from noisynn.engine.store import ResultStore

    with ResultStore(out / "results.sqlite") as store:
        store.claim(experiment="something-else")
    assert_user_error(noisynn("sweep", str(preset), "--out", str(out)), "holds experiment 'something-else'",
                      "another --out")
    assert_user_error(noisynn("results", str(tmp_path / "nowhere")), "no results.sqlite")


@pytest.mark.slow
def test_the_real_entry_point_reports_a_user_error_in_one_line(tmp_path, checkpoint):
    """What the in-process checks above cannot see: the interpreter's exit code and stderr of a real process."""
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(checkpoint.read_bytes()[: len(checkpoint.read_bytes()) // 2])
    assert_user_error(entry_point("evaluate", str(broken)), "corrupt", str(broken))
