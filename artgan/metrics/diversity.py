"""How varied generated images are, next to how varied the paintings are, in a feature space.

Cosine distance ``1 - cos(f_a, f_b)`` between feature vectors, in [0, 2]. The diversity ratio is the mean
pairwise distance among generated images over the same among real images, on equal-size random subsets:
about 1 means as varied as the data, well below 1 means mode collapse.
"""

from __future__ import annotations

import torch


def cosine_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) cosine distances."""
    a = torch.nn.functional.normalize(a.double(), dim=1)
    b = torch.nn.functional.normalize(b.double(), dim=1)
    return (1.0 - a @ b.T).clamp_min(0.0)


def mean_pairwise_distance(features: torch.Tensor) -> float:
    """Mean cosine distance over all pairs i != j."""
    n = features.shape[0]
    if n < 2:
        return float("nan")
    d = cosine_distances(features, features)
    return float(d.sum() / (n * (n - 1)))


def diversity(fake: torch.Tensor, real: torch.Tensor, seed: int = 0) -> dict:
    """Mean pairwise feature distance of generated vs real on equal-size sets, and their ratio."""
    n = min(len(fake), len(real))
    g = torch.Generator().manual_seed(int(seed))
    fake_sub = fake[torch.randperm(len(fake), generator=g)[:n]]
    real_sub = real[torch.randperm(len(real), generator=g)[:n]]
    d_fake, d_real = mean_pairwise_distance(fake_sub), mean_pairwise_distance(real_sub)
    return {"n": n, "generated_mean_pairwise_distance": d_fake, "real_mean_pairwise_distance": d_real,
            "diversity_ratio": d_fake / d_real if d_real > 0 else float("nan")}
