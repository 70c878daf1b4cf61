"""``noisynn attack``: black-box transfer (paper 2, sec. 4, table 11) and EOT white-box attacks."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from noisynn.cli.common import DATA_DIR_HELP, DEVICE_HELP, emit_json, user_errors
from noisynn.errors import NoisynnError

KIND_LABEL = {
    "adversarial-source": "white-box on NN_adv (clean)",
    "noisy": "natural samples",
    "adversarial": "transferred from NN_adv",
    "adversarial-eot": "white-box EOT on noisy NN_val",
}


@user_errors
def attack_command(
    source: Path = typer.Option(..., "--source", help="Checkpoint of NN_adv: the adversarial examples are made on it."),
    target: Path = typer.Option(..., "--target", help="Checkpoint of NN_val: evaluated under noisy inference."),
    sigma: str = typer.Option("0,0.1,0.2,0.3,0.4", "--sigma", help="sigma_val list or range (0:0.4:0.1)."),
    runs: int = typer.Option(20, "--runs", help="Noisy runs per sigma_val (paper 2: 20)."),
    noise: str = typer.Option("multiplicative", "--noise", help="Inference noise: multiplicative (paper) or additive."),
    limit: int = typer.Option(None, "--limit", help="Attack only the first N test samples."),
    eps: float = typer.Option(None, "--eps", help="L-inf radius in pixels on [0, 1] (default: paper 2, table 10)."),
    alpha: float = typer.Option(None, "--alpha", help="PGD step size (default: table 10)."),
    steps: int = typer.Option(None, "--steps", help="PGD iterations (default: table 10)."),
    restarts: int = typer.Option(None, "--restarts", help="Random restarts (default: table 10)."),
    eot: int = typer.Option(0, "--eot", help="K > 0: also attack the noisy NN_val white-box, K noisy passes per step."),
    eot_limit: int = typer.Option(None, "--eot-limit", help="Samples for the (costly) EOT attack (default: --limit)."),
    eot_restarts: int = typer.Option(None, "--eot-restarts", help="Restarts of the EOT attack (default: --restarts)."),
    out: Path = typer.Option(..., "--out", help="Directory: results.sqlite and cached adversarial examples."),
    seed: int = typer.Option(0, "--seed"),
    data_dir: str = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Transfer PGD examples from NN_adv to NN_val under noisy inference (and optionally EOT white-box)."""
    from noisynn.engine import validation as check
    from noisynn.engine.adversarial import run_transfer
    from noisynn.engine.evaluation import parse_range
    from noisynn.engine.rundir import RunDir
    from noisynn.engine.store import ResultStore

    # everything is checked before the out directory is created or claimed
    sigmas = parse_range(sigma, "--sigma")
    check.integer(runs, "--runs", high=check.MAX_RUNS)
    check.evaluation_cost(runs, len(sigmas))
    if noise not in ("additive", "multiplicative"):
        raise NoisynnError(f"--noise {noise}: use multiplicative (the paper) or additive")
    check.limit(limit, "--limit")
    check.limit(eot_limit, "--eot-limit")
    for option, value, rule in (("--eps", eps, "eps"), ("--alpha", alpha, "alpha"), ("--steps", steps, "steps"),
                                ("--restarts", restarts, "restarts"), ("--eot", eot, "eot"),
                                ("--eot-restarts", eot_restarts, "eot_restarts")):
        if value is not None:
            check.PGD_RULES[rule](value, option, NoisynnError)
    check.device(device)
    check.out_dir(out)
    check.checkpoint_file(source)
    check.checkpoint_file(target)
    settings = {k: v for k, v in (("eps", eps), ("alpha", alpha), ("steps", steps), ("restarts", restarts))
                if v is not None}
    eot_settings = {"restarts": eot_restarts} if eot_restarts is not None else {}
    with ResultStore(RunDir(out).store) as store:
        store.claim(experiment="attack", seed=str(seed))
    log = (lambda _m: None) if as_json else (lambda m: typer.echo(m, err=True))
    report = run_transfer(source, target, out, sigma_val=sigmas, runs=runs, limit=limit,
                          settings=settings, eot=eot, eot_settings=eot_settings, eot_limit=eot_limit,
                          noise_kind=noise, experiment="attack", seed=seed, data_dir=data_dir, device=device,
                          log=log)
    if as_json:
        emit_json({"run_dir": str(out), "seconds": report.seconds, "points": report.rows})
        return
    table = Table(title=f"adversarial accuracy (%), {noise} inference noise, mean +- stderr over runs")
    for col in ("attack / samples", "model", "sigma_val", "runs", "accuracy"):
        table.add_column(col, justify="left" if col in ("attack / samples", "model") else "right")
    for r in report.rows:
        acc = f"{100 * r['accuracy']:.2f}" + (f" +- {100 * r['stderr']:.2f}" if r["n_runs"] > 1 else "")
        table.add_row(KIND_LABEL.get(r["kind"], r["kind"]), r["model"], f"{r['sigma_val']:g}", str(r["n_runs"]), acc)
    Console().print(table)
    typer.echo(f"results: {RunDir(out).store} ({report.seconds:.0f} s)")


def register(app: typer.Typer) -> None:
    app.command("attack")(attack_command)
