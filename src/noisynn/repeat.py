"""Independent noisy repeats of a forward pass, batched into one call."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["repeat_forward"]


def repeat_forward(model: nn.Module, x: Tensor, repeats: int, *, max_batch: int | None = None) -> Tensor:
    """Run ``repeats`` independent noisy copies of ``model`` on the batch ``x`` at once.

    The batch is tiled ``repeats`` times along dimension 0 and sent through the model
    as one batch of ``repeats * B`` samples: noise is drawn per element, so every copy
    sees its own independent noise, and the matrix products get ``repeats`` times
    larger instead of being called ``repeats`` times. The cost of 40 noisy runs or 20
    votes is one batched pass.

    Args:
        model: any model taking a batch along dimension 0 (all of :mod:`noisynn.models`;
            use ``batch_first=True`` for recurrent layers). Use it in ``eval()`` mode:
            in ``train()`` mode a batch-norm would pool its statistics over the copies.
        x: the input batch ``(B, ...)``.
        repeats: number of independent copies ``R >= 1``.
        max_batch: largest number of samples sent through the model in one call
            (``None``: all ``R * B`` at once); bounds memory, never changes the result's
            distribution.

    Returns:
        ``(R, B, ...)``: the output of every copy.

    Raises:
        ValueError: ``repeats < 1`` or ``max_batch < 1``.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
    batch = x.size(0)
    per_call = repeats if max_batch is None else max(1, max_batch // max(batch, 1))
    outputs = []
    for start in range(0, repeats, per_call):
        r = min(per_call, repeats - start)
        tiled = x.unsqueeze(0).expand(r, *x.shape).reshape(r * batch, *x.shape[1:])
        out = model(tiled)
        outputs.append(out.reshape(r, batch, *out.shape[1:]))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)
