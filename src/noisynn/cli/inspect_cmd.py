"""``noisynn inspect``: the noise sites of a model, and what it leaves clean and why."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

import torch
import typer

from noisynn.cli.common import emit_json, user_errors
from noisynn.convert import convert, inspect
from noisynn.errors import ModelError
from noisynn.layers import noise_sites
from noisynn.models import MODELS, build_model


def _load(target: str) -> tuple[torch.nn.Module, tuple[int, ...] | None, str]:
    """(model, sample shape if known, what it is)."""
    if target in MODELS:
        return build_model(target), MODELS[target].input_shape, "registry model"
    from noisynn.engine.rundir import CHECKPOINT_SUFFIX

    path = Path(target)
    if path.suffix == CHECKPOINT_SUFFIX or path.exists():
        from noisynn.engine.training import load_trained
        from noisynn.engine.validation import checkpoint_file

        checkpoint_file(path)  # a trained model's metadata, or one line naming the file
        model, meta = load_trained(path)
        return model, tuple(meta.sample_shape) or None, "checkpoint"
    if ":" in target:
        module_name, _, attr = target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)  # then an attribute of it
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise ModelError(f"cannot import {target!r} ({exc}); give pkg.module:factory on the Python path") from None
        try:
            model = obj() if callable(obj) and not isinstance(obj, torch.nn.Module) else obj
        except TypeError as exc:
            raise ModelError(f"{target!r} cannot be called without arguments ({exc}); give a factory "
                             "that builds the model") from None
        if not isinstance(model, torch.nn.Module):
            raise ModelError(f"{target!r} gave a {type(model).__name__}, not a torch.nn.Module")
        return model, None, "factory"
    raise ModelError(f"unknown model {target!r}: give a registry name ({', '.join(MODELS)}), a checkpoint "
                     "file or pkg.module:factory")


def _shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise ModelError(f"--input-shape {text!r}: give positive sizes of one sample, e.g. 28,28 or 1x28x28")
    return shape


@user_errors
def inspect_command(
    target: str = typer.Argument(..., help="A registry model, a checkpoint (.safetensors) or pkg.module:factory."),
    input_shape: str = typer.Option(None, "--input-shape", help="One sample's shape (e.g. 1,28,28): trace a "
                                    "forward pass to find run-time sites (known for registry models)."),
    tokens: int = typer.Option(0, "--tokens", help="With --input-shape: integer inputs in [0, N) (token ids)."),
    no_convert: bool = typer.Option(False, "--no-convert", help="Report the model as it is, without convert()."),
    strict: bool = typer.Option(False, "--strict", help="Exit 2 if any module with weights is left clean "
                                "for no known reason."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Print every noise site (name, type, product, shape) and every module with weights left clean, with why.

    A model with no noise site yet (a plain torch model) is shown as noisynn.convert makes it,
    unless --no-convert.
    """
    from noisynn.engine import validation as check

    check.integer(tokens, "--tokens", low=0, fix=" (0: float inputs)")
    model, known_shape, what = _load(target)
    shape = _shape(input_shape) or known_shape
    if not no_convert and not any(True for _ in noise_sites(model, hosts=True)):
        model = convert(model, warn=False)
        what += ", converted"
    example: tuple = ()
    if shape is not None:
        example = (torch.randint(0, tokens, (2, *shape)) if tokens > 0 else torch.randn(2, *shape),)
    report = inspect(model, *example)
    if as_json:
        emit_json({"model": target, "what": what, **dataclasses.asdict(report),
                   "gaps": [dataclasses.asdict(g) for g in report.gaps]})
    else:
        typer.echo(f"{target} ({what})")
        typer.echo(str(report))
    if strict and report.gaps:
        raise ModelError(f"{len(report.gaps)} module(s) with weights are left clean for no known reason: "
                         + ", ".join(g.module or "(root)" for g in report.gaps))


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_command)
