"""Noisy attention: ``nn.MultiheadAttention`` and the transformer layers that hold it.

:class:`NoisyMultiheadAttention` is a drop-in for ``nn.MultiheadAttention`` (same
arguments, parameters and ``state_dict`` keys). It has six noise sites, each with its
own name, so that a :class:`~noisynn.noise.PerSite` model can treat them apart:

=========================  ===========================================================
site                       the product
=========================  ===========================================================
``NAME:q``, ``:k``, ``:v``  the input projections ``W_q x + b_q`` (and ``k``, ``v``)
``NAME:scores``            the attention scores ``Q K^T / sqrt(d)`` (per head)
``NAME:weighted_sum``      the weighted sum of the values ``A V`` (per head)
``NAME.out_proj``          the output projection (a :class:`~noisynn.layers.NoisyLinear`-like site)
=========================  ===========================================================

**Default: all six are noisy.** noisynn's promise is that no matrix product of a
converted model is computed exactly unless the user says so. On analog in-memory
hardware the two attention products multiply activations by activations, which
crossbars do not hold, and are often computed digitally; to model that, switch them
off by name::

    noise = noisynn.PerSite({"*:scores": noisynn.Clean(), "*:weighted_sum": noisynn.Clean()},
                            default=noisynn.Additive(0.3))

The noise on the scores is added before the attention mask (so a masked position
stays masked whatever the noise) and before the softmax. With no noise, or
``sigma = 0`` at every site, the layer runs torch's own code (fast paths included)
and its result is bit-identical.

:class:`NoisyTransformerEncoderLayer` and :class:`NoisyTransformerEncoder` replace the
fused fast paths of their torch counterparts (``torch._transformer_encoder_layer_fwd``
and the nested-tensor path, which never call the sub-modules) by torch's own
step-by-step path whenever any site inside is noisy; when all are clean they are
torch's code unchanged. ``nn.TransformerDecoderLayer`` and ``nn.TransformerDecoder``
have no such fast path: :func:`noisynn.convert` converts what they hold.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.transformer import _detect_is_causal_mask, _get_seq_len

from noisynn.layers import INTERCEPT, NoiseSite, exact_scope
from noisynn.noise import NoiseModel, Product

__all__ = ["NoisyMultiheadAttention", "NoisyTransformerEncoderLayer", "NoisyTransformerEncoder",
           "ATTENTION_SITES", "subtree_clean"]

#: The sub-site suffixes of a noisy attention (``NAME:suffix``).
ATTENTION_SITES = ("q", "k", "v", "scores", "weighted_sum")


def subtree_clean(module: nn.Module) -> bool:
    """True when every noise site in ``module`` computes exactly right now."""
    return all(m.active_noise() is None for m in module.modules() if isinstance(m, NoiseSite))


class NoisyMultiheadAttention(NoiseSite, nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with noise after every product (see the module docstring).

    Arguments, inputs and outputs as ``torch.nn.MultiheadAttention``; ``out_proj`` is
    converted by :func:`noisynn.convert` into a noise site of its own.
    """

    def site_names(self) -> list[str]:
        return [f"{self.site_name}:{s}" for s in ATTENTION_SITES]

    def active_noise(self) -> NoiseModel | None:
        model = self.active_model()
        if model is None or all(model.is_identity(name) for name in self.site_names()):
            return None
        return model

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        model = self.active_noise()
        out_proj_clean = not isinstance(self.out_proj, NoiseSite) or self.out_proj.active_noise() is None
        if model is None and out_proj_clean:
            return super().forward(query, key, value, key_padding_mask, need_weights, attn_mask,
                                   average_attn_weights, is_causal)
        if INTERCEPT.get() is None:
            return self._noisy(model, query, key, value, key_padding_mask, need_weights, attn_mask,
                               average_attn_weights, is_causal)
        with exact_scope():
            return self._noisy(model, query, key, value, key_padding_mask, need_weights, attn_mask,
                               average_attn_weights, is_causal)

    def _noisy(self, model: NoiseModel | None, query: Tensor, key: Tensor, value: Tensor,
               key_padding_mask: Tensor | None, need_weights: bool, attn_mask: Tensor | None,
               average_attn_weights: bool, is_causal: bool) -> tuple[Tensor, Tensor | None]:
        """torch's ``multi_head_attention_forward`` written out, with the noise at each product."""
        name = self.site_name

        def noisy(y: Tensor, suffix: str) -> Tensor:
            return y if model is None else model.apply(y, f"{name}:{suffix}")

        batched = query.dim() == 3
        if self.batch_first and batched:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if not batched:
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        tgt_len, bsz, embed = query.shape
        if embed != self.embed_dim:
            raise ValueError(f"{type(self).__name__}: query has {embed} features, expected {self.embed_dim}")
        key_padding_mask = F._canonical_mask(
            mask=key_padding_mask, mask_name="key_padding_mask", other_type=F._none_or_dtype(attn_mask),
            other_name="attn_mask", target_type=query.dtype)
        attn_mask = F._canonical_mask(
            mask=attn_mask, mask_name="attn_mask", other_type=None, other_name="", target_type=query.dtype,
            check_other=False)
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint (as torch.nn.MultiheadAttention)")

        heads, head_dim = self.num_heads, self.head_dim
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        param = self.in_proj_weight if self._qkv_same_embed_dim else None

        def project(x: Tensor, w: Tensor, b: Tensor | None, suffix: str) -> Tensor:
            site = f"{name}:{suffix}"
            if model is not None and model.computes_products(site):  # e.g. weights on a crossbar
                return model.product(Product(x, w, b, F.linear, -1, True, self.training, param if param is not None
                                             else w), site)
            return noisy(F.linear(x, w, b), suffix)

        q = project(query, w_q, b_q, "q")
        k = project(key, w_k, b_k, "k")
        v = project(value, w_v, b_v, "v")

        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.repeat(1, bsz, 1)])
            v = torch.cat([v, self.bias_v.repeat(1, bsz, 1)])
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        q = q.reshape(tgt_len, bsz * heads, head_dim).transpose(0, 1)
        k = k.reshape(k.size(0), bsz * heads, head_dim).transpose(0, 1)
        v = v.reshape(v.size(0), bsz * heads, head_dim).transpose(0, 1)
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(bsz * heads, 1, head_dim)], dim=1)
            v = torch.cat([v, v.new_zeros(bsz * heads, 1, head_dim)], dim=1)
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        src_len = k.size(1)

        if attn_mask is not None and attn_mask.dim() == 2:
            attn_mask = attn_mask.unsqueeze(0)
        if key_padding_mask is not None:
            kpm = key_padding_mask.view(bsz, 1, 1, src_len).expand(-1, heads, -1, -1).reshape(bsz * heads, 1, src_len)
            attn_mask = kpm if attn_mask is None else attn_mask + kpm

        scores = noisy(torch.bmm(q * (1.0 / math.sqrt(head_dim)), k.transpose(1, 2)), "scores")
        if attn_mask is not None:
            scores = scores + attn_mask  # after the noise: a masked position stays masked
        weights = torch.softmax(scores, dim=-1)
        if self.dropout > 0.0 and self.training:
            weights = F.dropout(weights, p=self.dropout)
        out = noisy(torch.bmm(weights, v), "weighted_sum")
        out = out.transpose(0, 1).reshape(tgt_len * bsz, embed)
        out = self.out_proj(out).view(tgt_len, bsz, embed)
        if self.batch_first and batched:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(1)
        if not need_weights:
            return out, None
        weights = weights.view(bsz, heads, tgt_len, src_len)
        if average_attn_weights:
            weights = weights.mean(dim=1)
        if not batched:
            weights = weights.squeeze(0)
        return out, weights


class NoisyTransformerEncoderLayer(nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer`` whose fused inference fast path never bypasses the noise.

    When every site inside is clean it is torch's forward, fast path and all; otherwise
    it runs torch's step-by-step path, which calls the (noisy) sub-modules.
    """

    def forward(self, src: Tensor, src_mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None,
                is_causal: bool = False) -> Tensor:
        if subtree_clean(self):
            return super().forward(src, src_mask, src_key_padding_mask, is_causal)
        src_key_padding_mask = F._canonical_mask(
            mask=src_key_padding_mask, mask_name="src_key_padding_mask", other_type=F._none_or_dtype(src_mask),
            other_name="src_mask", target_type=src.dtype)
        src_mask = F._canonical_mask(mask=src_mask, mask_name="src_mask", other_type=None, other_name="",
                                     target_type=src.dtype, check_other=False)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x


class NoisyTransformerEncoder(nn.TransformerEncoder):
    """``nn.TransformerEncoder`` that never packs its input into a nested tensor while noisy.

    (torch's nested-tensor path hands the layers a packed tensor and takes their fused
    kernels; with any site noisy the layers run one by one on the padded tensor.)
    """

    def forward(self, src: Tensor, mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None,
                is_causal: bool | None = None) -> Tensor:
        if subtree_clean(self):
            return super().forward(src, mask, src_key_padding_mask, is_causal)
        src_key_padding_mask = F._canonical_mask(
            mask=src_key_padding_mask, mask_name="src_key_padding_mask", other_type=F._none_or_dtype(mask),
            other_name="mask", target_type=src.dtype)
        mask = F._canonical_mask(mask=mask, mask_name="mask", other_type=None, other_name="",
                                 target_type=src.dtype, check_other=False)
        seq_len = _get_seq_len(src, self.layers[0].self_attn.batch_first)
        is_causal = _detect_is_causal_mask(mask, is_causal, seq_len)
        output = src
        for layer in self.layers:
            output = layer(output, src_mask=mask, is_causal=is_causal, src_key_padding_mask=src_key_padding_mask)
        if self.norm is not None:
            output = self.norm(output)
        return output
