"""Chips as a dimension (noisynn.engine.chips): C chips x R reads, the two spreads, accuracy over time."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import noisynn
from noisynn import data
from noisynn.engine.chips import ChipsResult, evaluate_chips, time_sweep
from noisynn.hardware import PCM
from noisynn.noise import PerSite, Product


def _mlp(hidden: int = 48) -> nn.Module:
    """64 -> hidden (no bias) -> batch-norm (digital on a chip) -> ReLU -> 10: cnn6's pattern in small."""
    return nn.Sequential(nn.Flatten(), noisynn.NoisyLinear(64, hidden, bias=False), noisynn.NoisyBatchNorm1d(hidden),
                         nn.ReLU(), noisynn.NoisyLinear(hidden, 10))


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "train"), data.load("digits", "test")


@pytest.fixture(scope="module")
def trained(digits):
    """The MLP trained conventionally on the embedded digits (~1 s)."""
    train, test = digits
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(8):
        for xb, yb in data.batches(train, 64, generator=gen):
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    model.eval()
    with torch.no_grad(), noisynn.clean():
        assert (model(test.x).argmax(1) == test.y).float().mean() > 0.9
    return model


def _accuracy(model, test, noise) -> float:
    with torch.inference_mode(), noise:
        return (model(test.x).argmax(1) == test.y).double().mean().item()


def test_the_same_chip_programs_the_same_weights_and_other_chips_other_weights():
    torch.manual_seed(1)
    w = torch.randn(32, 24)
    p = Product(torch.ones(1, 24), w, None, F.linear, -1, True, False, w)
    base = PCM(t=86400.0)
    chip = {k: base.with_params(chip=k).weights(p, "fc")[0] for k in (0, 1, 2)}
    again = base.with_params(chip=1).weights(p, "fc")[0]
    assert torch.equal(chip[1], again)
    assert not torch.equal(chip[0], chip[1]) and not torch.equal(chip[1], chip[2])
    later = base.with_params(chip=1, t=3.15e7, read_noise_scale=0.0).weights(p, "fc")[0]
    day = base.with_params(chip=1, read_noise_scale=0.0).weights(p, "fc")[0]
    ratio = later / day  # the same devices a year later: each shrinks by its own drift exponent, none grows
    assert bool((ratio[day.abs() > 0.05] <= 1 + 1e-6).all())


@pytest.mark.slow
def test_reads_of_one_chip_agree_without_read_noise_and_chips_differ(trained, digits):
    _, test = digits
    quiet_reads = PCM(t=86400.0, inp_bits=8, out_bits=8)  # programming, drift, 1/f: fixed per chip; nothing per read
    res = evaluate_chips(trained, test, quiet_reads, chips=4, reads=3)
    assert res.n_chips == 4 and res.n_reads == 3 and res.chips == (0, 1, 2, 3)
    for c, reads in enumerate(res.accuracies):
        assert len(set(reads)) == 1  # every read of a chip is the same chip
        assert reads[0] == pytest.approx(_accuracy(trained, test, quiet_reads.with_params(chip=c)), abs=1e-12)
    assert res.read_spread == 0.0
    assert len(set(res.chip_means)) > 1 and res.chip_spread > 0
    assert evaluate_chips(trained, test, quiet_reads, chips=[2, 3], reads=1).accuracies == tuple(
        r[:1] for r in res.accuracies[2:])  # chip k is chip k, whichever chips are evaluated with it


@pytest.mark.slow
def test_the_two_spreads_are_those_of_the_accuracy_matrix(trained, digits):
    _, test = digits
    noisy = PCM(t=3600.0, inp_bits=6, out_bits=6, out_noise=0.3)  # strong per-read noise: reads differ
    res = evaluate_chips(trained, test, noisy, chips=3, reads=4, seed=5)
    acc = np.array(res.accuracies)  # (chips, reads), computed independently below
    assert acc.shape == (3, 4)
    assert res.mean == pytest.approx(acc.mean())
    assert res.chip_spread == pytest.approx(acc.mean(1).std(ddof=1))
    assert res.read_spread == pytest.approx(acc.std(1, ddof=1).mean())
    assert res.read_spread > 0
    assert evaluate_chips(trained, test, noisy, chips=3, reads=4, seed=5).accuracies == res.accuracies  # seeded
    assert evaluate_chips(trained, test, noisy, chips=3, reads=4, seed=6).accuracies != res.accuracies
    # one read of a chip, computed here: its accuracy lies within the reads' range of that chip, widened
    one = _accuracy(trained, test, noisy.with_params(chip=1))
    assert acc[1].min() - 4 * res.read_spread - 0.02 <= one <= acc[1].max() + 4 * res.read_spread + 0.02
    spreads = ChipsResult(((0.5, 0.7), (0.9, 0.9)), (0, 1))
    assert spreads.mean == pytest.approx(0.75)
    assert spreads.chip_spread == pytest.approx(math.sqrt(((0.6 - 0.75) ** 2 + (0.9 - 0.75) ** 2) / 1))
    assert spreads.read_spread == pytest.approx((math.sqrt(0.02) + 0.0) / 2)


@pytest.mark.slow
def test_drift_lowers_accuracy_without_compensation_and_compensation_restores_it(trained, digits):
    _, test = digits
    rows = time_sweep(trained, test, PCM(inp_bits=8, out_bits=8, out_noise=0.02), times=(1.0, 31536000.0),
                      compensation=(False, True), chips=3, reads=2)
    acc = {(r.t, r.compensation): r.accuracy for r in rows}
    assert [(r.t, r.compensation) for r in rows] == [(1.0, False), (31536000.0, False), (1.0, True), (31536000.0, True)]
    fresh, year, year_comp = acc[(1.0, False)], acc[(31536000.0, False)], acc[(31536000.0, True)]
    assert fresh > 0.85
    assert year < fresh - 0.1  # a year of drift, uncompensated: the batch-norm's statistics no longer fit
    assert year_comp > fresh - 0.05 and year_comp - year > 0.8 * (fresh - year)  # compensation restores most
    assert all(r.as_dict()["chips"] == 3 and r.as_dict()["reads"] == 2 for r in rows)


@pytest.mark.slow
def test_per_site_models_and_bad_arguments(trained, digits):
    _, test = digits
    routed = PerSite({"1": PCM(t=60.0)}, default=PCM(t=60.0, prog_noise_scale=0.0))
    list(noisynn.noise_sites(trained))
    res = evaluate_chips(trained, test, routed, chips=2, reads=1)
    assert res.n_chips == 2 and res.chip_means[0] != res.chip_means[1]
    assert trained.training is False
    with pytest.raises(ValueError, match="'chip' parameter"):
        evaluate_chips(trained, test, noisynn.Additive(0.1))
    for bad in (dict(chips=0), dict(reads=0), dict(chips=[-1])):
        with pytest.raises(ValueError):
            evaluate_chips(trained, test, PCM(), **bad)
