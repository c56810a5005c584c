"""Multi-scale sliced Wasserstein distance: closed forms, invariances, sensitivity and determinism."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from artgan.metrics.swd import (
    SlicedWasserstein,
    laplacian_pyramid,
    normalize_descriptors,
    patch_descriptors,
    pyramid_resolutions,
    random_directions,
    sliced_wasserstein,
)

# Small settings keep each compute() well under a second on a 2-core CPU.
FAST = {"patches_per_image": 32, "num_directions": 128, "num_repeats": 2}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Many small tensor ops: on a busy 2-core machine two OpenMP threads mostly spin-wait for each other
    (measured: this file took 2.5x the CPU time with two threads), so run them on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def rotate_hue(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate colours about the grey axis of RGB space (a hue shift), clamped to [-1, 1]."""
    axis = torch.ones(3) / math.sqrt(3)
    cross = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    t = math.radians(degrees)
    rotation = torch.eye(3) + math.sin(t) * cross + (1 - math.cos(t)) * cross @ cross  # Rodrigues
    return torch.einsum("ij,bjhw->bihw", rotation, images).clamp(-1, 1)


def swd(real: torch.Tensor, fake: torch.Tensor, **kwargs) -> dict[str, float]:
    m = SlicedWasserstein(**{**FAST, **kwargs})
    m.update(real, real=True)
    m.update(fake, real=False)
    return m.compute()


def test_pyramid_levels_and_shapes():
    assert pyramid_resolutions(64) == [64, 32, 16]
    assert pyramid_resolutions(128) == [128, 64, 32, 16]
    for size in (64, 128):
        x = paintings(2, size)
        levels = laplacian_pyramid(x, len(pyramid_resolutions(size)))
        assert [tuple(t.shape) for t in levels] == [(2, 3, r, r) for r in pyramid_resolutions(size)]
        # Band-pass levels have (almost) zero mean; the brightness lives in the low-pass residual.
        assert levels[0].mean().abs() < 1e-3
        assert levels[-1].mean() == pytest.approx(float(x.mean()), abs=0.02)
    # A flat image has no texture: every band-pass level is 0 and the residual is the colour itself.
    flat = torch.full((1, 3, 64, 64), 0.3)
    levels = laplacian_pyramid(flat, 3)
    assert all(level.abs().max() < 1e-6 for level in levels[:-1])
    assert torch.allclose(levels[-1], torch.full((1, 3, 16, 16), 0.3))
    d = patch_descriptors(paintings(4), patches_per_image=5, generator=torch.Generator().manual_seed(0))
    assert d.shape == (4, 5, 147)


def test_patch_descriptors_are_whole_7x7_windows_channel_major():
    channel, row, col = torch.meshgrid(torch.arange(3), torch.arange(20), torch.arange(20), indexing="ij")
    coded = (10000 * channel + 100 * row + col).float()[None]  # each pixel value names its position
    p = patch_descriptors(coded, 50, torch.Generator().manual_seed(0)).reshape(50, 3, 7, 7)
    corner = p[:, :, :1, :1]
    assert torch.equal(p - corner, (100 * row + col)[:, :7, :7].float().expand(50, 3, 7, 7))
    assert torch.equal(corner[:, :, 0, 0] // 10000, torch.arange(3.0).expand(50, 3))
    top, left = (corner[:, 0, 0, 0] // 100), (corner[:, 0, 0, 0] % 100)
    assert 0 <= top.min() and top.max() <= 13 and 0 <= left.min() and left.max() <= 13  # inside the image


def test_identical_sets_give_zero():
    a = torch.randn(300, 147)
    dirs = random_directions(147, 64, torch.Generator().manual_seed(0))
    assert sliced_wasserstein(a, a.clone(), dirs) == 0.0
    assert sliced_wasserstein(a, a[torch.randperm(300)], dirs) == pytest.approx(0.0, abs=1e-6)
    x = paintings(8)
    assert swd(x, x.clone()) == {"swd": 0.0, "swd_64px": 0.0, "swd_32px": 0.0, "swd_16px": 0.0}
    # uint8 input is the same image as its [-1, 1] float version.
    as_uint8 = ((x + 1) * 127.5).round().to(torch.uint8)
    assert swd(as_uint8, as_uint8.float() / 127.5 - 1)["swd"] == pytest.approx(0.0, abs=1e-6)


def test_one_dimensional_closed_form():
    # 1-D, direction +1: W1 of two equal-size samples = mean |sorted a - sorted b|.
    a = torch.tensor([[3.0], [0.0], [2.0], [1.0]])
    b = torch.tensor([[7.0], [0.0], [1.0], [2.0]])  # sorted: 0 1 2 3 vs 0 1 2 7 -> (0 + 0 + 0 + 4) / 4
    assert sliced_wasserstein(a, b, torch.tensor([[1.0]])) == pytest.approx(1.0)
    assert sliced_wasserstein(a, a + 0.25, torch.tensor([[1.0], [-1.0]])) == pytest.approx(0.25)


def test_constant_shift_equals_mean_projected_shift():
    # b = a + c: along a unit direction u every sorted projection moves by u.c, so SWD = mean_u |u.c|.
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 147, generator=g)
    c = 0.3 * torch.randn(147, generator=g)
    dirs = random_directions(147, 4096, g)
    assert dirs.norm(dim=1).sub(1).abs().max() < 1e-5
    got = sliced_wasserstein(a, a + c, dirs)
    assert got == pytest.approx(float((dirs @ c).abs().mean()), rel=1e-4)
    # ... and for directions uniform on the sphere, E|u.c| = |c| G(D/2) / (sqrt(pi) G((D+1)/2)).
    d = 147
    expected = float(c.norm()) * math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)
    assert got == pytest.approx(expected, rel=0.03)


def test_descriptor_normalisation_is_per_channel():
    d = torch.randn(1000, 147) * torch.tensor([1.0, 5.0, 0.1]).repeat_interleave(49) + 3.0
    n = normalize_descriptors(d).reshape(1000, 3, 49)
    assert torch.allclose(n.mean(dim=(0, 2)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(n.std(dim=(0, 2), unbiased=False), torch.ones(3), atol=1e-5)


def test_hue_shift_raises_swd_monotonically_and_affine_channel_changes_do_not():
    real = paintings(32)
    values = [swd(real, rotate_hue(real, deg))["swd"] for deg in (0, 5, 10, 20, 40)]
    assert values[0] == 0.0
    assert all(lo < hi for lo, hi in zip(values, values[1:])), values
    # Per-set, per-channel normalisation (as in the paper) removes brightness / contrast changes that
    # do not clip: what is left is float16 rounding, 50x below a 5 degree hue shift.
    x = real * 0.5
    assert swd(x, x * 0.8 + 0.1)["swd"] < values[1] / 50


def test_noise_images_far_above_a_split_of_one_set():
    x = paintings(128)
    split = swd(x[:64], x[64:])
    noise = swd(x[:64], torch.rand(64, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    assert set(split) == {"swd", "swd_64px", "swd_32px", "swd_16px"}
    assert split["swd"] == pytest.approx((split["swd_64px"] + split["swd_32px"] + split["swd_16px"]) / 3)
    assert noise["swd"] > 3 * split["swd"], (split, noise)
    assert noise["swd_64px"] > 4 * split["swd_64px"], (split, noise)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_deterministic_reset_keeps_real_and_unequal_sets():
    real, fake = paintings(12, seed=1), paintings(20, seed=2)
    first = swd(real, fake)
    assert swd(real, fake) == first  # same seed, same batches: bit-identical
    assert swd(real, fake, seed=1) != first

    m = SlicedWasserstein(**FAST)
    m.update(real, real=True)
    m.update(fake, real=False)
    assert m.compute() == first
    m.reset()  # fake side only; the patch generator of the fake side starts over
    assert m.has_real and m.fake_descriptors == []
    m.update(fake, real=False)
    assert m.compute() == first
    # float16 descriptors (B * patches, levels, 147): 1,000 images x 64 patches x 3 levels = 56 MB.
    state = m.real_descriptors[0]
    assert state.dtype == torch.float16 and state.shape == (12 * FAST["patches_per_image"], 3, 147)
    assert m._reductions["fake_descriptors"].__name__ == "dim_zero_cat"

    m.reset()
    m.update(paintings(2, size=32), real=False)
    with pytest.raises(RuntimeError, match="equal resolutions"):
        m.compute()
    with pytest.raises(RuntimeError, match="needs real and fake"):
        SlicedWasserstein(reset_real=True).compute()


def test_kept_real_projections_never_outlive_their_real_set():
    """compute() keeps the real side's sorted projections for the next compute: new real images, or a new real set
    of the same size after a full reset, must give what a fresh metric gives."""
    real, more, other, fake = paintings(12, seed=1), paintings(6, seed=3), paintings(12, seed=4), paintings(20, seed=2)
    m = SlicedWasserstein(**FAST)
    m.update(real, real=True)
    m.update(fake, real=False)
    m.compute()
    m.update(more, real=True)
    fresh = SlicedWasserstein(**FAST)
    fresh.update(real, real=True)
    fresh.update(more, real=True)
    fresh.update(fake, real=False)
    assert m.compute() == fresh.compute()

    m = SlicedWasserstein(**FAST, reset_real=True)
    m.update(real, real=True)
    m.update(fake, real=False)
    m.compute()
    m.reset()
    m.update(other, real=True)
    m.update(fake, real=False)
    assert m.compute() == swd(other, fake)


def test_ddp_style_merge_gathers_both_ranks():
    """Under DDP torchmetrics concatenates the descriptor lists of all ranks (``merge_state`` applies the
    same reductions; merging rank 0 into rank 1 keeps the rank order of a gather)."""
    real, fake = paintings(24, seed=10), paintings(16, seed=20)
    ranks = [SlicedWasserstein(**FAST) for _ in range(2)]
    for i, m in enumerate(ranks):
        m.update(real[i * 12 : (i + 1) * 12], real=True)
        m.update(fake[i * 8 : (i + 1) * 8], real=False)
    assert {name: fn.__name__ for name, fn in ranks[0]._reductions.items()} == {
        "real_descriptors": "dim_zero_cat", "fake_descriptors": "dim_zero_cat",
        "real_resolution": "dim_zero_max", "fake_resolution": "dim_zero_max",
    }
    ranks[1].merge_state(ranks[0])
    assert sum(d.shape[0] for d in ranks[1].fake_descriptors) == 16 * FAST["patches_per_image"]
    # Each rank draws its own patch positions, so the value matches one process up to sampling noise.
    assert ranks[1].compute()["swd"] == pytest.approx(swd(real, fake)["swd"], rel=0.1)
