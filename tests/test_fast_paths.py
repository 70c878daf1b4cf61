"""The fast paths (noisynn.kernels) against the plain reference paths.

* the sampler: moments, tails to 4.5 sigma, Kolmogorov-Smirnov on 10^7 samples, no
  correlation across calls, lanes, Box-Muller pairs and sub-streams, reproducibility;
* ``Additive/Multiplicative.apply`` on large tensors: same distribution as the reference
  sampler, the noise a constant for autograd;
* the fused LSTM: same values as the reference unroll at sigma = 0 (forward and
  gradients), the very same outputs and gradients when the reference replays the noise
  the fused kernel drew, noise fresh per step, row and gate, and the same output
  distribution as the reference at sigma > 0.

Tolerances are 5 standard errors (KS: p = 0.001), so a broken sampler fails.
"""

from __future__ import annotations

import math
import os
import shutil

import pytest
import torch

import noisynn
from noisynn import kernels
from noisynn.noise import NoiseModel, reference

pytestmark = pytest.mark.skipif(
    not kernels.available() and shutil.which("cc") is None and shutil.which("gcc") is None,
    reason="no C compiler: the fast kernels cannot be built (the reference path runs instead)",
)

N_KS = 10**7


@pytest.fixture(autouse=True)
def fast_paths_on():
    """These tests are about the fast paths, even when NOISYNN_REFERENCE=1 is set."""
    with reference(False):
        yield


def test_kernels_build_where_a_compiler_exists():
    assert kernels.available()


def ks_statistic(z: torch.Tensor) -> float:
    """sqrt(n) * sup |F_n - Phi| of a sample against N(0, 1)."""
    x, _ = z.double().flatten().sort()
    n = x.numel()
    cdf = torch.special.ndtr(x)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    d = torch.maximum(i / n - cdf, cdf - (i - 1) / n).max().item()
    return d * math.sqrt(n)


def two_sample_ks(a: torch.Tensor, b: torch.Tensor) -> float:
    """sqrt(n m / (n + m)) * sup |F_a - F_b|."""
    a, b = a.double().flatten().sort()[0], b.double().flatten().sort()[0]
    grid = torch.cat([a, b])
    fa = torch.searchsorted(a, grid, right=True).double() / a.numel()
    fb = torch.searchsorted(b, grid, right=True).double() / b.numel()
    n, m = a.numel(), b.numel()
    return (fa - fb).abs().max().item() * math.sqrt(n * m / (n + m))


KS_CRITICAL = 1.95  # p = 0.001


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def assert_standard_normal(z: torch.Tensor, tails=(1.0, 2.0, 3.0, 4.0)) -> None:
    """Mean, variance, skewness, kurtosis and tail masses of N(0, 1), within 5 standard errors."""
    z = z.double().flatten()
    n = z.numel()
    m = z.mean().item()
    assert abs(m) < 5 / math.sqrt(n), m
    c = z - m
    var = (c**2).mean().item()
    assert abs(var - 1) < 5 * math.sqrt(2 / n), var
    assert abs((c**3).mean().item() / var**1.5) < 5 * math.sqrt(6 / n)
    assert abs((c**4).mean().item() / var**2 - 3) < 5 * math.sqrt(24 / n)
    for k in tails:
        p = math.erfc(k / math.sqrt(2))
        observed = (z.abs() > k).double().mean().item()
        assert abs(observed - p) < 5 * math.sqrt(p * (1 - p) / n), (k, observed, p)


# -- the sampler ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_sample() -> torch.Tensor:
    with reference(False):
        return kernels.normal_(torch.empty(N_KS), generator=torch.Generator().manual_seed(11))


def test_sampler_moments_and_tails_to_4_5_sigma(big_sample):
    assert_standard_normal(big_sample, tails=(1.0, 2.0, 3.0, 4.0, 4.5))  # a NaN or inf fails the mean bound
    assert big_sample.abs().max() > 5.0  # the tails are not cut at 4.5 sigma


@pytest.mark.slow
def test_sampler_kolmogorov_smirnov_on_ten_million(big_sample):
    assert ks_statistic(big_sample) < KS_CRITICAL


def lag_correlations(z: torch.Tensor, lags) -> list[float]:
    z = z.double()
    z = (z - z.mean()) / z.std()
    return [float(z[:-lag] @ z[lag:]) / (z.numel() - lag) for lag in lags]


def test_sampler_no_correlation_within_a_call(big_sample):
    bound = 5 / math.sqrt(big_sample.numel())
    # lag 1: neighbours; 8: the next lane; 16: the next Box-Muller pair; 2048: next sub-stream.
    # Of z and of z^2: the two normals of a Box-Muller pair share nothing, not even |z|.
    lags = (1, 2, 8, 16, 2048)
    for series in (big_sample, big_sample**2):
        for lag, r in zip(lags, lag_correlations(series, lags), strict=True):
            assert abs(r) < bound, (lag, r)
    starts = big_sample[::2048]  # the first draw of every sub-stream: seeded independently
    assert abs(lag_correlations(starts, [1])[0]) < 5 / math.sqrt(starts.numel())


def test_sampler_independent_across_calls_and_reproducible():
    g = torch.Generator().manual_seed(5)
    a = kernels.normal_(torch.empty(10**6), generator=g)
    b = kernels.normal_(torch.empty(10**6), generator=g)
    assert abs(corr(a, b)) < 5e-3
    assert abs(corr(a**2, b**2)) < 5e-3
    again = kernels.normal_(torch.empty(10**6), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, again)
    torch.manual_seed(3)  # the default generator works the same way
    c = kernels.normal_(torch.empty(1000))
    torch.manual_seed(3)
    assert torch.equal(c, kernels.normal_(torch.empty(1000)))


def test_sampler_values_do_not_depend_on_the_thread_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernels.normal_(torch.empty(300_001), generator=torch.Generator().manual_seed(8))
        torch.set_num_threads(max(2, threads))
        many = kernels.normal_(torch.empty(300_001), generator=torch.Generator().manual_seed(8))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def test_sampler_mean_and_std():
    z = kernels.normal_(torch.empty(10**6), 1.0, 0.3, generator=torch.Generator().manual_seed(2))
    assert_standard_normal((z - 1.0) / 0.3)


# -- NoiseModel.apply ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_apply_fast_and_reference_draw_the_same_distribution(kind):
    y = torch.full((1000, 1000), 2.0)
    model = noisynn.noise_model(kind, 0.4, generator=torch.Generator().manual_seed(1))
    fast = model.apply(y)
    with reference():
        ref = model.apply(y)
    assert torch.equal(y, torch.full((1000, 1000), 2.0))  # y untouched
    to_z = (lambda out: (out - 2.0) / 0.4) if kind == "additive" else (lambda out: (out / 2.0 - 1.0) / 0.4)
    assert_standard_normal(to_z(fast))
    assert two_sample_ks(fast, ref) < KS_CRITICAL
    assert abs(corr(fast, model.apply(y))) < 5e-3  # fresh at every call


def test_apply_reference_mode_is_torch_normal():
    y = torch.zeros(100_000)
    with reference():
        out = noisynn.Additive(0.5, generator=torch.Generator().manual_seed(4)).apply(y)
    expected = torch.empty(100_000).normal_(0.0, 0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(out, expected)


def test_apply_small_tensors_keep_torch_sampler():
    n = kernels.MIN_ELEMENTS - 1
    out = noisynn.Multiplicative(0.5, generator=torch.Generator().manual_seed(9)).apply(torch.ones(n))
    assert torch.equal(out, torch.empty(n).normal_(1.0, 0.5, generator=torch.Generator().manual_seed(9)))


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_apply_fast_noise_is_a_constant_for_autograd(kind):
    y = torch.randn(200, 100, requires_grad=True)
    out = noisynn.noise_model(kind, 0.5).apply(y)
    out.sum().backward()
    if kind == "additive":
        assert torch.equal(y.grad, torch.ones_like(y))
    else:
        assert torch.allclose(y.grad, out.detach() / y.detach(), rtol=1e-4, atol=1e-5)


def test_sigma_zero_is_the_identity_on_every_path():
    y = torch.randn(100, 100)
    for kind in ("additive", "multiplicative"):
        assert noisynn.noise_model(kind, 0.0).apply(y) is y


class CustomAdditive(noisynn.Additive):
    """A subclass that redefines the noise: it must not be bypassed by any fast path."""

    calls = 0

    def apply(self, y, site=""):
        CustomAdditive.calls += 1
        return y + 1.0


def test_gaussian_capability_is_not_inherited_by_redefined_noise():
    assert noisynn.Additive(0.3).gaussian() == ("additive", 0.3, None)
    assert noisynn.Multiplicative(0.2).gaussian().kind == "multiplicative"
    assert NoiseModel().gaussian() is None and noisynn.Clean().gaussian() is None
    assert CustomAdditive(0.3).gaussian() is None
    per_site = noisynn.PerSite({"rnn": noisynn.Additive(0.1)})
    assert per_site.gaussian("rnn").sigma == 0.1 and per_site.gaussian("fc") is None
    lstm = noisynn.NoisyLSTM(3, 8, batch_first=True)
    CustomAdditive.calls = 0
    with CustomAdditive(0.3):
        lstm(torch.randn(600, 5, 3))
    assert CustomAdditive.calls == 5  # one apply per step: the fused path was not taken


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_apply_in_place_draws_what_apply_draws_and_layers_use_it(kind):
    """``apply_`` (what the layers call on their fresh outputs) adds the noise into ``y`` itself:
    the same values as ``apply`` from the same generator state, no second tensor."""
    y = torch.randn(300, 70)
    expected = noisynn.noise_model(kind, 0.4, generator=torch.Generator().manual_seed(5)).apply(y)
    z = y.clone()
    out = noisynn.noise_model(kind, 0.4, generator=torch.Generator().manual_seed(5)).apply_(z)
    assert out.data_ptr() == z.data_ptr() and torch.equal(out, expected) and not torch.equal(out, y)
    layer = noisynn.NoisyLinear(40, 70)
    x = torch.randn(300, 40)
    with torch.inference_mode():
        clean = torch.nn.functional.linear(x, layer.weight, layer.bias)
        with noisynn.noise_model(kind, 0.4, generator=torch.Generator().manual_seed(6)):
            noisy = layer(x)
    again = noisynn.noise_model(kind, 0.4, generator=torch.Generator().manual_seed(6)).apply(clean)
    assert torch.equal(noisy, again)


def test_apply_in_place_leaves_autograd_and_redefined_noise_alone():
    y = torch.randn(200, 100, requires_grad=True)
    out = noisynn.Additive(0.5).apply_(y)
    assert out is not y and torch.equal(y, y.detach())  # y kept: autograd needs it
    out.sum().backward()
    assert torch.equal(y.grad, torch.ones_like(y))
    CustomAdditive.calls = 0
    with torch.no_grad():
        z = torch.zeros(100, 100)
        assert torch.equal(CustomAdditive(0.3).apply_(z), torch.ones(100, 100)) and CustomAdditive.calls == 1
        assert not z.any()  # its own apply() ran: y + 1.0, nothing written into z


# -- the fused LSTM ------------------------------------------------------------------------
class AddsNothing(NoiseModel):
    """Not the identity, adds nothing: forces the reference unroll at sigma = 0."""

    def apply(self, y, site=""):
        return y


class Replay(NoiseModel):
    """Replays recorded noise, one step per call: ``y + a`` or ``y * m``."""

    def __init__(self, record: torch.Tensor, kind: str) -> None:
        super().__init__()
        self.steps = iter(record)
        self.kind = kind

    def apply(self, y, site=""):
        e = next(self.steps)
        return y + e if self.kind == "additive" else y * e


def lstm_case(seed: int, batch: int, hidden: int, bias: bool = True, single_bias: bool = False):
    torch.manual_seed(seed)
    layer = noisynn.NoisyLSTM(5, hidden, bias=bias, single_bias=single_bias)
    steps = 6
    x = torch.randn(steps, batch, 5, requires_grad=True)
    h0 = torch.randn(batch, hidden, requires_grad=True)
    c0 = torch.randn(batch, hidden, requires_grad=True)
    return layer, x, h0, c0, layer._cell_weights(0)


def outputs_and_grads(fn, x, h0, c0, weights):
    out, h, c = fn()
    loss = (out**2).sum() + (h * torch.linspace(-1, 1, h.shape[1])).sum() + (c**2).sum()
    inputs = [x, h0, c0, *[w for w in weights if w is not None]]
    return [out, h, c], torch.autograd.grad(loss, inputs)


CASES = [
    pytest.param(dict(batch=37, hidden=13), id="odd-sizes"),
    pytest.param(dict(batch=40, hidden=16, single_bias=True), id="single-bias"),
    pytest.param(dict(batch=21, hidden=8, bias=False), id="no-bias"),
]


@pytest.mark.parametrize("case", CASES)
def test_fused_lstm_equals_reference_at_sigma_zero(case, monkeypatch):
    monkeypatch.setattr(kernels, "LSTM_BLOCK", 16)  # several row blocks in evaluation
    layer, x, h0, c0, w = lstm_case(0, **case)
    ref_vals, ref_grads = outputs_and_grads(lambda: layer._unroll_reference(x, (h0, c0), w, AddsNothing()),
                                            x, h0, c0, w)
    vals, grads = outputs_and_grads(lambda: kernels.lstm_layer(x, h0, c0, *w, "additive", 0.0, None), x, h0, c0, w)
    for a, b in zip(ref_vals + list(ref_grads), vals + list(grads), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (a - b).abs().max()
    with torch.no_grad():
        evaluated = kernels.lstm_layer(x, h0, c0, *w, "multiplicative", 0.0, None)
    for a, b in zip(ref_vals, evaluated, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("used", ["out", "h", "c", "last-step"])
def test_fused_lstm_backward_with_outputs_that_reach_no_loss(used):
    """Autograd hands the fused backward None for an output the loss does not use (nothing is
    materialised); those count as zero, and an input that needs no gradient gets none."""
    layer, x, h0, c0, w = lstm_case(2, batch=19, hidden=11)
    x = x.detach()  # data: no gradient asked for it

    def loss_of(out, h, c):
        return {"out": (out**2).sum(), "h": (h**3).sum(), "c": (c * 0.5).sum(),
                "last-step": out[-1].sum()}[used]

    inputs = [h0, c0, *[t for t in w if t is not None]]
    ref = torch.autograd.grad(loss_of(*layer._unroll_reference(x, (h0, c0), w, AddsNothing())), inputs,
                              allow_unused=True)
    got = torch.autograd.grad(loss_of(*kernels.lstm_layer(x, h0, c0, *w, "additive", 0.0, None)), inputs,
                              allow_unused=True)
    for a, b in zip(ref, got, strict=True):
        if a is None:  # an input the loss does not reach in the reference
            assert b is None or not b.abs().any()
            continue
        assert b is not None and torch.allclose(a, b, rtol=1e-5, atol=1e-5), (a - b).abs().max()


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
@pytest.mark.parametrize("case", CASES[:2])
def test_fused_lstm_noise_replayed_by_the_reference_gives_the_same_values_and_grads(kind, case):
    layer, x, h0, c0, w = lstm_case(1, **case)
    record = torch.empty(x.shape[0], x.shape[1], 4 * layer.hidden_size)
    vals, grads = outputs_and_grads(lambda: kernels.lstm_layer(x, h0, c0, *w, kind, 0.7, None, record), x, h0, c0, w)
    ref_vals, ref_grads = outputs_and_grads(lambda: layer._unroll_reference(x, (h0, c0), w, Replay(record, kind)),
                                            x, h0, c0, w)
    for a, b in zip(ref_vals + list(ref_grads), vals + list(grads), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (a - b).abs().max()
    # evaluation (blocks of rows, no autograd) draws exactly the same noise from the same seed
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        evaluated = kernels.lstm_layer(x, h0, c0, *w, kind, 0.7, g)
    trained = kernels.lstm_layer(x, h0, c0, *w, kind, 0.7, torch.Generator().manual_seed(3))
    for a, b in zip(evaluated, trained, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_fused_lstm_noise_is_gaussian_and_fresh_per_step_row_gate_and_call(kind, monkeypatch):
    monkeypatch.setattr(kernels, "LSTM_BLOCK", 128)
    steps, batch, hidden = 8, 256, 128
    w = noisynn.NoisyLSTM(3, hidden)._cell_weights(0)
    x, zeros = torch.randn(steps, batch, 3), torch.zeros(batch, hidden)
    z = assert_fresh_standard_normal(
        lambda record: kernels.lstm_layer(x, zeros, zeros, *w, kind, 0.5, None, record),
        (steps, batch, 4 * hidden), kind)
    bound = 5 / math.sqrt(z[0].numel())
    for gate in range(3):  # gates of one row
        a = z[..., gate * hidden : (gate + 1) * hidden]
        b = z[..., (gate + 1) * hidden : (gate + 2) * hidden]
        assert abs(corr(a, b)) < bound * 2


def assert_fresh_standard_normal(layer_call, shape, kind, sigma=0.5) -> torch.Tensor:
    """Two calls of a fused layer recording its (steps, rows, units) noise: the noise scaled
    to N(0, 1) is Gaussian and uncorrelated across steps, rows and calls. Returns call 1's."""
    records = []
    for _ in range(2):
        record = torch.empty(shape)
        with torch.no_grad():
            layer_call(record)
        records.append((record - (1.0 if kind == "multiplicative" else 0.0)) / sigma)
    z = records[0]
    assert_standard_normal(z)
    assert ks_statistic(z) < KS_CRITICAL
    assert abs(corr(z[:-1], z[1:])) < 5 / math.sqrt(z[1:].numel())  # steps
    assert abs(corr(z[:, :-1], z[:, 1:])) < 5 / math.sqrt(z[:, 1:].numel())  # rows (repeats, samples)
    assert abs(corr(records[0], records[1])) < 5 / math.sqrt(z.numel())  # calls
    return z


def assert_same_distributions(fast: torch.Tensor, ref: torch.Tensor) -> None:
    """Columns of two (runs, 10) logit samples: noisy, and equal in distribution."""
    assert fast.std(0).min() > 1e-3  # noisy
    for k in range(fast.shape[1]):
        a, b = fast[:, k].double(), ref[:, k].double()
        assert two_sample_ks(a, b) < KS_CRITICAL + 0.2, k  # 10 looks
        # and the spread, which the KS statistic sees poorly: log variance ratio within 5 SE
        se = [math.sqrt((((v - v.mean()) ** 4).mean() / v.var() ** 2 - 1).item() / v.numel()) for v in (a, b)]
        assert abs(math.log(a.var().item() / b.var().item())) < 5 * math.hypot(*se), k


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_lstm_classifier_fast_and_reference_outputs_have_the_same_distribution(kind):
    """A whole network, one input repeated 2000 times: the noisy logits' distributions agree."""
    torch.manual_seed(12)
    model = noisynn.build_model("lstm-rows", steps=10, input_size=8).eval()  # short rows: a fast test
    noisynn.set_noise(model, noisynn.PerSite({"rnn": noisynn.noise_model(kind, 0.6)}))  # the LSTM's noise only
    x = torch.rand(1, 10, 8)
    with torch.no_grad():
        fast = noisynn.repeat_forward(model, x, 2000)[:, 0]
        with reference():
            ref = noisynn.repeat_forward(model, x, 2000)[:, 0]
        with noisynn.clean():
            clean = model(x)[0]
    assert_same_distributions(fast, ref)
    assert not torch.allclose(fast.mean(0), clean)  # sanity: noise matters at sigma 0.6


def test_noisy_lstm_layer_takes_the_fused_path_in_every_configuration(monkeypatch):
    calls = []
    real = kernels.lstm_layer
    monkeypatch.setattr(kernels, "lstm_layer", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    lstm = noisynn.NoisyLSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True, dropout=0.1)
    noisynn.set_noise(lstm, "multiplicative", 0.3)
    x = torch.randn(3, 7, 4)
    out, (h, c) = lstm(x)
    assert out.shape == (3, 7, 12) and h.shape == (4, 3, 6) and c.shape == (4, 3, 6)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in lstm.parameters())  # the fused backward reaches every weight and bias of every layer
    assert len(calls) == 4  # 2 layers x 2 directions
    with reference():
        lstm(x)
    assert len(calls) == 4
    out, _ = lstm(x[0])  # unbatched
    assert out.shape == (7, 12)


def test_fused_lstm_is_reproducible_and_independent_of_threads(monkeypatch):
    """One thread, or row blocks shared among threads (5 blocks of 64 rows): the same output."""
    monkeypatch.setattr(kernels, "LSTM_BLOCK", 64)
    model = noisynn.build_model("lstm-rows").eval()
    x = torch.rand(300, 28, 28)
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, max(2, threads), 3):
            torch.set_num_threads(n)
            with torch.no_grad(), noisynn.Additive(0.5, generator=torch.Generator().manual_seed(7)):
                outs.append(model(x))
            with torch.inference_mode(), noisynn.Additive(0.5, generator=torch.Generator().manual_seed(7)):
                outs.append(model(x))  # as the engine evaluates: inference tensors across the pool's threads
            assert torch.get_num_threads() == n  # the thread count is restored after the shared-out blocks
    finally:
        torch.set_num_threads(threads)
    for other in outs[1:]:
        assert torch.allclose(outs[0], other, atol=1e-5)  # the same noise; GEMMs may block differently
    with torch.no_grad(), noisynn.Additive(0.5, generator=torch.Generator().manual_seed(8)):
        assert not torch.allclose(outs[0], model(x), atol=1e-3)  # sanity: another seed, other noise


# -- the fused vanilla RNN (inference) -------------------------------------------------------
def rnn_case(seed: int, batch: int, hidden: int, bias: bool = True, nonlinearity: str = "tanh"):
    torch.manual_seed(seed)
    layer = noisynn.NoisyRNN(5, hidden, bias=bias, nonlinearity=nonlinearity)
    x = torch.randn(6, batch, 5)
    h0 = torch.randn(batch, hidden)
    return layer, x, h0, layer._cell_weights(0)


RNN_CASES = [
    pytest.param(dict(batch=37, hidden=13), id="tanh-odd-sizes"),
    pytest.param(dict(batch=40, hidden=16, nonlinearity="relu"), id="relu"),
    pytest.param(dict(batch=21, hidden=8, bias=False), id="no-bias"),
]


@pytest.mark.parametrize("case", RNN_CASES)
@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_fused_rnn_equals_reference_at_sigma_zero_and_with_replayed_noise(case, kind, monkeypatch):
    monkeypatch.setattr(kernels, "LSTM_BLOCK", 16)  # several row blocks
    layer, x, h0, w = rnn_case(0, **case)
    nl = case.get("nonlinearity", "tanh")
    with torch.no_grad():
        ref = layer._unroll_reference(x, (h0, None), w, AddsNothing())
        fused = kernels.rnn_layer(x, h0, *w, nl, kind, 0.0, None)
        for a, b in zip(ref[:2], fused, strict=True):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (a - b).abs().max()
        record = torch.empty(x.shape[0], x.shape[1], layer.hidden_size)
        noisy = kernels.rnn_layer(x, h0, *w, nl, kind, 0.7, None, record)
        replayed = layer._unroll_reference(x, (h0, None), w, Replay(record, kind))
        for a, b in zip(replayed[:2], noisy, strict=True):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (a - b).abs().max()
        assert not torch.allclose(noisy[0], fused[0], atol=1e-2)  # sanity: the noise matters


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_fused_rnn_noise_is_gaussian_and_fresh_per_step_row_and_call(kind, monkeypatch):
    monkeypatch.setattr(kernels, "LSTM_BLOCK", 128)
    steps, batch, hidden = 16, 512, 128
    w = noisynn.NoisyRNN(3, hidden)._cell_weights(0)
    x, zeros = torch.randn(steps, batch, 3), torch.zeros(batch, hidden)
    assert_fresh_standard_normal(
        lambda record: kernels.rnn_layer(x, zeros, *w, "tanh", kind, 0.5, None, record), (steps, batch, hidden), kind)


def test_rnn_rows_fast_and_reference_outputs_have_the_same_distribution_and_training_uses_the_reference():
    torch.manual_seed(13)
    model = noisynn.build_model("rnn-rows", steps=10, input_size=8).eval()
    noisynn.set_noise(model, noisynn.PerSite({"rnn": noisynn.Additive(0.6)}))
    x = torch.rand(1, 10, 8)
    with torch.no_grad():
        fast = noisynn.repeat_forward(model, x, 2000)[:, 0]
        with reference():
            ref = noisynn.repeat_forward(model, x, 2000)[:, 0]
    assert_same_distributions(fast, ref)
    # with autograd the layer keeps the plain path (the fused RNN has no backward): gradients flow
    model.train()
    loss = model(torch.rand(4, 10, 8)).sum()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in model.parameters())


# -- the generator is what the documentation says ------------------------------------------
M32 = 0xFFFFFFFF


def philox4x32_10(ctr, key):
    """Reference Philox4x32-10 (Salmon et al. 2011), pure Python."""
    c, k0, k1 = list(ctr), key[0], key[1]
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k0) & M32, p1 & M32, ((p0 >> 32) ^ c[3] ^ k1) & M32, p0 & M32]
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return c


def test_philox_reference_matches_the_random123_known_answers():
    assert philox4x32_10([0, 0, 0, 0], [0, 0]) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert philox4x32_10([M32] * 4, [M32, M32]) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert philox4x32_10([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0]) == [
        0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def reference_words(seed, stream, n):
    """Lane-interleaved words of a sub-stream: 8 xoshiro128++ lanes seeded by Philox."""
    def rotl(x, k):
        return ((x << k) | (x >> (32 - k))) & M32

    lanes = []
    for lane in range(8):
        s = philox4x32_10([stream & M32, stream >> 32, lane, seed[2]], seed[:2])
        s[3] |= 1
        lanes.append(s)
    out = []
    for _ in range(n // 8):
        for s in lanes:
            out.append((rotl((s[0] + s[3]) & M32, 7) + s[0]) & M32)
            t = (s[1] << 9) & M32
            s[2] ^= s[0]
            s[3] ^= s[1]
            s[1] ^= s[2]
            s[0] ^= s[3]
            s[2] ^= t
            s[3] = rotl(s[3], 11)
    return out


def test_kernel_words_are_philox_seeded_xoshiro128pp_and_normals_are_box_muller():
    seed = [0x12345678, 0x9ABCDEF0, 0x0BADF00D]
    stream = 5 * 2**32 + 3
    words = torch.ops.noisynn.words(torch.tensor(seed), stream, 64)
    assert words.tolist() == reference_words(seed, stream, 64)
    # the first 16 normals of sub-stream 0: words a (8 lanes) give radii, words b angles
    z = kernels.normal_(torch.empty(16), seed=torch.tensor(seed))
    w = reference_words(seed, 0, 16)
    expected = []
    for a, b in zip(w[:8], w[8:], strict=True):
        r = math.sqrt(-2 * math.log(((a >> 1) + 0.5) * 2.0**-31))
        phi = (b & 0xFFFFFF) * 2.0**-24 * math.pi / 4
        x, y = (math.sin(phi), math.cos(phi)) if (b >> 29) & 1 else (math.cos(phi), math.sin(phi))
        expected.append((r * (-x if (b >> 30) & 1 else x), r * (-y if b >> 31 else y)))
    expected = [p[0] for p in expected] + [p[1] for p in expected]
    assert torch.allclose(z.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-6)


# -- one answer on every CPU: the instruction-set copies draw the same numbers ----------------
ISA_SCRIPT = """
import sys, torch
import noisynn.kernels as k
assert k.available()
seed = torch.tensor([5, 6, 7])
out = {"isa": torch.ops.noisynn.isa()}
for n in (1, 15, 16, 17, 31, 32, 33, 100, 2047, 2048, 2049, 10000):
    out[f"normal{n}"] = k.normal_(torch.empty(n), seed=seed)
g = torch.Generator().manual_seed(0)
T, B, F, H = 5, 37, 5, 13
x, h0, c0 = torch.randn(T, B, F, generator=g), torch.randn(B, H, generator=g), torch.randn(B, H, generator=g)
w, b = 0.3 * torch.randn(4 * H, F + H, generator=g), torch.randn(4 * H, generator=g)
for mode in (1, 2):
    out[f"lstm_infer{mode}"] = torch.ops.noisynn.lstm_infer(x, h0, c0, w, b, mode, 0.5, seed, 16, True)
    out[f"lstm_train{mode}"] = torch.ops.noisynn.lstm_train(x, h0, c0, w, b, mode, 0.5, seed, True)
out["rnn_infer"] = torch.ops.noisynn.rnn_infer(x, h0, w[:H], b[:H], False, 1, 0.5, seed, 16, True)
torch.save(out, sys.argv[1])
"""


def _cpu_flags() -> set[str]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}


@pytest.mark.slow
def test_every_instruction_set_copy_draws_the_same_numbers(tmp_path):
    """The AVX-512 copy (16 float lanes) gives the AVX2 copy's values to the bit; the baseline's within rounding.

    The sampler's definition (8 xoshiro lanes per sub-stream, Box-Muller) does not depend on
    the vector width, so the noise a sweep draws does not depend on the machine it runs on.
    """
    import subprocess
    import sys

    flags = _cpu_flags()
    caps = ["baseline"]
    if {"avx2", "fma"} <= flags:
        caps.append("avx2")
    if {"avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags:
        caps.append("best")
    if len(caps) < 2:
        pytest.skip("this CPU has only the baseline copy")
    script = tmp_path / "isa.py"
    script.write_text(ISA_SCRIPT)
    results = {}
    for cap in caps:
        env = dict(os.environ, NOISYNN_ISA=cap, OMP_NUM_THREADS="1")
        subprocess.run([sys.executable, str(script), str(tmp_path / f"{cap}.pt")], env=env, check=True)
        results[cap] = torch.load(tmp_path / f"{cap}.pt")
    unknown = subprocess.run([sys.executable, "-c", "import noisynn.kernels as k; print(k.available())"],
                             env=dict(os.environ, NOISYNN_ISA="avx3"), capture_output=True, text=True, check=True)
    assert unknown.stdout.strip() == "True"
    assert "NOISYNN_ISA='avx3' is not one of baseline, avx2, avx512" in unknown.stderr
    expected_isa = {"baseline": "baseline", "avx2": "avx2+fma", "best": "avx512+fma"}
    assert {cap: r["isa"] for cap, r in results.items()} == {cap: expected_isa[cap] for cap in caps}

    def tensors(v):
        return [v] if isinstance(v, torch.Tensor) else [t for item in v for t in tensors(item)]

    vector = [cap for cap in caps if cap != "baseline"]
    for key in results["baseline"]:
        if key == "isa":
            continue
        for cap in vector[1:]:  # AVX-512 against AVX2: the same operations lane by lane, to the bit
            assert all(torch.equal(a, b) for a, b in zip(tensors(results[cap][key]), tensors(results[vector[0]][key]),
                                                         strict=True)), key
        for a, b in zip(tensors(results[vector[0]][key]), tensors(results["baseline"][key]), strict=True):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), key  # no FMA in the baseline: rounding only


# -- torch.compile: the operators trace, and the compiled reference step ---------------------
@pytest.mark.slow
def test_operators_fake_kernels_and_autograd_pass_torch_opcheck():
    x, h0, c0 = torch.randn(3, 5, 4), torch.randn(5, 6), torch.randn(5, 6)
    w, bias = torch.randn(24, 10, requires_grad=True), torch.randn(24, requires_grad=True)
    seed = torch.tensor([1, 2, 3])
    for mode in (1, 2):
        torch.library.opcheck(torch.ops.noisynn.lstm_train.default, (x, h0, c0, w, bias, mode, 0.5, seed, True))
        torch.library.opcheck(torch.ops.noisynn.lstm_infer.default,
                              (x, h0, c0, w.detach(), None, mode, 0.5, seed, 2, True))
        torch.library.opcheck(torch.ops.noisynn.gaussian.default, (torch.randn(70, 80), mode, 0.5, seed))
    torch.library.opcheck(torch.ops.noisynn.rnn_infer.default,
                          (x, h0, torch.randn(6, 10), None, False, 1, 0.5, seed, 2, False))


@pytest.mark.slow
def test_torch_compile_traces_a_noisy_model_through_the_operators_and_matches_eager():
    torch.manual_seed(0)
    lstm, head = noisynn.NoisyLSTM(5, 16), noisynn.NoisyLinear(16, 20)

    def net(x):
        out, _ = lstm(x)
        return head(out[-1])

    graphs = []

    def capture(gm, example_inputs):  # a backend that records the graph and runs it as it is
        graphs.append(gm)
        return gm.forward

    compiled_net = torch.compile(net, backend=capture, fullgraph=False)
    x = torch.randn(7, 300, 5)
    with torch.no_grad():
        with noisynn.Additive(0.0):
            assert torch.equal(compiled_net(x), net(x))  # sigma = 0: to the bit
        for model in (noisynn.Additive(0.5), noisynn.Multiplicative(0.3)):
            with model:
                torch.manual_seed(4)
                eager = net(x)
                torch.manual_seed(4)
                traced = compiled_net(x)
                assert torch.equal(traced, eager)  # the same seed words: the very same noise
                assert not torch.allclose(traced, compiled_net(x))  # and fresh noise per call
    targets = {str(node.target) for gm in graphs for node in gm.graph.nodes}
    assert any("noisynn.lstm_infer" in t for t in targets), targets  # the fused operator is in the graph
    # the Linear (300 x 20 >= MIN_ELEMENTS): its noise added in place into its fresh output (no grad)
    assert any("noisynn.noise_" in t for t in targets), targets


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_compiled_reference_step_on_the_cpu_matches_the_reference(kind):
    """The GPU path (Inductor's fused step) run through Inductor's CPU mode: at sigma 0 the
    reference's values, at sigma 0.5 the reference's output distribution."""
    from noisynn.kernels import compiled

    torch.manual_seed(5)
    layer = noisynn.NoisyLSTM(4, 8)
    w_ih, w_hh, b_ih, b_hh = layer._cell_weights(0)
    bias = kernels.merged_bias(b_ih, b_hh)
    x = torch.randn(5, 1, 4).expand(5, 3000, 4).contiguous()  # one sequence, 3000 noisy runs
    zeros = torch.zeros(3000, 8)
    with torch.no_grad():
        clean = layer._unroll_reference(x, (zeros, zeros), (w_ih, w_hh, b_ih, b_hh), AddsNothing())
        got = compiled.lstm_layer(x, zeros, zeros, w_ih, w_hh, bias, kind, 0.0)
        for a, b in zip(clean, got, strict=True):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
        noisy = compiled.lstm_layer(x, zeros, zeros, w_ih, w_hh, bias, kind, 0.5)[1]
        with reference():
            ref = layer._unroll_reference(x, (zeros, zeros), (w_ih, w_hh, b_ih, b_hh),
                                          noisynn.noise_model(kind, 0.5))[1]
    assert_same_distributions(noisy, ref)
