"""Deep Noise Injection training: one model, one sigma_train, resumable epoch by epoch."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from noisynn import data as datasets
from noisynn.engine import plugins
from noisynn.engine.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from noisynn.engine.checkpoint_meta import CheckpointMeta
from noisynn.engine.rundir import best_path, last_path  # early stopping's copies: named by the run directory
from noisynn.engine.seeding import generator
from noisynn.errors import CheckpointError, NoisynnError
from noisynn.layers import set_noise
from noisynn.models import MODELS
from noisynn.noise import check_sigma

__all__ = ["TrainSpec", "TrainResult", "train", "load_data", "build_for_data", "load_trained", "load_for_evaluation",
           "resolve_device", "split_holdout", "best_path", "last_path", "check_finite", "CheckpointMeta"]

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class TrainSpec:
    """Everything that defines a training run (and so its checkpoint).

    Attributes:
        model: registry name (``noisynn models``), ``pkg.module:factory`` or a ``local:``
            reference (see :mod:`noisynn.engine.plugins`).
        dataset: data set name (``digits``, ``mnist``, ``mnist-strokes``, ``cifar10``), the
            path of an ``.npz``, ``pkg.module:function`` or a ``python:`` reference.
        noise: ``"additive"``, ``"multiplicative"`` or ``pkg.module:Class`` (a ``NoiseModel``).
        sigma_train: the noise injected at every site during training (0: conventional):
            the value of the noise's swept parameter.
        epochs: passes over the training set.
        batch_size, optimizer, lr, momentum, weight_decay: the optimiser (``adam`` or
            ``sgd`` with momentum); the papers use Adam, batch 32, lr 1e-4 for the CNN and
            the LSTMs and SGD with momentum for the DenseNet.
        seed: seeds weight initialisation, batch order and training noise.
        train_limit: use only the first N training samples (quick profiles).
        augment: random crop + flip (images; off by default, as in paper 2).
        allow_partial: accept an incomplete data set copy (smoke runs only).
        data_options: passed to :func:`noisynn.data.load` (e.g. ``{"coords": "offsets"}``).
        adversarial: empty: natural training. Otherwise adversarial training (Madry et
            al.; paper 2, sec. 4): PGD settings ``eps``, ``alpha``, ``steps``, ``restarts``
            (default 1) and ``fraction`` (default 0.5): in every mini-batch that fraction
            of the samples is replaced by PGD examples made against the current model
            (with its training noise, if any) in pixel space (see :mod:`noisynn.attacks`).
        early_stopping: empty: train exactly ``epochs`` epochs. Otherwise ``epochs`` is a
            cap and training stops once the clean score on a held-out part of the
            training set has not improved for ``patience`` epochs. Keys: ``holdout``
            (the *last* N training samples, after ``train_limit``, or a fraction in
            (0, 1) of them; they are never trained on), ``patience`` (epochs without
            improvement), ``monitor`` (``"loss"``, default, or ``"accuracy"``: the
            held-out cross-entropy or accuracy), ``min_delta`` (default 0: an
            improvement must exceed it) and ``min_epochs`` (default 1: patience stops no
            run before this epoch; the best epoch is tracked from the first one). The
            checkpoint then ends up holding the best epoch's weights (see :func:`train`).
        model_options: keyword arguments of the model factory (or registry network).
        noise_params: fixed parameters of a noise class; ``sweep_param`` is the one
            ``sigma_train`` sets (default ``sigma``, or the class's only required parameter).
    """

    model: str
    dataset: str
    noise: str
    sigma_train: float
    epochs: int
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    train_limit: int | None = None
    augment: bool = False
    allow_partial: bool = False
    data_options: dict = field(default_factory=dict)
    adversarial: dict = field(default_factory=dict)
    early_stopping: dict = field(default_factory=dict)
    model_options: dict = field(default_factory=dict)
    noise_params: dict = field(default_factory=dict)
    sweep_param: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma_train", check_sigma(self.sigma_train))
        plugins.check_model_reference(self.model)  # the one-line unknown-model / bad-factory error
        family = plugins.resolve_noise(self.noise, self.noise_params, self.sweep_param)
        object.__setattr__(self, "noise_params", family.params)
        object.__setattr__(self, "sweep_param", family.param)  # None: sigma, or the class's only parameter
        if self.optimizer not in OPTIMIZERS:
            raise NoisynnError(f"unknown optimizer {self.optimizer!r}: use adam or sgd")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise NoisynnError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise NoisynnError(f"lr must be a positive number, got {self.lr}")
        if self.adversarial:
            _check_adversarial(self.adversarial)
        if self.early_stopping:
            _check_early_stopping(self.early_stopping)
            if int(self.early_stopping.get("min_epochs", 1)) > int(self.epochs):
                raise NoisynnError(f"early_stopping min_epochs {self.early_stopping['min_epochs']} exceeds the epoch "
                                   f"cap {self.epochs}: patience could never stop the run; lower min_epochs or raise "
                                   "epochs")

    def identity(self) -> dict:
        """The fields a checkpoint must match to be resumed (all but ``epochs``; early stopping's
        ``patience`` and ``min_epochs`` may be raised, see :func:`train`)."""
        d = dataclasses.asdict(self)
        d.pop("epochs")
        if not d["adversarial"]:
            d.pop("adversarial")  # natural training: same identity as before the field existed
        if not d["early_stopping"]:
            d.pop("early_stopping")  # a fixed epoch count: same identity as before the field existed
        for name, default in {"model_options": {}, "noise_params": {}, "sweep_param": "sigma"}.items():
            if d[name] == default:
                d.pop(name)  # the papers' models and noise: same identity as before the field existed
        return json.loads(json.dumps(d, sort_keys=True))

    @property
    def family(self) -> plugins.NoiseFamily:
        """The training noise, to be taken at ``sigma_train``."""
        return plugins.NoiseFamily(self.noise, self.noise_params, self.sweep_param or "sigma")  # set by __post_init__

    @property
    def key(self) -> str:
        """A file-name-safe name: ``lstm-rows-additive-s0.50-seed0`` (``...-adv-seed0`` if adversarial)."""
        adv = "-adv" if self.adversarial else ""
        return (f"{plugins.model_label(self.model)}-{self.family.label}-s{self.sigma_train:.2f}{adv}"
                f"-seed{self.seed}")


# -- adversarial training hook (paper 2, sec. 4) ------------------------------------------
_ADV_KEYS = {"eps", "alpha", "steps", "restarts", "fraction"}


def _check_adversarial(adv: dict) -> None:
    unknown = set(adv) - _ADV_KEYS
    missing = {"eps", "alpha", "steps"} - set(adv)
    if unknown or missing:
        raise NoisynnError(f"adversarial settings: unknown {sorted(unknown)} / missing {sorted(missing)} keys "
                           f"(use {', '.join(sorted(_ADV_KEYS))})")
    if not 0 < float(adv.get("fraction", 0.5)) <= 1:
        raise NoisynnError(f"adversarial fraction must be in (0, 1], got {adv['fraction']}")


# -- early stopping on a held-out part of the training set -------------------------------
_ES_KEYS = {"holdout", "patience", "monitor", "min_delta", "min_epochs"}
_LATER = ("patience", "min_epochs")  # raising either only makes a run stop later (or not at all)


def _check_early_stopping(es: dict) -> None:
    unknown = set(es) - _ES_KEYS
    missing = {"holdout", "patience"} - set(es)
    if unknown or missing:
        raise NoisynnError(f"early_stopping settings: unknown {sorted(unknown)} / missing {sorted(missing)} keys "
                           f"(use {', '.join(sorted(_ES_KEYS))})")
    holdout = es["holdout"]
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or holdout <= 0 or (
            isinstance(holdout, float) and holdout >= 1):
        raise NoisynnError("early_stopping holdout must be a sample count >= 1 or a fraction in (0, 1), "
                           f"got {holdout!r}")
    for name in _LATER:
        value = es.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NoisynnError(f"early_stopping {name} must be an integer >= 1, got {value!r}")
    if es.get("monitor", "loss") not in ("loss", "accuracy"):
        raise NoisynnError(f"early_stopping monitor must be loss or accuracy, got {es['monitor']!r}")
    if not float(es.get("min_delta", 0.0)) >= 0:
        raise NoisynnError(f"early_stopping min_delta must be >= 0, got {es['min_delta']!r}")


def split_holdout(spec: TrainSpec, ds: datasets.Dataset) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """``(samples to train on, held-out samples)``: the held-out part is the last ``holdout`` samples."""
    if not spec.early_stopping:
        return ds, None
    holdout = spec.early_stopping["holdout"]
    n = int(round(holdout * len(ds))) if isinstance(holdout, float) else int(holdout)
    if not 1 <= n < len(ds):
        raise NoisynnError(f"early_stopping holdout of {n} samples leaves nothing to train on or hold out "
                           f"({len(ds)} training samples): choose a smaller holdout")
    cut = len(ds) - n
    return (dataclasses.replace(ds, x=ds.x[:cut], y=ds.y[:cut]),
            dataclasses.replace(ds, x=ds.x[cut:], y=ds.y[cut:]))


def _fresh_stopping(spec: TrainSpec) -> dict:
    return {"monitor": spec.early_stopping.get("monitor", "loss"), "best_epoch": 0, "best_score": None,
            "since_best": 0, "stopped": None}


def _improved(spec: TrainSpec, es: dict, loss: float, accuracy: float) -> tuple[bool, float]:
    """(is this epoch better than the best by more than min_delta, its score)."""
    score = loss if es["monitor"] == "loss" else accuracy
    delta = float(spec.early_stopping.get("min_delta", 0.0))
    if es["best_score"] is None:
        return True, score
    better = score < es["best_score"] - delta if es["monitor"] == "loss" else score > es["best_score"] + delta
    return better, score


def stop_reason(spec: TrainSpec, epoch: int, since_best: int) -> str | None:
    """Why ``spec``'s early stopping ends a run after ``epoch`` with ``since_best`` epochs
    without a new best: ``"patience"``, ``"cap"``, or None to go on."""
    rule = spec.early_stopping
    if since_best >= int(rule["patience"]) and epoch >= int(rule.get("min_epochs", 1)):
        return "patience"
    return "cap" if epoch >= spec.epochs else None


def _stop_reason(spec: TrainSpec, es: dict, epoch: int) -> str | None:
    return stop_reason(spec, epoch, int(es["since_best"]))


def _finish_early_stopping(spec: TrainSpec, checkpoint: Path, model: nn.Module, meta: CheckpointMeta,
                           reason: str) -> str:
    """Keep the last state in ``NAME.last``, then write the best weights (no optimizer) to ``checkpoint``."""
    _atomic_copy(checkpoint, last_path(checkpoint))
    best = load_checkpoint(best_path(checkpoint))
    es = dict(meta.early_stopping or {})
    if int(best["meta"]["epoch"]) != es.get("best_epoch"):
        raise CheckpointError(f"{best_path(checkpoint)} holds epoch {best['meta']['epoch']}, not the best epoch "
                              f"{es.get('best_epoch')}: delete the run's models/{spec.key}.* files")
    model.load_state_dict(best["model"])
    es.update(stopped=reason, epochs_run=meta.epoch)
    final = dataclasses.replace(meta, early_stopping=es, metrics=best["meta"]["metrics"], last_metrics=meta.metrics)
    return save_checkpoint(checkpoint, model, final.to_dict())


def _atomic_copy(src: Path, dst: Path) -> None:
    from noisynn.engine.atomic import atomic_copy

    atomic_copy(src, dst)  # a unique temporary name: two writers never share one


def _adversary(spec: TrainSpec, model: nn.Module, ds: datasets.Dataset, epoch: int, dev):
    """The PGD attack of one epoch (``None`` for natural training)."""
    if not spec.adversarial:
        return None
    from noisynn.attacks import PGD

    adv = spec.adversarial
    return PGD(model, float(adv["eps"]), float(adv["alpha"]), int(adv["steps"]), int(adv.get("restarts", 1)),
               mean=ds.meta.get("mean"), std=ds.meta.get("std"),
               generator=generator(spec.seed, spec.key, "attack", epoch, device=dev))


def _adversarial_batch(spec: TrainSpec, attack, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """``xb`` with its last ``fraction`` of samples replaced by PGD examples."""
    n = int(round(len(yb) * float(spec.adversarial.get("fraction", 0.5))))
    if n == 0:
        return xb
    return torch.cat([xb[: len(yb) - n], attack(xb[len(yb) - n:], yb[len(yb) - n:])])


@dataclass(frozen=True)
class TrainResult:
    """Where a finished model is and how it did."""

    checkpoint: Path
    sha256: str
    epochs_run: int
    metrics: dict
    stopping: dict | None = None
    """Early stopping's record (``best_epoch, best_score, monitor, since_best, stopped``
    (``patience`` | ``cap``), ``epochs_run``), or None without early stopping."""
    finished: bool = True
    """False when ``train(max_epochs=...)`` ended a chunk before the run's end: call again to go on."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; rejects CUDA on a machine without it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NoisynnError("--device cuda: no CUDA device here; use --device cpu or auto")
    return dev


def _layout_for(model: str) -> str | None:
    if model not in MODELS:
        return None  # a user's model reads the data as it is
    shape = MODELS[model].input_shape
    return "rows" if len(shape) == 2 else "image"


def load_data(model: str, dataset: str, split: str, *, data_dir=None, device=None, limit: int | None = None,
              allow_partial: bool = False, data_options: dict | None = None) -> datasets.Dataset:
    """Load ``split`` of ``dataset`` (a name, an ``.npz``, ``pkg.module:function``...) shaped the way
    ``model`` reads it (rows or images for the registry networks, as it is for a user's)."""
    layout = None if dataset == "mnist-strokes" else _layout_for(model)
    ds = plugins.resolve_data(dataset, split, data_dir=data_dir, layout=layout, allow_partial=allow_partial,
                              options=data_options)
    if limit is not None and limit < len(ds):
        ds = dataclasses.replace(ds, x=ds.x[:limit], y=ds.y[:limit])
    return ds.to(device) if device is not None else ds


def build_for_data(model: str, sample_shape: tuple[int, ...], noise_kind: str | None = None, *,
                   options: dict | None = None, factory=None) -> nn.Module:
    """Build ``model`` (a registry name or a factory reference) sized for samples of ``sample_shape``."""
    return plugins.resolve_model(model, tuple(sample_shape), options=options, noise_kind=noise_kind, factory=factory)


def _optimizer(spec: TrainSpec, model: nn.Module) -> torch.optim.Optimizer:
    if spec.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum,
                           weight_decay=spec.weight_decay, nesterov=spec.momentum > 0)


@torch.no_grad()
def clean_metrics(model: nn.Module, ds: datasets.Dataset, batch_size: int = 1000) -> tuple[float, float]:
    """(loss, accuracy) of ``model`` on ``ds`` without noise, in eval mode."""
    was_training = model.training
    model.eval()
    loss = correct = 0.0
    from noisynn.noise import clean

    with clean():
        for xb, yb in datasets.batches(ds, batch_size, shuffle=False):
            logits = model(xb)
            loss += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(1) == yb).sum().item()
    model.train(was_training)
    return loss / len(ds), correct / len(ds)


def train(
    spec: TrainSpec,
    checkpoint: str | Path,
    *,
    data_dir=None,
    device: str | torch.device = "auto",
    on_epoch: Callable[[dict], None] | None = None,
    progress: bool = True,
    curve_every: int = 0,
    curve_samples: int = 2000,
    on_curve: Callable[[dict], None] | None = None,
    max_epochs: int | None = None,
) -> TrainResult:
    """Train (or resume training) the model of ``spec`` with Deep Noise Injection.

    Every epoch: noise of ``spec.sigma_train`` at every noise site (its own noise stream
    per epoch), mini-batches in a seeded order, then clean loss/accuracy on the test
    split, then an atomic checkpoint (weights, optimizer state, metadata). An
    existing checkpoint of the same spec is resumed after its last finished epoch.

    With ``spec.early_stopping`` the last ``holdout`` training samples are held out
    (never trained on); after every epoch their clean loss and accuracy join the
    epoch's metrics (``holdout_loss``, ``holdout_accuracy``) and decide whether the
    epoch is the best so far, whose weights are then written to
    ``NAME.best.safetensors`` (:func:`best_path`). The checkpoint's metadata carries the
    state (``early_stopping``: ``monitor, best_epoch, best_score, since_best, stopped``).
    Training stops after ``patience`` epochs without improvement, or at the cap
    ``spec.epochs``; then the last state is copied to ``NAME.last.safetensors``
    (:func:`last_path`) and ``checkpoint`` is rewritten with the *best* weights (no
    optimizer state), metadata ``metrics`` of the best epoch, ``last_metrics`` of the
    last and ``early_stopping.stopped`` = ``"patience"`` or ``"cap"`` and
    ``epochs_run``: what :func:`load_trained` and evaluation load. Re-running a stopped
    run trains no more; raising the cap of a run stopped by it goes on from ``NAME.last``,
    and so does raising ``patience`` or ``min_epochs`` of a run stopped by patience
    sooner than the new rule would stop it (the epochs so far are the same under
    either rule: only the decision to stop differs), bit-identically to a run trained
    with the new rule from the start.
    A killed run resumes bit-identically, early-stopping state included.

    Args:
        spec: what to train.
        checkpoint: the ``.safetensors`` file to write and resume from.
        data_dir: data directory (default: ``NOISYNN_DATA_DIR`` / per-user cache).
        device: ``auto``, ``cpu`` or ``cuda``.
        on_epoch: called with each finished epoch's metrics dict.
        progress: show a progress bar.
        curve_every: if > 0, every that many mini-batches measure the clean loss and
            accuracy on the first ``curve_samples`` test samples and pass
            ``{"batches", "epoch", "val_loss", "val_accuracy"}`` to ``on_curve`` (the
            learning curves of paper 2, fig. 3). It draws no random numbers and leaves
            the model in training mode: the trained weights are the same with or without it.
        max_epochs: train at most this many epochs in this call (None: to the end). The
            run is then resumable from its checkpoint as after a kill, and calling again
            goes on bit-identically; early stopping's hand-over happens in the call that
            ends the run. The result's ``finished`` says whether the run has ended
            (epoch-granular tasks of a distributed sweep, :mod:`noisynn.engine.sweep`).

    Raises:
        CheckpointError: the checkpoint belongs to another spec or is corrupt.
    """
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    checkpoint = Path(checkpoint)
    all_train = load_data(spec.model, spec.dataset, "train", data_dir=data_dir, device=dev,
                          limit=spec.train_limit, allow_partial=spec.allow_partial, data_options=spec.data_options)
    train_ds, holdout_ds = split_holdout(spec, all_train)
    test_ds = load_data(spec.model, spec.dataset, "test", data_dir=data_dir, device=dev,
                        allow_partial=spec.allow_partial, data_options=spec.data_options)
    data_id = plugins.data_identity(spec.dataset)
    torch.manual_seed(spec.seed)
    model = build_for_data(spec.model, tuple(train_ds.x.shape[1:]), spec.noise, options=spec.model_options).to(dev)
    optimizer = _optimizer(spec, model)
    start, metrics = 0, {}
    meta: CheckpointMeta | None = None
    es = _fresh_stopping(spec) if spec.early_stopping else None
    if checkpoint.exists():
        state = _resume_state(spec, checkpoint, dev)
        meta = CheckpointMeta.from_dict(state["meta"])
        _check_data(checkpoint, meta, data_id)
        if es is not None:
            es = dict(meta.early_stopping or es)
            if es["stopped"]:  # stopped early, or at a cap that was not raised: nothing more to train
                return TrainResult(checkpoint, state["sha256"], 0, meta.metrics or {}, es)
        model.load_state_dict(state["model"])
        if state["optim"] is not None:
            optimizer.load_state_dict(state["optim"])
        start, metrics = int(meta.epoch), meta.metrics or {}
    if curve_every < 0 or curve_samples < 1:
        raise NoisynnError(f"curve_every must be >= 0 and curve_samples >= 1, got {curve_every}, {curve_samples}")
    curve_ds = dataclasses.replace(test_ds, x=test_ds.x[:curve_samples], y=test_ds.y[:curve_samples])
    if max_epochs is not None and max_epochs < 1:
        raise NoisynnError(f"max_epochs must be >= 1, got {max_epochs}")
    sha, reached = "", start
    until = spec.epochs if max_epochs is None else min(spec.epochs, start + max_epochs)
    for epoch in range(start + 1, until + 1):
        if es is not None and _stop_reason(spec, es, epoch - 1) == "patience":
            break
        t0 = time.perf_counter()
        model.train()
        set_noise(model, spec.family.at(spec.sigma_train, generator=generator(spec.seed, spec.key, "noise", epoch,
                                                                              device=dev)))
        loader = datasets.batches(train_ds, spec.batch_size, generator=generator(spec.seed, spec.key, "order", epoch),
                                  augment=spec.augment)
        attack = _adversary(spec, model, train_ds, epoch, dev)
        total_loss = total_correct = seen = 0.0
        bar = tqdm(loader, desc=f"{spec.key} epoch {epoch}/{spec.epochs}", leave=False, disable=not progress,
                   unit="batch", mininterval=1.0)
        for step, (xb, yb) in enumerate(bar, start=(epoch - 1) * len(loader) + 1):
            if attack is not None:
                xb = _adversarial_batch(spec, attack, xb, yb)
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            if not torch.isfinite(loss):
                kept = f"epoch {epoch - 1} is kept in {checkpoint}" if epoch > 1 else "no epoch had finished"
                raise NoisynnError(f"{spec.key}: training diverged (loss {loss.item()}) in epoch {epoch}, batch "
                                   f"{step - (epoch - 1) * len(loader)}; {kept}; lower --lr and use another --out")
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(yb)
            total_correct += (logits.argmax(1) == yb).sum().item()
            seen += len(yb)
            if curve_every and step % curve_every == 0 and on_curve is not None:
                val_loss, val_acc = clean_metrics(model, curve_ds)
                on_curve({"batches": step, "epoch": epoch, "val_loss": val_loss, "val_accuracy": val_acc})
        set_noise(model, None)
        val_loss, val_acc = clean_metrics(model, test_ds)
        metrics = {
            "epoch": epoch, "batches": epoch * len(loader), "train_loss": total_loss / seen,
            "train_accuracy": total_correct / seen, "val_loss": val_loss, "val_accuracy": val_acc,
            "seconds": 0.0,
        }
        if es is not None:
            es = _after_epoch(spec, es, model, holdout_ds, metrics, epoch)
        meta = CheckpointMeta(model=spec.model, dataset=spec.dataset, noise=spec.noise, sigma_train=spec.sigma_train,
                              epoch=epoch, epochs=spec.epochs, seed=spec.seed, metrics=metrics, spec=spec.identity(),
                              sample_shape=list(train_ds.x.shape[1:]), data_sha256=data_id.get("data_sha256"),
                              noise_config=None if spec.family.builtin else spec.family.config(), early_stopping=es)
        metrics["seconds"] = time.perf_counter() - t0
        if es is not None and es["best_epoch"] == epoch:
            save_checkpoint(best_path(checkpoint), model, meta.to_dict())  # before the checkpoint naming it the best
        sha = save_checkpoint(checkpoint, model, meta.to_dict(), optimizer)
        reached = epoch
        metrics["checkpoint"] = sha
        if on_epoch is not None:
            on_epoch(metrics)
    if es is not None:
        reason = _stop_reason(spec, es, reached)
        if reason is None and reached < spec.epochs:  # a chunk ended (max_epochs), the run goes on
            return TrainResult(checkpoint, sha, reached - start, metrics, None, finished=False)
        if meta is None:
            raise CheckpointError(f"{checkpoint}: early stopping cannot end a run that has no epoch")
        sha = _finish_early_stopping(spec, checkpoint, model, meta, reason or "cap")
        final = read_metadata(checkpoint)
        return TrainResult(checkpoint, sha, reached - start, final["metrics"], final["early_stopping"])
    if not sha:
        sha = load_checkpoint(checkpoint)["sha256"]
    done = max(start, reached)
    return TrainResult(checkpoint, sha, done - start, metrics, finished=done >= spec.epochs)


def _resume_state(spec: TrainSpec, checkpoint: Path, dev) -> dict:
    """The checkpoint to go on from: ``checkpoint``, or its ``.last`` state when a stopped run's cap
    was raised, or its patience or min_epochs raised past where patience stopped it."""
    state = load_checkpoint(checkpoint, device=dev)
    old = state["meta"].get("spec")
    if old != spec.identity() and not _stops_later(old, spec.identity()):
        raise CheckpointError(
            f"{checkpoint} was trained with other settings ({_diff(old, spec.identity())}); "
            "use another --out directory"
        )
    es = state["meta"].get("early_stopping") or {}
    epoch = int(state["meta"]["epoch"])
    if es.get("stopped") == "cap" and spec.epochs > epoch:
        why = f"stopped at its cap of {epoch} epochs"
    elif es.get("stopped") == "patience" and _stop_reason(spec, es, epoch) is None:
        why = f"stopped by patience at epoch {epoch}, sooner than its new rule {spec.early_stopping} stops it,"
    else:
        return state
    if not last_path(checkpoint).exists():
        raise CheckpointError(f"{checkpoint} {why} and {last_path(checkpoint).name} is gone: use another --out "
                              "directory to train longer")
    return load_checkpoint(last_path(checkpoint), device=dev)


def _stops_later(old: dict | None, new: dict) -> bool:
    """Is the spec identity ``new`` the identity ``old`` with only ``patience``/``min_epochs`` raised?"""
    if not old or "early_stopping" not in old or "early_stopping" not in new:
        return False
    rest_old, rest_new = dict(old), dict(new)
    es_old, es_new = dict(rest_old.pop("early_stopping")), dict(rest_new.pop("early_stopping"))
    for name in _LATER:
        if int(es_new.pop(name, 1)) < int(es_old.pop(name, 1)):
            return False
    return rest_old == rest_new and es_old == es_new


def _after_epoch(spec: TrainSpec, es: dict, model: nn.Module, holdout_ds, metrics: dict, epoch: int) -> dict:
    """The early-stopping state after ``epoch``; adds the clean held-out loss and accuracy to ``metrics``."""
    loss, accuracy = clean_metrics(model, holdout_ds)
    metrics.update(holdout_loss=loss, holdout_accuracy=accuracy)
    better, score = _improved(spec, es, loss, accuracy)
    if better:
        return dict(es, best_epoch=epoch, best_score=score, since_best=0)
    return dict(es, since_best=es["since_best"] + 1)


def _diff(old: dict | None, new: dict) -> str:
    if not old:
        return "no spec recorded"
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in new if old.get(k) != new.get(k)]
    return "; ".join(changed) or "unknown difference"


def _check_data(checkpoint: Path, meta: Mapping[str, Any], data_id: dict) -> None:
    """Refuse data (an ``.npz``, Python data) that changed since ``checkpoint`` was trained on it."""
    old, new = meta.get("data_sha256"), data_id.get("data_sha256")
    if old is not None and new is not None and old != new:
        raise CheckpointError(f"{meta.get('dataset')} changed since {checkpoint} was trained on it (SHA-256 "
                              f"{old[:12]}... now {new[:12]}...): restore that data or use another --out directory")


def check_finite(state_dict: dict[str, torch.Tensor], what: str) -> None:
    """Refuse weights holding NaN or infinity: they would be evaluated as a near-chance model.

    Raises:
        CheckpointError: naming ``what``, the first tensor affected and how many values are bad.
    """
    for name, tensor in state_dict.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise CheckpointError(f"{what} holds non-finite weights ({bad} NaN/inf values in {name!r}): "
                                      "it cannot be evaluated; retrain the model (delete the file) from finite weights")


def load_trained(checkpoint: str | Path, device: str | torch.device = "cpu", *,
                 factory=None) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model stored in ``checkpoint``: ``(model in eval mode, its metadata)``.

    The metadata's ``sha256`` is that of the weights loaded (the evaluated model's identity).

    ``factory`` is the callable that built the model when the checkpoint names one that
    cannot be imported (a lambda or local function, ``local:...``).

    Raises:
        CheckpointError: missing/corrupt file, a model that cannot be rebuilt, or weights
            that do not fit the model it names.
    """
    state = load_checkpoint(checkpoint, device=device)
    check_finite(state["model"], f"checkpoint {checkpoint}")
    from noisynn.engine.validation import checkpoint_meta

    meta = CheckpointMeta.from_dict(checkpoint_meta(state["meta"], checkpoint, trained=True), sha256=state["sha256"])
    try:
        model = build_for_data(meta.model, tuple(meta.sample_shape), meta.noise,
                               options=meta.spec.get("model_options"), factory=factory)
    except NoisynnError as exc:
        raise CheckpointError(f"checkpoint {checkpoint}: {str(exc).splitlines()[0]}") from None
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, NoisynnError) as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"checkpoint {checkpoint} does not fit model {meta.model!r} ({first})") from None
    return model.to(device).eval(), meta


def load_for_evaluation(checkpoint: str | Path, *, data_dir=None, device: str | torch.device = "auto",
                        limit: int | None = None, factory=None) -> tuple[nn.Module, datasets.Dataset, CheckpointMeta]:
    """A trained model (eval mode), the test split it is evaluated on, and its metadata.

    Raises:
        CheckpointError: as :func:`load_trained`, or an ``.npz`` that changed since training.
    """
    dev = resolve_device(device)
    model, meta = load_trained(checkpoint, device=dev, factory=factory)
    spec = meta.spec
    _check_data(Path(checkpoint), meta, plugins.data_identity(meta.dataset))
    test = load_data(meta.model, meta.dataset, "test", data_dir=data_dir, device=dev, limit=limit,
                     allow_partial=spec.get("allow_partial", False), data_options=spec.get("data_options") or {})
    return model, test, meta
