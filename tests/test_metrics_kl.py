"""Colour-histogram KL / JS: known values, invariants, accumulation and DDP-style reduction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from artgan.metrics.kl import (
    ColorKL,
    color_histogram,
    color_histogram_counts,
    histogram_divergences,
    smooth_histogram,
)


def _solid(rgb: tuple[int, int, int], n: int = 2, size: int = 8) -> torch.Tensor:
    """Solid-colour images in [-1, 1] from uint8 RGB values."""
    t = torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(n, 3, size, size)
    return t / 127.5 - 1.0


def test_hand_made_histograms_match_scipy():
    p = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    d = histogram_divergences(p, q)
    assert d["kl_real_fake"] == pytest.approx(entropy(p.numpy(), q.numpy()), rel=1e-12)
    assert d["kl_fake_real"] == pytest.approx(entropy(q.numpy(), p.numpy()), rel=1e-12)
    # Closed form: KL(p||uniform) = ln 4 - H(p) = ln 4 - 1.75 ln 2 = 0.25 ln 2.
    assert d["kl_real_fake"] == pytest.approx(0.25 * math.log(2), rel=1e-12)
    m = 0.5 * (p.numpy() + q.numpy())
    js = 0.5 * entropy(p.numpy(), m) + 0.5 * entropy(q.numpy(), m)
    assert d["js"] == pytest.approx(js, rel=1e-12)


def test_random_histograms_match_scipy():
    rng = np.random.default_rng(0)
    for _ in range(5):
        p = rng.random(4096) + 1e-3
        q = rng.random(4096) + 1e-3
        d = histogram_divergences(torch.from_numpy(p), torch.from_numpy(q))
        assert d["kl_real_fake"] == pytest.approx(entropy(p, q), rel=1e-9)
        assert d["kl_fake_real"] == pytest.approx(entropy(q, p), rel=1e-9)


def test_identical_images_give_zero():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    d = histogram_divergences(color_histogram(x), color_histogram(x.clone()))
    assert d == {"kl_real_fake": 0.0, "kl_fake_real": 0.0, "js": 0.0}


def test_js_symmetric_and_bounded_kl_asymmetric():
    red, blue = _solid((255, 0, 0)), _solid((0, 0, 255))
    p, q = color_histogram(red, smoothing=0.0), color_histogram(blue, smoothing=0.0)
    d_pq, d_qp = histogram_divergences(p, q), histogram_divergences(q, p)
    assert d_pq["js"] == pytest.approx(d_qp["js"])
    # Disjoint supports: JS reaches its maximum ln 2; KL is infinite without smoothing.
    assert d_pq["js"] == pytest.approx(math.log(2), rel=1e-12)
    assert math.isinf(d_pq["kl_real_fake"])
    # Smoothing makes KL finite and bounded by ln(K / lambda).
    lam, k = 1e-3, 16**3
    ps, qs = color_histogram(red, smoothing=lam), color_histogram(blue, smoothing=lam)
    d = histogram_divergences(ps, qs)
    assert 0 < d["kl_real_fake"] < math.log(k / lam)
    assert 0 < d["js"] <= math.log(2)
    # Asymmetric case: KL(P||Q) != KL(Q||P), and JS is symmetric.
    mix = torch.cat([_solid((255, 0, 0), n=3), _solid((0, 0, 255), n=1)])
    a, b = color_histogram(red), color_histogram(mix)
    dab, dba = histogram_divergences(a, b), histogram_divergences(b, a)
    assert dab["kl_real_fake"] != pytest.approx(dab["kl_fake_real"])
    assert dab["js"] == pytest.approx(dba["js"], rel=1e-12)
    assert dab["kl_real_fake"] == pytest.approx(dba["kl_fake_real"], rel=1e-12)


def test_known_kl_from_images():
    """Two colours in proportions 1/2,1/2 vs 3/4,1/4: KL = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25)."""
    c1, c2 = (200, 10, 10), (10, 10, 200)
    real = torch.cat([_solid(c1, n=2), _solid(c2, n=2)])
    fake = torch.cat([_solid(c1, n=3), _solid(c2, n=1)])
    d = histogram_divergences(color_histogram(real, smoothing=0.0), color_histogram(fake, smoothing=0.0))
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert d["kl_real_fake"] == pytest.approx(expected, rel=1e-12)
    expected_rev = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert d["kl_fake_real"] == pytest.approx(expected_rev, rel=1e-12)


def test_histogram_binning_matches_uint8():
    torch.manual_seed(1)
    u8 = torch.randint(0, 256, (3, 3, 10, 12), dtype=torch.uint8)
    f = u8.float() / 127.5 - 1.0
    for bins in (1, 4, 16, 32):
        a, b = color_histogram_counts(u8, bins), color_histogram_counts(f, bins)
        assert torch.equal(a, b)
        assert a.shape == (bins**3,) and int(a.sum()) == 3 * 10 * 12
    # Bin index = (r*bins + g)*bins + b with bin = v*bins//256.
    img = torch.tensor([255, 0, 128], dtype=torch.uint8).view(1, 3, 1, 1)
    counts = color_histogram_counts(img, 16)
    assert int(counts.argmax()) == (15 * 16 + 0) * 16 + 8
    # Out-of-range floats are clamped, not dropped.
    assert int(color_histogram_counts(torch.full((1, 3, 2, 2), 3.0), 8).sum()) == 4


def test_smoothing_definition():
    counts = torch.tensor([3, 1, 0, 0])
    p = smooth_histogram(counts, smoothing=0.1)
    expected = 0.9 * torch.tensor([0.75, 0.25, 0, 0], dtype=torch.float64) + 0.1 / 4
    assert torch.allclose(p, expected)
    assert float(p.sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        smooth_histogram(counts, smoothing=1.0)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_color_kl_metric_accumulates_and_keeps_real_on_reset():
    torch.manual_seed(2)
    real = torch.rand(8, 3, 16, 16) * 2 - 1
    fake = (torch.rand(8, 3, 16, 16) * 2 - 1) * 0.5
    m = ColorKL(bins=8, smoothing=1e-3)
    m.update(real[:3], real=True)
    m.update(real[3:], real=True)
    m.update(fake[:5], real=False)
    m.update(fake[5:], real=False)
    got = m.compute()
    want = histogram_divergences(color_histogram(real, 8), color_histogram(fake, 8))
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-12)
    m.reset()
    assert m.has_real and int(m.fake_counts.sum()) == 0
    m.update(real, real=False)
    assert m.compute()["kl_real_fake"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(RuntimeError):
        ColorKL().compute()


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_color_kl_state_reduction_is_sum():
    """torchmetrics all-reduces the count states with sum under DDP: two halves == the whole."""
    m = ColorKL(bins=4)
    assert m._reductions["real_counts"].__name__ == "dim_zero_sum"
    assert m._reductions["fake_counts"].__name__ == "dim_zero_sum"
    torch.manual_seed(3)
    real, fake = torch.rand(6, 3, 8, 8) * 2 - 1, torch.rand(6, 3, 8, 8) * 2 - 1
    r0, r1, whole = ColorKL(bins=4), ColorKL(bins=4), ColorKL(bins=4)
    for part, m_ in ((slice(0, 3), r0), (slice(3, 6), r1)):
        m_.update(real, real=True)  # every rank adds the full real set
        m_.update(fake[part], real=False)
    whole.update(real, real=True)
    whole.update(fake, real=False)
    merged = ColorKL(bins=4)
    merged.real_counts = r0.real_counts + r1.real_counts
    merged.fake_counts = r0.fake_counts + r1.fake_counts
    for k, v in whole.compute().items():
        assert merged.compute()[k] == pytest.approx(v, rel=1e-12)
