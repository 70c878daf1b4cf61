"""``noisynn train``, ``evaluate`` and ``vote``: one model at a time."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from noisynn.cli.common import DATA_DIR_HELP, DEVICE_HELP, emit_json, progress_enabled, user_errors
from noisynn.errors import NoisynnError

if TYPE_CHECKING:
    from noisynn.engine.checkpoint_meta import CheckpointMeta

NOISE_HELP = ("additive, multiplicative, or pkg.module:Class (any noisynn.NoiseModel; its parameters with "
              "--noise-param)")
NOISE_PARAM_HELP = "KEY=VALUE: a fixed parameter of a --noise class (repeatable; VALUE read as JSON if it can be)."
SWEEP_PARAM_HELP = ("The noise parameter --sigma sets (default: sigma, or the class's only other required "
                    "parameter).")


@user_errors
def train_command(
    model: str = typer.Argument(..., help="Network name (noisynn models) or pkg.module:factory (your own; a "
                                "plain torch model is converted)."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Data set name, a FILE.npz (x_train, y_train, "
                                "x_test, y_test) or pkg.module:function (default: the one the papers use)."),
    noise: str = typer.Option("additive", "--noise", help=NOISE_HELP),
    noise_param: list[str] = typer.Option(None, "--noise-param", help=NOISE_PARAM_HELP),
    sweep_param: str = typer.Option(None, "--sweep-param", help=SWEEP_PARAM_HELP),
    model_option: list[str] = typer.Option(None, "--model-option", help="KEY=VALUE: an argument of the model "
                                           "factory (repeatable)."),
    sigma: float = typer.Option(0.0, "--sigma", help="sigma_train: noise injected at every site while training."),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoint, learning curve)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Mini-batch size (papers: 32)."),
    optimizer: str = typer.Option("adam", "--optimizer", help="adam (papers' CNN/LSTMs) or sgd (momentum; DenseNet)."),
    lr: float = typer.Option(1e-4, "--lr", help="Learning rate (papers: 1e-4 with Adam)."),
    momentum: float = typer.Option(0.9, "--momentum", help="SGD momentum."),
    weight_decay: float = typer.Option(0.0, "--weight-decay"),
    train_limit: int = typer.Option(None, "--train-limit", help="Use only the first N training samples."),
    augment: bool = typer.Option(False, "--augment", help="Random crop + flip (images; off in the papers)."),
    allow_partial: bool = typer.Option(False, "--allow-partial", help="Accept a partial data set (smoke runs)."),
    seed: int = typer.Option(0, "--seed"),
    curve_every: int = typer.Option(0, "--curve-every", help="Also record a learning-curve point every N "
                                    "mini-batches (clean, first 2,000 test samples; paper 2, fig. 3)."),
    data_dir: str = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Train MODEL with Deep Noise Injection; resumes from DIR's checkpoint if interrupted.

    Your own model, data and noise: noisynn train mypkg.nets:build --dataset data.npz
    --noise mypkg.noise:Drift --noise-param rate=0.1 --sigma 0.5 --out runs/mine
    """
    from noisynn.engine import plugins
    from noisynn.engine import validation as check
    from noisynn.engine.store import CurveRow, EpochRow, ResultStore
    from noisynn.engine.training import TrainSpec, train
    from noisynn.models import MODELS

    # everything is checked before the run directory is created or claimed
    plugins.check_model_reference(model)  # the one-line unknown-model / bad-factory error
    if dataset is None and model not in MODELS:
        raise NoisynnError(f"give --dataset for {model} (a data set name, a FILE.npz or pkg.module:function)")
    data_ref = check.dataset(plugins.data_reference(dataset or MODELS[model].dataset))
    check.sigma_option(sigma)
    check.integer(epochs, "--epochs")
    check.integer(batch_size, "--batch-size")
    check.number(lr, "--lr", low=0, low_open=True, fix=" (papers: 1e-4 with Adam)")
    check.number(momentum, "--momentum", low=0)
    check.number(weight_decay, "--weight-decay", low=0)
    check.limit(train_limit, "--train-limit")
    check.integer(curve_every, "--curve-every", low=0, fix=" (0: one point per epoch)")
    check.device(device)
    options = plugins.parse_params(model_option, "--model-option")
    plugins.check_model_options(model, options, noise)
    check.out_dir(out)
    family = plugins.resolve_noise(noise, plugins.parse_params(noise_param), sweep_param)
    spec = TrainSpec(model=model, dataset=data_ref, noise=noise,
                     sigma_train=sigma, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                     momentum=momentum, weight_decay=weight_decay, seed=seed, train_limit=train_limit,
                     augment=augment, allow_partial=allow_partial, noise_params=family.params,
                     sweep_param=family.param, model_options=options)
    from noisynn.engine.rundir import RunDir
    from noisynn.engine.rundir_lock import RunDirLock

    run_dir = RunDir(out)
    checkpoint = run_dir.model_checkpoint(spec.key)

    lock = RunDirLock(out).acquire()  # one writer per --out (a second one is refused in one line)
    if lock.stale is not None and not as_json:
        typer.echo(f"note: took over the stale lock of pid {lock.stale.get('pid')} in {out}", err=True)
    try:  # the lock is released (and the store closed) on every way out, an error included
        store = ResultStore(run_dir.store)
        try:
            store.claim(experiment="train", model=model, dataset=spec.dataset)
            noise = family.label

            def report(m: dict) -> None:
                store.add_epoch(EpochRow("train", model, noise, spec.sigma_train, seed, m["epoch"], m["batches"],
                                         m["train_loss"], m["train_accuracy"], m["val_loss"], m["val_accuracy"],
                                         m["seconds"], m["checkpoint"]))
                if not as_json:
                    typer.echo(f"epoch {m['epoch']}/{epochs}: train loss {m['train_loss']:.4f}, clean test accuracy "
                               f"{100 * m['val_accuracy']:.2f}% ({m['seconds']:.1f} s)")

            def curve(m: dict) -> None:
                store.add_curve(CurveRow("train", model, noise, spec.sigma_train, seed, m["batches"], m["epoch"],
                                         m["val_loss"], m["val_accuracy"]))

            result = train(spec, checkpoint, data_dir=data_dir, device=device, on_epoch=report,
                           progress=progress_enabled(as_json), curve_every=curve_every, on_curve=curve)
        finally:
            store.close()
    finally:
        lock.release()  # (also released by the kernel if this process dies)
    if as_json:
        emit_json({"checkpoint": str(result.checkpoint), "sha256": result.sha256, "epochs_run": result.epochs_run,
                   "metrics": result.metrics})
    else:
        typer.echo(f"checkpoint: {result.checkpoint} ({result.epochs_run} new epochs)")


def _sigmas(text: str) -> list[float]:
    from noisynn.engine.evaluation import parse_range

    return parse_range(text, "--sigma")


def _check_inputs(checkpoint: Path, limit: int | None, dataset: str | None, device: str) -> None:
    """The checks evaluate and vote share, before any work: the limit, the device, the checkpoint, the data."""
    from noisynn.engine import plugins
    from noisynn.engine import validation as check

    check.limit(limit, "--limit")
    check.device(device)
    check.checkpoint_file(checkpoint)
    if dataset is not None:
        check.dataset(plugins.data_reference(dataset))


def _load(checkpoint: Path, data_dir: str | None, device: str, limit: int | None, dataset: str | None = None):
    from noisynn.engine import plugins
    from noisynn.engine.training import load_data, load_for_evaluation, load_trained, resolve_device

    if dataset is None:
        return load_for_evaluation(checkpoint, data_dir=data_dir, device=device, limit=limit)
    dev = resolve_device(device)
    model, meta = load_trained(checkpoint, device=dev)
    return model, load_data(meta.model, plugins.data_reference(dataset), "test", data_dir=data_dir, device=dev,
                            limit=limit), meta


def _noise(meta: CheckpointMeta, noise: str | None, params: list[str] | None, sweep_param: str | None):
    """The inference noise family: --noise (with its parameters), else the training noise."""
    from noisynn.engine import plugins

    if noise is None and not params and sweep_param is None:
        return plugins.noise_of(meta)
    return plugins.resolve_noise(noise or meta.noise, plugins.parse_params(params), sweep_param)


@user_errors
def evaluate_command(
    checkpoint: Path = typer.Argument(..., help="A .safetensors checkpoint written by noisynn train."),
    sigma: str = typer.Option("0:1:0.1", "--sigma", help="sigma_val values: start:stop:step or a,b,c."),
    runs: str = typer.Option("40", "--runs", help="Noisy passes over the test set per point, or 'auto'."),
    target: float = typer.Option(0.05, "--target", help="With --runs auto: 95% CI half-width, percentage points."),
    noise: str = typer.Option(None, "--noise", help="Inference noise (default: the training noise): " + NOISE_HELP),
    noise_param: list[str] = typer.Option(None, "--noise-param", help=NOISE_PARAM_HELP),
    sweep_param: str = typer.Option(None, "--sweep-param", help=SWEEP_PARAM_HELP),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Test data (default: the checkpoint's): a name, "
                                "a FILE.npz or pkg.module:function."),
    seed: int = typer.Option(0, "--seed"),
    limit: int = typer.Option(None, "--limit", help="Evaluate on the first N test samples only."),
    data_dir: str = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Accuracy under noisy inference at each sigma_val: mean over runs, with standard error."""
    from noisynn.engine import validation as check
    from noisynn.engine.evaluation import evaluate_point

    sigmas, n_runs = _sigmas(sigma), check.runs(runs)
    check.evaluation_cost(n_runs, len(sigmas))
    check.number(target, "--target", low=0, low_open=True, high=100, high_open=True,
                 fix=" (percentage points, e.g. 0.05)")
    _check_inputs(checkpoint, limit, dataset, device)
    model, test, meta = _load(checkpoint, data_dir, device, limit, dataset)
    family = _noise(meta, noise, noise_param, sweep_param)
    kind = family.label
    rows = []
    for s in sigmas:
        r = evaluate_point(model, test, family, s, runs=n_runs, seed=seed, stream=(meta.sha256,),
                           target=target / 100)
        rows.append({"sigma_val": s, "accuracy": r.accuracy, "stderr": r.stderr, "n_runs": r.n_runs,
                     "seconds": r.seconds})
        if not as_json:
            typer.echo(f"sigma_val {s:.2f}: {100 * r.accuracy:.2f}% ± {100 * r.stderr:.2f} ({r.n_runs} runs, "
                       f"{r.seconds:.1f} s)", err=True)
    if as_json:
        emit_json({"checkpoint": str(checkpoint), "model": meta.model, "noise": kind,
                   "sigma_train": meta.sigma_train, "points": rows})
        return
    table = Table(title=f"{meta.model} sigma_train={meta.sigma_train:g}, {kind} noise, {test.name} test")
    for col in ("sigma_val", "accuracy %", "stderr", "runs", "seconds"):
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(f"{row['sigma_val']:.2f}", f"{100 * row['accuracy']:.2f}", f"{100 * row['stderr']:.2f}",
                      str(row["n_runs"]), f"{row['seconds']:.1f}")
    Console().print(table)


@user_errors
def vote_command(
    checkpoint: Path = typer.Argument(..., help="A .safetensors checkpoint written by noisynn train."),
    sigma: str = typer.Option("0.6,0.8,1.0", "--sigma", help="sigma_val values: start:stop:step or a,b,c."),
    votes: str = typer.Option("1:20", "--votes", help="K range, e.g. 1:20 (accuracy for every K up to the max)."),
    trials: int = typer.Option(1, "--trials", help="Independent voting trials per point (for a standard error)."),
    noise: str = typer.Option(None, "--noise", help="Inference noise (default: the training noise): " + NOISE_HELP),
    noise_param: list[str] = typer.Option(None, "--noise-param", help=NOISE_PARAM_HELP),
    sweep_param: str = typer.Option(None, "--sweep-param", help=SWEEP_PARAM_HELP),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Test data (default: the checkpoint's): a name, "
                                "a FILE.npz or pkg.module:function."),
    seed: int = typer.Option(0, "--seed"),
    limit: int = typer.Option(None, "--limit", help="Use the first N test samples only."),
    data_dir: str = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Accuracy of predicting by the mode of K noisy inferences, against K (paper 2, fig. 11)."""
    from noisynn.engine import validation as check
    from noisynn.engine.evaluation import mean_stderr, vote_curve

    lo, hi = check.votes_option(votes)
    check.integer(trials, "--trials", high=check.MAX_TRIALS)
    sigmas = _sigmas(sigma)
    check.vote_cost(hi, trials, len(sigmas))
    _check_inputs(checkpoint, limit, dataset, device)
    model, test, meta = _load(checkpoint, data_dir, device, limit, dataset)
    family = _noise(meta, noise, noise_param, sweep_param)
    kind = family.label
    rows = []
    for s in sigmas:
        acc, seconds = vote_curve(model, test, family, s, hi, trials=trials, seed=seed, stream=(meta.sha256,))
        for k in range(lo, hi + 1):
            mean, se = mean_stderr(acc[:, k - 1].tolist())
            rows.append({"sigma_val": s, "votes": k, "accuracy": mean, "stderr": se, "trials": trials})
    if as_json:
        emit_json({"checkpoint": str(checkpoint), "model": meta.model, "noise": kind,
                   "sigma_train": meta.sigma_train, "points": rows})
        return
    table = Table(title=f"voting: {meta.model} sigma_train={meta.sigma_train:g}, {kind} noise (accuracy %)")
    table.add_column("K", justify="right")
    for s in sigmas:
        table.add_column(f"σ_val {s:g}", justify="right")
    for k in range(lo, hi + 1):
        cells = [f"{100 * r['accuracy']:.2f}" for r in rows if r["votes"] == k]
        table.add_row(str(k), *cells)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("evaluate")(evaluate_command)
    app.command("vote")(vote_command)
