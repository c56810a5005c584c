"""Precision / recall and density / coverage of generated samples in a feature space.

Fidelity and diversity as separate numbers, where FID / KID mix them into one:

* improved precision and recall: Kynkaanniemi et al., "Improved Precision and Recall Metric for
  Assessing Generative Models", NeurIPS 2019;
* density and coverage: Naeem et al., "Reliable Fidelity and Diversity Metrics for Generative Models",
  ICML 2020 (more robust to outliers than precision / recall).

With real features ``X_1 .. X_N``, fake features ``Y_1 .. Y_M`` (``(N, D)`` and ``(M, D)``, extracted
by the caller, e.g. with :func:`artgan.metrics.fid.extract_features`), ``NND_k(X_i)`` the Euclidean
distance from ``X_i`` to its k-th nearest *other* real sample and ``B(X_i, r)`` the open ball of radius
``r`` around it (the real manifold is the union of the balls ``B(X_i, NND_k(X_i))``, the fake manifold
likewise):

* ``precision = (1/M) sum_j 1[Y_j in the real manifold]``: fraction of fakes that look real (fidelity);
* ``recall = (1/N) sum_i 1[X_i in the fake manifold]``: fraction of reals the generator can produce (diversity);
* ``density = (1/(kM)) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))]``: how many real balls hold each fake, over
  k; about 1 when fakes are distributed like the reals, above 1 when they crowd into dense real regions;
* ``coverage = (1/N) sum_i 1[some Y_j in B(X_i, NND_k(X_i))]``: fraction of real neighbourhoods reached.

Balls are open (a point at exactly the radius is outside), as in Naeem et al.'s reference code. Then a
set compared with itself gives precision = recall = coverage = 1 and density = 1 exactly: each ball
holds its centre and its k - 1 nearest neighbours, while the k-th lies on the boundary.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["nearest_neighbour_distances", "pairwise_distances", "prdc"]

# Elements of one block of the distance matrix: 2M float64 = 16 MB. prdc() on 2,000 x 2,000 features of
# 1,280 dimensions then peaks at ~140 MB over its inputs (measured; the float64 copies included).
_BLOCK_ELEMENTS = 1 << 21


def pairwise_distances(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances ``(N, M)`` between the rows of ``a`` ``(N, D)`` and ``b`` ``(M, D)``, in float64."""
    a, b = a.double(), b.double()
    squared = (a @ b.T).mul_(-2.0).add_(a.square().sum(1, keepdim=True)).add_(b.square().sum(1))
    return squared.clamp_min_(0.0).sqrt_()


def _block_size(num_cols: int) -> int:
    """Rows per block of a distance matrix with ``num_cols`` columns."""
    return max(1, _BLOCK_ELEMENTS // max(1, num_cols))


def _check_features(features: Tensor, k: int, name: str) -> None:
    if features.dim() != 2:
        raise ValueError(f"expected {name} features of shape (N, D), got {tuple(features.shape)}")
    if features.shape[0] <= k:
        raise ValueError(f"need more than k={k} {name} samples, got {features.shape[0]}")


def nearest_neighbour_distances(features: Tensor, k: int = 3) -> Tensor:
    """Distance ``(N,)`` float64 from each row of ``features`` ``(N, D)`` to its k-th nearest other row."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    _check_features(features, k, "input")
    features = features.double()
    n = features.shape[0]
    step = _block_size(n)
    # The k + 1 smallest distances of a row include the row itself (distance 0).
    return torch.cat([
        pairwise_distances(features[start : start + step], features).topk(k + 1, dim=1, largest=False).values[:, -1]
        for start in range(0, n, step)
    ])


def prdc(real_features: Tensor, fake_features: Tensor, k: int = 3, real_radii: Tensor | None = None
         ) -> dict[str, float]:
    """``{"precision", "recall", "density", "coverage"}`` of fake vs real features (see the module docstring).

    Distances are computed in float64, in blocks of rows, so memory stays bounded for large sets. ``real_radii``:
    ``nearest_neighbour_distances(real_features, k)`` when the caller keeps them (a fixed real set evaluated
    many times), else computed here.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    _check_features(real_features, k, "real")
    _check_features(fake_features, k, "fake")
    if real_features.shape[1] != fake_features.shape[1]:
        raise ValueError(f"feature sizes differ: real {real_features.shape[1]}, fake {fake_features.shape[1]}")
    real, fake = real_features.double(), fake_features.double().to(real_features.device)
    real_radii = nearest_neighbour_distances(real, k) if real_radii is None else real_radii.double().to(real.device)
    fake_radii = nearest_neighbour_distances(fake, k)

    real_balls_per_fake = torch.zeros(fake.shape[0], dtype=torch.long, device=real.device)
    real_in_fake_manifold = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    real_ball_has_fake = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    step = _block_size(fake.shape[0])
    for start in range(0, real.shape[0], step):
        rows = slice(start, start + step)
        dist = pairwise_distances(real[rows], fake)  # (rows, M)
        fake_in_real_ball = dist < real_radii[rows, None]
        real_balls_per_fake += fake_in_real_ball.sum(0)
        real_ball_has_fake[rows] = fake_in_real_ball.any(1)
        real_in_fake_manifold[rows] = (dist < fake_radii[None, :]).any(1)
    return {
        "precision": float((real_balls_per_fake > 0).double().mean()),
        "recall": float(real_in_fake_manifold.double().mean()),
        "density": float(real_balls_per_fake.sum()) / (k * fake.shape[0]),
        "coverage": float(real_ball_has_fake.double().mean()),
    }
