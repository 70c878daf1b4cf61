"""The embedded default: scikit-learn's bundled 8x8 digits (no download, always available).

1,797 images of 8x8 pixels with values 0..16 (scaled to [0, 1] by :func:`noisynn.data.load`),
10 classes. The split is fixed, seeded and stratified: 360 test images (36 of each class,
give or take one) and 1,437 training images, so the test set is a real held-out set. The split is
computed here with numpy (not ``sklearn.model_selection``) so that it does not change with the
scikit-learn version.
"""

from __future__ import annotations

import numpy as np

from noisynn._extras import require
from noisynn.data.fetch import OK, CheckResult
from noisynn.errors import DataError

NAME = "digits"
TEST_SIZE = 360
SEED = 0


def split_indices(y: np.ndarray, test_size: int = TEST_SIZE, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """A seeded stratified split of ``range(len(y))``.

    Each class gives ``round(test_size * share)`` test items (largest remainders settle the
    rounding so the total is exactly ``test_size``), chosen by a seeded permutation.

    Returns:
        ``(train_idx, test_idx)``, both sorted.
    """
    classes, counts = np.unique(y, return_counts=True)
    quota = test_size * counts / counts.sum()
    take = np.floor(quota).astype(int)
    short = test_size - int(take.sum())
    take[np.argsort(-(quota - take), kind="stable")[:short]] += 1
    rng = np.random.default_rng(seed)
    test = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take, strict=True)]
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    return train_idx, test_idx


def load(split: str, *, test_size: int = TEST_SIZE, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, dict]:
    """Load one split as float32 images (N, 1, 8, 8) in [0, 1] and int64 labels.

    Args:
        split: ``"train"`` or ``"test"``.
        test_size: Size of the held-out test set.
        seed: Seed of the split.
    """
    bunch = require("sklearn.datasets", "data", "the embedded digits data set").load_digits()
    y = bunch.target.astype(np.int64)
    if not 10 <= test_size <= len(y) - 10:
        raise DataError(f"digits: test_size={test_size} must be between 10 and {len(y) - 10}")
    train_idx, test_idx = split_indices(y, test_size, seed)
    idx = train_idx if split == "train" else test_idx
    x = (bunch.images[idx] / 16.0).astype(np.float32)[:, None]
    return x, y[idx], {"source": "sklearn.datasets.load_digits", "seed": seed, "test_size": test_size}


def check() -> CheckResult:
    """The embedded set is always there."""
    return CheckResult(NAME, OK, "embedded", "bundled with scikit-learn (1,797 images)", "scikit-learn")
