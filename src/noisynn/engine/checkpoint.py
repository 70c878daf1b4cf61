"""Checkpoints: model weights and optimizer state in one safetensors file, plus JSON metadata.

A checkpoint ``NAME.safetensors`` holds the model's ``state_dict`` (keys ``model.*``),
the optimizer's tensors (``optim.*``) and, in the safetensors header, a JSON metadata
document (model, dataset, noise kind, sigma_train, epoch, seed, metrics, package
version, the optimizer's non-tensor state, and the SHA-256 of the weights and of the
optimizer state, both verified on loading). No pickle anywhere: loading a checkpoint
cannot run code.

The same metadata (without the optimizer state) is written beside it as ``NAME.json``
for people. That sidecar has no authority: nothing reads it, the safetensors header is
the truth, and :func:`load_checkpoint` rewrites a sidecar that does not match it.

Files are written to unique temporary names (``.NAME.<host>-<pid>-<random>.tmp``, see
:mod:`noisynn.engine.atomic`) and renamed, the ``.safetensors`` first, so a killed
process leaves either the previous checkpoint or the new one, never half of one; a kill
between the two renames leaves the sidecar one epoch behind and its temporary file,
which the next save or load of that checkpoint repairs and deletes. Two writers of one
checkpoint never share a temporary file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from noisynn.engine.atomic import remove_orphans, unique_tmp
from noisynn.engine.validation import checkpoint_meta
from noisynn.errors import CheckpointError

__all__ = ["save_checkpoint", "load_checkpoint", "read_metadata", "weights_sha256", "optimizer_sha256",
           "sync_sidecar", "Checkpoint"]

_META_KEY = "noisynn"


class Checkpoint(dict):
    """What :func:`load_checkpoint` returns: ``meta``, ``model`` state, ``optim`` state (or None)."""


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a model's weights (names, dtypes, shapes and values), independent of the file.

    Two checkpoints of bit-identical weights have the same hash even when their
    metadata (e.g. timings) differ: it is what identifies "the evaluated model".
    """
    digest = hashlib.sha256()
    _update(digest, state_dict)
    return digest.hexdigest()


def _update(digest, tensors: dict[str, torch.Tensor]) -> None:
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def optimizer_sha256(tensors: dict[str, torch.Tensor], plain: dict) -> str:
    """SHA-256 of a flattened optimizer state: its ``optim.*`` tensors and its JSON part (hyper-parameters, steps)."""
    digest = hashlib.sha256(json.dumps(plain, sort_keys=True).encode())
    _update(digest, tensors)
    return digest.hexdigest()


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for index, values in state["state"].items():
        rest = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                rest[name] = value
        plain["state"][str(index)] = rest
    return tensors, plain


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], plain: dict) -> dict:
    state: dict[int, dict] = {int(i): dict(v) for i, v in plain["state"].items()}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    meta: dict,
    optimizer: torch.optim.Optimizer | None = None,
) -> str:
    """Write ``model`` (and ``optimizer``) with ``meta`` atomically; return :func:`weights_sha256`.

    Args:
        path: target ``.safetensors`` file; ``.json`` metadata goes beside it.
        model: the module whose ``state_dict`` is saved.
        meta: JSON-serialisable metadata.
        optimizer: optional optimizer whose state is saved for resuming.
    """
    from noisynn import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    digest = weights_sha256(model.state_dict())
    document = dict(meta, package_version=__version__, weights_sha256=digest)
    if optimizer is not None:
        optim_tensors, optim_plain = _flatten_optimizer(optimizer.state_dict())
        tensors.update(optim_tensors)
        document["optimizer_state"] = optim_plain
        document["optimizer_sha256"] = optimizer_sha256(optim_tensors, optim_plain)
    text = json.dumps(document, sort_keys=True)
    sidecar = path.with_suffix(".json")
    for target in (path, sidecar):
        remove_orphans(target)
    tmp, json_tmp = unique_tmp(path), unique_tmp(sidecar)
    try:
        save_file(tensors, str(tmp), metadata={_META_KEY: text})
        _fsync(tmp)
        json_tmp.write_text(_sidecar_text(document))
        os.replace(tmp, path)  # the checkpoint: from here on, this epoch is the one on disk
        os.replace(json_tmp, sidecar)
    finally:
        for leftover in (tmp, json_tmp):
            if leftover.exists():
                leftover.unlink()
    return digest


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sidecar_text(meta: dict) -> str:
    return json.dumps({k: v for k, v in meta.items() if k != "optimizer_state"}, indent=2, sort_keys=True) + "\n"


def sync_sidecar(path: str | Path) -> bool:
    """Make ``NAME.json`` match the checkpoint's own metadata, and delete orphaned temporary files.

    A sidecar can lag behind only when a writer was killed between its two renames. Best
    effort: a read-only folder is left as it is. Returns True if the sidecar was rewritten.
    """
    path = Path(path)
    sidecar = path.with_suffix(".json")
    try:
        before = path.stat()
        meta = read_metadata(path)
        want = _sidecar_text(meta)
        for target in (path, sidecar):
            remove_orphans(target)
        if sidecar.is_file() and sidecar.read_text() == want:
            return False
        tmp = unique_tmp(sidecar)
        tmp.write_text(want)
        after = path.stat()
        if (after.st_ino, after.st_mtime_ns, after.st_size) != (before.st_ino, before.st_mtime_ns, before.st_size):
            tmp.unlink()  # a writer replaced the checkpoint meanwhile: its own sidecar follows
            return False
        os.replace(tmp, sidecar)
        return True
    except (OSError, CheckpointError):
        return False


def read_metadata(path: str | Path) -> dict:
    """The metadata of a checkpoint, without loading its tensors.

    Raises:
        CheckpointError: missing, not a safetensors file, or not a noisynn checkpoint; metadata that is
            not a JSON object, or a training checkpoint's lacking a field or of the wrong type
            (:func:`noisynn.engine.validation.checkpoint_meta`).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found: "
                              "give the path of a .safetensors file written by noisynn train")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt ({exc}); retrain or restore it") from None
    if _META_KEY not in meta:
        raise CheckpointError(f"{path} is a safetensors file but not a noisynn checkpoint (no metadata)")
    try:
        document = json.loads(meta[_META_KEY])
    except json.JSONDecodeError:
        raise CheckpointError(f"checkpoint {path} has corrupt metadata; retrain or restore it") from None
    return checkpoint_meta(document, path)  # a JSON object; a training checkpoint's fields all there, typed


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Read a checkpoint: ``{"meta", "model" (state_dict), "optim" (state or None), "sha256" (of the weights)}``.

    Raises:
        CheckpointError: missing or corrupt file.
    """
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt ({exc}); retrain or restore it") from None
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    digest = weights_sha256(model)
    if meta.get("weights_sha256") not in (None, digest):
        raise CheckpointError(f"checkpoint {path} is corrupt (its weights do not match their recorded hash)")
    optim = None
    if "optimizer_state" in meta:
        optim_tensors = {k: v for k, v in tensors.items() if k.startswith("optim.")}
        plain = meta["optimizer_state"]
        recorded = meta.get("optimizer_sha256")  # absent in checkpoints of older versions
        if recorded is not None and (not isinstance(plain, dict) or optimizer_sha256(optim_tensors, plain) != recorded):
            raise CheckpointError(
                f"checkpoint {path} is corrupt (its optimizer state does not match its recorded hash): restore it, "
                f"or delete it (and its .json) to train that model again from scratch")
        try:
            optim = _unflatten_optimizer(optim_tensors, plain)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"checkpoint {path} has a malformed optimizer state ({exc}): restore it, "
                                  f"or delete it (and its .json) to train that model again from scratch") from None
    sync_sidecar(path)
    meta.pop("optimizer_state", None)
    return Checkpoint(meta=meta, model=model, optim=optim, sha256=digest)
