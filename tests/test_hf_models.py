"""convert() on real third-party architectures: HF transformers GPT-2 and ViT, built offline from small configs.

Random weights, no hub access. After convert, every Linear / Conv1D / Conv2d / attention
product is a site (checked both in the traced report and by a noise model that records
every site it is called for), the report has no gap, and sigma 0 is bit-identical.
Site counts are derived from the configs: GPT-2 has 4 Conv1D (addmm) + 2 attention
products per block and lm_head; ViT has 6 Linear + 2 attention products per layer, the
patch-embedding conv and the classifier.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may touch the hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"
transformers = pytest.importorskip(
    "transformers", reason="HF transformers is not installed (it is in the test extra: pip install -e '.[test]')")

import noisynn  # noqa: E402
from noisynn.noise import Additive, NoiseModel, PerSite  # noqa: E402

GPT2 = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0)
VIT = dict(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
           intermediate_size=64, num_labels=10)
IMPLS = ["eager", "sdpa"]
#: the two attention products as named sites: SDPA is split by noisynn into scores and weighted
#: sum; HF's eager attention calls torch.matmul twice (Q K^T, then A V) in the attention module.
ATTENTION_PRODUCTS = {"sdpa": ("scores", "weighted_sum"), "eager": ("matmul", "matmul.1")}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is fastest, and far faster when other jobs share the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def gpt2(impl: str) -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(**GPT2, attn_implementation=impl)
    model = transformers.GPT2LMHeadModel(config).eval()
    assert model.config._attn_implementation == impl
    return model


def vit(impl: str) -> nn.Module:
    torch.manual_seed(0)
    config = transformers.ViTConfig(**VIT, attn_implementation=impl)
    model = transformers.ViTForImageClassification(config).eval()
    assert model.config._attn_implementation == impl
    return model


def token_ids(batch: int = 3, length: int = 12) -> torch.Tensor:
    return torch.randint(0, GPT2["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(1))


def images(batch: int = 3) -> torch.Tensor:
    c, s = VIT["num_channels"], VIT["image_size"]
    return torch.randn(batch, c, s, s, generator=torch.Generator().manual_seed(2))


MODELS = {"gpt2": (gpt2, token_ids), "vit": (vit, images)}
CASES = [(arch, impl) for arch in MODELS for impl in IMPLS]
IDS = [f"{a}-{i}" for a, i in CASES]


def _attention_modules(model: nn.Module) -> list[str]:
    """Modules whose own code computes the attention products (an *Attention class holding no other)."""
    names = [n for n, m in model.named_modules() if type(m).__name__.endswith("Attention")]
    return [n for n in names if not any(o != n and o.startswith(n + ".") for o in names)]


def expected_sites(arch: str, impl: str, model: nn.Module) -> set[str]:
    """Every product of the original model, as the site name convert must give it."""
    linear = {n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    conv1d = {f"{n}:addmm" for n, m in model.named_modules() if type(m).__name__ == "Conv1D"}
    attention = {f"{n}:{p}" for n in _attention_modules(model) for p in ATTENTION_PRODUCTS[impl]}
    if arch == "gpt2":
        layers = GPT2["n_layer"]
        assert len(conv1d) == 4 * layers and linear == {"lm_head"}  # c_attn, c_proj, c_fc, mlp.c_proj
    else:
        layers = VIT["num_hidden_layers"]
        assert len(linear) == 6 * layers + 2 and not conv1d  # q, k, v, o, fc1, fc2; patch conv, classifier
        assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 1
    assert len(attention) == 2 * layers
    return linear | conv1d | attention


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).logits


class Recorder(NoiseModel):
    """Additive noise that records every site it is applied at."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.inner = Additive(sigma)
        self.sites: list[str] = []

    def apply(self, y, site=""):
        self.sites.append(site)
        return self.inner.apply(y, site)


@pytest.mark.parametrize("arch, impl", CASES, ids=IDS)
def test_sigma_zero_is_bit_identical(arch, impl):
    build, example = MODELS[arch]
    model, x = build(impl), example()
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            ref = _logits(model, x)
            for noise in (None, Additive(0.0), PerSite({}, default=Additive(0.0))):
                noisy = noisynn.convert(model, noise, strict=True).eval()
                assert torch.equal(_logits(noisy, x), ref), (arch, impl, noise, grad)


@pytest.mark.parametrize("arch, impl", CASES, ids=IDS)
def test_noise_is_fresh_and_reaches_every_product(arch, impl):
    build, example = MODELS[arch]
    model, x = build(impl), example()
    rec = Recorder(0.1)
    noisy = noisynn.convert(model, rec, strict=True).eval()
    with torch.no_grad():
        clean = _logits(model, x)
        a = _logits(noisy, x)
        calls_per_pass = len(rec.sites)
        b = _logits(noisy, x)
    assert not torch.equal(a, clean) and not torch.equal(a, b)
    assert (a - clean).abs().max() < 10  # noisy, not broken
    want = expected_sites(arch, impl, model)
    assert len(rec.sites) == 2 * calls_per_pass
    assert sorted(rec.sites[:calls_per_pass]) == sorted(want), set(rec.sites) ^ want  # each product once a pass


@pytest.mark.parametrize("arch, impl", CASES, ids=IDS)
def test_inspect_lists_every_product_and_explains_every_clean_module(arch, impl):
    build, example = MODELS[arch]
    model, x = build(impl), example()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no gap warning
        noisy = noisynn.convert(model, Additive(0.1), strict=True)
        noisynn.convert(model, Additive(0.1), strict=True, example_inputs=(x,))
    report = noisynn.inspect(noisy, x)
    names = [s.name for s in report.sites]
    want = expected_sites(arch, impl, model)
    assert len(names) == len(set(names)) == len(want) and set(names) == want, set(names) ^ want
    layers = GPT2["n_layer"] if arch == "gpt2" else VIT["num_hidden_layers"]
    assert len(names) == (6 * layers + 1 if arch == "gpt2" else 8 * layers + 2)
    shapes = {s.name: s.shape for s in report.sites}
    batch, tokens = x.shape[0], (x.shape[1] if arch == "gpt2" else (VIT["image_size"] // VIT["patch_size"]) ** 2 + 1)
    scores = f"{_attention_modules(model)[0]}:{ATTENTION_PRODUCTS[impl][0]}"
    heads = GPT2["n_head"] if arch == "gpt2" else VIT["num_attention_heads"]
    assert shapes[scores] == (batch, heads, tokens, tokens)
    if arch == "gpt2":
        assert shapes["transformer.h.0.attn.c_attn:addmm"] == (batch * tokens, 3 * GPT2["n_embd"])

    assert report.gaps == []
    assert report.clean, "the embeddings and layer norms are reported"
    for c in report.clean:
        assert c.reason and not c.gap, c
        if c.type in ("Embedding",):
            assert "look-up" in c.reason, c
        elif c.type == "LayerNorm":
            assert "element-wise" in c.reason, c
        else:  # ViT's CLS token and position embeddings
            assert c.type == "ViTEmbeddings" and "added, not multiplied" in c.reason, c
    n_norms = sum(isinstance(m, nn.LayerNorm) for m in model.modules())
    n_embeddings = sum(isinstance(m, nn.Embedding) for m in model.modules())
    assert sum(c.type == "LayerNorm" for c in report.clean) == n_norms == 2 * layers + 1
    assert sum(c.type == "Embedding" for c in report.clean) == n_embeddings == (2 if arch == "gpt2" else 0)


@pytest.mark.parametrize("impl", IMPLS)
def test_dni_steps_lower_the_lm_loss(impl):
    model = gpt2(impl)
    noisy = noisynn.convert(model, Additive(0.1), strict=True).train()
    ids = token_ids(4, 16)
    torch.manual_seed(3)
    opt = torch.optim.Adam(noisy.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = noisy(ids, labels=ids).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in noisy.parameters()), [n for n, p in noisy.named_parameters()
                                                                 if p.grad is None]
    assert losses[-1] < 0.9 * losses[0], losses
    with torch.no_grad():  # the original is untouched
        assert not torch.equal(model.lm_head.weight, noisy.lm_head.weight)


def test_dni_steps_lower_the_vit_loss():
    noisy = noisynn.convert(vit("sdpa"), Additive(0.1), strict=True).train()
    x, y = images(8), torch.arange(8) % VIT["num_labels"]
    torch.manual_seed(3)
    opt = torch.optim.Adam(noisy.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = F.cross_entropy(noisy(x).logits, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
