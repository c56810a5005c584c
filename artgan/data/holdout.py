"""Which images are held out of training (``data.holdout``), decided per image by a seeded hash of its name.

Held-out paintings answer the question training images cannot: does the generator paint like the *paintings*, or
like the ones it has seen? (A growing gap between the two is memorization; docs/metrics.md.) The split must be
the same in every run of a sweep and survive changes to the folder, so it is not drawn from the list order:
each image gets a score in [0, 1) from ``sha256(seed / name)`` (its path relative to ``data.root``, or its index
for procedural images). A fraction ``p`` holds out the images scoring below ``p``: adding or removing files never
moves another file across the line. A count ``n`` holds out the ``n`` lowest scores.
"""

from __future__ import annotations

import hashlib
import numbers

import numpy as np

from artgan.errors import ConfigError

__all__ = ["check_holdout", "holdout_mask", "scores"]


def check_holdout(value) -> float | int | None:
    """``data.holdout`` as None (off), a fraction in (0, 1) or a count >= 1; anything else is a ConfigError."""
    if value is None or (isinstance(value, numbers.Number) and not isinstance(value, bool) and value == 0):
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        raise ConfigError(f"data.holdout={value!r} must be null (off), a fraction such as 0.1 or a number of images "
                          "such as 50.")
    if isinstance(value, numbers.Integral) and value >= 1:
        return int(value)
    if 0 < value < 1:
        return float(value)
    raise ConfigError(f"data.holdout={value!r} must be a fraction strictly between 0 and 1 (e.g. 0.1) or a whole "
                      "number of images >= 1 (e.g. 50); null or 0 turns it off.")


def scores(names: list[str], seed: int) -> np.ndarray:
    """A number in [0, 1) per name, fixed by (seed, name) alone."""
    return np.array([int.from_bytes(hashlib.sha256(f"{int(seed)}/{name}".encode()).digest()[:8], "big") / 2.0 ** 64
                     for name in names], dtype=np.float64)


def holdout_mask(names: list[str], holdout: float | int | None, seed: int = 0) -> np.ndarray:
    """Boolean mask (True: held out) over ``names`` for a ``check_holdout``-ed value."""
    mask = np.zeros(len(names), dtype=bool)
    if holdout is None or not names:
        return mask
    s = scores(names, seed)
    if isinstance(holdout, float):
        mask[s < holdout] = True
    else:
        mask[np.argsort(s, kind="stable")[: min(holdout, len(names))]] = True
    return mask
