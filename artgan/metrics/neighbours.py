"""Nearest neighbours in a feature space, the memorization and coverage check shared by ``generate.py mode=compare``
and the curator panel (artgan/callbacks/curator.py).

Distances are cosine distances ``1 - cos(f_a, f_b)`` in [0, 2] (artgan/metrics/diversity.py). The reference for
"close" is the real images' own spacing: each real image's distance to its nearest *other* real image
(leave-one-out). Generated images much closer to a painting than paintings are to each other are copies; paintings
far from every generated image are what the generator never paints (low coverage).
"""

from __future__ import annotations

import torch

from artgan.metrics.diversity import cosine_distances

__all__ = ["memorization", "nearest_neighbours", "real_leave_one_out", "summary"]


def nearest_neighbours(queries: torch.Tensor, pool: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, indices), each (N_queries, k), of every query's k nearest rows of ``pool``, nearest first."""
    d = cosine_distances(queries, pool)
    dist, idx = d.topk(min(k, pool.shape[0]), dim=1, largest=False)
    return dist.float(), idx


def real_leave_one_out(real: torch.Tensor) -> torch.Tensor:
    """Each real image's distance to its nearest other real image."""
    d = cosine_distances(real, real)
    d.fill_diagonal_(float("inf"))
    return d.min(dim=1).values.float()


def summary(x: torch.Tensor) -> dict:
    """Mean, median, min and max of a set of distances."""
    x = x.double()
    return {"mean": float(x.mean()), "median": float(x.median()), "min": float(x.min()), "max": float(x.max())}


def memorization(generated_nn: torch.Tensor, real_nn: torch.Tensor) -> dict:
    """How close generated images are to the paintings, against how close paintings are to each other.

    ``generated_nn``: each generated image's distance to its nearest real image; ``real_nn``: each real image's
    distance to its nearest other real image (:func:`real_leave_one_out`). ``median_ratio`` well below 1 and a
    large ``fraction_closer_than_real_p1`` (generated images closer to a painting than the closest 1% of painting
    pairs are) mean copies."""
    p1 = torch.quantile(real_nn.double(), 0.01).float()
    return {
        "generated_to_real": summary(generated_nn),
        "real_to_other_real": summary(real_nn),
        "median_ratio": float(generated_nn.median() / real_nn.median()) if float(real_nn.median()) > 0
        else float("nan"),
        "fraction_closer_than_real_p1": float((generated_nn < p1).float().mean()),
    }
