"""Issue 19, item 1: one writer per run directory, with real processes: a second writer is refused in one
line naming the holder; a SIGKILLed holder leaves a stale lock that the next process takes over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from noisynn.engine.atomic import HOST
from noisynn.engine.rundir_lock import LOCK_NAME, RunDirLock, RunDirLocked, holder, run_dir_lock
from noisynn.errors import NoisynnError

HOLD = textwrap.dedent("""
    import sys, time
    from noisynn.engine.rundir_lock import RunDirLock
    lock = RunDirLock(sys.argv[1], command="noisynn sweep held-by-test").acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def _holder(run_dir) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_a_second_writer_is_refused_and_a_killed_holders_lock_is_taken_over(tmp_path):
    run = tmp_path / "run"
    proc = _holder(run)
    try:
        rec = holder(run)
        assert rec["pid"] == proc.pid and rec["host"] == HOST and rec["command"] == "noisynn sweep held-by-test"
        with pytest.raises(RunDirLocked) as exc:
            RunDirLock(run).acquire()
        message = str(exc.value)
        assert "\n" not in message and f"pid {proc.pid} on {HOST}" in message
        assert "noisynn sweep held-by-test" in message and "started" in message and "another --out" in message

        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert holder(run)["pid"] == proc.pid  # the dead holder's record is still there: a stale lock
        said = []
        with run_dir_lock(run, log=said.append) as lock:
            assert lock.stale["pid"] == proc.pid
            assert holder(run)["pid"] == os.getpid()
        assert len(said) == 1 and str(proc.pid) in said[0] and "stale" in said[0]
        assert (run / LOCK_NAME).read_text() == ""  # released: an empty record, the file stays
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


@pytest.mark.slow
def test_the_lock_is_reentrant_in_a_process_and_free_after_release(tmp_path):
    run = tmp_path / "run"
    with RunDirLock(run) as outer:
        with RunDirLock(run) as inner:  # e.g. a sweep that trains in-process
            assert inner.stale is None
        assert holder(run)["pid"] == os.getpid()  # the outer one still holds it
        assert outer.stale is None
    assert holder(run) is None
    # and another process may take it now
    taken = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(120)", ""), str(run)],
                           capture_output=True, text=True, timeout=120)
    assert taken.returncode == 0 and taken.stdout.strip() == "locked"


def test_an_unwritable_run_directory_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(NoisynnError) as exc:
        RunDirLock(blocker / "run").acquire()
    assert "\n" not in str(exc.value) and "use a writable --out" in str(exc.value)


def _assert_refused(result: subprocess.CompletedProcess, pid: int) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert f"pid {pid}" in lines[0] and "in use by" in lines[0]


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
@pytest.mark.slow
def test_train_and_sweep_refuse_a_directory_another_process_writes(tmp_path):
    run = tmp_path / "run"
    cli = [sys.executable, "-m", "noisynn"]
    train = [*cli, "train", "rnn-rows", "--dataset", "digits", "--epochs", "1", "--train-limit", "64",
             "--out", str(run), "--device", "cpu"]
    proc = _holder(run)
    try:
        _assert_refused(subprocess.run(train, capture_output=True, text=True, timeout=300), proc.pid)
        _assert_refused(subprocess.run([*cli, "sweep", "demo", "--profile", "quick", "--out", str(run)],
                                       capture_output=True, text=True, timeout=300), proc.pid)
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # refused before writing anything
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        done = subprocess.run(train, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert f"stale lock of pid {proc.pid}" in done.stderr
        assert holder(run) is None  # released at the end
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
