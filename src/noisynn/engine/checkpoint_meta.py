"""The metadata of a trained model's checkpoint, typed: :class:`CheckpointMeta`.

:func:`noisynn.engine.training.train` writes it into every checkpoint (the safetensors
header, and the ``NAME.json`` sidecar for people) as a JSON object; the format on disk is
that object, unchanged: :meth:`CheckpointMeta.to_dict` gives exactly the keys a checkpoint
holds, :meth:`CheckpointMeta.from_dict` reads any checkpoint written by ``noisynn train``,
older ones included (keys it does not know are kept in ``extra`` and written back as they were).

While callers move from the metadata dicts to the attributes, a :class:`CheckpointMeta` is
also a read-only ``Mapping`` of that JSON object (plus ``sha256``): ``meta["model"]``,
``meta.get("metrics", {})``, ``"seed" in meta``, so a function written for the dicts
(``noisynn.engine.plugins.noise_of``) takes it as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CheckpointMeta", "read_checkpoint_meta"]

_REQUIRED = ("model", "dataset", "noise", "sigma_train", "epoch", "spec", "sample_shape")
_NOT_ON_DISK = ("sha256",)


@dataclass(frozen=True)
class CheckpointMeta(Mapping[str, Any]):
    """What a training checkpoint records about its model.

    Attributes:
        model: the model reference (registry name, ``pkg.module:factory``, ``local:...``).
        dataset: the data reference it was trained on.
        noise: the training noise (``additive``, ``multiplicative`` or a class reference).
        sigma_train: the value of the training noise's swept parameter.
        epoch: the last epoch trained (once early stopping has ended the run, the weights are those of
            ``early_stopping["best_epoch"]``).
        spec: :meth:`noisynn.engine.training.TrainSpec.identity`, the settings a resume must match.
        sample_shape: the shape of one input sample (to rebuild the model).
        epochs: the planned number of epochs (the cap, with early stopping).
        seed: the training seed.
        metrics: that epoch's metrics (``val_accuracy``, ``train_loss`` ...).
        data_sha256: the SHA-256 of an ``.npz`` or Python data set (changed data is refused).
        noise_config: a noise class's whole configuration (not for the built-in noises).
        early_stopping: early stopping's state (``monitor, best_epoch, best_score, since_best, stopped``...).
        last_metrics: an early-stopped model's last epoch's metrics (``metrics`` are the best one's).
        package_version: the noisynn version that wrote it.
        weights_sha256: the SHA-256 of the weights (:func:`noisynn.engine.checkpoint.weights_sha256`).
        optimizer_sha256: the SHA-256 of the optimizer state (the state itself is not part of this record).
        sha256: the SHA-256 of the weights as loaded (:func:`~noisynn.engine.training.load_trained`), the
            evaluated model's identity; empty when the tensors were not loaded. Not written to disk.
        extra: every other key of the JSON object, kept as it was.
    """

    model: str
    dataset: str
    noise: str
    sigma_train: float
    epoch: int
    spec: dict
    sample_shape: list[int]
    epochs: int | None = None
    seed: int | None = None
    metrics: dict | None = None
    data_sha256: str | None = None
    noise_config: dict | None = None
    early_stopping: dict | None = None
    last_metrics: dict | None = None
    package_version: str | None = None
    weights_sha256: str | None = None
    optimizer_sha256: str | None = None
    sha256: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], *, sha256: str | None = None) -> CheckpointMeta:
        """The record of a checkpoint's JSON object (``read_metadata``); ``sha256``: of the loaded weights.

        Raises:
            KeyError: a field every training checkpoint has is missing (use
                :func:`read_checkpoint_meta` for the one-line error naming the file).
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", *_NOT_ON_DISK}
        missing = [k for k in _REQUIRED if k not in document]
        if missing:
            raise KeyError(f"checkpoint metadata lacks {', '.join(missing)}")
        known = {k: v for k, v in document.items() if k in names and v is not None}
        extra = {k: v for k, v in document.items() if k not in known}
        return cls(**known, sha256=sha256 if sha256 is not None else str(document.get("sha256") or ""),
                   extra={k: v for k, v in extra.items() if k not in _NOT_ON_DISK})

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written into the checkpoint (``None`` fields left out, ``extra`` kept)."""
        out: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and f.name not in _NOT_ON_DISK and value is not None:  # None: not recorded
                out[f.name] = value
        return out

    # -- read like the metadata dict it replaces (during the transition) -------------------------
    def _mapping(self) -> dict[str, Any]:
        d = self.to_dict()
        if self.sha256:
            d["sha256"] = self.sha256
        return d

    def __getitem__(self, key: str) -> Any:
        return self._mapping()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())


def read_checkpoint_meta(path: str | Path) -> CheckpointMeta:
    """The metadata of the training checkpoint ``path``, without loading its tensors.

    Raises:
        CheckpointError: missing or corrupt, not a noisynn checkpoint, or not one written by training
            (:func:`noisynn.engine.validation.checkpoint_file`: one line naming the file and the field).
    """
    from noisynn.engine.validation import checkpoint_file

    return CheckpointMeta.from_dict(checkpoint_file(path))
