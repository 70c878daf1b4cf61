"""Hardware evaluation as a preset (issue 17): [hardware] tables, chips points in the store, resuming, the report."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest

from noisynn.engine import hardware_tasks
from noisynn.engine.chips import TIMES
from noisynn.engine.presets import PresetError, list_presets, load_plan
from noisynn.engine.store import ResultStore
from noisynn.engine.sweep import run_sweep

TINY = """
name = "tiny-hw"
model = "lstm-rows"
dataset = "digits"
noise = "additive"

[hardware]
noise = "pcm"
params = {inp_bits = 8, out_bits = 8, out_noise = 0.04}
times = [1, 86400]
chips = 2
reads = 2
eval_limit = 240
votes = 2

[hardware.train]
noise = "pcm"
params = {inp_bits = 8, out_bits = 8, out_noise = 0.04}
sweep_param = "prog_noise_scale"
sigma_train = "1"

[profile.test]
sigma_train = "0"
sigma_val = "0"
runs = 1
epochs = 1
lr = 5e-3
batch_size = 64
"""


def _preset(tmp_path: Path, text: str = TINY, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["hardware-cnn6-pcm", "hardware-lstm-rows-pcm"])
def test_shipped_hardware_presets_load_for_every_profile(name):
    rows = {r["name"]: r for r in list_presets()}
    assert set(rows[name]["profiles"]) == {"cpu", "paper", "quick"}
    for profile in rows[name]["profiles"]:
        plan = load_plan(name, profile)
        hw = hardware_tasks.of(plan)
        assert hw.noise == "noisynn.hardware:PCM"
        assert hw.times == TIMES and hw.compensation == (False, True)
        assert hw.votes > 0 and hw.vote_t == 86400 and hw.vote_compensation is True
        assert plan.noise == "additive" and 0.0 in plan.sigma_train and any(s > 0 for s in plan.sigma_train)
        specs = hardware_tasks.aware_specs(plan, 0)
        assert specs and all(s.noise == "noisynn.hardware:PCM" and s.sweep_param == "prog_noise_scale"
                             for s in specs)
        assert specs[0].epochs == plan.train["epochs"] and specs[0].lr == plan.train["lr"]
    quick = hardware_tasks.of(load_plan(name, "quick"))
    assert (quick.chips, quick.reads) == (2, 2)  # the profile's override of [hardware]
    assert load_plan(name, "quick").eval_limit == 1000


@pytest.mark.parametrize("edit, message", [
    (("chips = 2", "chips = 0"), "hardware.chips"),
    (("times = [1, 86400]", "times = [1, -5]"), "hardware.times"),
    (("times = [1, 86400]", "times = [1, 1]"), "given twice"),
    (("votes = 2", "votes = 2\ncolour = 1"), "unknown key colour in hardware"),
    (('noise = "pcm"\nparams = {inp_bits', 'noise = "crossbar"\nparams = {inp_bits'), "no time after programming"),
    (("chips = 2\n", "chips = 2\ncompensation = [\"yes\"]\n"), "hardware.compensation"),
    (("params = {inp_bits = 8, out_bits = 8, out_noise = 0.04}\ntimes",
      "params = {inp_bits = 8, out_bits = 8, out_noise = 0.04, t = 5}\ntimes"), "sets t"),
    (('sweep_param = "prog_noise_scale"', 'sweep_param = "no_such"'), "hardware.train"),
])
def test_a_bad_hardware_table_is_one_line_naming_the_key(tmp_path, edit, message):
    old, new = edit
    assert old in TINY
    path = _preset(tmp_path, TINY.replace(old, new, 1))
    with pytest.raises(PresetError, match=message) as info:
        load_plan(path, "test")
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_a_crossbar_is_one_chip_without_times():
    hw = hardware_tasks.parse({"noise": "crossbar", "params": {"out_noise": 0.04}}, None)
    assert (hw.times, hw.compensation, hw.chips) == ((None,), (None,), 1)
    with pytest.raises(Exception, match="chips = 1"):
        hardware_tasks.parse({"noise": "crossbar", "chips": 3}, None)


def test_the_point_identity_changes_with_t_compensation_chips_reads_and_params(tmp_path):
    hw = hardware_tasks.of(load_plan(_preset(tmp_path), "test"))
    base = hardware_tasks.chips_measurement("abc", hw, 86400.0, True, 0, 0)
    assert base == hardware_tasks.chips_measurement("abc", hw, 86400.0, True, 0, 0)
    import dataclasses

    others = [
        hardware_tasks.chips_measurement("abc", hw, 3600.0, True, 0, 0),
        hardware_tasks.chips_measurement("abc", hw, 86400.0, False, 0, 0),
        hardware_tasks.chips_measurement("abc", dataclasses.replace(hw, chips=3), 86400.0, True, 0, 0),
        hardware_tasks.chips_measurement("abc", dataclasses.replace(hw, reads=3), 86400.0, True, 0, 0),
        hardware_tasks.chips_measurement("abc", dataclasses.replace(hw, params={**hw.params, "out_noise": 0.02}),
                                         86400.0, True, 0, 0),
        hardware_tasks.chips_measurement("abc", hw, 86400.0, True, 0, 1),  # another --seed: other chips
        hardware_tasks.chips_measurement("abd", hw, 86400.0, True, 0, 0),  # other test data
        hardware_tasks.chips_measurement("abc", hw, 86400.0, True, 2, 0),  # a voting curve
    ]
    assert len({base, *others}) == len(others) + 1
    record = json.loads(base)
    assert (record["t"], record["compensation"], record["chips"], record["reads"]) == (86400.0, True, 2, 2)
    assert record["hardware"]["class"] == "noisynn.hardware:PCM" and record["hardware"]["params"]["out_noise"] == 0.04
    # ... and the store keys of the tasks differ by time (sigma_val) and compensation (kind)
    plan = load_plan(_preset(tmp_path), "test")

    class _Train:
        checkpoint = tmp_path / "m.safetensors"

    tasks = hardware_tasks.chip_tasks(plan, _Train(), run_dir=str(tmp_path), experiment=plan.name, seed=0,
                                      data_dir=None, device="cpu")
    meta = {"model": "lstm-rows", "dataset": "digits", "noise": "additive", "sigma_train": 0.0}
    keys = [k for t in tasks for k in t.keys(meta)]
    assert len(set(keys)) == len(keys) == 2 * 2 + 2
    assert {k.kind for k in keys} == {"chips-comp", "chips-nocomp", "chips-vote-comp"}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The tiny hardware preset run once on the embedded digits: conventional + hardware-aware LSTMs."""
    tmp = tmp_path_factory.mktemp("hwsweep")
    plan = load_plan(_preset(tmp), "test")
    logs: list[str] = []
    summary = run_sweep(plan, tmp / "run", progress=False, log=logs.append)
    return plan, tmp / "run", summary, logs


def _std(values):
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0


@pytest.mark.slow
def test_a_hardware_sweep_writes_chips_points_with_both_spreads(swept):
    plan, run, summary, _ = swept
    with ResultStore(run / "results.sqlite", readonly=True) as store:
        rows = store.chip_points(plan.name)
        runs = {r["id"]: store.run_accuracies(r["id"]) for r in rows}
        trained = {(e["noise"], e["sigma_train"]) for e in store.epochs(plan.name)}
    aware = hardware_tasks.aware_specs(plan, 0)[0].family.label
    assert trained == {("additive", 0.0), (aware, 1.0)}
    single = [r for r in rows if r["votes"] == 1 and not r["kind"].startswith("chips-vote")]
    voted = [r for r in rows if r["kind"].startswith("chips-vote")]
    assert len(single) == 2 * 2 * 2 and len(voted) == 2 * 2  # 2 models x (2 times x 2 compensation), K = 1, 2
    assert {(r["t"], r["compensation"]) for r in single} == {(1.0, False), (1.0, True), (86400.0, False),
                                                             (86400.0, True)}
    for r in single:
        assert (r["n_chips"], r["n_reads"], r["n_runs"]) == (2, 2, 4)
        acc = runs[r["id"]]  # run = chip * reads + read
        per_chip = [sum(acc[c * 2:(c + 1) * 2]) / 2 for c in range(2)]
        assert r["per_chip"] == pytest.approx(per_chip)
        assert r["accuracy"] == pytest.approx(sum(acc) / 4)
        assert r["chip_spread"] == pytest.approx(_std(per_chip))
        assert r["read_spread"] == pytest.approx(sum(_std(acc[c * 2:(c + 1) * 2]) for c in range(2)) / 2)
        assert r["sigma_val"] == r["t"] and r["hardware"].startswith("PCM-")
        assert json.loads(r["measurement"])["limit"] == 240
    assert any(r["chip_spread"] > 0 for r in single) and any(r["read_spread"] > 0 for r in single)
    for r in voted:
        assert r["t"] == 86400.0 and r["compensation"] is True and r["n_chips"] == 2 and r["n_reads"] == r["votes"]
        assert runs[r["id"]] == pytest.approx(r["per_chip"])
    assert summary.computed == 1 + 2 * (4 + 1)  # the clean point of the sigma_train grid, then the chips tasks


@pytest.mark.slow
def test_a_hardware_sweep_resumes_without_measuring_again(swept, tmp_path):
    plan, run, _, _ = swept
    db = run / "results.sqlite"
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT id, created FROM points ORDER BY id").fetchall()
    again = run_sweep(plan, run, progress=False, log=lambda _m: None)
    assert again.computed == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT id, created FROM points ORDER BY id").fetchall() == before
        # a sweep killed before one point was written: that point alone is measured on the next run
        victim = conn.execute("SELECT id FROM points WHERE kind = 'chips-nocomp' AND sigma_val = 86400 "
                              "ORDER BY id LIMIT 1").fetchone()[0]
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("DELETE FROM points WHERE id = ?", (victim,))
        assert conn.execute("SELECT count(*) FROM chips WHERE point_id = ?", (victim,)).fetchone()[0] == 0
    resumed = run_sweep(plan, run, progress=False, log=lambda _m: None)
    assert resumed.computed == 1
    with ResultStore(db, readonly=True) as store:
        assert len(store.chip_points(plan.name)) == 12


@pytest.mark.slow
def test_a_changed_hardware_setting_is_measured_again(swept, tmp_path):
    plan, run, _, _ = swept
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    changed = load_plan(_preset(tmp_path, TINY.replace("reads = 2", "reads = 3")), "test")
    logs: list[str] = []
    summary = run_sweep(changed, copy, progress=False, log=logs.append)
    assert summary.computed == 2 * 2 * 2  # every single-read point, on both models; not the voting curves
    assert any("reads 2 -> 3" in m and "measured again" in m for m in logs), logs
    with ResultStore(copy / "results.sqlite", readonly=True) as store:
        assert {r["n_reads"] for r in store.chip_points() if not r["kind"].startswith("chips-vote")} == {3}


@pytest.mark.slow
def test_the_report_draws_accuracy_against_time_with_chip_bands(swept, tmp_path):
    from noisynn.report.builder import build_report

    _, run, _, _ = swept
    report = build_report(run, tmp_path / "report", model_figures=False)
    assert {"chips_time", "chips_votes"} <= set(report.figures)
    assert (tmp_path / "report" / "chips_time.png").stat().st_size > 10_000
    html = report.html.read_text()
    assert 'id="hardware"' in html and "chips_time.png" in html and "hardware-aware (PCM)" in html
    with open(tmp_path / "report" / "chips.csv") as handle:
        assert len(handle.read().strip().splitlines()) == 1 + 12


def test_results_prints_the_chips_table_from_the_store(swept):
    """``noisynn results`` shows every hardware point: one row per (model, compensation), a column
    per time after programming, each cell the store's mean ± chip-to-chip spread; and the votes."""
    from typer.testing import CliRunner

    from noisynn.cli.main import app

    plan, run, _, _ = swept
    out = CliRunner().invoke(app, ["results", str(run)], terminal_width=250)
    assert out.exit_code == 0, out.output
    with ResultStore(run / "results.sqlite", readonly=True) as store:
        rows = store.chip_points(plan.name)
    assert "chips: accuracy %" in out.output and "voting on a chip" in out.output
    lines = out.output.splitlines()
    for r in rows:
        if r["kind"].startswith("chips-vote"):
            continue
        cell = f"{100 * r['accuracy']:.2f}±{100 * r['chip_spread']:.2f}"
        comp = "yes" if r["compensation"] else "no"
        assert any(cell in line and f" {comp} " in line and f" {r['sigma_train']:g} " in line for line in lines), cell
    kmax = max(r["votes"] for r in rows if r["kind"].startswith("chips-vote"))
    for r in rows:
        if r["kind"].startswith("chips-vote") and r["votes"] in (1, kmax):
            assert f"{100 * r['accuracy']:.2f}" in out.output
