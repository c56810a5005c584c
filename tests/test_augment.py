import pytest
import torch
import torch.distributed as dist

from artgan.augment import AdaptiveAugmentProbability, AugmentPolicyError, DiffAugment, translate
from artgan.errors import ConfigError


def images(batch: int = 4, size: int = 16) -> torch.Tensor:
    return torch.rand(batch, 3, size, size) * 2 - 1


def manual_shift(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference integer shift with zero fill, written with slices."""
    out = torch.zeros_like(image)
    height, width = image.shape[-2:]
    out[..., max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = image[
        ..., max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_shape_dtype_and_change(policy):
    torch.manual_seed(0)
    x = images()
    out = DiffAugment(policy, p=1.0)(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    changed = (out - x).flatten(1).abs().amax(dim=1) > 0
    # A random shift of (0, 0) is a legal no-op for one sample, so translation only needs to move most.
    assert changed.all() if policy != "translation" else changed.sum() >= 3, f"{policy}: {changed}"


@pytest.mark.parametrize("augment", [DiffAugment("", p=1.0), DiffAugment(p=0.0)])
def test_identity_when_empty_policy_or_p_zero(augment):
    x = images()
    assert torch.equal(augment(x), x)


def test_gradient_flows_to_input():
    torch.manual_seed(0)
    x = images().requires_grad_(True)
    DiffAugment(p=1.0)(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translate_matches_manual_shift():
    x = torch.arange(2 * 3 * 6 * 7, dtype=torch.float32).view(2, 3, 6, 7)
    out = translate(x, torch.tensor([2, -1]), torch.tensor([-3, 1]))
    assert torch.equal(out[0], manual_shift(x[0], 2, -3))
    assert torch.equal(out[1], manual_shift(x[1], -1, 1))


def test_random_translation_is_a_pure_shift():
    torch.manual_seed(1)
    x = torch.arange(8 * 3 * 16 * 16, dtype=torch.float32).view(8, 3, 16, 16) + 1  # no zeros, all distinct
    out = DiffAugment("translation", p=1.0, translation_ratio=0.125)(x)
    for b in range(x.shape[0]):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(out[b], manual_shift(x[b], dy, dx))
        ]
        assert len(matches) == 1


def test_deterministic_under_manual_seed():
    x = images()
    augment = DiffAugment(p=0.5)
    torch.manual_seed(123)
    first = augment(x)
    torch.manual_seed(123)
    assert torch.equal(first, augment(x))


def test_partial_p_augments_only_some_samples():
    torch.manual_seed(0)
    x = images(batch=64)
    out = DiffAugment("color", p=0.5)(x)
    changed = (out - x).flatten(1).abs().amax(dim=1) > 0
    assert 0 < changed.sum() < 64


def test_channels_last_input():
    torch.manual_seed(0)
    x = images().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out = DiffAugment(p=1.0)(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad.shape == x.shape


def test_unknown_policy_names_allowed_ops():
    with pytest.raises(ValueError, match="color, translation, cutout") as info:
        DiffAugment("color,zoom")
    assert isinstance(info.value, AugmentPolicyError) and "zoom" in str(info.value)


def test_adaptive_p_rises_when_discriminator_overfits():
    ada = AdaptiveAugmentProbability(target=0.6, speed_images=1000, interval=4)
    for _ in range(3):
        ada.accumulate(torch.ones(10))
        assert ada.step(batch_size=10) == 0.0  # no update before `interval` steps
    ada.accumulate(torch.ones(10))
    assert ada.step(batch_size=10) == pytest.approx(10 * 4 / 1000)
    assert ada.last_rt == pytest.approx(1.0)
    for _ in range(400):
        ada.accumulate(torch.ones(10))
        ada.step(batch_size=10)
    assert ada.p == 1.0  # clamped


def test_adaptive_p_falls_to_zero_when_discriminator_is_unsure():
    ada = AdaptiveAugmentProbability(speed_images=1000, interval=2, initial_p=0.1)
    for _ in range(20):
        ada.accumulate(-torch.ones(8, 1))
        ada.step(batch_size=8)
    assert ada.p == 0.0


def test_state_dict_round_trip_keeps_p():
    ada = AdaptiveAugmentProbability(speed_images=1000, interval=1)
    for _ in range(5):
        ada.accumulate(torch.ones(4))
        ada.step(batch_size=4)
    restored = AdaptiveAugmentProbability(speed_images=1000, interval=1)
    restored.load_state_dict(ada.state_dict())
    assert restored.p == pytest.approx(ada.p) and restored.p > 0


def test_all_reduce_under_single_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ada = AdaptiveAugmentProbability(speed_images=100, interval=1)
        ada.accumulate(torch.ones(4))
        assert ada.step(batch_size=4) == pytest.approx(0.04)
    finally:
        dist.destroy_process_group()


def test_rotate90_turns_whole_images_and_keeps_most_upright():
    torch.manual_seed(0)
    x = images(batch=600, size=8)
    out = DiffAugment("rotate90", p=1.0, rotate90_p=0.5)(x)
    turns = []
    for b in range(x.shape[0]):
        matches = [k for k in range(4) if torch.equal(out[b], torch.rot90(x[b], k, dims=(1, 2)))]
        assert len(matches) == 1, f"image {b} is not a quarter turn of its input"
        turns.append(matches[0])
    counts = torch.bincount(torch.tensor(turns), minlength=4).double() / len(turns)
    # upright 1 - 0.5 = 0.5, each turn 0.5 / 3: the upright orientation stays the most common (no leak)
    assert counts[0] == pytest.approx(0.5, abs=0.07)
    assert torch.allclose(counts[1:], torch.full((3,), 0.5 / 3, dtype=torch.float64), atol=0.05)


def test_rotate90_scales_with_p_and_passes_gradients_back_unrotated():
    x = images(batch=8).requires_grad_(True)
    assert torch.equal(DiffAugment("rotate90", p=0.0)(x), x)  # ADA's p = 0: nothing turns
    torch.manual_seed(3)
    weights = torch.rand_like(x)
    out = DiffAugment("rotate90", p=1.0, rotate90_p=0.75)(x)
    (out * weights).sum().backward()
    for b in range(x.shape[0]):  # a permutation of pixels: the gradient is the weights turned back
        k = next(k for k in range(4) if torch.equal(out[b], torch.rot90(x[b], k, dims=(1, 2))))
        assert torch.equal(x.grad[b], torch.rot90(weights[b], -k, dims=(1, 2)))


def test_rotate90_strength_that_would_leak_is_refused():
    with pytest.raises(ConfigError, match="model.augment.rotate90_p=0.9"):
        DiffAugment("rotate90", rotate90_p=0.9)
