"""Deep Noise Injection training: one model, one sigma_train, resumable epoch by epoch."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from noisynn import data as datasets
from noisynn.engine.checkpoint import load_checkpoint, save_checkpoint
from noisynn.engine.seeding import generator
from noisynn.errors import CheckpointError, NoisynnError
from noisynn.layers import set_noise
from noisynn.models import MODELS, build_model
from noisynn.noise import check_sigma, noise

__all__ = ["TrainSpec", "TrainResult", "train", "load_data", "build_for_data", "load_trained", "load_for_evaluation",
           "resolve_device"]

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class TrainSpec:
    """Everything that defines a training run (and so its checkpoint).

    Attributes:
        model: registry name (``noisynn models``).
        dataset: data set name (``digits``, ``mnist``, ``mnist-strokes``, ``cifar10``).
        noise: ``"additive"`` or ``"multiplicative"``.
        sigma_train: the noise injected at every site during training (0: conventional).
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma_train", check_sigma(self.sigma_train))
        if self.model not in MODELS:
            build_model(self.model)  # raises the one-line unknown-model error
        if self.noise not in ("additive", "multiplicative"):
            raise NoisynnError(f"unknown noise kind {self.noise!r}: use additive or multiplicative")
        if self.optimizer not in OPTIMIZERS:
            raise NoisynnError(f"unknown optimizer {self.optimizer!r}: use adam or sgd")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise NoisynnError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise NoisynnError(f"lr must be a positive number, got {self.lr}")
        if self.adversarial:
            _check_adversarial(self.adversarial)

    def identity(self) -> dict:
        """The fields a checkpoint must match to be resumed (all but ``epochs``)."""
        d = dataclasses.asdict(self)
        d.pop("epochs")
        if not d["adversarial"]:
            d.pop("adversarial")  # natural training: same identity as before the field existed
        return json.loads(json.dumps(d, sort_keys=True))

    @property
    def key(self) -> str:
        """A file-name-safe name: ``lstm-rows-additive-s0.50-seed0`` (``...-adv-seed0`` if adversarial)."""
        adv = "-adv" if self.adversarial else ""
        return f"{self.model}-{self.noise}-s{self.sigma_train:.2f}{adv}-seed{self.seed}"


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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; rejects CUDA on a machine without it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NoisynnError("--device cuda: no CUDA device here; use --device cpu or auto")
    return dev


def _layout_for(model: str) -> str | None:
    shape = MODELS[model].input_shape
    return "rows" if len(shape) == 2 else "image"


def load_data(model: str, dataset: str, split: str, *, data_dir=None, device=None, limit: int | None = None,
              allow_partial: bool = False, data_options: dict | None = None) -> datasets.Dataset:
    """Load ``split`` of ``dataset`` shaped the way ``model`` reads it (rows or images)."""
    layout = None if dataset == "mnist-strokes" else _layout_for(model)
    ds = datasets.load(dataset, split, data_dir=data_dir, layout=layout, allow_partial=allow_partial,
                       **(data_options or {}))
    if limit is not None and limit < len(ds):
        ds = dataclasses.replace(ds, x=ds.x[:limit], y=ds.y[:limit])
    return ds.to(device) if device is not None else ds


def build_for_data(model: str, sample_shape: tuple[int, ...], noise_kind: str | None = None) -> nn.Module:
    """Build ``model`` sized for samples of ``sample_shape`` (e.g. 8x8 digit rows)."""
    spec = MODELS[model]
    options = {}
    if tuple(sample_shape) != spec.input_shape:
        if len(spec.input_shape) == 2 and len(sample_shape) == 2:  # recurrent: steps x features
            options = {"steps": sample_shape[0], "input_size": sample_shape[1]}
        elif len(spec.input_shape) == 3 and len(sample_shape) == 3 and sample_shape[1] == sample_shape[2]:
            options = {"in_channels": sample_shape[0], "image_size": sample_shape[1]}
    return build_model(model, noise_kind=noise_kind, **options)


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
) -> TrainResult:
    """Train (or resume training) the model of ``spec`` with Deep Noise Injection.

    Every epoch: noise of ``spec.sigma_train`` at every noise site (its own noise stream
    per epoch), mini-batches in a seeded order, then clean loss/accuracy on the test
    split, then an atomic checkpoint (weights, optimizer state, metadata). An
    existing checkpoint of the same spec is resumed after its last finished epoch.

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

    Raises:
        CheckpointError: the checkpoint belongs to another spec or is corrupt.
    """
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    checkpoint = Path(checkpoint)
    train_ds = load_data(spec.model, spec.dataset, "train", data_dir=data_dir, device=dev,
                         limit=spec.train_limit, allow_partial=spec.allow_partial, data_options=spec.data_options)
    test_ds = _test_split(spec, data_dir, dev, train_ds)
    torch.manual_seed(spec.seed)
    model = build_for_data(spec.model, tuple(train_ds.x.shape[1:]), spec.noise).to(dev)
    optimizer = _optimizer(spec, model)
    start, metrics = 0, {}
    if checkpoint.exists():
        state = load_checkpoint(checkpoint, device=dev)
        if state["meta"].get("spec") != spec.identity():
            raise CheckpointError(
                f"{checkpoint} was trained with other settings ({_diff(state['meta'].get('spec'), spec.identity())}); "
                "use another --out directory"
            )
        model.load_state_dict(state["model"])
        if state["optim"] is not None:
            optimizer.load_state_dict(state["optim"])
        start, metrics = int(state["meta"]["epoch"]), state["meta"].get("metrics", {})
    if curve_every < 0 or curve_samples < 1:
        raise NoisynnError(f"curve_every must be >= 0 and curve_samples >= 1, got {curve_every}, {curve_samples}")
    curve_ds = dataclasses.replace(test_ds, x=test_ds.x[:curve_samples], y=test_ds.y[:curve_samples])
    sha = ""
    for epoch in range(start + 1, spec.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        set_noise(model, noise(spec.noise, spec.sigma_train, generator=generator(spec.seed, spec.key, "noise", epoch, device=dev)))
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
                raise NoisynnError(f"{spec.key}: training diverged (loss {loss.item()}) in epoch {epoch}; lower --lr")
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
            "seconds": time.perf_counter() - t0,
        }
        meta = {"model": spec.model, "dataset": spec.dataset, "noise": spec.noise, "sigma_train": spec.sigma_train,
                "epoch": epoch, "epochs": spec.epochs, "seed": spec.seed, "metrics": metrics,
                "spec": spec.identity(), "sample_shape": list(train_ds.x.shape[1:])}
        sha = save_checkpoint(checkpoint, model, meta, optimizer)
        metrics["checkpoint"] = sha
        if on_epoch is not None:
            on_epoch(metrics)
    if not sha:
        sha = load_checkpoint(checkpoint)["sha256"]
    return TrainResult(checkpoint, sha, spec.epochs - start, metrics)


def _test_split(spec: TrainSpec, data_dir, dev, train_ds) -> datasets.Dataset:
    """The test split, or (for a partial copy with no test images) the last training samples."""
    try:
        return load_data(spec.model, spec.dataset, "test", data_dir=data_dir, device=dev,
                         allow_partial=spec.allow_partial, data_options=spec.data_options)
    except NoisynnError:
        if not spec.allow_partial:
            raise
        n = max(1, len(train_ds) // 10)
        return dataclasses.replace(train_ds, x=train_ds.x[-n:], y=train_ds.y[-n:])


def _diff(old: dict | None, new: dict) -> str:
    if not old:
        return "no spec recorded"
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in new if old.get(k) != new.get(k)]
    return "; ".join(changed) or "unknown difference"


def load_trained(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model stored in ``checkpoint``: ``(model in eval mode, metadata)``.

    Raises:
        CheckpointError: missing/corrupt file, or weights that do not fit the model it names.
    """
    state = load_checkpoint(checkpoint, device=device)
    meta = state["meta"]
    try:
        model = build_for_data(meta["model"], tuple(meta["sample_shape"]), meta["noise"])
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, NoisynnError) as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"checkpoint {checkpoint} does not fit model {meta.get('model')!r} ({first})") from None
    meta["sha256"] = state["sha256"]
    return model.to(device).eval(), meta


def load_for_evaluation(checkpoint: str | Path, *, data_dir=None, device: str | torch.device = "auto",
                        limit: int | None = None) -> tuple[nn.Module, datasets.Dataset, dict]:
    """A trained model (eval mode), the test split it is evaluated on, and its metadata."""
    dev = resolve_device(device)
    model, meta = load_trained(checkpoint, device=dev)
    spec = meta["spec"]
    test = load_data(meta["model"], meta["dataset"], "test", data_dir=data_dir, device=dev, limit=limit,
                     allow_partial=spec.get("allow_partial", False), data_options=spec.get("data_options") or {})
    return model, test, meta
