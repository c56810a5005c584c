"""Precision / recall / density / coverage: a hand-computed case, limits, and a brute-force check."""

from __future__ import annotations

import math

import pytest
import torch

import artgan.metrics.prdc as prdc_module
from artgan.metrics.prdc import nearest_neighbour_distances, pairwise_distances, prdc


def test_hand_computed_2d_case():
    real = torch.tensor([[0.0, 0], [2, 0], [10, 0], [13, 0], [0, 20], [1, 20], [1, -1]])  # X1 .. X7
    fake = torch.tensor([[1.0, 0], [1, 1.2], [11, 1], [11, 3], [30, 0], [30, 1]])  # Y1 .. Y6
    # k = 1. Real radii: X1, X2, X7 -> sqrt 2 (to X7 / X1); X3, X4 -> 3; X5, X6 -> 1.
    # Fake radii: Y1, Y2 -> 1.2; Y3, Y4 -> 2; Y5, Y6 -> 1. (No distance below equals a radius.)
    assert nearest_neighbour_distances(real, 1).tolist() == pytest.approx([math.sqrt(2)] * 2 + [3, 3, 1, 1, math.sqrt(2)])
    assert nearest_neighbour_distances(fake, 1).tolist() == pytest.approx([1.2, 1.2, 2, 2, 1, 1])
    got = prdc(real, fake, k=1)
    # precision: Y1 is 1 from X1 (< sqrt 2), Y3 is sqrt 2 from X3 (< 3); Y2 is 1.56 from X1 / X2 (> sqrt 2),
    #   Y4 is sqrt 10 / sqrt 13 from X3 / X4 (> 3), Y5 and Y6 are far away: 2 of 6.
    assert got["precision"] == pytest.approx(2 / 6)
    # recall: X1, X2, X7 are 1 from Y1 (< 1.2), X3 is sqrt 2 from Y3 (< 2); X4 is sqrt 5 from Y3 (> 2),
    #   X5 and X6 are far away: 4 of 7.
    assert got["recall"] == pytest.approx(4 / 7)
    # density: Y1 lies in the balls of X1, X2 and X7 (all at distance 1 < sqrt 2), Y3 in those of X3 and X4
    #   (sqrt 2 and sqrt 5 < 3): (3 + 2) / (k * M) = 5 / 6.
    assert got["density"] == pytest.approx(5 / 6)
    # coverage: the balls of X1, X2, X7 (Y1) and X3, X4 (Y3) hold a fake; X5, X6 do not: 5 of 7.
    assert got["coverage"] == pytest.approx(5 / 7)


def test_identical_sets_give_one_everywhere():
    x = torch.randn(200, 32, generator=torch.Generator().manual_seed(0))
    for k in (1, 3, 5):
        # Each real ball holds its centre and k - 1 neighbours; the k-th is on the (open) boundary.
        assert prdc(x, x.clone(), k=k) == {"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0}


def test_far_apart_clusters_give_zero_everywhere():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(100, 16, generator=g)
    fake = torch.randn(80, 16, generator=g) + 100.0
    assert prdc(real, fake) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_fake_subset_of_real_is_precise_but_misses_modes():
    g = torch.Generator().manual_seed(2)
    real = torch.cat([torch.randn(100, 8, generator=g), torch.randn(100, 8, generator=g) + 20.0])
    got = prdc(real, real[:100])  # only the first of the two clusters
    assert got["precision"] == 1.0
    assert got["recall"] == pytest.approx(0.5, abs=0.02)  # the second cluster is missed
    assert got["coverage"] == pytest.approx(0.5, abs=0.02)


def brute_force_prdc(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict[str, float]:
    """The definitions written out with loops over points."""
    def radius(points, i):
        return sorted(math.dist(points[i], points[j]) for j in range(len(points)) if j != i)[k - 1]

    xs, ys = real.tolist(), fake.tolist()
    rx = [radius(xs, i) for i in range(len(xs))]
    ry = [radius(ys, j) for j in range(len(ys))]
    inside = [[math.dist(x, y) < rx[i] for y in ys] for i, x in enumerate(xs)]  # Y_j in B(X_i)
    return {
        "precision": sum(any(inside[i][j] for i in range(len(xs))) for j in range(len(ys))) / len(ys),
        "recall": sum(any(math.dist(x, y) < ry[j] for j, y in enumerate(ys)) for x in xs) / len(xs),
        "density": sum(map(sum, inside)) / (k * len(ys)),
        "coverage": sum(map(any, inside)) / len(xs),
    }


def test_matches_brute_force_also_in_small_blocks(monkeypatch):
    g = torch.Generator().manual_seed(3)
    real = torch.randn(40, 5, generator=g)
    fake = torch.randn(30, 5, generator=g) * 1.5 + 0.5
    want = brute_force_prdc(real, fake, k=3)
    assert 0 < want["precision"] < 1 and 0 < want["recall"] < 1  # a non-trivial case
    assert prdc(real, fake, k=3) == pytest.approx(want, abs=1e-12)
    monkeypatch.setattr(prdc_module, "_BLOCK_ELEMENTS", 64)  # blocks of 2 rows
    assert prdc(real, fake, k=3) == pytest.approx(want, abs=1e-12)
    assert torch.allclose(pairwise_distances(real, fake), torch.cdist(real.double(), fake.double()), atol=1e-10)
    # The evaluator computes the real radii once per run and passes them in: the same numbers.
    assert prdc(real, fake, k=3, real_radii=nearest_neighbour_distances(real, 3)) == pytest.approx(want, abs=1e-12)


def test_rejects_too_few_samples_and_mismatched_features():
    with pytest.raises(ValueError, match="more than k=3"):
        prdc(torch.randn(3, 4), torch.randn(10, 4))
    with pytest.raises(ValueError, match="feature sizes differ"):
        prdc(torch.randn(10, 4), torch.randn(10, 5))
