"""Issue 19, items 4, 5b and 1c: the optimizer state is hashed like the weights, the ``.json`` sidecar
never stays behind after a kill, and two writers never share a temporary file."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from noisynn.engine.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from noisynn.errors import CheckpointError


def _model_and_optimizer(steps: int = 2) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(5, 8)).sum().backward()
        optimizer.step()
    return model, optimizer


def _flip_tensor_bytes(path: Path, name: str) -> None:
    """Change bytes inside tensor ``name`` of a safetensors file in place (header untouched)."""
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    start, end = json.loads(raw[8:8 + n])[name]["data_offsets"]
    for i in range(8 + n + start, min(8 + n + end, 8 + n + start + 16)):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))


def _one_line(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_optimizer_state_round_trips_with_its_hash(tmp_path):
    model, optimizer = _model_and_optimizer()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, {"epoch": 1}, optimizer)
    meta = read_metadata(path)
    assert len(meta["optimizer_sha256"]) == 64
    state = load_checkpoint(path)
    fresh = torch.optim.Adam(model.parameters(), lr=1e-3)
    fresh.load_state_dict(state["optim"])
    for a, b in zip(fresh.state.values(), optimizer.state.values(), strict=True):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])


def test_corrupt_optimizer_tensors_are_refused(tmp_path):
    model, optimizer = _model_and_optimizer()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, {"epoch": 1}, optimizer)
    _flip_tensor_bytes(path, "optim.0.exp_avg_sq")
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    _one_line(exc, str(path), "optimizer state", "delete it")


def test_edited_optimizer_hyper_parameters_are_refused(tmp_path):
    model, optimizer = _model_and_optimizer()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, {"epoch": 1}, optimizer)
    tensors = load_file(str(path))
    meta = read_metadata(path)
    meta["optimizer_state"]["param_groups"][0]["lr"] = 10.0  # a hostile or bit-rotted header edit
    save_file(tensors, str(path), metadata={"noisynn": json.dumps(meta)})
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    _one_line(exc, str(path), "optimizer state")


def test_checkpoints_of_older_versions_without_the_hash_still_load(tmp_path):
    model, optimizer = _model_and_optimizer()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, {"epoch": 1}, optimizer)
    tensors, meta = load_file(str(path)), read_metadata(path)
    del meta["optimizer_sha256"]
    save_file(tensors, str(path), metadata={"noisynn": json.dumps(meta)})
    fresh = torch.optim.Adam(model.parameters(), lr=1e-3)
    fresh.load_state_dict(load_checkpoint(path)["optim"])  # the state itself, unverified but whole
    for a, b in zip(fresh.state.values(), optimizer.state.values(), strict=True):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])


@pytest.mark.slow
def test_resume_from_a_corrupt_optimizer_state_is_a_one_line_cli_error(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "noisynn", "train", "rnn-rows", "--dataset", "digits", "--sigma", "0.3",
            "--train-limit", "256", "--lr", "5e-3", "--out", str(out), "--device", "cpu", "--json"]
    first = subprocess.run([*args, "--epochs", "1"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    (ckpt,) = (out / "models").glob("*.safetensors")
    before = ckpt.read_bytes()
    name = next(k for k in json.loads(before[8:8 + struct.unpack("<Q", before[:8])[0]]) if k.startswith("optim."))
    _flip_tensor_bytes(ckpt, name)
    corrupted = ckpt.read_bytes()
    again = subprocess.run([*args, "--epochs", "2"], capture_output=True, text=True, timeout=300)
    lines = [line for line in again.stderr.splitlines() if line.strip()]
    assert again.returncode == 2, again.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in again.stderr
    assert str(ckpt) in lines[0] and "optimizer state" in lines[0]
    assert ckpt.read_bytes() == corrupted  # nothing overwritten: the user decides


# ------------------------------------------------------------------ the sidecar and temporary files

KILL_AT_SIDECAR = textwrap.dedent("""
    import os, signal, sys, torch
    from noisynn.engine import checkpoint
    real = os.replace
    def replace(src, dst):
        if str(dst).endswith(".json"):
            os.kill(os.getpid(), signal.SIGKILL)  # between the .safetensors and its .json
        return real(src, dst)
    checkpoint.os.replace = replace
    torch.manual_seed(1)
    checkpoint.save_checkpoint(sys.argv[1], torch.nn.Linear(3, 2), {"epoch": 2})
""")


@pytest.mark.slow
def test_a_kill_between_checkpoint_and_sidecar_is_repaired(tmp_path):
    path = tmp_path / "models" / "m.safetensors"
    save_checkpoint(path, torch.nn.Linear(3, 2), {"epoch": 1})
    killed = subprocess.run([sys.executable, "-c", KILL_AT_SIDECAR, str(path)], capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    sidecar = path.with_suffix(".json")
    assert read_metadata(path)["epoch"] == 2  # the checkpoint is the new epoch ...
    assert json.loads(sidecar.read_text())["epoch"] == 1  # ... its sidecar the old one
    leftovers = [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers  # what the killed writer left

    state = load_checkpoint(path)  # any reader repairs it
    assert state["meta"]["epoch"] == 2
    assert json.loads(sidecar.read_text()) == dict(read_metadata(path))
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.json", "m.safetensors"]


@pytest.mark.slow
def test_a_writer_killed_mid_write_leaves_no_lasting_temporary_file(tmp_path):
    path = tmp_path / "m.safetensors"
    script = KILL_AT_SIDECAR.replace('str(dst).endswith(".json")', 'str(dst).endswith(".safetensors")')
    killed = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL and not path.exists()
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    save_checkpoint(path, torch.nn.Linear(3, 2), {"epoch": 1})  # the next writer cleans up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


def _hammer(path: str, seed: int, n: int) -> None:
    torch.manual_seed(seed)
    model = torch.nn.Linear(64, 64)
    for epoch in range(n):
        save_checkpoint(path, model, {"epoch": epoch, "writer": seed})


def test_two_writers_of_one_checkpoint_never_collide(tmp_path):
    path = tmp_path / "m.safetensors"
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    workers = [ctx.Process(target=_hammer, args=(str(path), seed, 25)) for seed in (1, 2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    meta = load_checkpoint(path)["meta"]  # a whole checkpoint of one writer, with a matching sidecar
    assert meta["writer"] in (1, 2) and json.loads(path.with_suffix(".json").read_text())["writer"] == meta["writer"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert os.listdir(tmp_path) and len(os.listdir(tmp_path)) == 2
