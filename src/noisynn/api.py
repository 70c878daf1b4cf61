"""The Python API for a user's own model, data and noise: :func:`evaluate`, :func:`vote`, :func:`sweep`.

Each returns a :class:`Table` and, given ``out=DIR``, writes the same ``DIR/results.sqlite``
as the command-line tool (a re-run on the same directory reads back every finished point
instead of measuring it again)::

    import noisynn

    table = noisynn.evaluate(my_model, (x_test, y_test), noise="additive", sigmas="0:1:0.1", runs=20)
    table = noisynn.evaluate(my_model, test_loader, noise=MyNoise(width=0.1), sigmas=[0, 0.1, 0.2])
    table = noisynn.sweep("mypkg.nets:build", "data.npz", sigma_train="0,0.5", sigma_val="0:1:0.25", out="runs/a")
    print(table); table.to_csv("grid.csv")

``model`` is a ``torch.nn.Module`` (one without noise sites is converted with
:func:`noisynn.convert`, with a warning), a checkpoint path, a registry name,
``pkg.module:factory`` or a callable that builds the model. ``data`` is an ``.npz`` path, a
built-in data set name, ``pkg.module:function``, ``(x, y)`` tensors, a torch ``Dataset`` or
``DataLoader`` (evaluation), or ``(train, test)`` of those / a mapping with ``x_train,
y_train, x_test, y_test`` (training). ``noise`` is ``"additive"``, ``"multiplicative"``,
``"pkg.module:Class"`` (with ``noise_params``) or any :class:`noisynn.NoiseModel`, e.g. a
:class:`~noisynn.PerSite`; ``sigmas`` are values of its swept parameter (``sigma``, or the
one parameter of a model without ``sigma``, or ``sweep_param``).
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from noisynn.engine import plugins
from noisynn.engine.checkpoint import weights_sha256
from noisynn.engine.evaluation import evaluate_point, mean_stderr, parse_sigmas, vote_curve
from noisynn.engine.rundir import CHECKPOINT_SUFFIX, RunDir
from noisynn.engine.store import Point, PointKey, ResultStore, StoreError, measurement
from noisynn.errors import NoisynnError

__all__ = ["Table", "evaluate", "vote", "sweep"]

_COLUMNS = ["experiment", "model", "dataset", "noise", "kind", "sigma_train", "sigma_val", "votes", "n_runs",
            "accuracy", "stderr", "seconds", "checkpoint"]


@dataclass
class Table:
    """Measured points: ``rows`` (dicts with the store's columns), printable, exportable.

    Attributes:
        rows: one dict per point (``sigma_train, sigma_val, votes, accuracy, stderr, n_runs, ...``).
        title: what was measured.
        store: the ``results.sqlite`` written, if any.
    """

    rows: list[dict]
    title: str = ""
    store: Path | None = None
    columns: list[str] = field(default_factory=lambda: list(_COLUMNS))

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]

    def column(self, name: str) -> list:
        """The values of one column, in row order."""
        return [r.get(name) for r in self.rows]

    def to_csv(self, path: str | Path | None = None) -> str:
        """The rows as CSV text (also written to ``path`` when given)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        if path is not None:
            Path(path).write_text(buffer.getvalue())
        return buffer.getvalue()

    def to_pandas(self):
        """A ``pandas.DataFrame`` of the rows (pandas is not a dependency of noisynn)."""
        try:
            import pandas as pd  # type: ignore[import-untyped]
        except ImportError:
            raise NoisynnError("to_pandas() needs pandas: pip install pandas (or use .rows / .to_csv())") from None
        return pd.DataFrame(self.rows, columns=[c for c in self.columns if any(c in r for r in self.rows)])

    def __str__(self) -> str:
        shown = [c for c in ("sigma_train", "sigma_val", "votes", "accuracy", "stderr", "n_runs") if
                 any(c in r for r in self.rows)]
        cells = [[_fmt(c, r.get(c)) for c in shown] for r in self.rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(shown)]
        lines = [self.title] if self.title else []
        lines.append("  ".join(c.rjust(w) for c, w in zip(shown, widths, strict=True)))
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
        return "\n".join(lines)

    __repr__ = __str__


def _fmt(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column in ("accuracy", "stderr"):
        return f"{100 * value:.2f}%"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# -- what is evaluated ----------------------------------------------------------------
@dataclass
class _Subject:
    model: nn.Module
    test: Any
    label: str
    dataset: str
    sigma_train: float
    noise: Any  # the training noise family, if known
    sha256: str


def _is_checkpoint(model: Any) -> bool:
    return isinstance(model, (str, Path)) and (str(model).endswith(CHECKPOINT_SUFFIX) or Path(model).is_file())


def _subject(model, data, *, factory, device, limit, seed, sigma_train, data_dir) -> _Subject:
    from noisynn.engine.training import load_data, load_for_evaluation, load_trained, resolve_device

    dev = resolve_device(device)
    if _is_checkpoint(model):
        if data is None:
            net, test, meta = load_for_evaluation(model, data_dir=data_dir, device=dev, limit=limit, factory=factory)
            ref = meta.dataset
        else:
            net, meta = load_trained(model, device=dev, factory=factory)
            ref = plugins.data_reference(data)
            test = load_data(meta.model, ref, "test", data_dir=data_dir, device=dev, limit=limit)
        return _Subject(net, test, plugins.model_label(meta.model), plugins.data_label(ref),
                        float(meta.sigma_train) if sigma_train is None else float(sigma_train),
                        plugins.noise_of(meta), meta.sha256)
    if data is None:
        raise NoisynnError("give the data to evaluate on (an .npz, a data set name, (x, y) tensors, a torch "
                           "Dataset or DataLoader), or a checkpoint that names its own")
    ref = plugins.data_reference(data)
    if isinstance(model, nn.Module):
        from noisynn.engine.training import check_finite

        check_finite(model.state_dict(), f"the model given ({type(model).__name__})")
        net = plugins.ensure_noisy(model).to(dev)
        label = type(model).__name__
        test = load_data("", ref, "test", device=dev, limit=limit)
    else:
        model_ref = plugins.model_reference(factory or model)
        test = load_data(model_ref, ref, "test", device=dev, limit=limit)
        torch.manual_seed(seed)
        net = plugins.resolve_model(model_ref, tuple(test.x.shape[1:])).to(dev)
        label = plugins.model_label(model_ref)
    return _Subject(net.eval(), test, label, plugins.data_label(ref), float(sigma_train or 0.0), None,
                    weights_sha256(net.state_dict()))


def _noise(noise, params, param, subject: _Subject) -> plugins.NoiseFamily:
    if noise is None:
        return subject.noise if subject.noise is not None and not params and not param else (
            plugins.resolve_noise("additive", params, param))
    return plugins.resolve_noise(noise, params, param)


def _open(out, experiment: str, family: plugins.NoiseFamily) -> ResultStore | None:
    if out is None:
        return None
    store = ResultStore(RunDir(Path(out)).store)
    try:
        store.claim(experiment=experiment)
        if not family.builtin:
            store.claim(**{f"noise:{family.label}": json.dumps(family.config(), sort_keys=True)})
    except NoisynnError:
        store.close()
        raise
    return store


def _stored(store: ResultStore, key: PointKey) -> dict:
    """The stored row of a point the store has (``has_point`` said so)."""
    k = key.normalised()
    for row in store.points(kind=k.kind, experiment=k.experiment):
        if (row["model"], row["dataset"], row["noise"], row["sigma_train"], row["sigma_val"], row["votes"],
                row["seed"]) == (k.model, k.dataset, k.noise, k.sigma_train, k.sigma_val, k.votes, k.seed):
            return row
    raise StoreError(f"{store.path} has no row for {k} although it has the point: the file changed meanwhile")


def _warn_stale(message: str) -> None:
    import warnings

    warnings.warn(message, stacklevel=3)


def _row(key: PointKey, n_runs: int, accuracy: float, stderr: float, seconds: float, sha: str) -> dict:
    k = key.normalised()
    return {"experiment": k.experiment, "model": k.model, "dataset": k.dataset, "noise": k.noise, "kind": k.kind,
            "sigma_train": k.sigma_train, "sigma_val": k.sigma_val, "votes": k.votes, "seed": k.seed,
            "n_runs": n_runs, "accuracy": accuracy, "stderr": stderr, "seconds": seconds, "checkpoint": sha}


def evaluate(
    model: nn.Module | str | Path | Callable[..., nn.Module],
    data: Any = None,
    *,
    noise: str | Any = None,
    sigmas: str | float | Sequence[float] = "0:1:0.1",
    runs: int | str = 40,
    noise_params: dict | None = None,
    sweep_param: str | None = None,
    seed: int = 0,
    target: float = 0.0005,
    limit: int | None = None,
    batch_size: int = 1000,
    sigma_train: float | None = None,
    factory: Callable[..., nn.Module] | None = None,
    out: str | Path | None = None,
    experiment: str = "evaluate",
    data_dir: str | None = None,
    device: str = "auto",
) -> Table:
    """Accuracy under noisy inference at each of ``sigmas``: the mean over ``runs`` noisy passes, with its stderr.

    Args:
        model, data: see the module doc (``data`` may be left out for a checkpoint: its own test split).
        noise: the inference noise (default: a checkpoint's training noise, else additive).
        sigmas: values of the swept parameter: ``"0:1:0.1"``, ``"0,0.5"``, a number or a list.
        runs: noisy passes over the test set per point, or ``"auto"`` (until the 95% half-width < ``target``).
        noise_params, sweep_param: fixed parameters of a noise class given by name; the parameter swept.
        seed: the noise streams are seeded by (seed, weights, sigma, run group): the CLI's numbers.
        limit: the first N test samples only.
        sigma_train: the label of the model's training noise in the table (a checkpoint's own by default).
        factory: the callable that builds a checkpoint's model when it was a lambda or local function.
        out: a directory: points go to ``out/results.sqlite``; finished ones are read back, not re-measured.

    Returns:
        A :class:`Table`, one row per sigma.
    """
    sv = parse_sigmas(sigmas)
    subject = _subject(model, data, factory=factory, device=device, limit=limit, seed=seed,
                       sigma_train=sigma_train, data_dir=data_dir)
    family = _noise(noise, noise_params, sweep_param, subject)
    store = _open(out, experiment, family)
    rows = []
    how = measurement(subject.test, runs=runs, target=target if runs == "auto" else None, limit=limit,
                      noise=family.config()) if store is not None else ""
    try:
        for s in sv:
            key = PointKey(experiment, subject.label, subject.dataset, family.label, subject.sigma_train, s,
                           votes=1, kind="noisy", seed=seed)
            if store is not None and store.has_point(key, subject.sha256, how, on_stale=_warn_stale):
                rows.append(_stored(store, key))
                continue
            r = evaluate_point(subject.model, subject.test, family, s, runs=runs, seed=seed, stream=(subject.sha256,),
                               batch_size=batch_size, target=target)
            if store is not None:
                store.add_point(Point(key, r.n_runs, r.accuracy, r.stderr, r.seconds, subject.sha256, r.accuracies,
                                      how))
            rows.append(_row(key, r.n_runs, r.accuracy, r.stderr, r.seconds, subject.sha256))
    finally:
        if store is not None:
            store.close()
    return Table(rows, f"{subject.label} on {subject.dataset}, {family.label} noise: accuracy over {runs} runs",
                 RunDir(Path(out)).store if out is not None else None)


def vote(
    model: nn.Module | str | Path | Callable[..., nn.Module],
    data: Any = None,
    *,
    noise: str | Any = None,
    sigmas: str | float | Sequence[float] = "0.6,0.8,1.0",
    votes: int = 20,
    trials: int = 1,
    noise_params: dict | None = None,
    sweep_param: str | None = None,
    seed: int = 0,
    limit: int | None = None,
    batch_size: int = 500,
    sigma_train: float | None = None,
    factory: Callable[..., nn.Module] | None = None,
    out: str | Path | None = None,
    experiment: str = "evaluate",
    data_dir: str | None = None,
    device: str = "auto",
) -> Table:
    """Accuracy of the mode of K noisy inferences, for every K = 1..``votes`` at each sigma (paper 2, fig. 11).

    Arguments as :func:`evaluate`; ``trials`` independent voting trials give the stderr.

    Returns:
        A :class:`Table`, one row per (sigma, K), ``kind = "vote"``.
    """
    if not isinstance(votes, int) or votes < 1:
        raise NoisynnError(f"votes must be an integer >= 1, got {votes!r}")
    sv = parse_sigmas(sigmas)
    subject = _subject(model, data, factory=factory, device=device, limit=limit, seed=seed,
                       sigma_train=sigma_train, data_dir=data_dir)
    family = _noise(noise, noise_params, sweep_param, subject)
    store = _open(out, experiment, family)
    rows = []
    how = measurement(subject.test, votes=votes, trials=trials, limit=limit, noise=family.config()) \
        if store is not None else ""
    try:
        for s in sv:
            keys = [PointKey(experiment, subject.label, subject.dataset, family.label, subject.sigma_train, s,
                             votes=k, kind="vote", seed=seed) for k in range(1, votes + 1)]
            found = ([store.has_point(k, subject.sha256, how, on_stale=_warn_stale) for k in keys]
                     if store is not None else [])
            if store is not None and all(found):  # each point checked (a stale one is said so)
                rows += [_stored(store, k) for k in keys]
                continue
            acc, seconds = vote_curve(subject.model, subject.test, family, s, votes, trials=trials, seed=seed,
                                      stream=(subject.sha256,), batch_size=batch_size)
            points = []
            for k, key in enumerate(keys):
                runs = tuple(acc[:, k].tolist())
                mean, se = mean_stderr(runs)
                points.append(Point(key, len(runs), mean, se, seconds / votes, subject.sha256, runs, how))
                rows.append(_row(key, len(runs), mean, se, seconds / votes, subject.sha256))
            if store is not None:
                store.replace_points(points)
    finally:
        if store is not None:
            store.close()
    return Table(rows, f"voting: {subject.label} on {subject.dataset}, {family.label} noise",
                 RunDir(Path(out)).store if out is not None else None)


def sweep(
    model: str | Callable[..., nn.Module],
    data: Any,
    *,
    noise: str | Any = "additive",
    sigma_train: str | float | Sequence[float] = "0,0.5,1",
    sigma_val: str | float | Sequence[float] = "0:1:0.25",
    runs: int | str = 10,
    epochs: int = 5,
    batch_size: int = 32,
    optimizer: str = "adam",
    lr: float = 1e-3,
    votes: int = 0,
    vote_sigma_val: str | float | Sequence[float] | None = None,
    vote_trials: int = 1,
    noise_params: dict | None = None,
    sweep_param: str | None = None,
    model_options: dict | None = None,
    data_options: dict | None = None,
    train_limit: int | None = None,
    eval_limit: int | None = None,
    target: float = 0.0005,
    seed: int = 0,
    out: str | Path | None = None,
    experiment: str = "sweep",
    data_dir: str | None = None,
    device: str = "auto",
    workers: int = 1,
    executor: Any = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Table:
    """Train one model per ``sigma_train`` (Deep Noise Injection), evaluate every (sigma_train, sigma_val) point.

    What ``noisynn sweep`` does for a preset: resumable checkpoints in ``out/models/``, points
    in ``out/results.sqlite`` (a re-run skips every finished epoch and point), every random
    stream seeded by its coordinates.

    Args:
        model: a registry name, ``pkg.module:factory`` or a callable building the model (a
            ``torch.nn.Module`` cannot be re-initialised per sigma_train: wrap it in a factory).
        data: training and test data (see the module doc).
        noise, noise_params, sweep_param: the noise family; sigma_train and sigma_val are
            values of its swept parameter.
        epochs, batch_size, optimizer, lr, train_limit: training; runs, target, eval_limit:
            evaluation; votes, vote_sigma_val, vote_trials: voting (0: none).
        model_options, data_options: keyword arguments of the factory / data function.
        out: the run directory (default: a temporary one, deleted afterwards).
        workers: local processes (needs importable model, data and noise).
        executor: where the tasks run: None (this process, or ``workers`` processes),
            ``"ray"`` (a Ray instance started on this machine: the code path of a cluster),
            or an executor object, e.g. ``noisynn.engine.ray_executor.RayExecutor(address="auto",
            cpus_per_task=2, gpus_per_task=0.25)`` (the executor interface: ``slots``,
            ``submit(task) -> Future``, ``close()``; see :mod:`noisynn.engine.sweep`). Model,
            data and noise must be importable by the workers.

    Returns:
        A :class:`Table` of every point (``kind`` ``noisy`` and ``vote``).
    """
    from noisynn.engine.presets import Plan, TrainSettings
    from noisynn.engine.sweep import make_executor, run_sweep

    family = plugins.resolve_noise(noise, noise_params, sweep_param)
    model_ref = plugins.model_reference(model)
    plugins.check_model_reference(model_ref)
    data_ref = plugins.data_reference(data)
    train: dict = {"epochs": epochs, "batch_size": batch_size, "optimizer": optimizer, "lr": lr,
                   "train_limit": train_limit, "data_options": dict(data_options or {}),
                   "model_options": dict(model_options or {}), "noise_params": family.params,
                   "sweep_param": family.param}
    sv = tuple(parse_sigmas(sigma_val))
    vsv = tuple(parse_sigmas(vote_sigma_val)) if vote_sigma_val is not None else (sv if votes else ())
    plan = Plan(name=experiment, title=f"{plugins.model_label(model_ref)} on {plugins.data_label(data_ref)}",
                profile="api", model=model_ref, dataset=data_ref, noise=family.kind,
                sigma_train=tuple(parse_sigmas(sigma_train)), sigma_val=sv, train=TrainSettings.from_table(train),
                runs=runs, target=target, votes=int(votes), vote_sigma_val=vsv, vote_trials=vote_trials,
                eval_limit=eval_limit)
    plan.train_spec(plan.sigma_train[0], seed)  # validates the settings before any work
    runner = make_executor(executor, workers=workers)
    with tempfile.TemporaryDirectory(prefix="noisynn-sweep-") as tmp:
        run_dir = Path(out) if out is not None else Path(tmp)
        try:
            run_sweep(plan, run_dir, seed=seed, data_dir=data_dir, device=device, executor=runner,
                      progress=progress, log=log or (lambda _m: None))
        finally:
            runner.close()
        with ResultStore(RunDir(run_dir).store) as store:
            rows = store.points(experiment=experiment)
    return Table(rows, f"{plan.title}, {family.label} noise: accuracy (rows sigma_train, columns sigma_val)",
                 RunDir(Path(out)).store if out is not None else None)
