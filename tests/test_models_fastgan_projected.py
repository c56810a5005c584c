"""FastGAN generator and Projected GAN discriminator: shapes, contracts, frozen backbone, checkpoints."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from artgan.models import backbones, registry
from artgan.models.fastgan import FastGANGenerator, NoiseInjection
from artgan.models.projected import ProjectedDiscriminator, RandomProjection, mini_discriminator

LITE0_CHANNELS = [24, 40, 112, 320]  # EfficientNet-Lite0 at strides 4, 8, 16, 32


@pytest.fixture(scope="module")
def d64() -> ProjectedDiscriminator:
    torch.manual_seed(0)
    return ProjectedDiscriminator(64)


@pytest.fixture(scope="module")
def d64_224() -> ProjectedDiscriminator:
    torch.manual_seed(0)
    return ProjectedDiscriminator(64, backbone_size=224, max_channels=64)


def images(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ------------------------------------------------------------------------------------------- generator
@pytest.mark.parametrize("resolution", [64, 128, 256, 512])
def test_generator_shapes_range_and_sle(resolution):
    g = FastGANGenerator(resolution, latent_dim=32, ngf=8)
    out = g(g.sample_latents(2, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (2, 3, resolution, resolution)
    assert torch.isfinite(out).all() and out.abs().max() <= 1
    # Skip-layer excitation 4->64, 8->128, 16->256, 32->512 px: a 64 px generator has one.
    assert set(g.excite) == {str(s) for s in (64, 128, 256, 512) if s <= resolution}


def test_generator_full_blocks_and_latent_normalisation():
    g = FastGANGenerator(64, latent_dim=16, ngf=8, lite=False)
    z = g.sample_latents(2, generator=torch.Generator().manual_seed(0))
    g(z).square().mean().backward()
    # Every parameter takes part in each forward (DDP without find_unused_parameters).
    assert all(p.grad is not None for p in g.parameters())
    g.eval()
    assert torch.allclose(g(z), g(5 * z), atol=1e-6)  # z is scaled to unit second moment first


def test_generator_has_no_transposed_conv_but_the_initial_4x4_and_spectral_norm_everywhere():
    g = FastGANGenerator(128, latent_dim=16, ngf=8, lite=False)
    transposed = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert transposed == [g.initial[0]] and g.initial[0].kernel_size == (4, 4)
    convs = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)
    assert all(m.mode == "nearest" for m in g.modules() if isinstance(m, nn.Upsample))


def test_bilinear_upsampling_is_a_setting_and_checked():
    g = FastGANGenerator(64, latent_dim=16, ngf=8, upsample="bilinear")
    assert {m.mode for m in g.modules() if isinstance(m, nn.Upsample)} == {"bilinear"}
    assert g(g.sample_latents(2)).shape == (2, 3, 64, 64)
    assert registry.build("generator", g.spec()).spec()["kwargs"]["upsample"] == "bilinear"
    with pytest.raises(ValueError, match="upsample must be one of nearest, bilinear"):
        FastGANGenerator(64, latent_dim=16, ngf=8, upsample="bicubic")


def test_min_channels_widens_only_the_narrow_fine_blocks():
    plain = FastGANGenerator(64, latent_dim=16, ngf=8)
    wide = FastGANGenerator(64, latent_dim=16, ngf=8, min_channels=32)

    def width(g: FastGANGenerator, size: int) -> int:
        return g.up[str(size)][1].out_channels // 2  # the conv emits twice the width for GLU

    assert [width(plain, s) for s in (8, 16, 32, 64)] == [64, 32, 16, 16]
    assert [width(wide, s) for s in (8, 16, 32, 64)] == [64, 32, 32, 32]
    assert wide.to_rgb.in_channels == 32 and wide(wide.sample_latents(2)).shape == (2, 3, 64, 64)
    assert registry.build("generator", wide.spec()).spec()["kwargs"]["min_channels"] == 32
    with pytest.raises(ValueError, match="min_channels is a floor"):
        FastGANGenerator(64, latent_dim=16, ngf=8, min_channels=-1)


def test_lite_blocks_take_noise_injection_as_a_setting():
    plain = FastGANGenerator(64, latent_dim=16, ngf=8)
    noisy = FastGANGenerator(64, latent_dim=16, ngf=8, noise=True)
    assert not any(isinstance(m, NoiseInjection) for m in plain.modules())
    injections = [m for m in noisy.modules() if isinstance(m, NoiseInjection)]
    assert len(injections) == len(noisy.up)  # one per lite block
    z = noisy.sample_latents(2, generator=torch.Generator().manual_seed(0))
    noisy.eval()
    assert torch.equal(noisy(z), noisy(z))  # strengths start at zero: no noise until trained
    with torch.no_grad():
        for m in injections:
            m.weight.fill_(0.5)
    assert not torch.equal(noisy(z), noisy(z))  # then the same latent paints different fine detail
    assert registry.build("generator", noisy.spec()).spec()["kwargs"]["noise"] is True


def test_latent_skip_starts_as_the_plain_generator_and_then_lets_z_steer_every_block():
    torch.manual_seed(0)
    plain = FastGANGenerator(64, latent_dim=16, ngf=8).eval()
    torch.manual_seed(0)
    skip = FastGANGenerator(64, latent_dim=16, ngf=8, latent_skip=True).eval()
    skip.load_state_dict(plain.state_dict(), strict=False)  # the same weights, the skip maps still zero
    z = plain.sample_latents(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(skip(z), plain(z))
    assert sorted(skip.latent_skip) == ["16", "32", "64", "8"]
    with torch.no_grad():
        skip.latent_skip["64"].weight.normal_(0, 0.5)  # as if trained: the 64 px block follows z
    assert not torch.allclose(skip(z), plain(z))
    with skip.truncation(1e-3):  # truncation pulls the skip path to its mean too: one image for every z
        collapsed = skip(z)
    assert float((collapsed - collapsed.mean(0)).abs().max()) < 0.02
    assert registry.build("generator", skip.spec()).spec()["kwargs"]["latent_skip"] is True


def test_generator_spec_round_trip():
    g = FastGANGenerator(64, latent_dim=16, ngf=8, lite=False)
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, NoiseInjection):  # noise strengths start at zero
                m.weight.fill_(0.3)
    g.train()(g.sample_latents(4))  # move BatchNorm running statistics away from their defaults
    torch.manual_seed(1)  # a different init for the rebuilt copy
    rebuilt = registry.build("generator", g.spec())
    assert type(rebuilt) is FastGANGenerator and rebuilt.spec() == g.spec()
    z = g.sample_latents(3, generator=torch.Generator().manual_seed(2))

    def sample(net: FastGANGenerator) -> torch.Tensor:
        torch.manual_seed(3)  # the noise injection draws from the global generator
        return net.eval()(z)

    assert not torch.allclose(sample(rebuilt), sample(g))
    rebuilt.load_state_dict(g.state_dict(), strict=True)
    assert torch.equal(sample(rebuilt), sample(g))


def test_truncation_pulls_the_first_feature_map_towards_its_mean():
    """FastGAN rescales z, so psi acts on the 4 x 4 map: images move towards the mean map's image, the usual images
    come back after the block, and computing the mean leaves BatchNorm's running statistics alone."""
    g = FastGANGenerator(64, latent_dim=16, ngf=8)
    g.train()(g.sample_latents(8))  # BatchNorm statistics away from their defaults
    stats = {k: v.clone() for k, v in g.state_dict().items() if "running" in k}
    g.eval()
    z = g.sample_latents(64, generator=torch.Generator().manual_seed(1), truncation=0.5)
    assert torch.equal(z, g.sample_latents(64, generator=torch.Generator().manual_seed(1)))  # psi is not in z
    plain = g(z)

    def spread(images: torch.Tensor) -> float:  # mean distance of the images to their mean image
        return float((images - images.mean(0)).flatten(1).norm(dim=1).mean())

    with g.truncation(0.5):
        half = g(z)
    with g.truncation(1e-3):
        collapsed = g(z)
    assert spread(collapsed) < 0.05 * spread(plain)
    assert spread(collapsed) < spread(half) < 0.9 * spread(plain)
    with g.truncation(None):
        assert torch.equal(g(z), plain)
    assert torch.equal(g(z), plain) and g._truncation is None and not g.training
    assert all(torch.equal(v, stats[k]) for k, v in g.state_dict().items() if k in stats)
    with pytest.raises(ValueError, match="must be a number in"):
        with g.truncation(1.5):
            pass


# --------------------------------------------------------------------------------------- discriminator
@pytest.mark.parametrize("input_size", [64, 68, 100, 224, 512])
def test_mini_discriminators_follow_the_feature_sizes(input_size):
    """Feature maps as the backbone makes them ('same' padding: ceil per stride 2) at any input size: each
    head halves its map while it is larger than 8 x 8, then a 4x4 conv gives 1x1 to 5x5 logits."""
    features = [torch.randn(1, c, math.ceil(input_size / s), math.ceil(input_size / s))
                for c, s in zip(LITE0_CHANNELS, (4, 8, 16, 32))]
    projected = RandomProjection(LITE0_CHANNELS, 8)(features)
    assert [f.shape[-1] for f in projected] == [2 * f.shape[-1] for f in features]
    for f in projected:
        head = mini_discriminator(f.shape[1], f.shape[-1], max_channels=16)
        sizes = [f.shape[-1]]
        x = f
        for block in range(len(head) // 3):  # conv, BatchNorm, LeakyReLU per down block
            x = head[3 * block:3 * block + 3](x)
            sizes.append(x.shape[-1])
        assert all(s > 8 for s in sizes[:-1]) and 4 <= sizes[-1] <= 8, sizes
        assert head(f).shape == (1, 1, sizes[-1] - 3, sizes[-1] - 3)


def test_discriminator_logits_shape(d64, d64_224):
    # Native 64 px: projected maps 32, 16, 8, 4 -> 2, 1, 0, 0 down blocks -> 5x5, 5x5, 5x5, 1x1 logits.
    assert d64(images()).shape == (2, 3 * 25 + 1)
    # 224 px as projected-gan: maps 112, 56, 28, 14 -> 4, 3, 2, 1 down blocks -> 4 x (4x4) logits.
    assert d64_224(images()).shape == (2, 4 * 16)
    assert registry.build("discriminator", {"class": registry.class_path(ProjectedDiscriminator),
                                            "kwargs": d64.config}).config == d64.config


def test_backbone_is_the_packaged_lite0_and_stays_frozen(d64):
    reference = backbones.efficientnet_lite0()
    assert torch.equal(d64.backbone.stages[0][0].weight, reference.conv_stem.weight)
    d64.train()
    assert d64.training and all(m.training for m in d64.mini_discriminators.modules())
    assert not any(m.training for m in d64.backbone.modules())
    assert not any(m.training for m in d64.projection.modules())
    trainable = {id(p) for p in d64.trainable_parameters()}
    frozen = list(d64.backbone.parameters()) + list(d64.projection.parameters())
    assert frozen and not any(p.requires_grad or id(p) in trainable for p in frozen)
    assert trainable == {id(p) for p in d64.mini_discriminators.parameters()}
    for p in d64.trainable_parameters():  # frozen for G's step, as Lightning's toggle_optimizer does
        p.requires_grad_(False)
    assert {id(p) for p in d64.trainable_parameters()} == trainable
    for p in d64.trainable_parameters():
        p.requires_grad_(True)


def test_state_dict_leaves_out_the_backbone_and_round_trips(d64):
    state = d64.state_dict()
    assert not any(k.startswith("backbone.") for k in state)
    assert any(k.startswith("projection.") for k in state)  # the random projections are part of D
    buffer = io.BytesIO()
    torch.save(state, buffer)
    torch.manual_seed(12345)  # other random projections and heads
    fresh = ProjectedDiscriminator(64)
    x = images()
    assert not torch.allclose(fresh.eval()(x), d64.eval()(x))
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True), strict=True)
    assert torch.equal(fresh(x), d64(x))
    # Nested, as inside a LightningModule: the prefix is honoured both ways.
    outer = nn.ModuleDict({"discriminator": fresh})
    nested = outer.state_dict()
    assert not any(".backbone." in k for k in nested)
    outer.load_state_dict(nested, strict=True)
    d64.train()


def test_gradient_reaches_the_image_not_the_frozen_weights(d64):
    d64.train().zero_grad(set_to_none=True)
    x = images().requires_grad_(True)
    d64(x).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in list(d64.backbone.parameters()) + list(d64.projection.parameters()))
    # Every trainable parameter takes part in each forward (DDP without find_unused_parameters).
    assert all(p.grad is not None for p in d64.trainable_parameters())
    d64.zero_grad(set_to_none=True)


def test_channels_last_input_gives_the_same_logits(d64_224):
    d = d64_224.eval()
    x = images(seed=4)
    assert torch.allclose(d(x.contiguous(memory_format=torch.channels_last)), d(x), atol=1e-5)
    d.train()


@pytest.mark.parametrize("bad", [32, 63, 224.0, True])
def test_backbone_size_is_checked(bad):
    with pytest.raises(ValueError, match="backbone_size"):
        ProjectedDiscriminator(64, backbone_size=bad)


def test_skip_rgb_adds_the_upsampled_coarse_images_and_is_off_by_default():
    torch.manual_seed(0)
    g = FastGANGenerator(64, latent_dim=16, ngf=8, skip_rgb=True).eval()
    assert sorted(g.skip_to_rgb) == ["16", "32", "8"]
    z = g.sample_latents(3)
    g.to_rgb = torch.nn.Conv2d(g.to_rgb.in_channels, 3, 3, 1, 1)
    torch.nn.init.zeros_(g.to_rgb.weight), torch.nn.init.zeros_(g.to_rgb.bias)
    with torch.no_grad():  # with the 64 px RGB layer silenced the picture is the upsampled coarse one
        coarse = g(z)
    assert coarse.abs().max() > 0
    blocky = coarse[..., 0::2, 0::2] - coarse[..., 1::2, 0::2]  # bilinear, not pixel copies
    assert blocky.abs().max() > 0
    plain = FastGANGenerator(64, latent_dim=16, ngf=8)
    assert plain.skip_to_rgb is None and not any("skip_to_rgb" in k for k in plain.state_dict())


def test_mini_discriminators_without_batchnorm_are_a_setting():
    """norm=none: no BatchNorm in the heads (each batch's own statistics would hide a shift every fake shares,
    e.g. a palette), so the conv layers carry biases; anything else is refused."""
    d = ProjectedDiscriminator(64, proj_channels=8, max_channels=16, norm="none")
    heads = list(d.mini_discriminators.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in heads)
    assert any(isinstance(m, nn.Conv2d) and m.bias is not None for m in heads)
    assert d(images()).shape == (2, 3 * 25 + 1)
    assert any(isinstance(m, nn.BatchNorm2d) for m in ProjectedDiscriminator(64, max_channels=16).modules())
    with pytest.raises(ValueError, match="'batch' or 'none'"):
        ProjectedDiscriminator(64, norm="instance")


def test_fewer_backbone_stages_keep_the_finest_scales_and_round_trip():
    """stages=2: D looks through the stride-4 and stride-8 stages only (projected maps 32 and 16 px at 64 px:
    two 5x5 heads), the deeper blocks are dropped, gradients still reach the image, and the setting travels
    in the spec so a checkpoint rebuilds the same D; anything but 1-4 is refused naming the key."""
    torch.manual_seed(0)
    d = ProjectedDiscriminator(64, proj_channels=8, max_channels=16, norm="none", stages=2)
    assert len(d.backbone.stages) == 2 and len(d.mini_discriminators) == 2
    full = ProjectedDiscriminator(64, proj_channels=8, max_channels=16, norm="none")
    assert sum(p.numel() for p in d.backbone.parameters()) < sum(p.numel() for p in full.backbone.parameters()) / 10
    x = images().requires_grad_(True)
    logits = d(x)
    assert logits.shape == (2, 2 * 25)
    logits.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    rebuilt = registry.build("discriminator", {"class": registry.class_path(ProjectedDiscriminator),
                                               "kwargs": d.config})
    rebuilt.load_state_dict(d.state_dict(), strict=True)
    assert torch.equal(rebuilt.eval()(x.detach()), d.eval()(x.detach()))
    for bad in (0, 5, 2.0, True):
        with pytest.raises(ValueError, match="stages"):
            ProjectedDiscriminator(64, stages=bad)


def test_crop_size_judges_one_enlarged_window_per_image():
    """crop_size=32: in eval mode D judges the centre 32 px of each image enlarged to the backbone's input (the
    same picture as cropping then resizing bilinearly); in training each image gets its own random window inside
    the image, gradients reach the image, and the setting travels in the spec; bad sizes are refused by name."""
    torch.manual_seed(0)
    d = ProjectedDiscriminator(64, proj_channels=8, max_channels=16, norm="none", stages=1, crop_size=32)
    x = images(4)
    centre = torch.nn.functional.interpolate(x[..., 16:48, 16:48], size=64, mode="bilinear", align_corners=False)
    window = d.eval().windows(x)
    assert window.shape == (4, 3, 64, 64)
    torch.testing.assert_close(window[..., 1:-1, 1:-1], centre[..., 1:-1, 1:-1])  # borders: clamped vs sampled
    # a left-to-right ramp: a window's mean column says where it sits; random windows differ and stay inside
    ramp = torch.linspace(-1, 1, 64).expand(8, 3, 64, 64)
    d.train()
    means = d.windows(ramp).mean(dim=(1, 2, 3))
    assert means.unique().numel() > 1 and means.abs().max() <= 0.5 + 1e-3
    x.requires_grad_(True)
    d(x).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert d.config["crop_size"] == 32
    rebuilt = registry.build("discriminator", {"class": registry.class_path(ProjectedDiscriminator),
                                               "kwargs": d.config})
    rebuilt.load_state_dict(d.state_dict(), strict=True)
    assert torch.equal(rebuilt.eval()(x.detach()), d.eval()(x.detach()))
    for bad in (4, 64, 100, 32.0, True):
        with pytest.raises(ValueError, match="crop_size"):
            ProjectedDiscriminator(64, crop_size=bad)
