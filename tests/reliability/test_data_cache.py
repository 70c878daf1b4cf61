"""Issue 19, item 3: the decoded ``.npy`` caches are verified against the hash recorded when they were
built; a rewritten ``y.npy`` is rebuilt with a one-line warning, and ``noisynn data check`` reports it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from noisynn import data
from noisynn.data import store


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(store.ENV_CACHE_DIR, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _entry(cache: Path) -> Path:
    (folder,) = (cache / "decoded" / "mnist").glob("test-*")
    return folder


def _rewrite_labels(folder: Path) -> None:
    """What the issue did: a cached y.npy replaced by other labels of the same shape (and size)."""
    y = np.load(folder / "y.npy")
    np.save(folder / "y.npy", (y + 1) % 10)


def test_a_cache_entry_records_the_hash_of_each_array(shared_data, cache):
    data.load("mnist", "test", data_dir=shared_data)
    folder = _entry(cache)
    index = json.loads((folder / "arrays.json").read_text())
    assert index["format"] == store.CACHE_FORMAT and set(index["arrays"]) == {"x", "y"}
    for name, record in index["arrays"].items():
        assert record["sha256"] == store._hash_stream(folder / f"{name}.npy")
        assert record["size"] == (folder / f"{name}.npy").stat().st_size


def test_a_rewritten_y_npy_is_rebuilt_with_one_warning_line(shared_data, cache):
    first = data.load("mnist", "test", data_dir=shared_data)
    assert first.meta["cache"] == "built"
    assert data.load("mnist", "test", data_dir=shared_data).meta["cache"] == "hit"
    _rewrite_labels(_entry(cache))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = data.load("mnist", "test", data_dir=shared_data)
    messages = [str(w.message) for w in caught if "decoded cache" in str(w.message)]
    assert len(messages) == 1 and "\n" not in messages[0] and "y.npy" in messages[0] and "rebuilding" in messages[0]
    assert again.meta["cache"] == "built" and torch.equal(again.y, first.y)
    assert data.load("mnist", "test", data_dir=shared_data).meta["cache"] == "hit"


def test_the_check_runs_in_a_fresh_process_too(shared_data, cache):
    """The per-process memo must not hide a change made while no process had the file verified."""
    data.load("mnist", "test", data_dir=shared_data)
    store._VERIFIED.clear()  # as in a new process
    _rewrite_labels(_entry(cache))
    with pytest.warns(UserWarning, match="does not match the hash recorded"):
        ds = data.load("mnist", "test", data_dir=shared_data)
    assert ds.meta["cache"] == "built"


def test_data_check_reports_a_rewritten_cache(shared_data, cache):
    import typer
    from typer.testing import CliRunner

    from noisynn.cli import data_cmd

    data.load("mnist", "test", data_dir=shared_data)
    (result,) = data.check("mnist", data_dir=shared_data)
    assert result.status == "OK"
    folder = _entry(cache)
    _rewrite_labels(folder)
    (result,) = data.check("mnist", data_dir=shared_data)
    assert result.status == "corrupt" and str(folder / "y.npy") in result.detail and "\n" not in result.detail

    app = typer.Typer()
    app.command("version")(lambda: None)
    data_cmd.register(app)
    cli = CliRunner().invoke(app, ["data", "check", "mnist", "--json", "--data-dir", str(shared_data)],
                             env={store.ENV_CACHE_DIR: str(cache)})
    assert cli.exit_code == 1 and json.loads(cli.stdout)[0]["status"] == "corrupt"

    with pytest.warns(UserWarning, match="rebuilding"):
        data.load("mnist", "test", data_dir=shared_data)  # the load rebuilds it ...
    assert data.check("mnist", data_dir=shared_data)[0].status == "OK"  # ... and the check is clean again


def test_a_corrupt_entry_in_a_read_only_cache_is_never_used(shared_data, cache, monkeypatch):
    first = data.load("mnist", "test", data_dir=shared_data)
    _rewrite_labels(_entry(cache))

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # a cache folder this user cannot change (simulated: the tests may run as root)
    monkeypatch.setattr(store.shutil, "rmtree", lambda *a, **k: None)
    monkeypatch.setattr(store.tempfile, "mkdtemp", read_only)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = data.load("mnist", "test", data_dir=shared_data)
    assert torch.equal(ds.y, first.y) and ds.meta["cache"] == "uncached"
    assert any("does not match the hash" in str(w.message) for w in caught)
