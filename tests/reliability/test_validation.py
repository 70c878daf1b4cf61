"""Issue 19, "one validation layer at the boundary": every bad input is one line on stderr starting with
``error:``, exit code 2, no traceback, and nothing written, checked before any work starts.

Presets through :func:`load_plan` (and the CLI), options through the real command (typer's CliRunner,
which runs the same app as ``python -m noisynn``, and real subprocesses for the cases about ordering,
devices and the environment), checkpoint metadata through :func:`read_metadata` and the commands
that load a checkpoint. A full disk and a denied write are injected into a real ``noisynn train``.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from noisynn.cli.main import app
from noisynn.engine import validation
from noisynn.engine.checkpoint import read_metadata
from noisynn.engine.presets import PresetError, load_plan
from noisynn.errors import CheckpointError

TOP = {"name": '"tiny"', "model": '"rnn-rows"', "dataset": '"digits"', "noise": '"additive"'}
PROFILE = {"sigma_train": '"0.5"', "sigma_val": '"0,0.5"', "epochs": "1", "lr": "5e-3", "runs": "2"}


def preset_text(top: dict | None = None, profile: dict | None = None, raw: str | None = None) -> str:
    """A small preset, with keys replaced (a value of None removes the key) or a raw profile section."""
    t = {**TOP, **(top or {})}
    p = {**PROFILE, **(profile or {})}
    lines = [f"{k} = {v}" for k, v in t.items() if v is not None]
    lines += [raw] if raw is not None else ["[profile.quick]"] + [f"{k} = {v}" for k, v in p.items() if v is not None]
    return "\n".join(lines) + "\n"


def one_line(message: str, *fragments: str) -> str:
    assert "\n" not in message.strip(), message
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def cli(*args: str):
    """Run the real app in-process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def assert_refused(code_out_err, *fragments: str) -> str:
    """Exit code 2, one line on stderr starting with 'error:', naming the problem; no traceback."""
    code, out, err = code_out_err
    assert code == 2, (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return one_line(lines[0], *fragments)


def noisynn(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real entry point, ``python -m noisynn``, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "noisynn", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **(env or {})))


def assert_process_refused(result: subprocess.CompletedProcess, *fragments: str) -> str:
    return assert_refused((result.returncode, result.stdout, result.stderr), *fragments)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    code, out_text, err = cli("train", "rnn-rows", "--dataset", "digits", "--sigma", "0.5", "--epochs", "1",
                              "--train-limit", "64", "--lr", "5e-3", "--out", out, "--device", "cpu", "--json")
    assert code == 0, err
    return Path(json.loads(out_text)["checkpoint"])


# ----------------------------------------------------------------------------------------- presets

PRESET_CASES = [
    # (what, preset text, fragments of the one-line message)
    ("unknown top-level key", preset_text(top={"colour": '"red"'}),
     ["unknown top-level key colour", "use name, title, model"]),
    ("epochs 1.7", preset_text(profile={"epochs": "1.7"}), ["epochs = 1.7", "integer >= 1"]),
    ("epochs true", preset_text(profile={"epochs": "true"}), ["epochs = true", "integer >= 1"]),
    ("epochs 0", preset_text(profile={"epochs": "0"}), ["epochs = 0", "integer >= 1"]),
    ("sigma_train []", preset_text(profile={"sigma_train": "[]"}), ["sigma_train = []", "at least one"]),
    ("profile not a table", preset_text(raw="profile = {quick = 3}"), ["profile 'quick' is 3, not a table",
                                                                        "[profile.quick]"]),
    ("profile itself not a table", preset_text(raw='profile = "quick"'), ['profile = "quick"', "must be a table"]),
    ("eval_limit ten", preset_text(profile={"eval_limit": '"ten"'}), ['eval_limit = "ten"', "integer >= 1"]),
    ("eval_limit -5", preset_text(profile={"eval_limit": "-5"}), ["eval_limit = -5", "integer >= 1"]),
    ("eval_limit 0", preset_text(profile={"eval_limit": "0"}), ["eval_limit = 0", "integer >= 1"]),
    ("vote_limit 0", preset_text(profile={"vote_limit": "0"}), ["vote_limit = 0", "integer >= 1"]),
    ("train_limit 0", preset_text(profile={"train_limit": "0"}), ["train_limit = 0", "integer >= 1"]),
    ("train_limit -1400", preset_text(profile={"train_limit": "-1400"}), ["train_limit = -1400"]),
    ("data_options not a table", preset_text(profile={"data_options": '"offsets"'}),
     ['data_options = "offsets"', "must be a table"]),
    ("data_options unknown option", preset_text(profile={"data_options": '{coords = "offsets"}'}),
     ["unknown option coords", "dataset 'digits'", "use seed, test_size"]),
    ("runs true", preset_text(profile={"runs": "true"}), ["runs = true", "or 'auto'"]),
    ("runs 0", preset_text(profile={"runs": "0"}), ["runs = 0"]),
    ("runs 1000000000", preset_text(profile={"runs": "1000000000"}),
     ["runs = 1000000000", "1,000,000,000 noisy passes", "cap is 10,000"]),
    ("votes -3", preset_text(profile={"votes": "-3"}), ["votes = -3", "0: no voting"]),
    ("votes 100000000", preset_text(profile={"votes": "100000000"}), ["votes = 100000000", "at most 1,000"]),
    ("vote_trials 0", preset_text(profile={"votes": "2", "vote_trials": "0"}), ["vote_trials = 0"]),
    ("vote_trials 2.5", preset_text(profile={"votes": "2", "vote_trials": "2.5"}), ["vote_trials = 2.5"]),
    ("curve_every -1", preset_text(profile={"curve_every": "-1"}), ["curve_every = -1", "integer >= 0"]),
    ("lr 0", preset_text(profile={"lr": "0"}), ["lr = 0", "> 0"]),
    ("lr -1e-3", preset_text(profile={"lr": "-1e-3"}), ["lr = -0.001", "> 0"]),
    ("lr nan", preset_text(profile={"lr": "nan"}), ["lr = nan", "finite"]),
    ("lr inf", preset_text(profile={"lr": "inf"}), ["lr = inf", "finite"]),
    ("batch_size 0", preset_text(profile={"batch_size": "0"}), ["batch_size = 0", "integer >= 1"]),
    ("target 1.5", preset_text(profile={"runs": '"auto"', "target": "1.5"}), ["target = 1.5", "(0, 1)"]),
    ("target 0", preset_text(profile={"target": "0"}), ["target = 0", "(0, 1)"]),
    ("momentum -1", preset_text(profile={"momentum": "-1"}), ["momentum = -1", ">= 0"]),
    ("augment yes", preset_text(profile={"augment": '"yes"'}), ['augment = "yes"', "true or false"]),
    ("optimizer rmsprop", preset_text(profile={"optimizer": '"rmsprop"'}), ['optimizer = "rmsprop"', "adam"]),
    ("early_stopping 5", preset_text(profile={"early_stopping": "5"}), ["early_stopping = 5", "table"]),
    ("adversarial list", preset_text(profile={"adversarial": "[1]"}), ["adversarial = [1]", "table"]),
    ("adversarial steps 1.5", preset_text(profile={"adversarial": "{eps = 0.3, alpha = 0.05, steps = 1.5}"}),
     ["adversarial.steps = 1.5", "integer >= 1"]),
    ("no sigma_val (was a bare 'sigma_val')", preset_text(profile={"sigma_val": None}),
     ["lacks sigma_val", 'sigma_val = "0:1:0.1"']),
    ("no epochs", preset_text(profile={"epochs": None}), ["lacks epochs", "epochs = 10"]),
    ("sigma range to inf", preset_text(profile={"sigma_val": '"0:inf:1"'}), ["sigma_val", "its stop is inf"]),
    ("sigma beyond float32", preset_text(profile={"sigma_val": "[1e39]"}), ["sigma_val", "float32"]),
    ("sigma true", preset_text(profile={"sigma_val": "true"}), ["sigma_val = true", "a range such as"]),
    ("sigma range of 100,000,001 values", preset_text(profile={"sigma_val": '"0:1e308:1e300"'}),
     ["100,000,001 values", "cap is 10,000"]),
    ("a grid past the cap", preset_text(profile={"sigma_train": '"0,1"', "sigma_val": '"0:1:0.001"', "runs": "200"}),
     ["400,400 passes over the test set", "cap is 100,000"]),
    ("unknown dataset", preset_text(top={"dataset": '"foo"'}), ['dataset = "foo"', "unknown dataset 'foo'"]),
    ("missing .npz", preset_text(top={"dataset": '"nothere.npz"'}), ["nothere.npz not found"]),
    ("model not a string", preset_text(top={"model": "3"}), ["model = 3", "non-empty string"]),
    ("model_options unknown", preset_text(raw="[model_options]\nbogus = 1\n[profile.quick]\n" + "\n".join(
        f"{k} = {v}" for k, v in PROFILE.items())), ["model 'rnn-rows' does not take", "bogus"]),
    ("noise_params not a table", preset_text(top={"noise_params": '"x"'}), ['noise_params = "x"', "table"]),
]


TOP_LEVEL = {"unknown top-level key", "profile itself not a table", "model not a string", "noise_params not a table"}


@pytest.mark.parametrize("what,text,fragments", PRESET_CASES, ids=[c[0] for c in PRESET_CASES])
def test_a_bad_preset_is_one_line_naming_file_profile_field_value_and_fix(tmp_path, what, text, fragments):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PresetError) as exc:
        load_plan(str(path), "quick")
    message = one_line(str(exc.value), *fragments)
    assert message.startswith(f"preset {path}")  # the file ...
    if what not in TOP_LEVEL:
        assert message.startswith(f"preset {path}, profile 'quick': ")  # ... and the profile


def test_the_shipped_presets_and_a_good_file_still_load(tmp_path):
    from noisynn.engine.presets import list_presets

    for row in list_presets():
        for profile in row["profiles"]:
            load_plan(row["name"], profile)
    path = tmp_path / "good.toml"
    path.write_text(preset_text(profile={"votes": "2", "vote_trials": "2", "eval_limit": "100", "curve_every": "0",
                                         "target": "0.01", "augment": "false"}))
    plan = load_plan(str(path), "quick")
    assert plan.runs == 2 and plan.votes == 2 and plan.eval_limit == 100 and plan.sigma_val == (0.0, 0.5)


@pytest.mark.slow
def test_a_bad_preset_through_the_cli_writes_nothing(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(preset_text(profile={"epochs": "1.7"}))
    out = tmp_path / "run"
    assert_process_refused(noisynn("sweep", path, "--out", out), "epochs = 1.7", str(path), "profile 'quick'")
    assert not out.exists()


# ------------------------------------------------------------------------------------------ options

EVALUATE_CASES = [
    (["--limit", "-355"], ["--limit -355", "integer >= 1"]),
    (["--limit", "0"], ["--limit 0", "integer >= 1"]),
    (["--sigma", "0:inf:1"], ["--sigma", "its stop is inf", "finite"]),
    (["--sigma", "nan"], ["sigma must be a finite number >= 0", "nan"]),
    (["--sigma", "-1"], ["sigma must be a finite number >= 0", "-1"]),
    (["--sigma", "0:1e308:1e300"], ["would give 100,000,001 values", "cap is 10,000"]),
    (["--sigma", "0:1:1e-12"], ["below 1e-9"]),
    (["--sigma", "1e39"], ["beyond float32's range"]),
    (["--sigma", ""], ["malformed sigma range"]),
    (["--runs", "1000000000"], ["--runs 1000000000", "1,000,000,000 noisy passes over the test set",
                                "cap is 10,000"]),
    (["--runs", "0"], ["--runs 0"]),
    (["--sigma", "0:1:0.001", "--runs", "200"], ["1,001 sigma_val", "200,200 passes over the test set",
                                                 "cap is 100,000"]),
    (["--runs", "auto", "--target", "0"], ["--target 0.0", "(0, 100)"]),
    (["--target", "nan"], ["--target nan"]),
    (["--device", "tpu"], ["unknown device 'tpu': use auto, cpu or cuda"]),
    (["--dataset", "foo"], ["--dataset foo", "unknown dataset 'foo'"]),
    (["--dataset", "nothere.npz"], ["nothere.npz not found"]),
    (["--limit", "abc"], ["Invalid value for '--limit'", "--help"]),  # a usage error: one line too
    (["--no-such-option"], ["No such option: --no-such-option"]),
]


@pytest.mark.parametrize("args,fragments", EVALUATE_CASES, ids=[" ".join(c[0]) for c in EVALUATE_CASES])
def test_bad_evaluate_options_are_refused_before_any_work(trained, args, fragments):
    assert_refused(cli("evaluate", trained, *args), *fragments)


VOTE_CASES = [
    (["--votes", "1:100000000"], ["K = 100,000,000", "100,000,000 passes over the test set", "cap is K = 1,000"]),
    (["--votes", "0:3"], ["1 <= FIRST <= LAST"]),
    (["--votes", "x"], ["K or FIRST:LAST"]),
    (["--trials", "0"], ["--trials 0"]),
    (["--trials", "100000"], ["--trials 100000", "at most 1,000"]),
    (["--votes", "1:1000", "--trials", "200", "--sigma", "0.5"], ["200,000 passes", "cap is 100,000"]),
    (["--limit", "0"], ["--limit 0"]),
    (["--device", "tpu"], ["unknown device 'tpu'"]),
]


@pytest.mark.parametrize("args,fragments", VOTE_CASES, ids=[" ".join(c[0]) for c in VOTE_CASES])
def test_bad_vote_options_are_refused_up_front(trained, args, fragments):
    assert_refused(cli("vote", trained, *args), *fragments)


TRAIN_CASES = [
    (["--train-limit", "-1400"], ["--train-limit -1400", "integer >= 1"]),
    (["--train-limit", "0"], ["--train-limit 0", "integer >= 1"]),
    (["--epochs", "0"], ["--epochs 0"]),
    (["--batch-size", "0"], ["--batch-size 0"]),
    (["--lr", "0"], ["--lr 0.0", "> 0"]),
    (["--lr", "nan"], ["--lr nan"]),
    (["--momentum", "-1"], ["--momentum -1.0"]),
    (["--curve-every", "-1"], ["--curve-every -1"]),
    (["--sigma", "1e39"], ["beyond float32's range"]),
    (["--sigma", "-1"], ["sigma must be a finite number >= 0", "-1"]),
    (["--device", "tpu"], ["unknown device 'tpu': use auto, cpu or cuda"]),
    (["--dataset", "foo"], ["unknown dataset 'foo'"]),
    (["--dataset", "nothere.npz"], ["nothere.npz not found"]),
    (["--dataset", "no_such_module_xyz:load"], ["cannot import 'no_such_module_xyz'"]),
    (["--model-option", "bogus=1"], ["model 'rnn-rows' does not take", "bogus"]),
]


@pytest.mark.parametrize("args,fragments", TRAIN_CASES, ids=[" ".join(c[0]) for c in TRAIN_CASES])
def test_bad_train_options_are_refused_before_the_out_directory_is_created(tmp_path, args, fragments):
    out = tmp_path / "run"
    base = ["train", "rnn-rows", "--dataset", "digits", "--epochs", "1", "--out", out]
    assert_refused(cli(*base, *args), *fragments)
    assert not out.exists()


def test_out_that_is_a_file_and_csv_in_a_missing_folder(tmp_path, trained):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for command in (["train", "rnn-rows", "--dataset", "digits"], ["sweep", "demo"], ["demo"]):
        assert_refused(cli(*command, "--out", a_file), f"--out {a_file} is a file, not a directory")
        assert_refused(cli(*command, "--out", a_file / "sub"), f"{a_file} is a file")
    assert a_file.read_text() == "x"
    run_dir = trained.parent.parent
    assert_refused(cli("report", run_dir, "--out", a_file), "is a file, not a directory")
    missing = tmp_path / "no-such-folder" / "grid.csv"
    assert_refused(cli("results", run_dir, "--csv", missing), "--csv", "does not exist", "create it first")
    assert_refused(cli("results", run_dir, "--csv", tmp_path), "is a directory")
    assert not missing.parent.exists()


def test_other_commands_refuse_bad_numbers_and_devices(tmp_path, trained):
    run_dir = trained.parent.parent
    assert_refused(cli("report", run_dir, "--device", "tpu"), "unknown device 'tpu': use auto, cpu or cuda")
    assert_refused(cli("report", run_dir, "--softmax-runs", "-1"), "--softmax-runs -1")
    assert_refused(cli("report", run_dir, "--softmax-runs", "1000000000"), "at most 100,000")
    assert_refused(cli("sweep", "demo", "--out", tmp_path / "s", "--device", "tpu"), "unknown device 'tpu'")
    assert_refused(cli("sweep", "demo", "--out", tmp_path / "s", "--workers", "0"), "--workers 0")
    assert_refused(cli("sweep", "demo", "--out", tmp_path / "s", "--workers", "100000"), "--workers 100000",
                   "CPU cores")
    assert_refused(cli("inspect", "rnn-rows", "--tokens", "-3"), "--tokens -3")
    attack = ["attack", "--source", trained, "--target", trained, "--out", tmp_path / "a"]
    for args, fragment in ((["--runs", "0"], "--runs 0"), (["--limit", "0"], "--limit 0"),
                           (["--eps", "-1"], "--eps -1.0"), (["--steps", "0"], "--steps 0"),
                           (["--noise", "foo"], "--noise foo"), (["--device", "tpu"], "unknown device 'tpu'"),
                           (["--sigma", "0:inf:1"], "its stop is inf")):
        assert_refused(cli(*attack, *args), fragment)
    assert not (tmp_path / "s").exists() and not (tmp_path / "a").exists()


@pytest.mark.slow
def test_the_real_entry_point_refuses_a_device_and_a_usage_error_in_one_line(trained):
    result = noisynn("evaluate", trained, "--device", "tpu")
    assert assert_process_refused(result) == "error: unknown device 'tpu': use auto, cpu or cuda"
    assert_process_refused(noisynn("evaluate", trained, "--runs"), "--runs")  # an option without its value
    assert_process_refused(noisynn("no-such-command"), "No such command")


@pytest.mark.slow
def test_an_unknown_dataset_does_not_claim_the_out_directory(tmp_path):
    """The corrected command then works in the same --out (item 10: the name was checked too late)."""
    preset = tmp_path / "tiny.toml"
    preset.write_text(preset_text())
    out = tmp_path / "run"
    assert_process_refused(noisynn("sweep", preset, "--out", out, "--dataset", "foo", "--device", "cpu"),
                           "unknown dataset 'foo'")
    assert_process_refused(noisynn("train", "rnn-rows", "--dataset", "foo", "--out", out), "unknown dataset 'foo'")
    assert not out.exists()
    fixed = noisynn("sweep", preset, "--out", out, "--dataset", "digits", "--device", "cpu", "--json")
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads(fixed.stdout)["computed"] == 2


# ----------------------------------------------------------------------------- checkpoint metadata

def _with_metadata(trained: Path, folder: Path, name: str, document) -> Path:
    path = folder / f"{name}.safetensors"
    save_file(load_file(str(trained)), str(path), metadata={"noisynn": json.dumps(document)})
    return path


def _bad_metadata(trained: Path) -> dict:
    meta = read_metadata(trained)
    return {
        "a list": ([1, 2], ["its metadata is a list, not a JSON object"]),
        "null": (None, ["its metadata is null"]),
        "a string": ("hello", ["its metadata is a string"]),
        "no spec": ({k: v for k, v in meta.items() if k != "spec"}, ["lacks spec"]),
        "no sigma_train": ({k: v for k, v in meta.items() if k != "sigma_train"}, ["lacks sigma_train"]),
        # was "Unknown format code 'g' for object of type 'str'" when the table was printed
        "sigma_train a string": (dict(meta, sigma_train="0.5"), ['sigma_train = "0.5"', "not a finite number"]),
        "sample_shape a string": (dict(meta, sample_shape="8x8"), ['sample_shape = "8x8"']),
        "epoch negative": (dict(meta, epoch=-1), ["epoch = -1"]),
    }


def test_checkpoint_metadata_of_the_wrong_form_is_one_line_naming_the_file(tmp_path, trained):
    for name, (document, fragments) in _bad_metadata(trained).items():
        path = _with_metadata(trained, tmp_path, name.replace(" ", "-"), document)
        with pytest.raises(CheckpointError) as exc:
            read_metadata(path)
        one_line(str(exc.value), str(path), *fragments)
        assert_refused(cli("evaluate", path, "--sigma", "0.5", "--runs", "2"), str(path), *fragments)
        assert_refused(cli("vote", path, "--sigma", "0.5", "--votes", "2"), str(path))
        assert_refused(cli("inspect", path), str(path))
    generic = _with_metadata(trained, tmp_path, "generic", {"epoch": 1})  # a bare save_checkpoint: readable ...
    assert read_metadata(generic) == {"epoch": 1}
    assert_refused(cli("evaluate", generic), "lacks model")  # ... but not a trained model
    assert_refused(cli("inspect", generic), "lacks model")


@pytest.mark.slow
def test_a_stray_checkpoint_in_models_does_not_break_report(tmp_path):
    preset = tmp_path / "tiny.toml"
    preset.write_text(preset_text())
    run = tmp_path / "run"
    code, _, err = cli("sweep", preset, "--out", run, "--device", "cpu", "--json")
    assert code == 0, err
    trained = next((run / "models").glob("*-seed0.safetensors"))
    for name, (document, _) in _bad_metadata(trained).items():
        _with_metadata(trained, run / "models", "stray-" + name.replace(" ", "-"), document)
    (run / "models" / "junk.safetensors").write_bytes(os.urandom(500))
    save_file({"a": load_file(str(trained))[next(iter(load_file(str(trained))))]},
              str(run / "models" / "x.safetensors"))
    result = noisynn("report", run, "--softmax-runs", "5", "--state-samples", "5", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and (run / "report" / "report.html").is_file()


# ------------------------------------------------------------------------- a full disk, a denied write

INJECT = textwrap.dedent("""
    import errno, os, sys
    import safetensors.torch as st  # noisynn's checkpoints are written by safetensors.torch.save_file

    real, calls = st.save_file, [0]
    fail_at, code = int(os.environ["FAIL_AT"]), getattr(errno, os.environ["ERRNO"])

    def failing(tensors, filename, metadata=None):
        calls[0] += 1
        if calls[0] >= fail_at:
            raise OSError(code, os.strerror(code), str(filename))
        return real(tensors, filename, metadata=metadata)

    st.save_file = failing
    from noisynn.cli.main import app
    app(sys.argv[1:], prog_name="noisynn")
""")


def _train_with(tmp_path: Path, out: Path, fail_at: int, code: str, epochs: int = 2) -> subprocess.CompletedProcess:
    script = tmp_path / "inject.py"
    script.write_text(INJECT)
    return subprocess.run([sys.executable, str(script), "train", "rnn-rows", "--dataset", "digits", "--epochs",
                           str(epochs), "--lr", "5e-3", "--out", str(out), "--device", "cpu"],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, FAIL_AT=str(fail_at), ERRNO=code))


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_finished_epoch(tmp_path):
    out = tmp_path / "run"
    result = _train_with(tmp_path, out, fail_at=2, code="ENOSPC")  # epoch 1 is written, epoch 2 is not
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    one_line(lines[0], "error: no space left on device", str(out / "models"), "everything finished before is kept",
             "run the same command again")
    checkpoint = next((out / "models").glob("*.safetensors"))
    assert read_metadata(checkpoint)["epoch"] == 1  # the finished epoch is intact
    assert not [p for p in (out / "models").iterdir() if p.name.endswith(".tmp")]
    again = noisynn("train", "rnn-rows", "--dataset", "digits", "--epochs", "2", "--lr", "5e-3", "--out", out,
                    "--device", "cpu", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["epochs_run"] == 1 and "stale lock" not in again.stderr  # resumed; lock released


@pytest.mark.slow
def test_a_denied_write_is_one_line(tmp_path):
    """Injected, so that it runs as root too (root is never denied by the permission bits)."""
    out = tmp_path / "run"
    result = _train_with(tmp_path, out, fail_at=1, code="EACCES", epochs=1)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    one_line(lines[0], "error: permission denied", "give an --out you can write")
    assert not list((out / "models").glob("*.safetensors")) if (out / "models").exists() else True
    read_only = _train_with(tmp_path, tmp_path / "ro", fail_at=1, code="EROFS", epochs=1)
    assert read_only.returncode == 2 and "error: read-only file system" in read_only.stderr


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root is never denied by permission bits")
@pytest.mark.slow
def test_an_out_directory_without_write_permission_is_refused_before_anything(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_process_refused(noisynn("train", "rnn-rows", "--dataset", "digits", "--out", locked / "run"),
                               "permission denied", str(locked))
        assert_process_refused(noisynn("train", "rnn-rows", "--dataset", "digits", "--out", locked),
                               "permission denied")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_environment_error_messages():
    for code, words in ((errno.ENOSPC, "no space left"), (errno.EACCES, "permission denied"),
                        (errno.EROFS, "read-only file system"), (errno.EDQUOT, "quota")):
        message = validation.environment_error(OSError(code, os.strerror(code), "/x/models/.a.safetensors.1.tmp"))
        one_line(message, words, "writing into /x/models", "kept")
    assert validation.environment_error(OSError(errno.ENOENT, "missing", "/x")) is None
    assert validation.environment_error(ValueError("x")) is None
