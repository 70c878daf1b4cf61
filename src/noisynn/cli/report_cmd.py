"""``noisynn report``: the HTML report of a sweep (figures, CSV tables, papers' numbers)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from noisynn.cli.common import DATA_DIR_HELP, emit_json, user_errors
from noisynn.errors import NoisynnError


@user_errors
def report_command(
    run_dir: Path = typer.Argument(..., metavar="DIR", help="A sweep's --out directory (finished or still running)."),
    out: Path = typer.Option(None, "--out", help="Report folder (default: DIR/report)."),
    softmax_runs: int = typer.Option(10_000, "--softmax-runs",
                                     help="Noisy runs of one test input for the softmax figures (paper 2: 10,000; "
                                          "0 skips them)."),
    state_samples: int = typer.Option(300, "--state-samples", help="Test samples for the LSTM state distributions."),
    models: bool = typer.Option(True, "--models/--no-models",
                                help="Load the checkpoints for the weight, state and softmax figures."),
    data_dir: str = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    device: str = typer.Option("cpu", "--device", help="Where the checkpoints run: cpu, cuda or auto."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written (and the comparison) as JSON."),
) -> None:
    """Write DIR/report/report.html: accuracy curves and grid, learning curves, weights, LSTM states,
    softmax runs, voting, and the papers' published numbers next to the measured ones."""
    from noisynn.engine import validation as check
    from noisynn.engine.training import resolve_device
    from noisynn.report import build_report

    check.integer(softmax_runs, "--softmax-runs", low=0, high=check.MAX_SOFTMAX_RUNS, fix=" (0 skips them)")
    check.integer(state_samples, "--state-samples")
    check.device(device)
    if not run_dir.is_dir():
        raise NoisynnError(f"{run_dir} is not a directory: give the --out directory of a sweep")
    if out is not None:
        check.out_dir(out)
    if out is None and not os.access(run_dir, os.W_OK):
        raise NoisynnError(f"{run_dir} is read-only: give --out FOLDER for the report (the run is only read)")
    log = None if as_json else (lambda m: typer.echo(m, err=True))
    report = build_report(run_dir, out, data_dir=data_dir, device=str(resolve_device(device)),
                          softmax_runs=softmax_runs, state_samples=state_samples, model_figures=models, log=log)
    if as_json:
        emit_json(report.as_json())
        return
    covered = [r for r in report.comparison if r["measured"] is not None]
    typer.echo(f"{len(report.figures)} figures, {len(report.tables)} tables in {report.out}")
    if report.comparison:
        typer.echo(f"{len(covered)} of {len(report.comparison)} published cells covered by this run "
                   f"(profile {report.meta.get('profile', '?')})")
    for claim in report.claims:
        typer.echo(f"claim {claim['id']}: {claim['status']}")
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"report: {report.html}")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
