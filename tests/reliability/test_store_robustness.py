"""Issue 19, items 6, 8b and 1b: the results store opens read-only without writing, waits a bounded time
for a lock, turns a locked, corrupt or old-schema file into one line, and never fails on a point two
processes add at once."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from noisynn.engine import store as store_module
from noisynn.engine.store import Point, PointKey, ResultStore, StoreError

KEY = PointKey("exp", "rnn-rows", "digits", "additive", 0.5, 0.25)


def _point(acc: float = 0.9, checkpoint: str = "w1", key: PointKey = KEY) -> Point:
    return Point(key, 3, acc, 0.01, 1.0, checkpoint, (acc, acc, acc))


def _finished(path: Path, n: int = 40) -> Path:
    with ResultStore(path) as s:
        s.claim(experiment="exp", profile="quick")
        s.replace_points([_point(0.5 + i / 100, key=PointKey("exp", "rnn-rows", "digits", "additive", 0.5, i / 40))
                          for i in range(n)])
    return path


def _digest(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def _one_line(exc: pytest.ExceptionInfo, *fragments: str) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ------------------------------------------------------------------ read-only opening


def test_read_only_opening_writes_nothing(tmp_path):
    path = _finished(tmp_path / "results.sqlite")
    before = _digest(path)
    with ResultStore(path, readonly=True) as s:
        assert s.meta() == {"experiment": "exp", "profile": "quick"}
        assert len(s.points()) == 40 and s.epochs() == [] and s.curve() == [] and s.stopping() == []
        with pytest.raises(StoreError, match="read-only"):
            s.claim(experiment="other")
        with pytest.raises(StoreError, match="read-only"):
            s.add_point(_point())
    assert _digest(path) == before


def test_read_only_opening_of_an_old_store_creates_no_table(tmp_path):
    path = tmp_path / "results.sqlite"
    conn = sqlite3.connect(path)  # a store of an older version: no curve, stopping tables, no holdout columns
    for table, columns in store_module._expected_columns().items():
        if table in ("curve", "stopping"):
            continue
        cols = [c for c in columns if c not in ("holdout_loss", "holdout_accuracy")]
        conn.execute(f"CREATE TABLE {table} ({', '.join(cols)})")
    conn.commit()
    conn.close()
    before = _digest(path)
    with ResultStore(path, readonly=True) as s:
        assert s.curve() == [] and s.stopping() == [] and s.epochs() == []
    assert _digest(path) == before
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert "curve" not in tables and "stopping" not in tables


def test_read_only_opening_of_a_missing_store_is_one_line(tmp_path):
    with pytest.raises(StoreError) as exc:
        ResultStore(tmp_path / "results.sqlite", readonly=True)
    _one_line(exc, "results.sqlite", "not found")
    assert not (tmp_path / "results.sqlite").exists()


def test_a_wal_store_in_a_folder_nobody_may_write_is_read_as_immutable(tmp_path, monkeypatch):
    """Without a -shm file and no right to create one, SQLite cannot open a WAL file with mode=ro: the
    store falls back to immutable=1 (simulated here: the tests may run as root, who may write anywhere)."""
    path = _finished(tmp_path / "results.sqlite")
    real = sqlite3.connect
    opened = []

    def connect(target, *args, **kwargs):
        opened.append(str(target))
        if "mode=ro" in str(target) and "immutable" not in str(target):
            conn = real(":memory:")
            conn.close()  # any use raises; like SQLITE_CANTOPEN on the first read
            raise sqlite3.OperationalError("unable to open database file")
        return real(target, *args, **kwargs)

    monkeypatch.setattr(store_module.sqlite3, "connect", connect)
    with ResultStore(path, readonly=True) as s:
        assert len(s.points()) == 40
    assert any("immutable=1" in o for o in opened)


@pytest.mark.slow
def test_results_and_report_read_a_read_only_run_directory(tmp_path):
    run = tmp_path / "run"
    _finished(run / "results.sqlite")
    before = _digest(run / "results.sqlite")
    for p in (run / "results.sqlite", run):
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        results = _cli("results", str(run), "--json", COLUMNS="200")
        assert results.returncode == 0, results.stderr
        assert '"experiment": "exp"' in results.stdout
        report = _cli("report", str(run), "--no-models", "--out", str(tmp_path / "report"), COLUMNS="200")
        assert report.returncode == 0, report.stderr
    finally:
        run.chmod(0o755)
        (run / "results.sqlite").chmod(0o644)
    assert _digest(run / "results.sqlite") == before


# ------------------------------------------------------------------ locks, corrupt pages, old schemas


def _hold_lock(path: str, seconds: float, ready) -> None:
    conn = sqlite3.connect(path, timeout=5)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO meta VALUES ('holder', 'x')")
    ready.set()
    time.sleep(seconds)
    conn.rollback()
    conn.close()


def test_a_store_locked_longer_than_the_timeout_is_one_line(tmp_path):
    path = _finished(tmp_path / "results.sqlite")
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(path), 3.0, ready))
    holder.start()
    try:
        assert ready.wait(60)
        start = time.monotonic()
        with ResultStore(path, readonly=True) as reader:  # WAL: readers are not blocked by the writer
            assert len(reader.points()) == 40
        with pytest.raises(StoreError) as exc:
            with ResultStore(path, timeout=0.3) as s:
                s.add_point(_point(checkpoint="w2"))
        _one_line(exc, str(path), "locked by another process", "0.3 s", "kept")
        assert time.monotonic() - start < 2.5
    finally:
        holder.join(30)
    with ResultStore(path) as s:  # the holder's rollback and our refusal lost nothing
        assert len(s.points()) == 40 and "holder" not in s.meta()


def test_the_busy_timeout_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(store_module.ENV_TIMEOUT, "2.5")
    with ResultStore(tmp_path / "r.sqlite") as s:
        assert s.timeout == 2.5
    monkeypatch.setenv(store_module.ENV_TIMEOUT, "soon")
    with pytest.raises(StoreError, match="NOISYNN_STORE_TIMEOUT"):
        ResultStore(tmp_path / "r.sqlite")


@pytest.mark.parametrize("readonly", [False, True])
def test_a_file_that_is_not_a_database_is_one_line(tmp_path, readonly):
    path = tmp_path / "results.sqlite"
    path.write_bytes(b"this is no sqlite file " * 200)
    before = _digest(path)
    with pytest.raises(StoreError) as exc:
        ResultStore(path, readonly=readonly)
    _one_line(exc, str(path), "not a database", "move it away")
    assert _digest(path) == before


@pytest.mark.parametrize("readonly", [False, True])
def test_corrupt_pages_are_one_line(tmp_path, readonly):
    path = _finished(tmp_path / "results.sqlite", n=400)
    raw = bytearray(path.read_bytes())
    page = 4096
    for p in range(2, len(raw) // page):  # every page but the first: the header is fine, the b-trees are not
        raw[p * page:p * page + 64] = b"\xff" * 64
    path.write_bytes(bytes(raw))
    before = _digest(path)
    with pytest.raises(StoreError) as exc:
        with ResultStore(path, readonly=readonly) as s:
            s.points()
    message = _one_line(exc, str(path), "corrupt")
    assert "malformed" in message or "not a database" in message
    assert _digest(path) == before


def test_an_old_schema_lacking_a_column_is_one_line_and_left_untouched(tmp_path):
    path = tmp_path / "results.sqlite"
    conn = sqlite3.connect(path)
    columns = [c for c in store_module._expected_columns()["points"] if c != "checkpoint"]
    conn.execute(f"CREATE TABLE points ({', '.join(columns)})")
    conn.commit()
    conn.close()
    before = _digest(path)
    for readonly in (False, True):
        with pytest.raises(StoreError) as exc:
            ResultStore(path, readonly=readonly)
        _one_line(exc, str(path), "another version", "points", "checkpoint", "nothing in it was changed")
    assert _digest(path) == before


def test_an_old_store_lacking_only_new_columns_is_migrated(tmp_path):
    path = tmp_path / "results.sqlite"
    conn = sqlite3.connect(path)
    columns = [c for c in store_module._expected_columns()["epochs"] if not c.startswith("holdout")]
    conn.execute(f"CREATE TABLE epochs ({', '.join(columns)})")
    conn.commit()
    conn.close()
    with ResultStore(path) as s:
        assert s.epochs() == []
    assert "holdout_loss" in [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(epochs)")]


# ------------------------------------------------------------------ the point insertion race


def _add_after(path: str, barrier, acc: float) -> None:
    with ResultStore(path) as s:
        assert not s.has_point(KEY, "w1")
        barrier.wait(30)  # both have checked: the race of two identical sweeps
        s.add_point(_point(acc))


def test_two_processes_adding_the_same_point_both_succeed(tmp_path):
    path = tmp_path / "results.sqlite"
    ResultStore(path).close()
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_add_after, args=(str(path), barrier, acc)) for acc in (0.9, 0.9)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    with ResultStore(path) as s:
        (point,) = s.points()
        assert s.run_accuracies(point["id"]) == [0.9, 0.9, 0.9]


def test_add_point_keeps_the_same_measurement_and_replaces_a_stale_one(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as s:
        assert s.add_point(_point(0.9, "w1")) is True
        assert s.add_point(_point(0.9, "w1")) is False  # measured again on the same weights: kept
        assert s.add_point(_point(0.7, "w2")) is True  # other weights: the stale point is replaced
        (point,) = s.points()
        assert point["checkpoint"] == "w2" and s.run_accuracies(point["id"]) == [0.7, 0.7, 0.7]


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The app of ``python -m noisynn``, in this process (CliRunner, with ``env`` set for the call); an exception
    escaping it (a traceback for the user) fails the test. The real entry point is tested in test_validation."""
    from typer.testing import CliRunner

    from noisynn.cli.main import app

    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def _assert_one_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_corrupt_and_locked_stores_are_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.sqlite").write_bytes(b"garbage " * 1000)
    _assert_one_line(_cli("results", str(bad)), "results.sqlite", "not a database")

    run = tmp_path / "run"
    path = _finished(run / "results.sqlite")
    ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(path), 60.0, ready))
    holder.start()
    try:
        assert ready.wait(60)
        locked = _cli("train", "rnn-rows", "--dataset", "digits", "--epochs", "1", "--out", str(run),
                      "--device", "cpu", NOISYNN_STORE_TIMEOUT="0.5")
        _assert_one_line(locked, "results.sqlite", "locked by another process")
    finally:
        holder.terminate()
        holder.join(30)
    assert not (run / "models").exists()  # refused before any work
    with ResultStore(path, readonly=True) as s:
        assert len(s.points()) == 40
