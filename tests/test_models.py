import pytest
import torch
from torch import nn

from artgan.models import registry
from artgan.models.dcgan import DCGANDiscriminator as Discriminator
from artgan.models.dcgan import DCGANGenerator as Generator


@pytest.mark.parametrize("resolution", [64, 128, 256, 512])
@pytest.mark.parametrize("latent_dim", [128, 256])
def test_shapes_for_every_resolution(resolution, latent_dim):
    g = Generator(resolution=resolution, latent_dim=latent_dim, ngf=4)
    d = Discriminator(resolution=resolution, ndf=4)
    images = g(g.sample_latents(2))
    assert images.shape == (2, 3, resolution, resolution)
    assert images.min() >= -1 and images.max() <= 1  # Tanh output
    assert d(images).shape == (2,)


def test_number_of_blocks_follows_resolution():
    def transposed_convs(res):
        return sum(isinstance(m, nn.ConvTranspose2d) for m in Generator(res, 128, 4).modules())

    assert [transposed_convs(r) for r in (64, 128, 256, 512)] == [5, 6, 7, 8]


@pytest.mark.parametrize("bad", [32, 96, 1024, 0])
def test_bad_resolution_rejected(bad):
    with pytest.raises(ValueError, match="supports resolutions 64, 128, 256, 512"):
        Generator(resolution=bad)


def test_dcgan_init_statistics():
    g = Generator(resolution=64, latent_dim=128, ngf=64)
    conv = g.net[0].weight
    assert abs(conv.mean().item()) < 0.002 and abs(conv.std().item() - 0.02) < 0.002
    bn = g.net[1]
    assert abs(bn.weight.mean().item() - 1.0) < 0.01 and torch.all(bn.bias == 0)


def test_spectral_norm_and_no_norm_discriminator():
    d = Discriminator(64, 8, norm="none", spectral_norm=True)
    assert any("parametrizations" in name for name, _ in d.named_parameters())
    assert d(torch.randn(3, 3, 64, 64)).shape == (3,)


def test_rebuild_from_spec_gives_same_network():
    g = Generator(128, 256, 8)
    clone = registry.build("generator", g.spec())
    clone.load_state_dict(g.state_dict())
    z = g.sample_latents(2)
    g.eval(), clone.eval()
    assert torch.equal(g(z), clone(z))
    assert registry.resolve("generator", "dcgan") is Generator  # the name format-1 checkpoints use
    with pytest.raises(ValueError, match="unknown generator"):
        registry.build("generator", {"class": "evil", "kwargs": {}})
    # Only registered subclasses: an importable class that is not a generator is refused.
    with pytest.raises(ValueError, match="unknown generator"):
        registry.build("generator", {"class": "subprocess.Popen", "kwargs": {"args": ["true"]}})


def test_latents_come_from_the_generator_and_are_seeded():
    g = Generator(64, 32, 4)
    a = g.sample_latents(3, generator=torch.Generator().manual_seed(5))
    b = g.sample_latents(5, generator=torch.Generator().manual_seed(5))
    assert a.shape == (3, 32) and torch.equal(a, b[:3])


def test_minibatch_std_sees_a_batch_of_copies():
    from artgan.models.dcgan import MinibatchStd

    varied = torch.randn(8, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    copies = varied[:1].expand(8, -1, -1, -1)
    std_channel = MinibatchStd(4)(varied)[:, -1]
    assert std_channel.shape == (8, 4, 4) and std_channel.min() > 0.5  # unit-variance features: std near 1
    assert MinibatchStd(4)(copies)[:, -1].abs().max() < 1e-3  # the same image again: no spread at all
    # Groups are the largest divisor of the batch up to the group size: 6 -> 3, 7 -> 7 alone -> 1 (zeros).
    assert MinibatchStd(4)(varied[:6]).shape == (6, 6, 4, 4)
    assert torch.equal(MinibatchStd(4)(varied[:7])[:, -1], torch.zeros(7, 4, 4))
    # Each group's value goes to its own members: images 0 and 2 share a group of 4 in a batch of 8.
    out = MinibatchStd(4)(torch.cat([copies[:4], varied[4:]]))[:, -1, 0, 0]
    assert out[0] == out[2] and out[0] > 0.1


def test_discriminator_with_minibatch_std_and_its_checks():
    d = Discriminator(64, 8, norm="none", spectral_norm=True, minibatch_std=4)
    x = torch.randn(4, 3, 64, 64)
    assert d(x).shape == (4,) and d(x[:1]).shape == (1,)
    clone = registry.build("discriminator", d.spec())
    clone.load_state_dict(d.state_dict())
    assert torch.allclose(clone.eval()(x), d.eval()(x))
    with pytest.raises(ValueError, match="minibatch_std is a group size"):
        Discriminator(64, 8, minibatch_std=True)


def test_discriminator_patch_head_judges_every_location():
    d = Discriminator(64, 8, norm="none", spectral_norm=True, patch_logits=16)
    x = torch.randn(4, 3, 64, 64)
    out = d.eval()(x)  # eval: spectral norm's power iteration would change the weights between calls
    assert out.shape == (4, 2 * 16 * 16)  # the global logit repeated beside 16 x 16 patch logits
    assert torch.equal(out[:, :256], out[:, :1].expand(-1, 256))
    # A local change moves the patch logits near it and leaves distant ones alone (18 px receptive field).
    y = x.clone()
    y[:, :, :8, :8] += 1.0
    moved = (d(y)[:, 256:] - out[:, 256:]).abs().reshape(4, 16, 16)
    assert moved[:, :2, :2].min() > 0 and moved[:, 6:, 6:].max() == 0
    # Parameters of the head train with the rest, and the part rebuilds from its spec.
    d.train()(x).mean().backward()
    assert d.patch_head.parametrizations.weight.original.grad is not None
    clone = registry.build("discriminator", d.spec())
    clone.load_state_dict(d.state_dict())
    assert torch.allclose(clone.eval()(x), d.eval()(x))
    with pytest.raises(ValueError, match="patch_logits is the side of the feature map"):
        Discriminator(64, 8, patch_logits=64)


def test_discriminator_highpass_branch_sees_only_detail():
    d = Discriminator(64, 8, norm="none", spectral_norm=True, highpass_gain=4.0).eval()
    branch = d.net[0]
    flat = torch.full((2, 3, 64, 64), 0.3)
    assert torch.allclose(branch(flat)[:, 3:], torch.zeros(2, 3, 64, 64), atol=1e-6)  # no detail, no residual
    stripes = torch.zeros(1, 3, 64, 64)
    stripes[..., ::2] = 1.0  # the finest pattern an image can hold
    residual = branch(stripes)[:, 3:]
    assert torch.allclose(residual[..., 8:-8, 8:-8].abs(), torch.full_like(residual[..., 8:-8, 8:-8], 2.0))
    assert d.net[1].in_channels == 6 and d(stripes).shape == (1,)
    assert Discriminator(64, 8).net[0].in_channels == 3  # off by default: the DCGAN D is unchanged
    with pytest.raises(ValueError, match="highpass_gain"):
        Discriminator(64, 8, highpass_gain=-1.0)


def test_discriminator_full_resolution_layer_is_a_setting_that_round_trips():
    d = Discriminator(64, 8, norm="none", spectral_norm=True, full_res_channels=16, reconstruction=1.0)
    first = d.net[0]
    assert (first.in_channels, first.out_channels, first.stride) == (3, 16, (1, 1))
    assert torch.nn.utils.parametrize.is_parametrized(first, "weight") and d.net[2].in_channels == 16
    x = torch.randn(2, 3, 64, 64)
    assert d(x).shape == (2,) and d.self_supervised_loss(x).ndim == 0  # the taps still find the 8 and 16 px maps
    clone = registry.build("discriminator", d.spec())
    clone.load_state_dict(d.state_dict())
    assert torch.allclose(clone.eval()(x), d.eval()(x))
    assert Discriminator(64, 8).net[0].stride == (2, 2)  # off by default
    with pytest.raises(ValueError, match="full_res_channels"):
        Discriminator(64, 8, full_res_channels=-4)


def test_pacgan_judges_consecutive_images_together_and_shares_the_logit():
    """pack=2: the first conv takes both images' channels, images 2k and 2k+1 get pack k's logit, an odd batch
    fills its last pack with the first image, gradients reach every image, and the setting round-trips."""
    torch.manual_seed(0)
    d = Discriminator(64, 8, norm="none", spectral_norm=True, patch_logits=16, pack=2).eval()
    assert d.net[0].in_channels == 6
    x = torch.randn(5, 3, 64, 64, requires_grad=True)
    logits = d(x)
    assert logits.shape == (5, 2 * 16 * 16)
    assert torch.equal(logits[0], logits[1]) and torch.equal(logits[2], logits[3])
    assert not torch.equal(logits[1], logits[2])
    torch.testing.assert_close(logits[4], d(torch.stack([x[4], x[0]]).detach())[0])  # short pack: x4 with x0
    swapped = d(torch.stack([x[0], x[2]]).detach())[0]  # a different partner changes the verdict
    assert not torch.allclose(swapped, logits[0])
    logits.sum().backward()
    assert (x.grad.abs().sum(dim=(1, 2, 3)) > 0).all()
    clone = registry.build("discriminator", d.spec())
    clone.load_state_dict(d.state_dict())
    assert torch.equal(clone.eval()(x.detach()), logits.detach())
    assert Discriminator(64, 8).net[0].in_channels == 3  # off by default
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="pack is how many images"):
            Discriminator(64, 8, pack=bad)
    with pytest.raises(ValueError, match="reconstruction"):
        Discriminator(64, 8, pack=2, reconstruction=1.0)


@pytest.mark.parametrize("resolution", [64, 128])
def test_discriminator_self_supervision_learns_to_rebuild_real_images(resolution):
    torch.manual_seed(0)
    assert Discriminator(resolution, 8).self_supervised_loss(torch.zeros(1, 3, resolution, resolution)) is None
    d = Discriminator(resolution, 16, norm="none", spectral_norm=True, reconstruction=2.0)
    real = torch.rand(4, 3, resolution, resolution) * 2 - 1
    opt = torch.optim.Adam(d.parameters(), 1e-3, betas=(0.0, 0.99))
    first = float(d.self_supervised_loss(real))
    for _ in range(40):
        loss = d.self_supervised_loss(real)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(d.self_supervised_loss(real)) < 0.8 * first
    # The encoder it trains is D's own, and the decoders never enter the logits.
    assert d.net[0].parametrizations.weight.original.grad is not None
    assert d(real).shape == (4,)
    assert sum("reconstruction" in k for k in d.state_dict()) > 0
    assert not any("reconstruction" in k for k in Discriminator(resolution, 16).state_dict())
