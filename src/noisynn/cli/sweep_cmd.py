"""``noisynn sweep``, ``presets``, ``results`` and ``demo``: whole grids of a paper."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from noisynn.cli.common import DATA_DIR_HELP, DEVICE_HELP, emit_json, progress_enabled, user_errors


def _executor(workers: int, options: dict | None = None):
    if options:  # --executor ray and its options (engine/ray_executor.py)
        from noisynn.engine.sweep import make_executor

        return make_executor(workers=workers, **options)
    from noisynn.engine import validation as check
    from noisynn.engine.sweep import LocalExecutor, ProcessExecutor

    check.workers(workers)
    return LocalExecutor() if workers == 1 else ProcessExecutor(workers)


def _override(plan, model: str | None, dataset: str | None, noise: str | None, noise_param: list[str] | None,
              sweep_param: str | None):
    """The plan with its model, data or noise replaced by the user's (``--model`` ...)."""
    import dataclasses

    from noisynn.engine import plugins
    from noisynn.engine import validation as check

    if not (model or dataset or noise or noise_param or sweep_param):
        return plan
    if dataset:
        check.dataset(plugins.data_reference(dataset))
    train = plan.train
    if noise or noise_param or sweep_param:
        params = {} if noise else dict(train.noise_params or {})  # a new class starts afresh
        params.update(plugins.parse_params(noise_param))
        family = plugins.resolve_noise(noise or plan.noise, params,
                                       sweep_param or (None if noise else train.sweep_param))
        train = dataclasses.replace(train, noise_params=family.params, sweep_param=family.param)
    plan = dataclasses.replace(plan, model=model or plan.model, noise=noise or plan.noise, train=train,
                               dataset=plugins.data_reference(dataset) if dataset else plan.dataset)
    plan.train_spec(plan.sigma_train[0], 0)  # validates
    plugins.check_model_options(plan.model, plan.train.model_options, plan.noise)
    return plan


def _sweep(preset: str, profile: str, out: Path, seed: int, data_dir, device: str, workers: int,
           as_json: bool, overrides: tuple = (None,) * 5, executor_options: dict | None = None) -> dict:
    from noisynn.engine import validation as check
    from noisynn.engine.presets import load_plan
    from noisynn.engine.sweep import run_sweep

    # everything is checked before the run directory is created, locked or claimed
    check.out_dir(out)
    check.device(device)
    check.workers(workers)
    plan = _override(load_plan(preset, profile), *overrides)  # the preset's values, its data, model and noise
    log = (lambda _m: None) if as_json else (lambda m: typer.echo(m, err=True))
    executor = _executor(workers, executor_options)
    t0 = time.perf_counter()
    summary = run_sweep(plan, out, seed=seed, data_dir=data_dir, device=device, executor=executor,
                        progress=progress_enabled(as_json), log=log)
    seconds = time.perf_counter() - t0
    log(f"done in {seconds:.0f} s: {summary.computed} tasks computed, {summary.skipped} already done")
    return {"run_dir": str(out), "experiment": plan.name, "profile": plan.profile, "computed": summary.computed,
            "skipped": summary.skipped, "seconds": seconds, "checkpoints": summary.checkpoints}


@user_errors
def sweep_command(
    preset: str = typer.Argument(..., help="A preset name (noisynn presets) or the path of a .toml preset."),
    profile: str = typer.Option("quick", "--profile", help="paper (the papers' settings), cpu (the reproduction "
                                "on 2 cores, docs/reproduction.md) or quick (minutes)."),
    out: Path = typer.Option(..., "--out", help="Run directory; re-running resumes it."),
    seed: int = typer.Option(0, "--seed"),
    workers: int = typer.Option(1, "--workers", help="Local worker processes (1: in this process)."),
    model: str = typer.Option(None, "--model", help="Replace the preset's network: a name or pkg.module:factory."),
    dataset: str = typer.Option(None, "--dataset", help="Replace its data: a name, a FILE.npz or pkg.module:function."),
    noise: str = typer.Option(None, "--noise", help="Replace its noise: additive, multiplicative or "
                              "pkg.module:Class (a noisynn.NoiseModel)."),
    noise_param: list[str] = typer.Option(None, "--noise-param", help="KEY=VALUE: a fixed parameter of the noise "
                                          "class (repeatable)."),
    sweep_param: str = typer.Option(None, "--sweep-param", help="The noise parameter sigma_train and sigma_val set."),
    data_dir: str = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    executor: str = typer.Option("local", "--executor", help="local (this machine; --workers) or ray (a Ray "
                                 "cluster, or a Ray instance started here: docs/cluster.md)."),
    address: str = typer.Option(None, "--address", help="Ray: auto or HOST:PORT of the head node (default: start "
                                "Ray on this machine)."),
    cpus_per_task: float = typer.Option(None, "--cpus-per-task", help="Ray: CPUs (and torch threads) per task "
                                        "(default 1)."),
    gpus_per_task: float = typer.Option(None, "--gpus-per-task", help="Ray: GPUs per task; a fraction shares one "
                                        "(0.25: four tasks per GPU)."),
    storage: str = typer.Option(None, "--storage", help="Ray: a folder every machine sees at the same path; "
                                "checkpoints go there instead of through Ray's object store."),
) -> None:
    """Train one model per sigma_train and evaluate the whole (sigma_train, sigma_val) grid.

    A preset of your own may name your model (pkg.module:factory), data (FILE.npz,
    pkg.module:function) and noise (pkg.module:Class, [noise_params]); or override a preset's
    with --model, --dataset, --noise.
    """
    options = {"address": address, "cpus_per_task": cpus_per_task, "gpus_per_task": gpus_per_task, "storage": storage}
    result = _sweep(preset, profile, out, seed, data_dir, device, workers, as_json,
                    (model, dataset, noise, noise_param, sweep_param),
                    dict(options, executor=executor) if executor != "local" or any(
                        v is not None for v in options.values()) else None)
    if as_json:
        emit_json(result)
    else:
        _print_grid(out)


@user_errors
def presets_command(as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """List the shipped experiment presets and their profiles."""
    from noisynn.engine.presets import list_presets

    rows = list_presets()
    if as_json:
        emit_json(rows)
        return
    table = Table(title="noisynn presets")
    for col in ("name", "profiles", "experiment"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], ", ".join(r["profiles"]), r["title"])
    Console().print(table)


def _store(run_dir: Path):
    from noisynn.engine.rundir import RunDir
    from noisynn.engine.store import ResultStore

    # reading writes nothing: a read-only run directory works
    return ResultStore(RunDir(run_dir).existing_store(), readonly=True)


def _print_grid(run_dir: Path) -> None:
    with _store(run_dir) as store:
        points = store.points(kind="noisy")
        votes = store.points(kind="vote")
        chips = store.chip_points()
    # a pipe or a log file gets the full grid, not one cut to 80 columns
    console = Console() if sys.stdout.isatty() else Console(width=200)
    for experiment in sorted({p["experiment"] for p in points}):
        rows = [p for p in points if p["experiment"] == experiment]
        sigma_val = sorted({p["sigma_val"] for p in rows})
        table = Table(title=f"{experiment}: accuracy % ± standard error (rows σ_train, columns σ_val)")
        table.add_column("σ_train", justify="right")
        for s in sigma_val:
            table.add_column(f"{s:g}", justify="right")
        for st in sorted({p["sigma_train"] for p in rows}):
            cells = {p["sigma_val"]: p for p in rows if p["sigma_train"] == st}
            table.add_row(f"{st:g}", *[
                f"{100 * cells[s]['accuracy']:.2f}±{100 * cells[s]['stderr']:.2f}" if s in cells else "…"
                for s in sigma_val])
        console.print(table)
    if votes:
        kmax = max(p["votes"] for p in votes)
        table = Table(title=f"voting: accuracy % with K = 1 and K = {kmax} votes")
        for col in ("experiment", "σ_train", "σ_val", "K=1", f"K={kmax}"):
            table.add_column(col, justify="right")
        pairs = sorted({(p["experiment"], p["sigma_train"], p["sigma_val"]) for p in votes})
        for e, st, sv in pairs:
            byk = {p["votes"]: p for p in votes if (p["experiment"], p["sigma_train"], p["sigma_val"]) == (e, st, sv)}
            table.add_row(e, f"{st:g}", f"{sv:g}", *[f"{100 * byk[k]['accuracy']:.2f}" if k in byk else "…"
                                                      for k in (1, kmax)])
        console.print(table)
    if chips:
        _print_chips(console, chips)


def _duration(seconds: float) -> str:
    for unit, size in (("y", 31_536_000), ("mo", 2_592_000), ("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _print_chips(console: Console, chips: list[dict]) -> None:
    """Hardware points (issue 17): accuracy over chips x reads at each time after programming,
    without / with drift compensation, then voting over K reads of a chip."""
    reads = [r for r in chips if not r["kind"].startswith("chips-vote")]
    models = sorted({(r["experiment"], r["noise"], r["sigma_train"]) for r in chips})
    times = sorted({r["t"] for r in reads if r["t"] is not None})
    if reads:
        table = Table(title="chips: accuracy % (mean over chips x reads) ± chip-to-chip spread, "
                            "without / with drift compensation, by time after programming")
        for col in ("experiment", "trained with", "σ_train", "compensation", *[_duration(t) for t in times]):
            table.add_column(col, justify="right")
        for e, noise, st in models:
            for comp in sorted({r["compensation"] for r in reads}, key=lambda c: (c is not None, c)):
                cells = {r["t"]: r for r in reads
                         if (r["experiment"], r["noise"], r["sigma_train"], r["compensation"]) == (e, noise, st, comp)}
                if cells:
                    table.add_row(e, noise, f"{st:g}", {None: "-", False: "no", True: "yes"}[comp], *[
                        f"{100 * cells[t]['accuracy']:.2f}±{100 * cells[t]['chip_spread']:.2f}" if t in cells else "…"
                        for t in times])
        console.print(table)
    voted = [r for r in chips if r["kind"].startswith("chips-vote")]
    if voted:
        kmax = max(r["n_reads"] for r in voted)
        table = Table(title=f"voting on a chip: accuracy % with K = 1 and K = {kmax} reads (mean over chips)")
        for col in ("experiment", "trained with", "σ_train", "t", "K=1", f"K={kmax}"):
            table.add_column(col, justify="right")
        for e, noise, st in models:
            byk = {r["n_reads"]: r for r in voted if (r["experiment"], r["noise"], r["sigma_train"]) == (e, noise, st)}
            if byk:
                t = next(iter(byk.values()))["t"]
                table.add_row(e, noise, f"{st:g}", "-" if t is None else _duration(t),
                              *[f"{100 * byk[k]['accuracy']:.2f}" if k in byk else "…" for k in (1, kmax)])
        console.print(table)


@user_errors
def results_command(
    run_dir: Path = typer.Argument(..., help="A sweep's --out directory."),
    as_csv: Path = typer.Option(None, "--csv", help="Also write every point to this CSV file ('-' for stdout)."),
    as_json: bool = typer.Option(False, "--json", help="Print every point as JSON."),
) -> None:
    """Print a sweep's grid (finished points so far) as a table; export it as CSV."""
    from noisynn.engine import validation as check

    if as_csv is not None:
        check.output_file(as_csv, "--csv")  # a missing folder is refused before anything is read or written
    with _store(run_dir) as store:
        points = store.points()
    if as_csv is not None:
        columns = ["experiment", "model", "dataset", "noise", "kind", "sigma_train", "sigma_val", "votes", "n_runs",
                   "seed", "accuracy", "stderr", "seconds", "checkpoint"]
        handle = sys.stdout if str(as_csv) == "-" else open(as_csv, "w", newline="")
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(points)
        if handle is not sys.stdout:
            handle.close()
        if str(as_csv) == "-":
            return
    if as_json:
        emit_json(points)
    else:
        _print_grid(run_dir)


@user_errors
def demo_command(
    out: Path = typer.Option(Path("noisynn-demo"), "--out", help="Run directory for the demo."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """The main job, offline: train an LSTM on the embedded 8x8 digits at a few sigma_train,
    evaluate a sigma_val grid, vote, and write the report."""
    _sweep("demo", "quick", out, seed, None, device, 1, False)
    _print_grid(out)
    from noisynn.report import write_report

    html = write_report(out)
    typer.echo(f"report: {html}")


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_command)
    app.command("presets")(presets_command)
    app.command("results")(results_command)
    app.command("demo")(demo_command)
