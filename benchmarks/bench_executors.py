"""Executors side by side (issue 15): one sweep in this process, in 2 local processes, and on Ray with 2 workers.

    python benchmarks/bench_executors.py                       # the quick paper1-lstm-rows sweep (MNIST)
    python benchmarks/bench_executors.py --preset demo-tiny    # a small digits sweep, no data needed
    python benchmarks/bench_executors.py --only overhead,project

* ``sweep``: the same preset and profile run back to back with ``LocalExecutor`` (this
  process, all threads), ``ProcessExecutor(2)`` (``--workers 2``) and ``RayExecutor`` on a
  local Ray instance of 2 CPUs (``--executor ray``, 1 thread per task); wall times of the
  sweeps themselves (Ray's start-up is timed apart) and their ratios to the local one.
* ``overhead``: Ray's cost per task, scheduled through noisynn's scheduler (``schedule`` with
  ``RayExecutor.submit``): no-op tasks, and tasks carrying a 1 MB checkpoint file through the
  object store (a model's checkpoint is put once; each epoch's comes back as bytes).
* ``project``: DenseNet-40 training and noisy evaluation throughput on this machine (1 thread,
  random CIFAR-shaped data), projected to the ``paper`` profile of
  ``paper2-densenet40-multiplicative`` (11 models x 300 epochs of 50,000 images; 121 points x
  50 runs and 66 voting curves of 20 votes over 10,000 test images): worker-hours, and wall time
  on N workers (a model's 300 epochs are one chain: they never run in parallel).

Other processes distort all of this (the load average is printed before and after).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

TINY = """
name = "demo-tiny"
title = "a small digits sweep for the executor benchmark"
model = "rnn-rows"
dataset = "digits"
noise = "additive"

[profile.quick]
sigma_train = "0,0.5,1"
sigma_val = "0:1:0.25"
epochs = 3
batch_size = 64
lr = 5e-3
runs = 10
"""


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_sweeps(preset: str, profile: str, data_dir: str | None) -> list[tuple]:
    import torch

    from noisynn.engine import load_plan, run_sweep
    from noisynn.engine.ray_executor import RayExecutor
    from noisynn.engine.sweep import LocalExecutor, ProcessExecutor

    rows = []
    with tempfile.TemporaryDirectory(prefix="noisynn-bench-") as tmp:
        if preset == "demo-tiny":
            path = Path(tmp) / "demo-tiny.toml"
            path.write_text(TINY)
            preset = str(path)
        plan = load_plan(preset, profile)

        def timed(name: str, executor, threads: int | None = None) -> float:
            saved = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            t0 = time.perf_counter()
            try:
                run_sweep(plan, Path(tmp) / name, data_dir=data_dir, device="cpu", executor=executor, progress=False,
                          log=lambda m: None)
            finally:
                torch.set_num_threads(saved)
            return time.perf_counter() - t0

        local = timed("local", LocalExecutor())
        rows.append(("local (this process)", local, 1.0))
        workers = timed("workers", ProcessExecutor(2))
        rows.append(("--workers 2", workers, workers / local))
        t0 = time.perf_counter()
        executor = RayExecutor(num_cpus=2)
        start = time.perf_counter() - t0
        ray_s = timed("ray", executor)
        rows.append(("--executor ray (2 workers)", ray_s, ray_s / local))
        rows.append(("  Ray start-up (apart)", start, float("nan")))
    return rows


@dataclasses.dataclass(frozen=True)
class _Noop:
    """A task with nothing to compute: what remains is the executor's cost."""

    payload: str | None = None

    def inputs(self):
        return {"ckpt.safetensors": Path(self.payload)} if self.payload else {}

    def describe(self):
        return "a no-op task"

    def compute(self, ws):
        if self.payload:
            ws.file("ckpt.safetensors")
        return None


def bench_overhead(n: int) -> list[tuple]:
    from noisynn.engine.ray_executor import RayExecutor
    from noisynn.engine.sweep import schedule

    rows = []
    executor = RayExecutor(num_cpus=2)
    try:
        schedule(executor, [[_Noop()] for _ in range(20)], progress=False)  # workers started, function shipped
        t0 = time.perf_counter()
        schedule(executor, [[_Noop()] for _ in range(n)], progress=False)
        rows.append((f"{n} no-op tasks, 2 slots", 1000 * (time.perf_counter() - t0) / n))
        with tempfile.TemporaryDirectory(prefix="noisynn-bench-") as tmp:
            files = []
            for i in range(n):
                path = Path(tmp) / f"ckpt{i}.safetensors"
                path.write_bytes(os.urandom(1 << 20))
                files.append(str(path))
            t0 = time.perf_counter()
            schedule(executor, [[_Noop(f)] for f in files], progress=False)
            rows.append((f"{n} tasks each shipping its own 1 MB file", 1000 * (time.perf_counter() - t0) / n))
    finally:
        executor.close()
    return rows


def bench_project(workers: tuple[int, ...]) -> list[str]:
    import torch
    import torch.nn.functional as F

    import noisynn
    from noisynn.models import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("densenet40", noise_kind="multiplicative")
    x, y = torch.rand(32, 3, 32, 32), torch.randint(0, 10, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    model.train()
    noisynn.set_noise(model, "multiplicative", 0.5)

    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    t0, steps = time.perf_counter(), 3
    for _ in range(steps):
        step()
    train_rate = steps * 32 / (time.perf_counter() - t0)
    model.eval()
    xb = torch.rand(100, 3, 32, 32)
    with torch.no_grad():
        model(xb)
        t0, reps = time.perf_counter(), 3
        for _ in range(reps):
            model(xb)
    eval_rate = reps * 100 / (time.perf_counter() - t0)
    train_images = 11 * 300 * 50_000
    eval_images = 11 * (10 * 50 + 1) * 10_000 + 11 * 6 * 20 * 10_000  # noisy points (sigma_val 0: one run) + votes
    train_h, eval_h = train_images / train_rate / 3600, eval_images / eval_rate / 3600
    chain_h = 300 * 50_000 / train_rate / 3600 + (eval_images / 11) / eval_rate / 3600  # one model, then its points
    lines = [f"DenseNet-40 on this CPU, 1 thread: training {train_rate:.1f} img/s (batch 32, noisy), "
             f"noisy evaluation {eval_rate:.1f} img/s (batch 100)",
             f"paper profile: training {train_images / 1e6:.0f} M images = {train_h:,.0f} worker-hours, evaluation "
             f"{eval_images / 1e6:.1f} M images = {eval_h:,.0f} worker-hours; in all {train_h + eval_h:,.0f}"]
    for n in workers:
        wall = max((train_h + eval_h) / n, chain_h)
        lines.append(f"  on {n:>3} such workers: >= {wall:,.0f} h wall ({wall / 24:,.1f} days)"
                     + ("  (bound by one model's 300 epochs)" if wall == chain_h else ""))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="paper1-lstm-rows")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--only", default="sweep,overhead,project")
    parser.add_argument("--tasks", type=int, default=200, help="tasks of the overhead measurement")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each row as it is measured, also into a file
    try:
        import ray  # noqa: F401
    except ImportError:
        print('bench_executors: Ray is not installed (pip install "noisynn[ray]"): skipped')
        return
    only = set(args.only.split(","))
    print(f"load average before: {_load()}  ({os.cpu_count()} CPUs)")
    if "sweep" in only:
        print(f"\n{args.preset} --profile {args.profile}, back to back:")
        print(f"{'executor':<30} {'wall s':>8} {'vs local':>9}")
        for name, seconds, ratio in bench_sweeps(args.preset, args.profile, args.data_dir):
            print(f"{name:<30} {seconds:>8.1f} {ratio:>8.2f}x" if ratio == ratio else f"{name:<30} {seconds:>8.1f}")
    if "overhead" in only:
        print("\nRay's cost per task (through noisynn's scheduler):")
        for name, ms in bench_overhead(args.tasks):
            print(f"  {name:<44} {ms:6.1f} ms/task")
    if "project" in only:
        print("\nprojection: paper2-densenet40-multiplicative --profile paper")
        for line in bench_project((1, 2, 11, 22, 44, 88)):
            print(line)
    print(f"\nload average after: {_load()}")


if __name__ == "__main__":
    main()
