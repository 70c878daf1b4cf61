"""Hardware evaluation in a sweep: models on programmed chips, against time after programming (issue 17).

A preset's ``[hardware]`` table names an *evaluation* noise apart from the training noise:
the chip model every trained model is put on, how many chips and reads, when after
programming it is read and whether drift is compensated. The training side stays the
preset's (the ``sigma_train`` grid of its noise family: conventional at 0, the papers'
Gaussian Deep Noise Injection above), plus optional *hardware-aware* models trained with
a noise model of their own (``[hardware.train]``, e.g. PCM noise itself)::

    [hardware]
    noise = "pcm"                 # pcm, crossbar or pkg.module:Class (a noisynn.NoiseModel)
    params = {inp_bits = 8, out_bits = 8, out_noise = 0.04}
    times = [1, 3600, 86400, 2592000, 31536000]   # seconds after programming
    compensation = [false, true]  # global drift compensation off / on
    chips = 4                     # C chips (programming noise drawn once per chip)
    reads = 2                     # R reads of each chip (per-read noise drawn afresh)
    eval_limit = 1000             # test samples (default: the profile's eval_limit)
    votes = 5                     # majority voting over K = 1..5 reads of each chip (0: none)
    vote_t = 86400                # ... read at this time (default one day)
    vote_compensation = true      # ... with compensation (default on)

    [hardware.train]              # hardware-aware training: more models, trained with this noise
    noise = "pcm"
    params = {inp_bits = 8, out_bits = 8, out_noise = 0.04}
    sweep_param = "prog_noise_scale"   # what sigma_train sets
    sigma_train = "1"

A profile may override any of these keys with ``hardware = {chips = 2, ...}`` (a ``train``
table there is merged into ``[hardware.train]``). Defaults: ``times`` 1 s, 1 h, 1 day,
1 month, 1 year and ``compensation`` off and on when the model has ``t`` /
``compensation`` (else one point, ``t`` recorded as 0); ``chips`` 4 (1 for a model
without a ``chip`` parameter, :class:`~noisynn.hardware.Crossbar`); ``reads`` 2; no
voting. The chip model's ``seed`` is the sweep's ``--seed`` unless ``params`` sets it.

Each (model, t, compensation) is a :class:`ChipsTask`: C chips x R reads of the whole
evaluation set (:func:`noisynn.engine.chips.evaluate_chips`, the reads seeded by
``(seed, weights SHA-256, "chip-reads", chip)``: the same chips and read streams at every
``t``, so what changes between times is the drift), one point of kind ``chips-comp``,
``chips-nocomp`` (``chips`` for a model without compensation) in the results store, its
``sigma_val`` the time ``t``, its runs the C x R accuracies, its ``stderr`` the
chip-to-chip spread over sqrt(C), and a row of the store's ``chips`` table with both
spreads and the per-chip means. A voting task (kind ``chips-vote-comp`` ...) writes one
point per K, its runs the C per-chip accuracies. A point's measurement identity
(:func:`chips_measurement`) holds the chip model's whole configuration, ``t``,
``compensation``, ``chips``, ``reads``, ``votes``, the limit, the batch size and the test
data's SHA-256: a point is reused only when all of them and the weights match; a killed
sweep resumes without measuring a finished point again.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noisynn.engine import plugins, validation
from noisynn.engine.chips import TIMES, _std, evaluate_chips, vote_chips
from noisynn.engine.evaluation import mean_stderr, parse_sigmas
from noisynn.engine.rundir import RunDir
from noisynn.engine.store import ChipRow, Point, PointKey, ResultStore, measurement, sigma_key
from noisynn.engine.sweep import Workspace
from noisynn.engine.training import TrainSpec, load_data, load_for_evaluation
from noisynn.errors import NoisynnError
from noisynn.noise import NoiseModel, from_config

__all__ = ["HardwareEval", "HardwareTraining", "ChipsTask", "ALIASES", "KEYS", "attach", "of", "aware_specs",
           "aware_train_tasks", "chip_tasks", "chips_kind", "chips_measurement", "measured_without_checkpoint"]

#: Short names of the chip models of :mod:`noisynn.hardware`.
ALIASES = {"pcm": "noisynn.hardware:PCM", "crossbar": "noisynn.hardware:Crossbar"}
#: The keys of a preset's ``[hardware]`` table.
KEYS = ("noise", "params", "times", "compensation", "chips", "reads", "eval_limit", "batch_size", "votes", "vote_t",
        "vote_compensation", "train")
#: The keys of its ``[hardware.train]`` table.
TRAIN_KEYS = ("noise", "params", "sweep_param", "sigma_train")
#: Most chips, reads per chip.
MAX_CHIPS = 1_000


def _reference(noise: Any, where: str, error: Callable[[str], Exception]) -> str:
    if not isinstance(noise, str) or not noise:
        raise error(f"{where} = {noise!r}: give pcm, crossbar or pkg.module:Class")
    ref = ALIASES.get(noise.lower(), noise)
    if ref not in ("additive", "multiplicative") and not plugins.is_import_reference(ref):
        raise error(f"{where} = {noise!r}: give pcm, crossbar, additive, multiplicative or pkg.module:Class")
    return ref


@dataclass(frozen=True)
class HardwareTraining:
    """Hardware-aware models: trained with ``noise`` (its ``sweep_param`` set to each ``sigma_train``)."""

    noise: str
    params: dict
    sweep_param: str | None
    sigma_train: tuple[float, ...]


@dataclass(frozen=True)
class HardwareEval:
    """A preset's ``[hardware]`` table, checked (see the module doc for the keys)."""

    noise: str
    params: dict
    times: tuple[float | None, ...]
    compensation: tuple[bool | None, ...]
    chips: int = 4
    reads: int = 2
    eval_limit: int | None = None
    batch_size: int = 500
    votes: int = 0
    vote_t: float | None = None
    vote_compensation: bool | None = None
    train: HardwareTraining | None = None

    def model(self, seed: int = 0) -> NoiseModel:
        """The chip model (chip 0; the sweep's ``seed`` unless ``params`` fixes one)."""
        params = dict(self.params)
        base = from_config({"class": self.noise, "params": params})
        if "seed" in base.params() and "seed" not in params:
            base = base.with_params(seed=int(seed))
        return base

    @property
    def label(self) -> str:
        """A short name of the chip model (``PCM-1a2b3c4d``: the class and a hash of its parameters)."""
        return plugins.NoiseFamily(self.noise, self.params).label

    def passes(self, n_models: int) -> int:
        """Passes over the evaluation set the whole hardware grid makes."""
        return n_models * self.chips * (len(self.times) * len(self.compensation) * self.reads + self.votes)


def _merge(top: Any, override: Any, error: Callable[[str], Exception]) -> dict:
    for where, table in (("[hardware]", top), ("the profile's hardware", override)):
        if table is not None and not isinstance(table, dict):
            raise error(f"{where} is {table!r}, not a table: write it as [hardware] with keys {', '.join(KEYS)}")
    merged = dict(top or {})
    for key, value in (override or {}).items():
        if key == "train" and isinstance(value, dict) and isinstance(merged.get("train"), dict):
            merged["train"] = {**merged["train"], **value}
        else:
            merged[key] = value
    unknown = sorted(set(merged) - set(KEYS))
    if unknown:
        raise error(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in hardware: use "
                    f"{', '.join(KEYS)}")
    return merged


def parse(top: Any, override: Any, *, error: Callable[[str], Exception] = NoisynnError) -> HardwareEval | None:
    """The :class:`HardwareEval` of a preset's ``[hardware]`` table and a profile's ``hardware`` overrides
    (None when there is neither). Every message is one line naming the key and the fix."""
    if top is None and override is None:
        return None
    h = _merge(top, override, error)
    if "noise" not in h:
        raise error("hardware lacks noise: add e.g. noise = \"pcm\"")
    ref = _reference(h["noise"], "hardware.noise", error)
    params = validation.table(h.get("params", {}), "hardware.params", error=error)
    try:
        base = from_config({"class": ref, "params": dict(params)})
    except (ValueError, TypeError) as exc:
        raise error(f"hardware: {str(exc).splitlines()[0]}") from None
    have = base.params()
    for name in ("chip", "t", "compensation"):
        if name in params:
            raise error(f"hardware.params sets {name}: the sweep sets it (use hardware.chips, times, compensation)")
    if "times" in h:
        if "t" not in have:
            raise error(f"hardware.times: {type(base).__name__} has no time after programming (t): remove times")
        times = h["times"]
        if not isinstance(times, list) or not times or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in times):
            raise error(f"hardware.times = {times!r}: give a list of seconds after programming >= 0, e.g. "
                        "[1, 3600, 86400]")
        times = tuple(float(v) for v in times)
    else:
        times = tuple(TIMES) if "t" in have else (None,)
    if "compensation" in h:
        if "compensation" not in have:
            raise error(f"hardware.compensation: {type(base).__name__} has no drift compensation: remove it")
        comp = h["compensation"]
        comp = [comp] if isinstance(comp, bool) else comp
        if not isinstance(comp, list) or not comp or not all(isinstance(v, bool) for v in comp):
            raise error(f"hardware.compensation = {h['compensation']!r}: give [false, true], [true] or [false]")
        compensation = tuple(dict.fromkeys(comp))
    else:
        compensation = (False, True) if "compensation" in have else (None,)
    if len(set(times)) != len(times):
        raise error(f"hardware.times = {list(times)}: a time is given twice")
    chips = validation.integer(h.get("chips", 4 if "chip" in have else 1), "hardware.chips", high=MAX_CHIPS,
                               error=error)
    if chips > 1 and "chip" not in have:
        raise error(f"hardware.chips = {chips}: {type(base).__name__} has no programming noise (no chip parameter), "
                    "so every chip is the same: use chips = 1, or noise = \"pcm\"")
    reads = validation.integer(h.get("reads", 2), "hardware.reads", high=MAX_CHIPS, error=error)
    limit = validation.limit(h.get("eval_limit"), "hardware.eval_limit", error=error)
    batch = validation.integer(h.get("batch_size", 500), "hardware.batch_size", error=error)
    votes = validation.integer(h.get("votes", 0), "hardware.votes", low=0, high=validation.MAX_VOTES,
                               fix=" (0: no voting)", error=error)
    vote_t = vote_comp = None
    if "vote_t" in h or "vote_compensation" in h:
        if not votes:
            raise error("hardware.vote_t / vote_compensation without hardware.votes: add e.g. votes = 5")
    if votes:
        if "t" in have:
            vote_t = validation.number(h.get("vote_t", 86400.0), "hardware.vote_t", low=0, error=error)
        elif "vote_t" in h:
            raise error(f"hardware.vote_t: {type(base).__name__} has no time after programming (t): remove it")
        if "compensation" in have:
            vote_comp = validation.boolean(h.get("vote_compensation", True), "hardware.vote_compensation", error=error)
        elif "vote_compensation" in h:
            raise error(f"hardware.vote_compensation: {type(base).__name__} has no drift compensation: remove it")
    train = _training(h.get("train"), error) if "train" in h else None
    return HardwareEval(ref, dict(params), times, compensation, chips, reads, limit, batch, votes, vote_t, vote_comp,
                        train)


def _training(t: Any, error: Callable[[str], Exception]) -> HardwareTraining:
    t = validation.table(t, "hardware.train", keys=TRAIN_KEYS, error=error)
    for key in ("noise", "sigma_train"):
        if key not in t:
            raise error(f"hardware.train lacks {key}: add e.g. "
                        + ('noise = "pcm"' if key == "noise" else 'sigma_train = "1"'))
    ref = _reference(t["noise"], "hardware.train.noise", error)
    try:
        sigmas = tuple(parse_sigmas(t["sigma_train"], "hardware.train.sigma_train"))
    except ValueError as exc:
        raise error(str(exc).splitlines()[0]) from None
    sweep = t.get("sweep_param")
    if sweep is not None and not (isinstance(sweep, str) and sweep):
        raise error(f"hardware.train.sweep_param = {sweep!r}: give the name of a parameter, e.g. \"prog_noise_scale\"")
    return HardwareTraining(ref, dict(validation.table(t.get("params", {}), "hardware.train.params", error=error)),
                            sweep, sigmas)


def attach(plan, top: Any, override: Any, *, error: Callable[[str], Exception] = NoisynnError):
    """``plan`` with its hardware evaluation in ``plan.hardware`` (checked, hardware-aware specs
    built once), or ``plan`` itself when the preset has none."""
    hw = parse(top, override, error=error)
    if hw is None:
        return plan
    if plan.attack is not None:
        raise error("a preset has either an attack or a hardware table, not both")
    plan = dataclasses.replace(plan, hardware=hw)
    try:
        specs = aware_specs(plan, 0)
    except NoisynnError as exc:
        raise error(f"hardware.train: {str(exc).splitlines()[0]}") from None
    n_models = len(plan.sigma_train) + len(specs)
    passes = hw.passes(n_models)
    if passes > validation.MAX_PASSES:
        raise error(f"hardware: {n_models} models x {hw.chips} chips x ({len(hw.times)} times x "
                    f"{len(hw.compensation)} compensation x {hw.reads} reads + {hw.votes} votes) would make "
                    f"{passes:,} passes over the test set; the cap is {validation.MAX_PASSES:,}: use fewer")
    return plan


def of(plan) -> HardwareEval | None:
    """The hardware evaluation of a plan (None: the preset has no ``[hardware]`` table)."""
    return plan.hardware


def aware_specs(plan, seed: int) -> list[TrainSpec]:
    """The training specs of the hardware-aware models (the plan's optimiser and data, the training noise
    of ``[hardware.train]``)."""
    hw = of(plan)
    if hw is None or hw.train is None:
        return []
    tr = hw.train
    base = plan.train_spec(plan.sigma_train[0], seed)
    return [dataclasses.replace(base, noise=tr.noise, noise_params=dict(tr.params), sweep_param=tr.sweep_param,
                                sigma_train=s) for s in tr.sigma_train]


def aware_train_tasks(plan, like, seed: int) -> list:
    """Training tasks of the hardware-aware models, set up like the sweep's task ``like``."""
    return [dataclasses.replace(like, spec=spec) for spec in aware_specs(plan, seed)]


def chips_kind(compensation: bool | None, vote: bool = False) -> str:
    """The store's ``kind`` of a hardware point: ``chips[-vote]-comp`` / ``-nocomp`` (no suffix: no compensation)."""
    base = "chips-vote" if vote else "chips"
    return base if compensation is None else f"{base}-{'comp' if compensation else 'nocomp'}"


def chip_tasks(plan, train, *, run_dir: str, experiment: str, seed: int, data_dir, device: str, **_: Any) -> list:
    """The hardware tasks of one trained model (``train``: its :class:`~noisynn.engine.sweep.TrainTask`):
    every (compensation, t), then the voting curve."""
    hw = of(plan)
    if hw is None:
        return []
    if hw.eval_limit is None and plan.eval_limit is not None:
        hw = dataclasses.replace(hw, eval_limit=plan.eval_limit)
    common = dict(checkpoint=str(train.checkpoint), run_dir=run_dir, experiment=experiment, hardware=hw, seed=seed,
                  data_dir=data_dir, device=device)
    tasks = [ChipsTask(t=t, compensation=c, **common) for c in hw.compensation for t in hw.times]
    if hw.votes:
        tasks.append(ChipsTask(t=hw.vote_t, compensation=hw.vote_compensation, votes=hw.votes, **common))
    return tasks


def chips_measurement(test_sha256: str, hw: HardwareEval, t: float | None, compensation: bool | None, votes: int,
                      seed: int) -> str:
    """The measurement identity of a hardware point (:func:`~noisynn.engine.store.measurement`)."""
    return measurement(None, hardware=hw.model(seed).config(), t=t, compensation=compensation, chips=hw.chips,
                       reads=None if votes else hw.reads, votes=votes or None, limit=hw.eval_limit,
                       batch_size=hw.batch_size, test_sha256=test_sha256)


_DIGESTS: dict[tuple, str] = {}


def _digest(key: tuple, test) -> str:
    """The SHA-256 of a test split's content (as :func:`measurement` records it), once per data key."""
    if key not in _DIGESTS:
        import json

        if len(_DIGESTS) > 8:
            _DIGESTS.clear()
        _DIGESTS[key] = json.loads(measurement(test))["test_sha256"]
    return _DIGESTS[key]


@functools.lru_cache(maxsize=2)
def _model_and_test(checkpoint: str, stamp: str, device: str, data_dir: str | None, limit: int | None):
    return load_for_evaluation(checkpoint, data_dir=data_dir, device=device, limit=limit)


def _load(path: Path, task: ChipsTask) -> tuple:
    stat = os.stat(path)
    return _model_and_test(str(path), f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}", task.device, task.data_dir,
                           task.hardware.eval_limit)


def _data_key(meta: Mapping[str, Any], limit: int | None) -> tuple:
    import json

    spec = meta.get("spec") or {}
    return (meta["model"], meta["dataset"], limit, bool(spec.get("allow_partial", False)),
            json.dumps(spec.get("data_options") or {}, sort_keys=True))


@dataclass(frozen=True)
class ChipsTask:
    """One trained model on C chips x R reads at ``t`` s after programming (or, with ``votes``, the voting
    curve K = 1..votes over reads of each chip): a sweep task like :class:`~noisynn.engine.sweep.EvalTask`.

    ``compute`` needs no store (it runs in a worker on any executor); the driver checks the
    store first (:meth:`prepare_in_driver`) and writes what comes back (:meth:`commit`).
    """

    checkpoint: str
    run_dir: str
    experiment: str
    hardware: HardwareEval
    t: float | None
    compensation: bool | None
    votes: int = 0
    seed: int = 0
    data_dir: str | None = None
    device: str = "auto"
    expect: str | None = None

    @property
    def eval_limit(self) -> int | None:
        return self.hardware.eval_limit

    @property
    def kind(self) -> str:
        return chips_kind(self.compensation, bool(self.votes))

    def keys(self, meta: Mapping[str, Any]) -> list[PointKey]:
        family = plugins.noise_of(meta)
        ks = range(1, self.votes + 1) if self.votes else (1,)
        return [PointKey(self.experiment, meta["model"], meta["dataset"], family.label, meta["sigma_train"],
                         self.t or 0.0, votes=k, kind=self.kind, seed=self.seed) for k in ks]

    def measurement(self, test, meta: Mapping[str, Any]) -> str:
        return chips_measurement(_digest(_data_key(meta, self.eval_limit), test), self.hardware, self.t,
                                 self.compensation, self.votes, self.seed)

    def inputs(self) -> dict[str, Path]:
        return {Path(self.checkpoint).name: Path(self.checkpoint)}

    def describe(self) -> str:
        when = "" if self.t is None else f" at t = {self.t:g} s"
        comp = "" if self.compensation is None else (" with" if self.compensation else " without") + " compensation"
        what = f"the voting curve (K <= {self.votes})" if self.votes else "the chips"
        return f"{what} of {Path(self.checkpoint).stem}{when}{comp}"

    def run(self) -> list[tuple[Point, ChipRow]]:
        return self.compute(Workspace.here(self))

    def compute(self, ws: Workspace) -> list[tuple[Point, ChipRow]]:
        model, test, meta = _load(ws.file(Path(self.checkpoint).name), self)
        how = self.measurement(test, meta)
        if self.expect is not None and how != self.expect:
            from noisynn.engine.store import _differences

            raise NoisynnError(f"{self.describe()}: this machine would measure it otherwise than the driver "
                               f"({_differences(self.expect, how)}): give every machine the same data and noisynn")
        hw, sha = self.hardware, meta["sha256"]
        chip_model = hw.model(self.seed)
        keys = self.keys(meta)
        if self.votes:
            acc, chips, seconds = vote_chips(model, test, chip_model, self.votes, chips=hw.chips, t=self.t,
                                             compensation=self.compensation, seed=self.seed, stream=(sha,),
                                             batch_size=hw.batch_size)
            out = []
            for k, key in enumerate(keys):
                per_chip = tuple(acc[:, k].tolist())
                mean, se = mean_stderr(per_chip)
                out.append((Point(key, len(per_chip), mean, se, seconds / self.votes, sha, per_chip, how),
                            ChipRow(hw.label, self.t or 0.0, self.compensation, len(chips), k + 1, _std(per_chip),
                                    0.0, per_chip)))
            return out
        res = evaluate_chips(model, test, chip_model, chips=hw.chips, reads=hw.reads, t=self.t,
                             compensation=self.compensation, seed=self.seed, stream=(sha,), batch_size=hw.batch_size)
        runs = tuple(a for reads in res.accuracies for a in reads)
        stderr = res.chip_spread / math.sqrt(res.n_chips)
        point = Point(keys[0], len(runs), res.mean, stderr, res.seconds, sha, runs, how)
        return [(point, ChipRow(hw.label, self.t or 0.0, self.compensation, res.n_chips, res.n_reads,
                                res.chip_spread, res.read_spread, res.chip_means))]

    # -- the driver's side -------------------------------------------------------------
    def prepare_in_driver(self, open_store: Callable[[], ResultStore], log: Callable[[str], None]) -> ChipsTask | None:
        """The task to submit (with the measurement it must reproduce), or None when the store has its points."""
        from noisynn.engine.checkpoint import read_metadata

        meta = read_metadata(self.checkpoint)
        how = self.measurement(_driver_test(self, meta), meta)
        notes: list[str] = []
        with open_store() as store:
            # a list, not a generator: all() would stop at the first missing point, before a stale one notes
            present = [store.has_point(k, meta["weights_sha256"], how, on_stale=notes.append) for k in self.keys(meta)]
            if all(present):
                return None
        for note in notes[:1]:
            log(note)
        return dataclasses.replace(self, expect=how)

    def commit(self, store: ResultStore, result: list[tuple[Point, ChipRow]]) -> None:
        """Write the points and their chips rows (one transaction)."""
        store.replace_chip_points(result)


_TESTS: dict[tuple, object] = {}


def _driver_test(task: ChipsTask, meta: Mapping[str, Any]):
    """The evaluation split as the driver loads it (to know the measurement before submitting)."""
    key = _data_key(meta, task.eval_limit)
    if key not in _TESTS:
        if len(_TESTS) > 2:
            _TESTS.clear()
        spec = meta.get("spec") or {}
        _TESTS[key] = load_data(meta["model"], meta["dataset"], "test", data_dir=task.data_dir, limit=task.eval_limit,
                                allow_partial=key[3], data_options=spec.get("data_options") or {})
    return _TESTS[key]


def measured_without_checkpoint(plan, train, tasks: list[ChipsTask], seed: int) -> bool:
    """True when every hardware point of ``train``'s model is in the store, measured as ``tasks`` would, on the
    weights of the finished model (its stopping row, else its last planned epoch): its chain needs nothing."""
    if not tasks:
        return True
    path = RunDir(Path(train.run_dir)).store
    if not path.exists():
        return False
    spec = train.spec
    meta = {"model": spec.model, "dataset": spec.dataset, "noise": spec.noise, "sigma_train": spec.sigma_train,
            "spec": spec.identity()}
    test = _driver_test(tasks[0], meta)
    with ResultStore(path) as store:
        records = [(store.point_record(k), t.measurement(test, meta)) for t in tasks for k in t.keys(meta)]
        if any(r is None or r[1] != how for r, how in records):
            return False
        hashes = {r[0] for r, _ in records if r is not None}  # all are (checked above)
        if len(hashes) != 1:
            return False
        sha = hashes.pop()
        sigma, label = sigma_key(spec.sigma_train), spec.family.label

        def mine(r: dict) -> bool:
            return r["sigma_train"] == sigma and r["model"] == spec.model and r["noise"] == label and r["seed"] == seed

        stops = [r for r in store.stopping(plan.name) if mine(r)]
        if stops:
            return stops[-1]["checkpoint"] == sha
        return any(e["checkpoint"] == sha and e["epoch"] == spec.epochs for e in store.epochs(plan.name) if mine(e))
