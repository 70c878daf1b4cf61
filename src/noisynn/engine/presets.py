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
                   monitor, min_delta, min_epochs}`` (:class:`~noisynn.engine.training.TrainSpec`;
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

import dataclasses
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from noisynn.engine import validation
from noisynn.engine.evaluation import parse_sigmas
from noisynn.engine.plugins import check_model_options, is_import_reference
from noisynn.engine.training import TrainSpec
from noisynn.errors import NoisynnError

if TYPE_CHECKING:
    from noisynn.engine.hardware_tasks import HardwareEval

__all__ = ["Plan", "TrainSettings", "AttackSettings", "list_presets", "load_plan", "PresetError"]

_PROFILE_KEYS = {
    "sigma_train", "sigma_val", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
    "train_limit", "runs", "target", "votes", "vote_sigma_val", "vote_trials", "augment", "allow_partial",
    "data_options", "eval_limit", "vote_limit", "adversarial", "attack", "curve_every", "early_stopping",
    "hardware",
}


class PresetError(NoisynnError):
    """An unknown preset or profile, or a malformed preset file."""


@dataclass(frozen=True)
class TrainSettings(Mapping[str, Any]):
    """How a plan trains each of its models: the fields of :class:`~noisynn.engine.training.TrainSpec`
    but the model, data, noise, ``sigma_train`` and seed (the plan and the sweep set those).

    Its defaults are ``TrainSpec``'s (``tests/test_plans.py`` keeps them so). While callers move
    to the attributes, it is also a read-only ``Mapping`` of its fields (``plan.train["epochs"]``),
    as the dict of older versions was.
    """

    epochs: int
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    train_limit: int | None = None
    augment: bool = False
    allow_partial: bool = False
    data_options: dict = field(default_factory=dict)
    adversarial: dict = field(default_factory=dict)
    early_stopping: dict = field(default_factory=dict)
    model_options: dict = field(default_factory=dict)
    noise_params: dict = field(default_factory=dict)
    sweep_param: str | None = None

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> TrainSettings:
        """The settings of a profile's training keys (``epochs``, ``lr`` ...; absent ones: the defaults)."""
        return cls(**table)

    def spec_fields(self) -> dict[str, Any]:
        """Keyword arguments of :class:`TrainSpec` (with ``model, dataset, noise, sigma_train, seed``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)


@dataclass(frozen=True)
class AttackSettings:
    """A transfer-attack preset (paper 2, sec. 4): NN_adv and its profile's ``attack`` table.

    Attributes:
        source_model: NN_adv, the network the examples are made on (the preset's ``source_model``;
            ``model`` is NN_val).
        eps, alpha, steps, restarts: the PGD attack (None: not given, the data set's default).
        limit: attack the first N test samples (None: all).
        eot, eot_steps, eot_restarts, eot_limit: the white-box EOT attack on the noisy NN_val
            (``eot`` noisy passes per step; None or 0: none).
    """

    source_model: str
    eps: float | None = None
    alpha: float | None = None
    steps: int | None = None
    restarts: int | None = None
    limit: int | None = None
    eot: int | None = None
    eot_steps: int | None = None
    eot_restarts: int | None = None
    eot_limit: int | None = None

    def table(self) -> dict[str, Any]:
        """The ``attack`` table as the preset gave it (the keys set, without ``source_model``)."""
        return {k: v for k in validation.ATTACK_KEYS if (v := getattr(self, k)) is not None}


@dataclass(frozen=True)
class Plan:
    """A preset resolved for one profile: everything a sweep needs.

    ``train`` is how each model is trained; ``attack`` the transfer attack of an attack preset
    (else None); ``hardware`` the evaluation on programmed chips of a preset with a
    ``[hardware]`` table (:class:`noisynn.engine.hardware_tasks.HardwareEval`, else None).
    """

    name: str
    title: str
    profile: str
    model: str
    dataset: str
    noise: str
    sigma_train: tuple[float, ...]
    sigma_val: tuple[float, ...]
    train: TrainSettings
    runs: int | str
    target: float = 0.0005
    votes: int = 0
    vote_sigma_val: tuple[float, ...] = ()
    vote_trials: int = 1
    eval_limit: int | None = None
    vote_limit: int | None = None
    curve_every: int = 0
    source: str = ""
    attack: AttackSettings | None = None
    hardware: HardwareEval | None = None

    @property
    def extra(self) -> dict[str, Any]:
        """The attack and hardware settings as the dict of older versions (a copy: use ``attack`` and ``hardware``)."""
        out: dict[str, Any] = {}
        if self.attack is not None:
            out.update(attack=self.attack.table(), source_model=self.attack.source_model)
        if self.hardware is not None:
            out["hardware"] = self.hardware
        return out

    def train_spec(self, sigma_train: float, seed: int) -> TrainSpec:
        return TrainSpec(model=self.model, dataset=self.dataset, noise=self.noise, sigma_train=sigma_train,
                         seed=seed, **self.train.spec_fields())


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
            train=TrainSettings.from_table(p), attack=attack,
        )
        from noisynn.engine import hardware_tasks

        plan = hardware_tasks.attach(plan, doc.get("hardware"), hardware, error=_error)  # evaluation on chips
        plan.train_spec(sigma_train[0], 0)  # validates model, noise, optimiser, numbers
        check_model_options(plan.model, plan.train.model_options, plan.noise)
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


def _attack_section(doc: dict, attack: dict | None) -> AttackSettings | None:
    """The transfer attack of an attack preset (its profile's ``attack`` table, ``source_model``), else None."""
    if attack is None:
        return None
    if not isinstance(attack, dict) or set(attack) - _ATTACK_KEYS:
        raise ValueError(f"attack must be a table with keys among {sorted(_ATTACK_KEYS)}")
    if "source_model" not in doc:
        raise ValueError("an attack preset needs the top-level key source_model (NN_adv)")
    if not attack:  # an empty table: no attack (as in older versions)
        return None
    return AttackSettings(source_model=str(doc["source_model"]), **attack)
