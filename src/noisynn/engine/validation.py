"""One validation layer at the boundary (issue 19): every value a user gives, checked in one place.

The CLI, :func:`noisynn.engine.presets.load_plan` and :func:`noisynn.engine.checkpoint.read_metadata`
call these checks before any work starts and before anything is written. A failure is one
line naming the field (a preset key or a ``--option``), the value and the fix; the CLI prints
it as ``error: ...`` and exits with code 2.

==================================  ================================================================
field (preset key / CLI option)     rule
==================================  ================================================================
preset top level                    keys among :data:`PRESET_KEYS`; ``model``, ``dataset``,
                                    ``noise`` non-empty strings; ``profile`` a table of tables
profile keys                        among ``presets._PROFILE_KEYS``; ``sigma_train``, ``sigma_val``,
                                    ``epochs`` required; a profile is a table
sigma_train, sigma_val,             a range ``start:stop:step`` (finite, step >= 1e-9, at most
vote_sigma_val, ``--sigma``         :data:`MAX_SIGMAS` values), a list or a number; never empty;
                                    each sigma finite, >= 0 and at most float32's largest
                                    (:data:`FLOAT32_MAX`)
epochs, batch_size, ``--epochs``,   integer >= 1 (a bool or 1.7 is refused)
``--batch-size``
train_limit, eval_limit,            integer >= 1, or absent (all samples)
vote_limit, ``--limit``,
``--train-limit``,
``--eot-limit``, attack limit
runs, ``--runs``                    ``"auto"`` or integer 1 .. :data:`MAX_RUNS`
votes                               integer 0 (no voting) .. :data:`MAX_VOTES`
``--votes``                         ``K`` or ``FIRST:LAST``, 1 <= FIRST <= LAST <= MAX_VOTES
vote_trials, ``--trials``           integer 1 .. :data:`MAX_TRIALS`
cost of a command or a profile      at most :data:`MAX_PASSES` passes over the test set (runs x
                                    sigmas, votes x trials x sigmas, times the models); the message
                                    says what it would cost
curve_every, ``--curve-every``,     integer >= 0
``--tokens``
lr, ``--lr``                        finite number > 0
momentum, weight_decay              finite number >= 0
target, ``--target``                a fraction in (0, 1); the option in percentage points, (0, 100)
augment, allow_partial              true or false
optimizer                           adam or sgd
data_options                        a table of the options the data set's loader takes
                                    (:func:`data_option_names`; none for an .npz)
adversarial, early_stopping,        tables; attack keys among :data:`ATTACK_KEYS`
attack
their PGD values, ``--eps``,        eps >= 0, alpha > 0, steps and restarts >= 1, fraction in (0,
``--alpha``, ``--steps``,           1], eot 0 .. MAX_VOTES (:data:`PGD_RULES`)
``--restarts``, ``--eot``
model_options, ``--model-option``   options the network (built once at its default size) or the
                                    factory's signature takes
dataset, ``--dataset``              a data set name, an existing .npz, or an importable
                                    pkg.module:function
``--device``                        auto, cpu, cuda or cuda:N; cuda only where there is a CUDA
                                    device
``--out`` (train, sweep, demo,      not an existing file; its nearest existing folder writable
attack, report)
``--csv``                           ``-``, or a file (not a folder) in an existing, writable folder
``--workers``                       integer 1 .. twice the CPU count
``--softmax-runs``                  integer 0 .. :data:`MAX_SOFTMAX_RUNS`
checkpoint metadata                 a JSON object; a training checkpoint (any of
                                    :data:`CHECKPOINT_FIELDS` but epoch present) has them all,
                                    typed; a command loading a trained model requires them
usage errors (click)                a bad or missing option value, an unknown option or command: one
                                    line too (``cli.main.OneLineErrors``)
ENOSPC, EDQUOT, EACCES, EPERM,      :func:`environment_error`: one line saying what was kept
EROFS                               (``cli.common.user_errors``)
==================================  ================================================================
"""

from __future__ import annotations

import errno
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from noisynn.errors import CheckpointError, NoisynnError

__all__ = [
    "FLOAT32_MAX", "MAX_SIGMAS", "MAX_RUNS", "MAX_VOTES", "MAX_TRIALS", "MAX_PASSES", "MAX_SOFTMAX_RUNS",
    "PRESET_KEYS", "CHECKPOINT_FIELDS", "show", "integer", "number", "boolean", "table", "limit", "runs",
    "sigma", "sigma_option", "sigma_count", "sigma_list", "evaluation_cost", "vote_cost", "votes_option",
    "device", "out_dir", "output_file", "workers", "ATTACK_KEYS", "PGD_RULES", "dataset", "data_option_names",
    "data_options", "profile", "plan_cost", "checkpoint_meta", "checkpoint_file", "environment_error",
]

#: Largest finite float32: a sigma above it makes the noise (and so the logits) infinite.
from noisynn.noise import _FLOAT32_MAX as FLOAT32_MAX  # noqa: E402 - one definition

#: Most sigma values one range or list may give.
MAX_SIGMAS = 10_000
#: Most noisy runs (passes over the test set) of one point.
MAX_RUNS = 10_000
#: Largest K of majority voting: K x (test batch) x (classes) logits are held at once.
MAX_VOTES = 1_000
#: Most independent voting trials per point.
MAX_TRIALS = 1_000
#: Most passes over the test set one command (or one preset profile) may ask for.
MAX_PASSES = 100_000
#: Most noisy runs of the report's one softmax input (paper 2: 10,000).
MAX_SOFTMAX_RUNS = 100_000
#: What ``runs = "auto"`` may reach (``evaluate_point``'s ``max_runs``).
AUTO_RUNS = 200

#: The keys a preset file may have at its top level.
PRESET_KEYS = ("name", "title", "model", "dataset", "noise", "profile", "model_options", "noise_params",
               "sweep_param", "source_model", "hardware")

#: What the metadata of a checkpoint written by ``noisynn train`` always holds.
CHECKPOINT_FIELDS = ("model", "dataset", "noise", "sigma_train", "epoch", "spec", "sample_shape")


# -- how a value is shown ------------------------------------------------------------------
def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def show(name: str, value: Any) -> str:
    """``--limit -355`` for an option, ``eval_limit = -5`` for a preset key (TOML spelling)."""
    if name.startswith("-"):
        return f"{name} {value}"
    return f"{name} = {_toml(value)}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- scalars ----------------------------------------------------------------------------------
def integer(value: Any, name: str, *, low: int = 1, high: int | None = None, fix: str = "",
            error: Callable[[str], Exception] = NoisynnError) -> int:
    """``value`` if it is an integer in ``[low, high]`` (never a bool or 1.7), else one line."""
    if _is_int(value) and value >= low and (high is None or value <= high):
        return value
    if _is_int(value) and high is not None and value > high:
        raise error(f"{show(name, value)}: at most {high:,} is allowed{fix}")
    rule = f"an integer >= {low}" if high is None else f"an integer from {low} to {high:,}"
    raise error(f"{show(name, value)}: must be {rule}{fix}")


def number(value: Any, name: str, *, low: float | None = None, low_open: bool = False, high: float | None = None,
           high_open: bool = False, fix: str = "", error: Callable[[str], Exception] = NoisynnError) -> float:
    """``value`` as a float if it is a finite number within the bounds, else one line."""
    ok = _is_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return float(value)
    if low is not None and high is not None:
        rule = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        rule = f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        rule = "a finite number"
    raise error(f"{show(name, value)}: must be {rule}{fix}")


def boolean(value: Any, name: str, *, error: Callable[[str], Exception] = NoisynnError) -> bool:
    if isinstance(value, bool):
        return value
    raise error(f"{show(name, value)}: must be true or false")


def table(value: Any, name: str, *, keys: tuple | set | None = None,
          error: Callable[[str], Exception] = NoisynnError) -> dict:
    """``value`` if it is a table (with keys among ``keys``, if given), else one line."""
    if not isinstance(value, dict):
        example = "{" + ", ".join(f"{k} = ..." for k in sorted(keys)[:2]) + "}" if keys else "{key = value}"
        raise error(f"{show(name, value)}: must be a table, e.g. {name} = {example}")
    if keys is not None:
        unknown = sorted(set(value) - set(keys))
        if unknown:
            allowed = ", ".join(sorted(keys)) or "none"
            raise error(f"{name}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                        f"use {allowed}")
    return value


def limit(value: Any, name: str, *, error: Callable[[str], Exception] = NoisynnError) -> int | None:
    """A sample limit: absent (``None``: all samples) or an integer >= 1."""
    if value is None:
        return None
    return integer(value, name, fix=" (the first N samples; leave it out to use them all)", error=error)


def runs(value: Any, name: str = "--runs", *, error: Callable[[str], Exception] = NoisynnError) -> int | str:
    """``"auto"`` or a run count 1 .. MAX_RUNS (a CLI string is parsed first)."""
    if value == "auto":
        return "auto"
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise error(f"{show(name, value)}: must be a positive integer or 'auto'") from None
    if _is_int(value) and value > MAX_RUNS:
        raise error(f"{show(name, value)}: would make {value:,} noisy passes over the test set per point; "
                    f"the cap is {MAX_RUNS:,}: use fewer runs, or 'auto' (adds runs until the mean is pinned)")
    return integer(value, name, high=MAX_RUNS, fix=" or 'auto'", error=error)


# -- sigmas -------------------------------------------------------------------------------------
def sigma(value: Any) -> float:
    """One sigma: a finite number >= 0 that float32 can hold (``ValueError`` otherwise)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {value!r}")
    if value > FLOAT32_MAX:
        raise ValueError(f"sigma {value:g} is beyond float32's range (largest {FLOAT32_MAX:.3g}): the noise would "
                         "be infinite; give a smaller sigma")
    return float(value)


def sigma_count(start: float, stop: float, step: float, text: str) -> int:
    """How many values ``start:stop:step`` gives (stop included), refused past :data:`MAX_SIGMAS`.

    ``ValueError`` for a part that is not finite, or too many values; a step <= 0 or a stop
    below the start is left to the caller (a malformed range).
    """
    for part, v in (("start", start), ("stop", stop), ("step", step)):
        if not math.isfinite(v):
            raise ValueError(f"sigma range {text!r}: its {part} is {v}: start, stop and step must be finite "
                             "numbers (e.g. 0:1:0.1)")
    if step <= 0 or stop < start:
        return 0
    if step < 1e-9:
        raise ValueError(f"sigma range {text!r}: step {step:g} is below 1e-9 (sigmas are kept to 9 decimals): "
                         "use a larger step")
    span = (stop - start) / step
    if not math.isfinite(span) or span + 1 > MAX_SIGMAS:
        count = f"{math.floor(span) + 1:,}" if math.isfinite(span) and span < 1e15 else f"about {span:.3g}"
        raise ValueError(f"sigma range {text!r} would give {count} values; the cap is {MAX_SIGMAS:,}: "
                         "use a larger step or a shorter range")
    return int(math.floor(span + 1e-9)) + 1


def sigma_list(values: list, what: str) -> list[float]:
    """Checks of a whole list of sigmas (``what``: how the list was given, for the message)."""
    if not values:
        raise ValueError(f"{what}: no sigma: give at least one, e.g. \"0:1:0.1\" (start:stop:step) or \"0,0.5,1\"")
    if len(values) > MAX_SIGMAS:
        raise ValueError(f"{what}: {len(values):,} sigma values; the cap is {MAX_SIGMAS:,}")
    return [sigma(v) for v in values]


# -- costs ----------------------------------------------------------------------------------------
def evaluation_cost(n_runs: int | str, n_sigmas: int, option: str = "--runs") -> int:
    """Passes over the test set of ``n_runs`` at ``n_sigmas`` sigma_val, refused past :data:`MAX_PASSES`."""
    per_point = AUTO_RUNS if n_runs == "auto" else int(n_runs)
    passes = per_point * n_sigmas
    if passes > MAX_PASSES:
        raise NoisynnError(f"{option} {n_runs} at {n_sigmas:,} sigma_val would make {passes:,} passes over the "
                           f"test set; the cap is {MAX_PASSES:,} per command: use fewer runs or sigmas")
    return passes


def vote_cost(votes: int, trials: int, n_sigmas: int, option: str = "--votes") -> int:
    """Passes over the test set of voting up to K = ``votes``, refused past the caps."""
    if votes > MAX_VOTES:
        raise NoisynnError(f"{option} up to K = {votes:,} would classify every test sample {votes:,} times per "
                           f"sigma_val and trial ({votes * trials * n_sigmas:,} passes over the test set, all "
                           f"K logits held at once); the cap is K = {MAX_VOTES:,}")
    passes = votes * trials * n_sigmas
    if passes > MAX_PASSES:
        raise NoisynnError(f"{option} up to K = {votes:,} x {trials:,} trials x {n_sigmas:,} sigma_val would make "
                           f"{passes:,} passes over the test set; the cap is {MAX_PASSES:,} per command")
    return passes


def votes_option(text: str, option: str = "--votes") -> tuple[int, int]:
    """``"K"`` or ``"FIRST:LAST"`` -> ``(first, last)`` with 1 <= first <= last <= MAX_VOTES."""
    try:
        lo, hi = (int(v) for v in text.split(":")) if ":" in text else (1, int(text))
    except ValueError:
        raise NoisynnError(f"{option} must be K or FIRST:LAST (e.g. 1:20), got {text!r}") from None
    if not 1 <= lo <= hi:
        raise NoisynnError(f"{option} must satisfy 1 <= FIRST <= LAST, got {text!r}")
    vote_cost(hi, 1, 1, option)
    return lo, hi


# -- the machine ------------------------------------------------------------------------------------
def device(text: str, option: str = "--device") -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; CUDA only where there is a CUDA device."""
    value = str(text).strip()
    kind, _, index = value.partition(":")
    if value not in ("auto", "cpu", "cuda") and not (kind == "cuda" and index.isdigit()):
        raise NoisynnError(f"unknown device {value!r}: use auto, cpu or cuda")
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise NoisynnError(f"{option} {value}: no CUDA device here; use --device cpu or auto")
    return value


def workers(value: int, option: str = "--workers") -> int:
    cap = 2 * (os.cpu_count() or 1)
    return integer(value, option, high=max(cap, 2),
                   fix=f" (each worker is a process with its own model and data; this machine has "
                       f"{os.cpu_count() or 1} CPU cores)")


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def out_dir(path: str | Path, option: str = "--out") -> Path:
    """A directory to write into: not a file, and creatable or writable (checked before anything is written)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NoisynnError(f"{option} {path} is a file, not a directory: give a directory (it is created if "
                           "missing), or move the file away")
    base = _existing_ancestor(path)
    if not base.is_dir():
        raise NoisynnError(f"{option} {path}: {base} is a file, so the directory cannot be created: give another "
                           f"{option}")
    if not os.access(base, os.W_OK | os.X_OK):
        raise NoisynnError(f"{option} {path}: permission denied ({base} is not writable by this user); nothing was "
                           f"written: give a {option} you can write, or fix its permissions")
    return path


def output_file(path: str | Path, option: str = "--csv") -> Path | str:
    """A file to write (``-``: stdout): its folder exists and is writable, and it is not a directory."""
    if str(path) == "-":
        return "-"
    path = Path(path)
    if path.is_dir():
        raise NoisynnError(f"{option} {path} is a directory: give a file name, e.g. {path / 'grid.csv'}")
    folder = path.parent
    if not folder.is_dir():
        raise NoisynnError(f"{option} {path}: the folder {folder} does not exist: create it first, or give a path "
                           "in an existing folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise NoisynnError(f"{option} {path}: permission denied: give a file in a folder you can write")
    return path


# -- data ------------------------------------------------------------------------------------------------
def dataset(ref: str, option: str = "--dataset", *, error: Callable[[str], Exception] = NoisynnError) -> str:
    """A data reference that names data: a data set name, an existing .npz or an importable function."""
    from noisynn.engine import plugins

    try:
        plugins.check_data_reference(ref)
    except NoisynnError as exc:
        raise error(f"{show(option, ref)}: {str(exc).splitlines()[0]}") from None
    return ref


def data_option_names(ref: str) -> set[str] | None:
    """The ``data_options`` a data reference takes: its loader's keyword options (``None``: any, a function's)."""
    import inspect

    from noisynn import data as datasets
    from noisynn.engine import plugins

    if ref in datasets.DATASETS:
        from noisynn.data import digits

        loader = digits.load if ref == "digits" else datasets._MODULES[ref].load
        return {p.name for p in inspect.signature(loader).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "allow_partial"}
    if plugins.is_import_reference(ref):
        return None  # passed to the user's function, which says what it takes
    return set()  # an .npz takes none


def data_options(value: Any, ref: str, name: str = "data_options", *,
                 error: Callable[[str], Exception] = NoisynnError) -> dict:
    allowed = data_option_names(ref)
    table(value, name, error=error)
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise error(f"{name}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for "
                        f"dataset {ref!r}: use {', '.join(sorted(allowed)) or 'none (leave data_options out)'}")
    return value


# -- presets ------------------------------------------------------------------------------------------------
def _sigmas_field(p: dict, key: str, error) -> None:
    from noisynn.engine.evaluation import parse_sigmas

    try:
        parse_sigmas(p[key], name=key)
    except ValueError as exc:
        raise error(str(exc).splitlines()[0]) from None


def profile(p: Any, name: str, dataset_ref: str, allowed: set[str], *,
            error: Callable[[str], Exception] = NoisynnError) -> dict:
    """Every typed check of one profile table of a preset (messages name the key, the value and the fix)."""
    if not isinstance(p, dict):
        raise error(f"profile {name!r} is {_toml(p)}, not a table: write it as [profile.{name}] with keys such as "
                    "sigma_train, sigma_val, epochs")
    unknown = sorted(set(p) - allowed)
    if unknown:
        raise error(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in profile {name!r}: "
                    f"use {', '.join(sorted(allowed))}")
    for key, example in (("sigma_train", '"0,0.5,1"'), ("sigma_val", '"0:1:0.1"'), ("epochs", "10")):
        if key not in p:
            raise error(f"profile {name!r} lacks {key}: add e.g. {key} = {example}")
    for key in ("sigma_train", "sigma_val", "vote_sigma_val"):
        if key in p:
            _sigmas_field(p, key, error)
    integer(p["epochs"], "epochs", fix=" (e.g. epochs = 10)", error=error)
    if "batch_size" in p:
        integer(p["batch_size"], "batch_size", fix=" (e.g. batch_size = 32)", error=error)
    for key in ("train_limit", "eval_limit", "vote_limit"):
        if key in p:
            limit(p[key], key, error=error)
    if "runs" in p:
        runs(p["runs"], "runs", error=error)
    if "votes" in p:
        integer(p["votes"], "votes", low=0, high=MAX_VOTES, fix=" (0: no voting)", error=error)
    if "vote_trials" in p:
        integer(p["vote_trials"], "vote_trials", high=MAX_TRIALS, error=error)
    if "curve_every" in p:
        integer(p["curve_every"], "curve_every", low=0, fix=" (0: one point per epoch)", error=error)
    if "lr" in p:
        number(p["lr"], "lr", low=0, low_open=True, fix=" (e.g. lr = 1e-4)", error=error)
    for key in ("momentum", "weight_decay"):
        if key in p:
            number(p[key], key, low=0, error=error)
    if "target" in p:
        number(p["target"], "target", low=0, low_open=True, high=1, high_open=True,
               fix=" (a fraction: 0.0005 is 0.05 percentage points)", error=error)
    for key in ("augment", "allow_partial"):
        if key in p:
            boolean(p[key], key, error=error)
    if "optimizer" in p and p["optimizer"] not in ("adam", "sgd"):
        raise error(f"{show('optimizer', p['optimizer'])}: use \"adam\" or \"sgd\"")
    if "data_options" in p:
        data_options(p["data_options"], dataset_ref, error=error)
    for key in ("adversarial", "early_stopping", "attack"):
        if key in p:
            table(p[key], key, keys=ATTACK_KEYS if key == "attack" else None, error=error)
    for key in ("adversarial", "attack"):
        for name, value in p.get(key, {}).items():
            rule = PGD_RULES.get(name)
            if rule is not None:
                rule(value, f"{key}.{name}", error)
    return p


#: The keys of a preset's ``attack`` table (paper 2, sec. 4).
ATTACK_KEYS = ("eps", "alpha", "steps", "restarts", "limit", "eot", "eot_steps", "eot_restarts", "eot_limit")

PGD_RULES = {
    "eps": lambda v, n, e: number(v, n, low=0, fix=" (an L-inf radius on [0, 1] pixels, e.g. 0.3)", error=e),
    "alpha": lambda v, n, e: number(v, n, low=0, low_open=True, fix=" (the PGD step, e.g. 0.01)", error=e),
    "steps": lambda v, n, e: integer(v, n, error=e),
    "restarts": lambda v, n, e: integer(v, n, error=e),
    "fraction": lambda v, n, e: number(v, n, low=0, low_open=True, high=1, error=e),
    "limit": lambda v, n, e: limit(v, n, error=e),
    "eot": lambda v, n, e: integer(v, n, low=0, high=MAX_VOTES, fix=" (0: no EOT attack)", error=e),
    "eot_steps": lambda v, n, e: integer(v, n, error=e),
    "eot_restarts": lambda v, n, e: integer(v, n, error=e),
    "eot_limit": lambda v, n, e: limit(v, n, error=e),
}


def plan_cost(n_models: int, n_sigma_val: int, n_runs: int | str, n_vote_sigma: int, votes: int, trials: int,
              *, error: Callable[[str], Exception] = NoisynnError) -> int:
    """Passes over the test set a whole grid asks for, refused past :data:`MAX_PASSES`."""
    per_point = AUTO_RUNS if n_runs == "auto" else int(n_runs)
    passes = n_models * (n_sigma_val * per_point + (n_vote_sigma * votes * trials if votes else 0))
    if passes > MAX_PASSES:
        raise error(f"{n_models} models x ({n_sigma_val} sigma_val x {n_runs} runs"
                    + (f" + {n_vote_sigma} vote_sigma_val x {votes} votes x {trials} trials" if votes else "")
                    + f") would make {passes:,} passes over the test set; the cap is {MAX_PASSES:,}: "
                      "use fewer sigmas, runs or votes")
    return passes


# -- checkpoints ----------------------------------------------------------------------------------------------
def _kind(value: Any) -> str:
    return {list: "a list", type(None): "null", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def checkpoint_meta(meta: Any, path: str | Path, *, trained: bool | None = None) -> dict:
    """The metadata of checkpoint ``path`` if it has the right form, else a one-line :class:`CheckpointError`.

    It must be a JSON object. A training checkpoint (``trained=True``, or ``None`` and any of
    :data:`CHECKPOINT_FIELDS` but ``epoch`` present) must have every one of those fields, with
    their types; other metadata (a bare ``save_checkpoint`` of a module) is left as it is.
    """
    fix = "it was not written by noisynn train, or was edited: retrain it or restore it"
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path}: its metadata is {_kind(meta)}, not a JSON object; {fix}")
    if trained is None:
        trained = any(k in meta for k in CHECKPOINT_FIELDS if k != "epoch")
    if not trained:
        return meta
    missing = [k for k in CHECKPOINT_FIELDS if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint {path}: its metadata lacks {', '.join(missing)}; {fix}")
    bad = None
    for key in ("model", "dataset", "noise"):
        if not isinstance(meta[key], str) or not meta[key]:
            bad = (key, "a non-empty string")
    s = meta["sigma_train"]
    if not (_is_number(s) and math.isfinite(s) and 0 <= s <= FLOAT32_MAX):
        bad = ("sigma_train", "a finite number >= 0")
    if not _is_int(meta["epoch"]) or meta["epoch"] < 0:
        bad = ("epoch", "an integer >= 0")
    if not isinstance(meta["spec"], dict):
        bad = ("spec", "a JSON object (the training settings)")
    shape = meta["sample_shape"]
    if not isinstance(shape, list) or not all(_is_int(n) and n >= 1 for n in shape):
        bad = ("sample_shape", "a list of sizes >= 1")
    if "seed" in meta and not _is_int(meta["seed"]):
        bad = ("seed", "an integer")
    for key in ("metrics", "early_stopping"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            bad = (key, "a JSON object")
    if bad is not None:
        key, rule = bad
        raise CheckpointError(f"checkpoint {path}: its metadata has {key} = {json.dumps(meta[key])[:60]}, not "
                              f"{rule}; {fix}")
    return meta


def checkpoint_file(path: str | Path) -> dict:
    """The metadata of a checkpoint that a command will load as a trained model (checked before any work)."""
    from noisynn.engine.checkpoint import read_metadata

    return checkpoint_meta(read_metadata(path), path, trained=True)


# -- the environment -------------------------------------------------------------------------------------------
_ENV_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}


def environment_error(exc: BaseException) -> str | None:
    """The one line for a full disk or a denied write (``None`` for any other error)."""
    if not isinstance(exc, OSError) or exc.errno not in _ENV_ERRORS:
        return None
    where = ""
    if exc.filename:
        name = Path(str(exc.filename))
        hidden_tmp = name.name.startswith(".") and name.name.endswith(".tmp")  # a unique temporary name
        where = f" writing into {name.parent}" if hidden_tmp else f" ({name})"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space (or give an --out on another disk) and run the same command again: it resumes"
    else:
        fix = "give an --out you can write (or fix the permissions) and run the same command again: it resumes"
    return (f"{_ENV_ERRORS[exc.errno]}{where}: everything finished before is kept (checkpoints and points are "
            f"written whole or not at all, nothing half-written replaces them); {fix}")


def sigma_option(value: Any, option: str = "--sigma") -> float:
    """One sigma given as an option (``noisynn train --sigma``)."""
    try:
        return sigma(value)
    except ValueError as exc:
        raise NoisynnError(f"{show(option, value)}: {exc}") from None
