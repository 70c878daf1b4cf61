"""convert() covers every matrix product of torch.nn, with a report and no silent gap."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import noisynn
from noisynn.noise import Additive, Clean, Multiplicative, NoiseModel, PerSite


class SubLinear(nn.Linear):
    """A user's Linear subclass with its own forward."""

    def forward(self, x):
        return super().forward(x) * 2.0


class Functional(nn.Module):
    """Products in a module's own code: a raw parameter, F.linear, SDPA, einsum."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 6) / 3)
        self.b = nn.Parameter(torch.zeros(6))
        self.scale = nn.Parameter(torch.ones(6))

    def forward(self, x):
        h = F.linear(x, self.w, self.b) * self.scale
        a = F.scaled_dot_product_attention(h[:, None], h[:, None], h[:, None])[:, 0]
        return torch.einsum("btf,fg->btg", a, self.w)


def _cases():
    """(name, module, inputs) for every converted type; inputs are tuples."""
    torch.manual_seed(0)
    seq = torch.randn(3, 5, 6)
    return [
        ("linear", nn.Linear(6, 4), (torch.randn(3, 6),)),
        ("linear-subclass", SubLinear(6, 4), (torch.randn(3, 6),)),
        ("bilinear", nn.Bilinear(6, 5, 4), (torch.randn(3, 6), torch.randn(3, 5))),
        ("conv1d", nn.Conv1d(3, 4, 3), (torch.randn(2, 3, 9),)),
        ("conv2d", nn.Conv2d(3, 4, 3), (torch.randn(2, 3, 7, 7),)),
        ("conv3d", nn.Conv3d(2, 3, 2), (torch.randn(2, 2, 4, 4, 4),)),
        ("convT1d", nn.ConvTranspose1d(3, 4, 3), (torch.randn(2, 3, 9),)),
        ("convT2d", nn.ConvTranspose2d(3, 4, 3, stride=2), (torch.randn(2, 3, 5, 5),)),
        ("convT3d", nn.ConvTranspose3d(2, 3, 2), (torch.randn(2, 2, 3, 3, 3),)),
        ("lstm", nn.LSTM(6, 5, batch_first=True), (seq,)),
        ("gru", nn.GRU(6, 5, batch_first=True), (seq,)),
        ("rnn", nn.RNN(6, 5, batch_first=True), (seq,)),
        ("lstm-cell", nn.LSTMCell(6, 5), (torch.randn(3, 6),)),
        ("gru-cell", nn.GRUCell(6, 5), (torch.randn(3, 6),)),
        ("rnn-cell", nn.RNNCell(6, 5), (torch.randn(3, 6),)),
        ("mha", nn.MultiheadAttention(6, 2, batch_first=True), (seq, seq, seq)),
        ("encoder-layer", nn.TransformerEncoderLayer(6, 2, 12, dropout=0.0, batch_first=True), (seq,)),
        ("decoder-layer", nn.TransformerDecoderLayer(6, 2, 12, dropout=0.0, batch_first=True), (seq, seq)),
        ("encoder", nn.TransformerEncoder(nn.TransformerEncoderLayer(6, 2, 12, dropout=0.0, batch_first=True), 2,
                                          enable_nested_tensor=False), (seq,)),
        ("transformer", nn.Transformer(6, 2, 1, 1, 12, dropout=0.0, batch_first=True), (seq, seq)),
        ("functional", Functional(), (seq,)),
        ("bn-folded", nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()), (torch.randn(2, 3, 7, 7),)),
    ]


def _out(y):
    if isinstance(y, tuple):
        y = y[0]
    return y[0] if isinstance(y, tuple) else y


CASES = _cases()
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("name, module, inputs", CASES, ids=IDS)
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_sigma_zero_is_bit_identical_for_every_type(name, module, inputs, grad):
    module.eval()
    for noise in (None, Additive(0.0), Multiplicative(0.0), PerSite({}, default=Additive(0.0))):
        noisy = noisynn.convert(module, noise, warn=False)
        with torch.set_grad_enabled(grad):  # no_grad + eval: torch's fused fast paths
            assert torch.equal(_out(noisy(*inputs)), _out(module(*inputs))), (name, noise)


@pytest.mark.parametrize("name, module, inputs", CASES, ids=IDS)
def test_noise_reaches_every_type_and_is_fresh_at_every_call(name, module, inputs):
    module.eval()
    noisy = noisynn.convert(module, Additive(0.5), warn=False)
    with torch.no_grad():
        a, b = _out(noisy(*inputs)), _out(noisy(*inputs))
        clean = _out(module(*inputs))
    assert not torch.equal(a, clean), f"{name}: no noise in eval/no_grad"
    assert not torch.equal(a, b), f"{name}: the same noise twice"


def test_every_product_of_an_encoder_layer_is_a_named_site():
    layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)
    names = [s.name for s in noisynn.inspect(noisynn.convert(layer)).sites]
    assert names == ["self_attn:q", "self_attn:k", "self_attn:v", "self_attn:scores", "self_attn:weighted_sum",
                     "self_attn.out_proj", "linear1", "linear2"]
    noisy = noisynn.convert(layer)
    assert type(noisy.self_attn.out_proj).__name__ == "NoisyNonDynamicallyQuantizableLinear"


class _Recorder(NoiseModel):
    """Additive or multiplicative noise that keeps, per site, (clean, noisy) of every call."""

    def __init__(self, inner: NoiseModel) -> None:
        super().__init__()
        self.inner = inner
        self.calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def apply(self, y, site=""):
        out = self.inner.apply(y, site)
        self.calls.setdefault(site, []).append((y.detach().clone(), out.detach().clone()))
        return out


# one representative per site kind: name -> (module, inputs, the sites it must show)
_STAT_CASES = {
    "linear": (nn.Linear(32, 64), (torch.randn(256, 32),), {""}),
    "conv1d": (nn.Conv1d(4, 16, 3), (torch.randn(64, 4, 20),), {""}),
    "convT2d": (nn.ConvTranspose2d(4, 8, 3), (torch.randn(32, 4, 6, 6),), {""}),
    "bilinear": (nn.Bilinear(8, 8, 32), (torch.randn(256, 8), torch.randn(256, 8)), {""}),
    "lstm-cell": (nn.LSTMCell(8, 32), (torch.randn(256, 8),), {""}),
    "mha": (nn.MultiheadAttention(16, 2, batch_first=True), (torch.randn(32, 12, 16),) * 3,
            {":q", ":k", ":v", ":scores", ":weighted_sum", "out_proj"}),
    "functional": (Functional(), (torch.randn(64, 10, 6),), {":linear", ":scores", ":weighted_sum", ":einsum"}),
}


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
@pytest.mark.parametrize("case", list(_STAT_CASES))
def test_noise_statistics_at_each_site_type(case, kind):
    """z = noisy - clean (additive) or noisy / clean (multiplicative): mean, variance, fresh per call."""
    module, inputs, expected = _STAT_CASES[case]
    sigma = 0.3
    rec = _Recorder(Additive(sigma) if kind == "additive" else Multiplicative(sigma))
    noisy = noisynn.convert(module.eval(), rec, warn=False)
    torch.manual_seed(1)
    with torch.no_grad():
        noisy(*inputs)
        noisy(*inputs)
    assert set(rec.calls) == expected, rec.calls.keys()
    for site, calls in rec.calls.items():
        assert len(calls) == 2, site  # one noisy product per call, and the second call drew again
        zs = []
        for clean, out in calls:
            z = out - clean if kind == "additive" else out / clean
            keep = clean.abs() > 1e-3 if kind == "multiplicative" else torch.ones_like(clean, dtype=torch.bool)
            zs.append(z[keep])
        z = torch.cat(zs)
        n = z.numel()
        mean = 0.0 if kind == "additive" else 1.0
        assert abs(z.mean().item() - mean) < 5 * sigma / n**0.5, (site, z.mean())
        assert abs(z.std().item() / sigma - 1) < 0.05 + 5 / n**0.5, (site, z.std())
        a, b = (zz[: min(len(zs[0]), len(zs[1]))] - mean for zz in zs)
        corr = (a * b).mean() / (a.std() * b.std())
        assert abs(corr.item()) < 5 / len(a) ** 0.5, f"{site}: noise repeated across calls"


#: the attention stacks train slowest (25 Adam steps each); the fast tier keeps the other types
_SLOW_TRAINING = {"mha", "encoder-layer", "decoder-layer", "encoder", "transformer"}
TRAINING_CASES = [pytest.param(*c, id=c[0], marks=pytest.mark.slow if c[0] in _SLOW_TRAINING else ()) for c in CASES]


@pytest.mark.parametrize("kind", [Additive, Multiplicative])
@pytest.mark.parametrize("name, module, inputs", TRAINING_CASES)
def test_gradients_flow_and_dni_steps_lower_the_loss(name, module, inputs, kind):
    torch.manual_seed(0)
    noisy = noisynn.convert(module, kind(0.1), warn=False).train()
    target = torch.randn_like(_out(noisy(*inputs)))
    opt = torch.optim.Adam(noisy.parameters(), lr=0.02)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = F.mse_loss(_out(noisy(*inputs)), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in noisy.parameters() if p.requires_grad and p.dim() > 1), name
    assert sum(losses[-5:]) < 0.92 * sum(losses[:5]), (name, losses[:5], losses[-5:])


def test_attention_products_can_be_switched_off_by_name():
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    rec = _Recorder(Additive(0.5))
    digital = PerSite({"*:scores": Clean(), "*:weighted_sum": Clean()}, default=rec)
    noisy = noisynn.convert(mha, digital)
    x = torch.randn(2, 3, 8)
    with torch.no_grad():
        noisy(x, x, x)
    assert set(rec.calls) == {":q", ":k", ":v", "out_proj"}


def test_embedding_norms_and_folded_convs_are_reported_clean_with_reasons_no_gap():
    model = nn.Sequential(nn.Embedding(10, 8), nn.LayerNorm(8), nn.Linear(8, 8), nn.BatchNorm1d(5))
    report = noisynn.inspect(noisynn.convert(model))
    reasons = {c.module: c.reason for c in report.clean}
    assert "look-up" in reasons["0"] and "element-wise" in reasons["1"] and set(reasons) == {"0", "1"}
    assert not report.gaps
    sites = {s.name: s.product for s in report.sites}
    assert sites == {"2": "Wx, noise after its BN", "3": "BN(Wx + b) (folded)"}


class Opaque(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))
        self.gain = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return x @ self.w


class ElementWise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return x * self.gain


def test_an_untraced_host_with_weights_warns_and_strict_raises():
    with pytest.warns(UserWarning, match="stay clean for no known reason"):
        noisynn.convert(Opaque())
    with pytest.raises(noisynn.ModelError, match="example_inputs"):
        noisynn.convert(Opaque(), strict=True)
    x = torch.randn(2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        traced = noisynn.convert(Opaque(), Additive(0.3), strict=True, example_inputs=(x,))
        noisynn.convert(ElementWise(), strict=True, example_inputs=(x,))
    report = noisynn.inspect(traced, x)
    assert [s.name for s in report.sites] == [":matmul"] and not report.gaps
    elementwise = noisynn.inspect(noisynn.convert(ElementWise(), warn=False), x)
    assert "element-wise" in elementwise.clean[0].reason and not elementwise.gaps


def test_plain_torch_model_reports_its_products_as_gaps():
    report = noisynn.inspect(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Conv1d(1, 1, 1)))
    assert [c.module for c in report.gaps] == ["0", "2"]


def test_functional_false_leaves_foreign_products_exact_and_reports_the_gap():
    with pytest.raises(noisynn.ModelError):
        noisynn.convert(Opaque(), functional=False, strict=True)


def test_converted_model_keeps_state_dict_keys_and_pickles(tmp_path):
    model = nn.Sequential(SubLinear(3, 3), nn.MultiheadAttention(4, 2))
    noisy = noisynn.convert(model, warn=False)
    assert list(noisy.state_dict()) == list(model.state_dict())
    torch.save(noisy, tmp_path / "m.pt")
    back = torch.load(tmp_path / "m.pt", weights_only=False)
    assert type(back[0]).__name__ == "NoisySubLinear"


def test_set_noise_reaches_hosts():
    noisy = noisynn.convert(Functional(), warn=False).eval()
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        base = noisy(x)
        noisynn.set_noise(noisy, "additive", 0.5)
        assert not torch.equal(noisy(x), base)
        noisynn.set_noise(noisy, None)
        assert torch.equal(noisy(x), base)


def test_cli_inspect_prints_sites_and_reasons(tmp_path):
    from typer.testing import CliRunner

    from noisynn.cli.main import app

    runner = CliRunner()
    out = runner.invoke(app, ["inspect", "cnn6"])
    assert out.exit_code == 0, out.output
    assert "classifier.4" in out.output and "noise after its BN" in out.output
    (tmp_path / "usernet.py").write_text(
        "import torch\nclass Net(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__(); self.w = torch.nn.Parameter(torch.ones(3, 3))\n"
        "    def forward(self, x):\n        return x @ self.w\n"
        "def build():\n    return Net()\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        gap = runner.invoke(app, ["inspect", "usernet:build", "--strict"])
        assert gap.exit_code == 2 and "left clean for no known reason" in gap.output
        traced = runner.invoke(app, ["inspect", "usernet:build", "--input-shape", "3", "--strict", "--json"])
        assert traced.exit_code == 0, traced.output
        assert '":matmul"' in traced.output
    finally:
        sys.path.remove(str(tmp_path))
    bad = runner.invoke(app, ["inspect", "torch.nn:Linear"])
    assert bad.exit_code == 2 and "cannot be called without arguments" in bad.output
