"""Statistics of the injected noise, and how noise is switched on and off."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import noisynn
from noisynn.noise import NoiseModel

N_OUT = 1000  # outputs per sample
N_BATCH = 1000  # samples: 10^6 noise elements per call


def zero_linear(bias: float) -> noisynn.NoisyLinear:
    """A noisy linear layer whose clean output is the constant ``bias``."""
    layer = noisynn.NoisyLinear(4, N_OUT)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.fill_(bias)
    return layer


def draw(kind: str, sigma: float, repeats: int = 1) -> torch.Tensor:
    """Noisy outputs of a zero-weight layer: pure noise z (additive) or 1 * z (multiplicative)."""
    layer = zero_linear(0.0 if kind == "additive" else 1.0)
    noisynn.set_noise(layer, kind, sigma)
    with torch.no_grad():
        return noisynn.repeat_forward(layer, torch.randn(N_BATCH, 4), repeats)


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.flatten().double()
    b = b.flatten().double()
    a = a - a.mean()
    b = b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


@pytest.mark.parametrize("kind,mean", [("additive", 0.0), ("multiplicative", 1.0)])
@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0])
def test_mean_and_variance_within_five_standard_errors(kind, mean, sigma):
    torch.manual_seed(1)
    z = draw(kind, sigma).double().flatten()
    n = z.numel()
    assert n >= 10**6
    se_mean = sigma / math.sqrt(n)
    se_var = sigma**2 * math.sqrt(2.0 / (n - 1))
    assert abs(z.mean().item() - mean) < 5 * se_mean
    assert abs(z.var().item() - sigma**2) < 5 * se_var


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_no_correlation_between_repeats_and_between_calls(kind):
    torch.manual_seed(2)
    z = draw(kind, 1.0, repeats=2)  # (2, B, N_OUT): two batched repeats
    assert abs(corr(z[0], z[1])) < 0.01
    z2 = draw(kind, 1.0, repeats=1)[0]  # another call
    assert abs(corr(z[0], z2)) < 0.01
    # and no correlation between neighbouring elements of one call
    assert abs(corr(z[0][:, :-1], z[0][:, 1:])) < 0.01


class Recorder(NoiseModel):
    """Wraps a real noise model and keeps the noise it added at every call."""

    def __init__(self, inner: NoiseModel) -> None:
        super().__init__()
        self.inner = inner
        self.noise: list[torch.Tensor] = []
        self.sites: list[str] = []

    def apply(self, y, site=""):
        out = self.inner.apply(y, site)
        self.noise.append((out - y).detach())
        self.sites.append(site)
        return out


def test_lstm_noise_is_fresh_at_every_step_and_on_every_gate():
    torch.manual_seed(3)
    hidden, steps, batch = 128, 12, 1000
    lstm = noisynn.NoisyLSTM(3, hidden, batch_first=True)
    rec = Recorder(noisynn.Additive(1.0))
    with torch.no_grad(), rec:
        lstm(torch.randn(batch, steps, 3))
    # one noise draw per step, covering all four gate pre-activations
    assert len(rec.noise) == steps
    assert all(z.shape == (batch, 4 * hidden) for z in rec.noise)
    z = torch.stack(rec.noise)  # (T, B, 4H)
    assert abs(z.std().item() - 1.0) < 0.01
    for t in range(steps - 1):
        assert abs(corr(z[t], z[t + 1])) < 0.01
    for gate in range(4):  # every gate gets noise of the right power
        g = z[..., gate * hidden : (gate + 1) * hidden]
        assert abs(g.std().item() - 1.0) < 0.02


@pytest.mark.parametrize(
    "layer,calls_per_step",
    [(noisynn.NoisyLSTM, 1), (noisynn.NoisyRNN, 1), (noisynn.NoisyGRU, 3)],
)
def test_recurrent_sites_per_step_layer_and_direction(layer, calls_per_step):
    rnn = layer(4, 8, num_layers=2, bidirectional=True)
    rec = Recorder(noisynn.Additive(0.5))
    with rec:
        rnn(torch.randn(5, 3, 4))
    assert len(rec.noise) == 5 * 2 * 2 * calls_per_step


def test_noise_is_independent_of_train_and_eval():
    torch.manual_seed(4)
    bn_net = nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6))
    model = noisynn.convert(bn_net)
    x = torch.randn(64, 6)
    model.train()
    bn_net.train()
    assert torch.equal(model(x), bn_net(x))  # training mode, clean
    model.eval()
    bn_net.eval()
    noisynn.set_noise(model, "additive", 0.5)
    a, b = model(x), model(x)  # eval mode (running BN statistics), noisy
    assert not torch.equal(a, b)
    assert not torch.equal(a, bn_net(x))
    noisynn.set_noise(model, None)
    assert torch.equal(model(x), bn_net(x))


def test_context_manager_overrides_and_restores():
    layer = zero_linear(1.0)
    x = torch.randn(8, 4)
    clean = layer(x)
    with noisynn.noise_model("multiplicative", 0.5):
        assert not torch.equal(layer(x), clean)
        with noisynn.clean():
            assert torch.equal(layer(x), clean)
        assert not torch.equal(layer(x), clean)
    assert torch.equal(layer(x), clean)
    noisynn.set_noise(layer, "additive", 1.0)
    with noisynn.clean():
        assert torch.equal(layer(x), clean)
    assert not torch.equal(layer(x), clean)


def test_generator_makes_noise_reproducible():
    layer = zero_linear(0.0)
    x = torch.randn(16, 4)
    outs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(123)
        with noisynn.Additive(0.3, generator=g):
            outs.append(layer(x))
    assert torch.equal(outs[0], outs[1])


def test_per_site_routes_noise_by_name():
    model = noisynn.build_model("lstm-rows")
    x = torch.rand(4, 28, 28)
    rec = Recorder(noisynn.Additive(0.0))
    noisynn.set_noise(model, noisynn.PerSite({"fc": noisynn.Additive(2.0)}, default=rec))
    out = model(x)
    assert rec.sites == ["rnn"] * 28  # the LSTM went to the default, the fc to its rule
    clean = noisynn.convert(model)
    noisynn.set_noise(clean, None)
    assert not torch.equal(out, clean(x))


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), -float("inf"), "abc", None, True])
def test_bad_sigma_is_a_value_error_naming_the_value(bad):
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0") as info:
        noisynn.Additive(bad)
    assert repr(bad) in str(info.value)
    with pytest.raises(ValueError):
        noisynn.noise_model("multiplicative", bad)


def test_a_sigma_beyond_float32_is_refused_where_it_would_make_infinite_noise():
    assert noisynn.Additive(3.4e38).sigma == 3.4e38  # the largest float32 values still work
    with pytest.raises(ValueError, match="beyond float32's range"):
        noisynn.Additive(1e39)
    with pytest.raises(ValueError, match="beyond float32's range"):
        noisynn.noise_model("multiplicative", 1e300)


def test_unknown_kind_and_missing_sigma():
    with pytest.raises(ValueError, match="unknown noise kind 'gaussian'"):
        noisynn.noise_model("gaussian", 0.1)
    with pytest.raises(ValueError, match="needs a sigma"):
        noisynn.noise_model("additive")


def test_multiplicative_snr():
    assert noisynn.Multiplicative(1.0).snr_db == 0.0
    assert abs(noisynn.Multiplicative(0.4).snr_db - 7.9588) < 1e-3  # paper 2: 7.96 dB


def test_the_noise_module_is_not_shadowed_and_the_extension_protocol_is_exported():
    import types

    import noisynn.noise as m

    assert isinstance(m, types.ModuleType) and m.Additive is noisynn.Additive
    assert noisynn.noise is m
    with pytest.warns(DeprecationWarning, match="noise_model"):
        old = noisynn.noise("additive", 0.5)  # the old call still works, once warned
    assert old == noisynn.noise_model("additive", 0.5) == noisynn.Additive(0.5)
    assert noisynn.reference is m.reference and noisynn.GaussianNoise is m.GaussianNoise
    assert noisynn.NoiseModel is m.NoiseModel and noisynn.Product is m.Product
