"""Spectral distance: known spectra, sensitivity to up-sampling artefacts, invariances, DDP-style sums."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from artgan.metrics.spectral import (
    SpectralDistance,
    frequency_band,
    radial_frequencies,
    radial_power_spectrum,
    spectral_distance,
)


def paintings(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Painting-like images in [-1, 1]: smooth multi-scale colour fields, three hard-edged flat
    rectangles and a little pixel grain."""
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(n, 3, size, size)
    for cells in (2, 4, 8, 16):
        noise = torch.randn(n, 3, cells, cells, generator=g)
        img += F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False) / cells
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for _ in range(3):
        y0, x0 = torch.randint(0, size, (2, n, 1, 1), generator=g)
        h, w = torch.randint(size // 8, size // 2, (2, n, 1, 1), generator=g)
        inside = ((yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)).unsqueeze(1)
        img = torch.where(inside, torch.rand(n, 3, 1, 1, generator=g) * 1.6 - 0.8, img)
    return (img + 0.02 * torch.randn(img.shape, generator=g)).clamp(-1, 1)


def checkerboard(size: int, period: int) -> torch.Tensor:
    """+1 / -1 alternating every ``period`` pixels in both directions: the transposed-convolution artefact."""
    i = torch.arange(size) // period
    return ((-1.0) ** (i[:, None] + i[None, :])).expand(3, size, size)


def distances(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    m = SpectralDistance(resolution=real.shape[-1])
    m.update(real, real=True)
    m.update(fake, real=False)
    return m.compute()


def test_rings_and_band():
    f = radial_frequencies(64)
    # Rings r = 1 .. 45 cycles per image: up to the corner, round(32 * sqrt 2) = 45.
    assert f.numel() == 45 and f[0] == pytest.approx(1 / 32) and f[-1] == pytest.approx(45 / 32)
    band = frequency_band(64, 0.5)
    assert f[band].min() == pytest.approx(0.5) and int(band.sum()) == 45 - 15
    assert radial_power_spectrum(paintings(3)).shape == (3, 45)


@pytest.mark.parametrize("fx, fy", [(10, 0), (0, 5), (6, 8), (20, 21)])
def test_sinusoid_puts_its_power_at_its_radius(fx, fy):
    size = 64
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    wave = 0.5 * torch.cos(2 * math.pi * (fx * xx + fy * yy) / size)
    spectrum = radial_power_spectrum(wave.expand(1, 3, size, size))[0]
    peak = radial_frequencies(size)[spectrum.argmax()] * (size / 2)  # in cycles per image
    assert peak == pytest.approx(round(math.hypot(fx, fy)))
    # The Hann window spreads a pure frequency over its neighbours only: far rings get almost nothing.
    far = (radial_frequencies(size) * size / 2 - math.hypot(fx, fy)).abs() > 3
    assert spectrum[far].max() < spectrum.max() - 10  # more than e^10 below the peak


def test_identical_sets_give_zero_and_uint8_matches_float():
    x = paintings(8)
    assert distances(x, x.clone()) == {"spectral_hf": 0.0, "spectral_all": 0.0}
    as_uint8 = ((x + 1) * 127.5).round().to(torch.uint8)
    assert distances(as_uint8, as_uint8.float() / 127.5 - 1)["spectral_all"] == pytest.approx(0.0, abs=1e-9)


def test_checkerboard_raises_high_frequency_distance_and_brightness_does_not():
    x = paintings(256)
    clean, other = x[:128], x[128:]
    split = distances(clean, other)["spectral_hf"]
    assert 0 < split < 0.1
    eps = 0.05  # about 6 grey levels of 255
    for period in (1, 2):
        artefact = distances(clean, (clean + eps * checkerboard(64, period)).clamp(-1, 1))
        assert artefact["spectral_hf"] > 5 * split, (period, artefact, split)
        # The artefact is a high-frequency one: the full band (diluted by clean low rings) moves less.
        assert artefact["spectral_all"] < artefact["spectral_hf"]
    # Brightness is removed with the mean; only the few clipped pixels change the spectrum.
    brighter = distances(clean, (clean + 0.05).clamp(-1, 1))["spectral_hf"]
    assert brighter < 0.1 * split


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_state_is_a_sum_two_halves_equal_the_whole_and_reset_keeps_real():
    real, fake = paintings(10, seed=1), paintings(6, seed=2)
    whole = SpectralDistance(resolution=64)
    whole.update(real, real=True)
    whole.update(fake, real=False)
    ranks = [SpectralDistance(resolution=64) for _ in range(2)]
    for rank, part in zip(ranks, (slice(0, 3), slice(3, 6))):
        rank.update(real, real=True)  # every rank adds the full real set
        rank.update(fake[part], real=False)
    assert all(m._reductions[name].__name__ == "dim_zero_sum" for m in ranks for name in m._defaults)
    summed = {name: sum(getattr(m, name) for m in ranks) for name in ranks[0]._defaults}
    assert torch.allclose(summed["fake_spectrum_sum"], whole.fake_spectrum_sum, rtol=1e-12)
    assert int(summed["fake_count"]) == 6 and int(summed["real_count"]) == 2 * 10
    ranks[0].merge_state(ranks[1])  # the same reductions as the all-reduce
    want = whole.compute()
    for key, value in ranks[0].compute().items():
        assert value == pytest.approx(want[key], rel=1e-9)

    curves = whole.mean_spectra()
    assert set(curves) == {"frequency", "real", "fake"} and curves["real"].shape == curves["frequency"].shape
    band = frequency_band(64)
    assert spectral_distance(curves["real"], curves["fake"], band) == pytest.approx(want["spectral_hf"])

    whole.reset()  # the fake side only
    assert whole.has_real and int(whole.fake_count) == 0
    whole.update(real, real=False)
    assert whole.compute()["spectral_all"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="64 px"):
        whole.update(paintings(1, size=32), real=False)
