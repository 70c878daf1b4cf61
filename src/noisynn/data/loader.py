"""Whole-tensor batching: no per-sample ``Dataset.__getitem__`` on the hot path.

:class:`TensorLoader` keeps ``x`` and ``y`` as whole tensors on the target device. Each epoch it
draws one index permutation (from a ``torch.Generator``, so runs are reproducible) and yields
``(x[idx], y[idx])`` slices; without shuffling it yields plain views. This is one indexing op
per batch instead of ``batch_size`` Python calls plus a collate, i.e. orders of magnitude faster
than ``torch.utils.data.DataLoader`` over a per-sample dataset for in-memory data
(see ``benchmarks/bench_loader.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def random_crop_flip(x: torch.Tensor, generator: torch.Generator | None = None, padding: int = 4) -> torch.Tensor:
    """Random crop after zero padding, and random horizontal flip, per image of a batch.

    The usual CIFAR-10 augmentation, vectorised over the batch. Padding is with zeros of the
    (already normalised) input, i.e. with the mean colour.

    Args:
        x: Images (B, C, H, W).
        generator: Random source (CPU or on the device of ``x``).
        padding: Pixels of padding on each side; the crop offset is uniform in ``[0, 2 * padding]``.

    Returns:
        A new tensor of the same shape.
    """
    if x.dim() != 4:
        raise ValueError(f"random_crop_flip needs images (B, C, H, W), got shape {tuple(x.shape)}")
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    gen_device = generator.device if generator is not None else torch.device("cpu")
    off = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=gen_device).to(x.device)
    flip = torch.rand(b, generator=generator, device=gen_device).to(x.device) < 0.5
    rows = off[0][:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = off[1][:, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


class TensorLoader:
    """Iterate over whole tensors in mini-batches.

    Args:
        x: Inputs, first dimension = samples.
        y: Targets, same first dimension.
        batch_size: Samples per batch.
        shuffle: Draw a new permutation each epoch.
        generator: Random source of the permutation (and of the augmentation), on any device.
        device: Where the batches go; the whole tensors are moved there once, up front.
        drop_last: Skip a last, smaller batch.
        augment: Apply :func:`random_crop_flip` to each batch (images only).

    Examples:
        >>> loader = TensorLoader(torch.zeros(10, 3), torch.arange(10), 4, shuffle=False)
        >>> [len(yb) for _, yb in loader]
        [4, 4, 2]
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        drop_last: bool = False,
        augment: bool = False,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if augment and x.dim() != 4:
            raise ValueError(f"augment=True needs images (N, C, H, W), got shape {tuple(x.shape)}")
        self.x = x if device is None else x.to(device)
        self.y = y if device is None else y.to(device)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator
        self.drop_last = drop_last
        self.augment = augment

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, bs = len(self.x), self.batch_size
        stop = n - n % bs if self.drop_last else n
        perm = None
        if self.shuffle:
            gen_device = self.generator.device if self.generator is not None else torch.device("cpu")
            perm = torch.randperm(n, generator=self.generator, device=gen_device).to(self.x.device)
        for start in range(0, stop, bs):
            if perm is None:
                xb, yb = self.x[start : start + bs], self.y[start : start + bs]
            else:
                idx = perm[start : start + bs]
                xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
            if self.augment:
                xb = random_crop_flip(xb, self.generator)
            yield xb, yb
