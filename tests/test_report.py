"""The report: figures, CSV tables and HTML of a small real sweep; published numbers; claims."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

import noisynn
from noisynn.engine import load_plan, run_sweep
from noisynn.report import analysis, build_report, figures, published, write_report

# A tiny sweep on the embedded 8x8 digits, named after paper 2's stroke-LSTM experiment so
# that its published cells are matched (by name; the report says the data set differs).
PRESET = """
name = "paper2-lstm-strokes-multiplicative"
title = "test: LSTM on 8x8 digits, multiplicative noise"
model = "lstm-strokes"
dataset = "digits"
noise = "multiplicative"

[profile.quick]
sigma_train = "0,0.3"
sigma_val = "0,0.2,1"
epochs = 2
batch_size = 50
lr = 3e-3
train_limit = 300
eval_limit = 150
runs = 3
votes = 20
vote_sigma_val = "0.2"
vote_trials = 2
curve_every = 2
"""

FIGURES = ["accuracy", "error_rate", "heatmap", "learning_curves", "weights", "weight_power", "states_h", "states_c",
           "softmax_st0", "softmax_st0.3", "votes"]
TABLES = ["comparison.csv", "claims.csv", "points.csv", "grid_accuracy.csv", "learning_curves.csv",
          "learning_curves_batches.csv", "weight_power.csv", "voting_cost.csv", "votes.csv"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    preset = root / "tiny.toml"
    preset.write_text(PRESET)
    run_dir = root / "run"
    run_sweep(load_plan(preset, "quick"), run_dir, device="cpu", progress=False, log=lambda _m: None)
    return run_dir


@pytest.fixture(scope="module")
def report(sweep):
    return build_report(sweep, softmax_runs=300, state_samples=64)


class _Page(HTMLParser):
    """Checks nesting and collects what the tests look at."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input", "col", "source"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.doctype = ""
        self.images: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.tables: dict[str, list[list[tuple[str, dict]]]] = {}
        self._table: str | None = None
        self._cell: tuple[list[str], dict] | None = None
        self.title = ""
        self._in_title = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            if attrs["id"] in self.ids:
                self.errors.append(f"duplicate id {attrs['id']}")
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs["src"])
            if not attrs.get("alt"):
                self.errors.append(f"img {attrs['src']} without alt")
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        if tag == "table":
            self._table = attrs.get("id", f"anon{len(self.tables)}")
            self.tables[self._table] = []
        if tag == "tr" and self._table:
            self.tables[self._table].append([])
        if tag in ("td", "th") and self._table:
            self._cell = ([], attrs)
        if tag == "title":
            self._in_title = True
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append(("".join(self._cell[0]).strip(), self._cell[1]))
            self._cell = None
        if tag == "table":
            self._table = None
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0].append(data)
        if self._in_title:
            self.title += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


@pytest.mark.slow
def test_report_writes_every_figure_and_table(sweep, report):
    out = sweep / "report"
    assert report.html == out / "report.html" and report.html.is_file()
    for stem in FIGURES:
        assert stem in report.figures, stem
        for ext in ("png", "svg"):
            f = out / f"{stem}.{ext}"
            assert f.is_file() and f.stat().st_size > 1000, f
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in TABLES:
        assert name in report.tables and (out / name).is_file(), name


@pytest.mark.slow
def test_html_is_valid_and_self_contained(sweep, report):
    out = sweep / "report"
    page = _parse(report.html)
    assert page.doctype.lower() == "doctype html"
    assert not page.errors, page.errors
    assert page.stack == [], f"unclosed tags {page.stack}"
    assert "paper2-lstm-strokes-multiplicative" in page.title
    for section in ("published", "accuracy", "learning", "weights", "states", "softmax", "voting", "runs", "files"):
        assert section in page.ids, section
    assert {"comparison", "run-meta", "models", "voting-cost"} <= set(page.tables)
    # every figure is on the page, referenced relatively, and every local link resolves in the folder
    assert sorted(page.images) == sorted(f"{s}.png" for s in report.figures)
    for ref in page.images + [h for h in page.links if not h.startswith("#")]:
        assert "/" not in ref and (out / ref).is_file(), ref
    # the profile is stated plainly
    text = report.html.read_text(encoding="utf-8")
    assert "Profile <b>quick</b>" in text and "not expected to match" in text
    # the data set differs from the paper's, and the page says so
    assert "digits" in text and "mnist-strokes" in text


@pytest.mark.slow
def test_comparison_table_equals_the_store(sweep, report):
    con = sqlite3.connect(sweep / "results.sqlite")
    stored = {row[0]: row[1:] for row in con.execute(
        "SELECT id, accuracy, stderr, n_runs, kind, sigma_train, sigma_val, votes FROM points")}
    con.close()
    rows = _parse(report.html).tables["comparison"][1:]
    measured = [(text, attrs) for row in rows for text, attrs in row if attrs.get("class") == "measured"]
    # covered cells: table 6 (sigma_train 0 at 0, 0.2, 1; "Best" 0.3 at 0, 0.2), table 9 "No voting"
    # (0.3 at 0, 0.2) and "Best voting" with K = 20 (0.3 at 0.2)
    assert len(measured) == 8
    for text, attrs in measured:
        acc = stored[int(attrs["data-point-id"])][0]
        assert text == f"{100 * acc:.2f}"
        assert float(attrs["data-value"]) == acc
    with open(sweep / "report" / "comparison.csv", newline="") as handle:
        csv_rows = [r for r in csv.DictReader(handle) if r["measured"]]
    assert len(csv_rows) == 8
    for r in csv_rows:
        acc, se, n_runs, kind, st, sv, votes = stored[int(r["point_id"])]
        assert float(r["measured"]) == acc and float(r["stderr"]) == se and int(r["n_runs"]) == n_runs
        assert (kind, st, sv, votes) == (r["kind"], float(r["sigma_train"]), float(r["sigma_val"]),
                                          int(r["votes_measured"]))
        assert float(r["difference"]) == pytest.approx(acc - float(r["value"]))
        assert r["profile"] == "quick"
    voting = [r for r in csv_rows if r["kind"] == "vote"]
    assert [(float(r["sigma_train"]), float(r["sigma_val"]), int(r["votes"])) for r in voting] == [(0.3, 0.2, 20)]
    assert float(voting[0]["value"]) == pytest.approx(0.961)


@pytest.mark.slow
def test_models_weights_and_run_counts(sweep, report):
    with open(sweep / "report" / "weight_power.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["sigma_train"]) for r in rows] == [0.0, 0.3]
    model, _ = noisynn.engine.load_trained(next((sweep / "models").glob("*s0.00*.safetensors")))
    assert float(rows[0]["mean_square"]) == pytest.approx(analysis.weight_power(model)["mean_square"])
    assert int(rows[0]["count"]) == noisynn.count_parameters(model)  # biases count as weights
    text = report.html.read_text(encoding="utf-8")
    assert "runs in total" in text and "50 runs per point" in text


@pytest.mark.slow
def test_partial_and_empty_run_directories(sweep, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(sweep, partial, ignore=shutil.ignore_patterns("report"))
    con = sqlite3.connect(partial / "results.sqlite")
    con.execute("PRAGMA foreign_keys=ON")
    con.execute("DELETE FROM points WHERE sigma_val = 1.0 OR kind = 'vote'")
    con.commit()
    con.close()
    for f in (partial / "models").glob("*s0.30*"):
        f.unlink()
    rep = build_report(partial, softmax_runs=0, state_samples=16)
    assert {"accuracy", "heatmap", "weights", "states_h", "states_c"} <= set(rep.figures)
    assert "votes" not in rep.figures and not any(f.startswith("softmax") for f in rep.figures)
    page = _parse(rep.html)
    assert not page.errors and page.stack == []
    # a store with nothing in it yet still gives a page
    empty = tmp_path / "empty"
    noisynn.engine.ResultStore(empty / "results.sqlite").claim(experiment="x", profile="quick")
    html = write_report(empty)
    assert html.is_file() and not _parse(html).errors
    with pytest.raises(noisynn.NoisynnError, match="no results.sqlite"):
        write_report(tmp_path / "nothing-here")


@pytest.mark.slow
def test_a_train_directory_reports_and_a_stray_checkpoint_is_noted(tmp_path):
    """`noisynn train`'s store names no noise (the checkpoint does); a non-checkpoint in models/ is noted."""
    from typer.testing import CliRunner

    from noisynn.cli.main import app

    run = tmp_path / "train"
    result = CliRunner().invoke(app, ["train", "rnn-rows", "--dataset", "digits", "--noise", "multiplicative",
                                      "--sigma", "0.5", "--epochs", "1", "--out", str(run), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (run / "models" / "stray.safetensors").write_bytes(b"not a checkpoint")
    rep = build_report(run, softmax_runs=0, state_samples=16)
    assert "weights" in rep.figures and "states_h" in rep.figures
    assert any(n.startswith("models/stray.safetensors skipped:") for n in rep.notes), rep.notes


@pytest.mark.slow
def test_cli_report(sweep, tmp_path):
    from typer.testing import CliRunner

    from noisynn.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["report", str(sweep), "--out", str(tmp_path / "r"), "--json",
                                 "--softmax-runs", "0", "--no-models"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert Path(doc["html"]).is_file() and "accuracy" in doc["figures"]
    assert sum(r["measured"] is not None for r in doc["comparison"]) == 8
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "error:" in result.output


# -- published data ------------------------------------------------------------------------
def test_published_cells_are_mapped():
    cells = published.published_cells()
    assert len(cells) == 4 * 12 + 3 * 12 + 2 * 5 + 6
    by_id = {c.id: c for c in cells}
    t2 = by_id["p2-table2/1/0.6"]  # "Best accu." at sigma_val 0.6 is sigma_train 0.7's
    assert (t2.experiment, t2.sigma_train, t2.votes, t2.value) == ("paper2-cnn6-multiplicative", 0.7, 1, 0.946)
    t7 = by_id["p2-table7/1/1"]
    assert (t7.kind, t7.sigma_train, t7.votes, t7.value) == ("vote", 0.9, 20, 0.995)
    assert by_id["p2-table7/0/1"].kind == "noisy" and by_id["p2-table7/0/1"].sigma_train == 1.0
    assert by_id["p1-lstm-rows-noisy"].value == 0.125
    shipped = {p["name"] for p in noisynn.engine.list_presets()}
    assert {c.experiment for c in cells} - shipped == {"paper2-adversarial-cifar10"}  # no CIFAR-10 attack preset yet
    # the attack experiment's networks are adversarially trained: never matched by signature
    adv = published.matching_experiments({"experiment": "paper2-adversarial", "model": "cnn6", "dataset": "mnist",
                                          "noise": "multiplicative"})
    assert list(adv) == ["paper2-adversarial"]
    # every claim is of a kind check_claims evaluates (an unknown type would stay "not covered" for ever),
    # of a shipped experiment, and named once
    claims = published.claims()
    assert claims and {c.type for c in claims} <= {"min_above", "max_drop", "exists_above_reference"}
    assert {c.experiment for c in claims} <= shipped and len({c.id for c in claims}) == len(claims)
    table4 = next(w for w in published.weight_power_published() if w["source"] == "Table 4")
    assert len(table4["points"]) == 11 and table4["quantity"] == "sqrt(E[w^2])"
    # paper2-voting measures the CNN's cells (same network, data and noise)
    matched = published.matching_experiments({"experiment": "paper2-voting", "model": "cnn6", "dataset": "mnist",
                                              "noise": "multiplicative"})
    assert "paper2-cnn6-multiplicative" in matched and "paper2-cnn6-additive" not in matched
    assert "paper2-adversarial" not in matched


def _point(st, sv, acc, kind="noisy", votes=1, pid=0):
    return {"id": pid, "kind": kind, "sigma_train": st, "sigma_val": sv, "votes": votes, "accuracy": acc,
            "stderr": 0.001, "n_runs": 40, "seed": 0}


def test_claims_pass_fail_and_coverage():
    claim = [c for c in published.claims("paper1-lstm-rows") if c.type == "min_above"]
    good = [_point(1.0, sv / 10, 0.985) for sv in range(11)] + [_point(0.0, 0.0, 0.987)]
    assert published.check_claims(claim, good)[0]["status"] == "pass"
    bad = good[:-2] + [_point(1.0, 1.0, 0.97), _point(0.0, 0.0, 0.987)]
    row = published.check_claims(claim, bad)[0]
    assert row["status"] == "fail" and row["measured"] == 0.97
    assert published.check_claims(claim, [_point(0.5, 0.0, 0.99)])[0]["status"] == "not covered"
    exists = [c for c in published.claims("paper1-lstm-rows") if c.type == "exists_above_reference"]
    assert published.check_claims(exists, [_point(0, 0, 0.98), _point(0.5, 0.1, 0.981)])[0]["status"] == "pass"
    assert published.check_claims(exists, [_point(0, 0, 0.98), _point(0.5, 0.1, 0.97)])[0]["status"] == "fail"
    # sigma_val = 0 is not a noisy point: no candidate
    assert published.check_claims(exists, [_point(0, 0, 0.98), _point(0.5, 0.0, 0.99)])[0]["status"] == "not covered"


def test_compare_uses_largest_k_when_fewer_votes():
    cell = [c for c in published.published_cells("paper2-cnn6-multiplicative") if c.id == "p2-table7/1/1"]
    rows = published.compare(cell, [_point(0.9, 1.0, 0.9, "vote", k, pid=k) for k in range(1, 11)])
    assert rows[0]["measured"] == 0.9 and rows[0]["votes_measured"] == 10 and "K = 10" in rows[0]["note"]


# -- analysis and figures ---------------------------------------------------------------------
def test_recurrent_states_follow_the_layer():
    torch.manual_seed(0)
    model = noisynn.build_model("lstm-rows", steps=5, input_size=4).eval()
    x = torch.randn(7, 5, 4)
    states = analysis.recurrent_states(model, x)
    out, (_, c_n) = model.rnn(x)
    assert states["h"].shape == (5, 7, 128) and states["c"].shape == (5, 7, 128)
    np.testing.assert_allclose(states["h"], out.detach().transpose(0, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(states["c"][-1], c_n[-1].detach().numpy(), atol=1e-5)
    noisy = analysis.recurrent_states(model, x, "additive", 1.0, generator=torch.Generator().manual_seed(1))
    assert noisy["c"].std() > states["c"].std()
    rnn = noisynn.build_model("rnn-rows", steps=5, input_size=4).eval()
    assert set(analysis.recurrent_states(rnn, x)) == {"h"}


def test_softmax_runs_and_voting_cost():
    torch.manual_seed(0)
    model = noisynn.build_model("lstm-rows", steps=5, input_size=4).eval()
    probs = analysis.softmax_runs(model, torch.randn(5, 4), "multiplicative", 0.5, 250, chunk=100,
                                  generator=torch.Generator().manual_seed(0))
    assert probs.shape == (250, 10) and np.allclose(probs.sum(1), 1, atol=1e-5) and probs.std(0).max() > 0
    assert analysis.count_noisy_layers(noisynn.build_model("cnn6")) == 6
    assert analysis.count_noisy_layers(noisynn.build_model("lstm-rows")) == 29
    pts = [_point(0.5, 1.0, 0.8 + 0.01 * k, "vote", k) for k in (1, 5, 20)]
    rows = analysis.voting_cost(pts, 6)
    assert [(r["votes"], r["latency_pipelined_T"], r["latency_sequential_T"], r["power_P"]) for r in rows] == [
        (1, 7, 6, 1), (5, 11, 30, 5), (20, 26, 120, 20)]
    assert rows[-1]["gain"] == pytest.approx(0.19) and rows[1]["latency_overhead"] == pytest.approx(5 / 6)


def test_every_figure_function_returns_a_figure():
    from matplotlib.figure import Figure

    pts = [_point(st, sv, 0.9 - 0.3 * sv * (1 - st), pid=i) for i, (st, sv) in
           enumerate((st, sv) for st in (0.0, 1.0) for sv in (0.0, 0.5, 1.0))]
    rng = np.random.default_rng(0)
    made = [
        figures.accuracy_vs_sigma(pts), figures.accuracy_vs_sigma(pts, error_rate=True), figures.accuracy_heatmap(pts),
        figures.learning_curves([{"sigma_train": 0.0, "seed": 0, "epoch": 1, "batches": 10, "val_accuracy": 0.5,
                                  "val_loss": 1.0}]),
        figures.state_distributions([{"label": "a", "values": rng.normal(size=(3, 4, 5))}], state="c"),
        figures.weight_histograms({0.0: rng.normal(size=100)}),
        figures.weight_power([{"sigma_train": 0.0, "mean_square": 0.01, "rms": 0.1}],
                             published=published.weight_power_published("paper2-cnn6-multiplicative")),
        figures.softmax_distribution({0.0: rng.dirichlet(np.ones(10), 50)}, label=6),
        figures.vote_accuracy([_point(0.5, 1.0, 0.8, "vote", k) for k in (1, 2)]),
        figures.stroke_lengths(rng.integers(5, 90, 500)),
        figures.accuracy_vs_sigma([]), figures.accuracy_heatmap([]),
    ]
    assert all(isinstance(f, Figure) for f in made)


def test_attack_run_is_compared_with_table_11(tmp_path):
    from noisynn.engine.store import Point, PointKey, ResultStore

    run = tmp_path / "attack"
    with ResultStore(run / "results.sqlite") as store:
        store.claim(experiment="paper2-adversarial", profile="quick", model="cnn6", dataset="mnist",
                    noise="multiplicative")
        for i, sv in enumerate((0.0, 0.1, 0.2)):
            for kind, acc in (("noisy", 0.99 - i / 100), ("adversarial", 0.95 + i / 100)):
                key = PointKey("paper2-adversarial", "cnn6", "mnist", "multiplicative", 0.0, sv, kind=kind)
                store.add_point(Point(key, 20, acc, 0.001, 1.0, "sha", (acc,) * 20))
    rep = build_report(run, model_figures=False)
    assert "adv" in rep.figures and (run / "report" / "adv.png").is_file()
    covered = [r for r in rep.comparison if r["measured"] is not None]
    assert [(r["source"], r["sigma_val"], r["measured"]) for r in covered] == [
        ("Table 11 (MNIST column)", 0.0, 0.95), ("Table 11 (MNIST column)", 0.1, 0.96),
        ("Table 11 (MNIST column)", 0.2, 0.97)]
    assert not _parse(rep.html).errors
