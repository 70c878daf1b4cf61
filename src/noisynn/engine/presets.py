"""Experiment presets: TOML files describing a whole grid of a paper, in profiles.

A preset names the network, the data set and the noise kind, and has one table per
profile (``paper``: the papers' settings; ``papers``: the papers' optimiser trained to
convergence by early stopping, paper 1's presets; ``cpu``: the reproduction on 2 CPU
cores, hours; ``quick``: minutes) with:

=================  =====================================================================
key                meaning
=================  =====================================================================
sigma_train        the sigmas to train with: ``"0:1:0.1"`` (stop included) or ``"0,0.5,1"``
sigma_val          the sigmas to evaluate every trained model at
epochs             training epochs per model (with ``early_stopping``: the cap)
early_stopping     stop on a held-out part of the training set: ``{holdout, patience,
                   monitor, min_delta}`` (:class:`~noisynn.engine.training.TrainSpec`;
                   absent: exactly ``epochs``)
data_options       passed to :func:`noisynn.data.load` (e.g. ``{coords = "offsets"}``)
batch_size, optimizer, lr, momentum, weight_decay   the optimiser
train_limit        use only the first N training samples (optional)
curve_every        a learning-curve point every N mini-batches (paper 2, fig. 3; default 0: per epoch)
runs               noisy runs per point, or ``"auto"`` (see ``target``)
target             95% confidence half-width for ``runs = "auto"`` (fraction, default 0.0005)
votes              largest K of majority voting (0 or absent: no voting)
vote_sigma_val     the sigma_val at which voting is measured (default: all of sigma_val)
vote_trials        independent voting trials per point (default 1)
vote_limit         vote on the first N test samples only (default: as ``eval_limit``)
adversarial        adversarial training: PGD ``{eps, alpha, steps, restarts, fraction}``
hardware           overrides of the preset's ``[hardware]`` table (evaluation on programmed
                   chips against time, hardware-aware training: :mod:`noisynn.engine.hardware_tasks`)
attack             a transfer-attack sweep (paper 2, sec. 4): ``{eps, alpha, steps,
                   restarts, limit, eot, eot_steps, eot_restarts, eot_limit}``; the
                   top-level key ``source_model`` names NN_adv (``model`` is NN_val)
=================  =====================================================================

The presets shipped with noisynn are listed by ``noisynn presets``; a user's own file
is used by giving its path instead of a name. Its ``model`` may be ``pkg.module:factory``
(options in a ``[model_options]`` table), its ``dataset`` an ``.npz`` file (a relative path
is relative to the preset) or ``pkg.module:function``, its ``noise`` ``pkg.module:Class``
(fixed parameters in a ``[noise_params]`` table, the swept one named by ``sweep_param``,
default ``sigma``); modules beside the preset file are importable.
"""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from noisynn.engine import validation
from noisynn.engine.evaluation import parse_sigmas
from noisynn.engine.plugins import check_model_options, is_import_reference
from noisynn.engine.training import TrainSpec
from noisynn.errors import NoisynnError

__all__ = ["Plan", "list_presets", "load_plan", "PresetError"]

_PROFILE_KEYS = {
    "sigma_train", "sigma_val", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
    "train_limit", "runs", "target", "votes", "vote_sigma_val", "vote_trials", "augment", "allow_partial",
    "data_options", "eval_limit", "vote_limit", "adversarial", "attack", "curve_every", "early_stopping",
    "hardware",
}


class PresetError(NoisynnError):
    """An unknown preset or profile, or a malformed preset file."""


@dataclass(frozen=True)
class Plan:
    """A preset resolved for one profile: everything a sweep needs."""

    name: str
    title: str
    profile: str
    model: str
    dataset: str
    noise: str
    sigma_train: tuple[float, ...]
    sigma_val: tuple[float, ...]
    train: dict
    runs: int | str
    target: float = 0.0005
    votes: int = 0
    vote_sigma_val: tuple[float, ...] = ()
    vote_trials: int = 1
    eval_limit: int | None = None
    vote_limit: int | None = None
    curve_every: int = 0
    source: str = ""
    extra: dict = field(default_factory=dict)

    def train_spec(self, sigma_train: float, seed: int) -> TrainSpec:
        return TrainSpec(model=self.model, dataset=self.dataset, noise=self.noise, sigma_train=sigma_train,
                         seed=seed, **self.train)


def _shipped() -> dict[str, Path]:
    folder = resources.files("noisynn") / "presets"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def list_presets() -> list[dict]:
    """Name, title and profiles of every shipped preset."""
    rows = []
    for name, path in sorted(_shipped().items()):
        doc = tomllib.loads(path.read_text())
        rows.append({"name": name, "title": doc.get("title", ""), "profiles": sorted(doc.get("profile", {}))})
    return rows


def load_plan(preset: str | Path, profile: str = "quick") -> Plan:
    """Load a shipped preset by name, or a preset file by path, for ``profile``.

    Raises:
        PresetError: unknown preset or profile, malformed file or values.
    """
    shipped = _shipped()
    path = Path(preset)
    if str(preset) in shipped:
        path = shipped[str(preset)]
    elif not (path.suffix == ".toml" and path.is_file()):
        raise PresetError(f"unknown preset {str(preset)!r}: choose one of {', '.join(sorted(shipped))} "
                          "(noisynn presets) or give the path of a .toml file")
    try:
        doc = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PresetError(f"preset {path} is not valid TOML: {exc}") from None
    top = _check_top_level(doc, path)
    profiles = doc["profile"]
    if profile not in profiles:
        raise PresetError(f"preset {doc.get('name', path.stem)!r} has no profile {profile!r}: "
                          f"use {', '.join(sorted(profiles))}")
    where = f"preset {path}, profile {profile!r}"

    def _error(message: str) -> PresetError:  # every check's message, prefixed with the file and the profile
        return PresetError(f"{where}: {message}")

    dataset = top["dataset"]
    if dataset.lower().endswith(".npz"):  # relative to the preset file
        dataset = str((path.parent / dataset).resolve())
    if any(is_import_reference(doc.get(k)) for k in ("model", "dataset", "noise")):
        folder = str(path.parent.resolve())
        if folder not in sys.path:
            sys.path.append(folder)  # the user's modules beside the preset
    validation.dataset(dataset, "dataset", error=_error)  # a name, an existing .npz, an importable function
    p = dict(validation.profile(profiles[profile], profile, dataset, _PROFILE_KEYS, error=_error))
    for key in ("model_options", "noise_params"):
        if key in doc:
            p[key] = dict(doc[key])
    if "sweep_param" in doc:
        p["sweep_param"] = doc["sweep_param"]
    try:
        sigma_train = tuple(parse_sigmas(p.pop("sigma_train"), "sigma_train"))
        sigma_val = tuple(parse_sigmas(p.pop("sigma_val"), "sigma_val"))
        votes = p.pop("votes", 0)
        vote_sigma_val = tuple(parse_sigmas(p.pop("vote_sigma_val"), "vote_sigma_val")) if "vote_sigma_val" in p \
            else (sigma_val if votes else ())
        attack = _attack_section(doc, p.pop("attack", None))
        hardware = p.pop("hardware", None)  # the profile's overrides of [hardware] (engine/hardware_tasks.py)
        runs = p.pop("runs", 40)
        vote_trials = p.pop("vote_trials", 1)
        validation.plan_cost(len(sigma_train), len(sigma_val), runs, len(vote_sigma_val), votes, vote_trials,
                             error=_error)
        plan = Plan(
            name=str(doc.get("name", path.stem)), title=str(doc.get("title", "")), profile=profile,
            model=doc["model"], dataset=dataset, noise=doc["noise"],
            sigma_train=sigma_train, sigma_val=sigma_val, runs=runs, target=float(p.pop("target", 0.0005)),
            votes=votes, vote_sigma_val=vote_sigma_val, vote_trials=vote_trials,
            eval_limit=p.pop("eval_limit", None), vote_limit=p.pop("vote_limit", None),
            curve_every=p.pop("curve_every", 0), source=str(path),
            train=p, extra=attack,
        )
        from noisynn.engine import hardware_tasks

        plan = hardware_tasks.attach(plan, doc.get("hardware"), hardware, error=_error)  # evaluation on chips
        plan.train_spec(sigma_train[0], 0)  # validates model, noise, optimiser, numbers
        check_model_options(plan.model, p.get("model_options"), plan.noise)
    except PresetError:
        raise
    except (KeyError, ValueError, TypeError, NoisynnError) as exc:
        raise PresetError(f"{where}: {str(exc).splitlines()[0]}") from None
    return plan


def _check_top_level(doc: dict, path: Path) -> dict:
    """The top level of a preset: known keys only, the required ones present, each of its type."""
    unknown = sorted(set(doc) - set(validation.PRESET_KEYS))
    if unknown:
        raise PresetError(f"preset {path}: unknown top-level key{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)}: use {', '.join(validation.PRESET_KEYS)} (a profile's settings go "
                          "in its [profile.NAME] table)")
    for key in ("model", "dataset", "noise", "profile"):
        if key not in doc:
            raise PresetError(f"preset {path} lacks the key {key!r}")
    for key in ("name", "title", "model", "dataset", "noise", "sweep_param", "source_model"):
        if key in doc and (not isinstance(doc[key], str) or (key != "title" and not doc[key])):
            raise PresetError(f"preset {path}: {validation.show(key, doc[key])}: must be a non-empty string")
    for key in ("profile", "model_options", "noise_params"):
        if key in doc and not isinstance(doc[key], dict):
            raise PresetError(f"preset {path}: {validation.show(key, doc[key])}: must be a table "
                              f"({'[profile.NAME] sections' if key == 'profile' else f'[{key}]'})")
    if not doc["profile"]:
        raise PresetError(f"preset {path} has no profile: add a [profile.quick] table")
    return doc


_ATTACK_KEYS = set(validation.ATTACK_KEYS)


def _attack_section(doc: dict, attack: dict | None) -> dict:
    """``{"attack": ..., "source_model": ...}`` for a transfer-attack preset, else ``{}``."""
    if attack is None:
        return {}
    if not isinstance(attack, dict) or set(attack) - _ATTACK_KEYS:
        raise ValueError(f"attack must be a table with keys among {sorted(_ATTACK_KEYS)}")
    if "source_model" not in doc:
        raise ValueError("an attack preset needs the top-level key source_model (NN_adv)")
    return {"attack": dict(attack), "source_model": str(doc["source_model"])}
