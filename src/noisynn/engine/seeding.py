"""Deterministic, independent random streams derived from names.

Every random stream of an experiment (weight initialisation, the order of mini-batches
in epoch e, the training noise of epoch e, the noise of evaluation run group g at
(sigma_train, sigma_val)) gets its own seed, hashed from the experiment seed and the
stream's coordinates. Streams are therefore reproducible one by one, whatever ran before
them, which is what makes a killed-and-resumed sweep give the same numbers as an
uninterrupted one.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derive_seed", "generator"]


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts (floats rounded to 9 decimals)."""
    text = "/".join(f"{p:.9f}" if isinstance(p, float) else str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(*parts: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed` of ``parts``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*parts))
    return g
