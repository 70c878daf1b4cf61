"""Black-box transfer attacks against noisy inference (paper 2, sec. 4, table 11), plus EOT white-box.

Pipeline of :func:`run_transfer`:

1. adversarial examples are made once, with PGD (:mod:`noisynn.attacks`) on the clean
   source network NN_adv, for the first ``limit`` test samples (cached in
   ``DIR/adversarial/*.safetensors``, so a re-run does not attack again);
2. the target network NN_val, trained separately, classifies them under noisy inference
   at every ``sigma_val`` with ``runs`` independent noisy passes (batched as in
   :func:`noisynn.engine.evaluation.evaluate_point`): rows of kind ``adversarial``;
   its accuracy on the natural samples of the same subset is written too (kind
   ``noisy``), and the source's own (white-box) accuracy on its examples (kind
   ``adversarial-source``, sigma_val 0, model = the source model);
3. optionally (``eot = K > 0``) an *adaptive* white-box attacker: PGD run on the noisy
   target itself at each sigma_val with the gradient averaged over K noisy passes,
   then the same noisy evaluation: rows of kind ``adversarial-eot`` (at sigma_val 0 it is
   the plain white-box PGD). The papers do not report this; it shows how much of the
   gain of noise survives an attacker who knows about it.

All images are attacked in pixel space [0, 1] (CIFAR-10's per-channel normalisation is
undone for the attack and re-applied, see :mod:`noisynn.attacks`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from noisynn import data as datasets
from noisynn.attacks import CIFAR10_SETTINGS, MNIST_SETTINGS, PGD
from noisynn.engine.checkpoint_meta import CheckpointMeta
from noisynn.engine.evaluation import evaluate_point
from noisynn.engine.rundir import RunDir
from noisynn.engine.seeding import generator
from noisynn.engine.store import Point, PointKey, ResultStore, measurement, sigma_key
from noisynn.engine.training import load_data, load_trained, resolve_device
from noisynn.errors import NoisynnError
from noisynn.noise import check_sigma, clean, noise

__all__ = ["default_settings", "make_adversarial", "run_transfer", "TransferReport"]

KINDS = ("noisy", "adversarial", "adversarial-source", "adversarial-eot")


def default_settings(dataset: str) -> dict:
    """Paper 2, table 10: the PGD settings of ``dataset`` (MNIST's for ``digits`` too)."""
    return dict(CIFAR10_SETTINGS if dataset == "cifar10" else MNIST_SETTINGS)


def make_adversarial(model: nn.Module, ds: datasets.Dataset, settings: dict, *, generator_=None,
                     eot: int = 1, batch_size: int = 250) -> torch.Tensor:
    """PGD examples for the whole ``ds`` against ``model`` as it is (noise: the caller's context)."""
    attack = PGD(model, float(settings["eps"]), float(settings["alpha"]), int(settings["steps"]),
                 int(settings["restarts"]), eot, mean=ds.meta.get("mean"), std=ds.meta.get("std"),
                 generator=generator_)
    out = [attack(xb, yb) for xb, yb in datasets.batches(ds, batch_size, shuffle=False)]
    return torch.cat(out)


@dataclass
class TransferReport:
    """What :func:`run_transfer` measured (also in the store): one dict per point."""

    rows: list[dict]
    seconds: float


def _cached(path: Path, make: Callable[[], torch.Tensor], meta: dict) -> torch.Tensor:
    from safetensors.torch import load_file, save_file

    if path.exists():
        return load_file(str(path))["x"]
    x = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    from noisynn.engine.atomic import unique_tmp

    tmp = unique_tmp(path)  # two writers never share a temporary name
    save_file({"x": x.contiguous().cpu()}, str(tmp), metadata={"meta": json.dumps(meta, sort_keys=True)})
    tmp.replace(path)
    return x


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _test_set(meta: CheckpointMeta, data_dir, dev, limit: int | None) -> datasets.Dataset:
    """The target's test split (a partial CIFAR-10 copy's stands in from its training images)."""
    spec = meta.spec
    return load_data(meta.model, meta.dataset, "test", limit=limit, data_dir=data_dir, device=dev,
                     allow_partial=spec.get("allow_partial", False), data_options=spec.get("data_options") or {})


def run_transfer(
    source: str | Path,
    target: str | Path,
    out: str | Path,
    *,
    sigma_val: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4),
    runs: int = 20,
    limit: int | None = None,
    settings: dict | None = None,
    eot: int = 0,
    eot_settings: dict | None = None,
    eot_limit: int | None = None,
    noise_kind: str = "multiplicative",
    experiment: str = "attack",
    seed: int = 0,
    data_dir: str | None = None,
    device: str = "auto",
    log: Callable[[str], None] = lambda _m: None,
) -> TransferReport:
    """Transfer PGD examples from ``source`` (NN_adv) to ``target`` (NN_val) under noisy inference.

    Args:
        source, target: checkpoints (``noisynn train`` / a sweep's ``models/``), same data set.
        out: directory of the results store and the cached adversarial examples.
        sigma_val: inference noise levels of the target; ``runs`` noisy runs each.
        limit: attack only the first N test samples (None: all).
        settings: PGD ``eps, alpha, steps, restarts`` (default: paper 2, table 10).
        eot: K > 0: also the EOT white-box attack on the noisy target (K passes per step),
            with ``eot_settings`` (default: ``settings``) on the first ``eot_limit`` samples.
        noise_kind: the inference noise (the paper: multiplicative).

    Raises:
        NoisynnError: checkpoints of different data sets or input shapes, bad values.
    """
    t_start = time.perf_counter()
    dev = resolve_device(device)
    sigmas = [check_sigma(s) for s in sigma_val]
    if not sigmas:
        raise NoisynnError("no sigma_val given")
    if not isinstance(runs, int) or runs < 1:
        raise NoisynnError(f"runs must be >= 1, got {runs!r}")
    if eot < 0:
        raise NoisynnError(f"eot must be >= 0, got {eot}")
    src, smeta = load_trained(source, device=dev)
    tgt, tmeta = load_trained(target, device=dev)
    if smeta.dataset != tmeta.dataset or smeta.sample_shape != tmeta.sample_shape:
        raise NoisynnError(f"source ({smeta.model} on {smeta.dataset}) and target ({tmeta.model} on "
                           f"{tmeta.dataset}) do not read the same samples")
    test = _test_set(tmeta, data_dir, dev, limit)
    settings = {**default_settings(tmeta.dataset), **(settings or {})}
    eot_settings = {**settings, **(eot_settings or {})}
    run_dir = RunDir(Path(out))
    rows: list[dict] = []

    def key(kind: str, s: float, meta: CheckpointMeta) -> PointKey:
        return PointKey(experiment, meta.model, meta.dataset, noise_kind, meta.sigma_train, s,
                        votes=1, kind=kind, seed=seed)

    def measure(store: ResultStore, kind: str, s: float, model, ds, meta: CheckpointMeta, n_runs: int,
                stream: tuple) -> None:
        k = key(kind, s, meta)
        # the natural test data by its content; attacked samples by the tags of their making (source, settings, seed)
        how = measurement(ds if kind == "noisy" else None, runs=n_runs, stream=list(stream), noise=noise_kind,
                          samples=len(ds))
        if not store.has_point(k, meta.sha256, how, on_stale=log):
            r = evaluate_point(model, ds, noise_kind, s, runs=n_runs, seed=seed, stream=(meta.sha256, *stream))
            store.add_point(Point(k, r.n_runs, r.accuracy, r.stderr, r.seconds, meta.sha256, r.accuracies, how))
        row = next(p for p in store.points(kind=kind, experiment=experiment)
                   if p["model"] == meta.model and abs(p["sigma_val"] - sigma_key(s)) < 1e-12
                   and p["sigma_train"] == sigma_key(meta.sigma_train) and p["seed"] == seed)
        rows.append({k_: row[k_] for k_ in ("kind", "model", "sigma_train", "sigma_val", "n_runs", "accuracy",
                                             "stderr", "seconds")} | {"samples": len(ds)})

    with ResultStore(run_dir.store) as store:
        # 1. transfer examples, made once on the clean source
        tag = _digest(smeta.sha256, settings, len(test), seed)
        t0 = time.perf_counter()
        log(f"PGD on {smeta.model} ({settings}) for {len(test)} samples ...")
        with clean():
            x_adv = _cached(run_dir.adversarial_examples(tag),
                            lambda: make_adversarial(src, test, settings,
                                                     generator_=generator(seed, smeta.sha256, "transfer", device=dev)),
                            {"source": smeta.sha256, "settings": settings, "samples": len(test)}).to(dev)
        log(f"  adversarial examples ready ({time.perf_counter() - t0:.0f} s)")
        adv = dataclasses.replace(test, x=x_adv)
        measure(store, "adversarial-source", 0.0, src, adv, smeta, 1, ("source",))
        # 2. the target under noise: natural and transferred samples
        for s in sigmas:
            measure(store, "noisy", s, tgt, test, tmeta, runs, ("natural",))
            measure(store, "adversarial", s, tgt, adv, tmeta, runs, ("transfer", tag))
            log(f"  sigma_val {s:g}: done")
        # 3. adaptive white-box attacker on the noisy target
        if eot:
            sub = test if eot_limit is None or eot_limit >= len(test) else dataclasses.replace(
                test, x=test.x[:eot_limit], y=test.y[:eot_limit])
            tag_eot = _digest(tmeta.sha256, eot_settings, eot, len(sub), seed)
            for s in sigmas:
                k = key("adversarial-eot", s, tmeta)
                how = measurement(None, runs=runs, stream=["eot", tag_eot], noise=noise_kind, samples=len(sub))
                if store.has_point(k, tmeta.sha256, how, on_stale=log):
                    measure(store, "adversarial-eot", s, tgt, sub, tmeta, runs, ("eot", tag_eot))
                    continue
                t0 = time.perf_counter()
                gen = generator(seed, tmeta.sha256, "eot", float(s), device=dev)
                with noise(noise_kind, s, generator=gen):
                    x_eot = make_adversarial(tgt, sub, eot_settings, generator_=gen, eot=eot if s > 0 else 1)
                log(f"  EOT-PGD (K={eot}) on the target at sigma_val {s:g}: {time.perf_counter() - t0:.0f} s")
                measure(store, "adversarial-eot", s, tgt, dataclasses.replace(sub, x=x_eot), tmeta, runs,
                        ("eot", tag_eot))
    return TransferReport(rows, time.perf_counter() - t_start)
