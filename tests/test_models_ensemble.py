"""The discriminator ensemble (Vision-aided GAN): member weighting, frozen parts, checkpoints, config errors."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from artgan.models import registry
from artgan.models.dcgan import DCGANDiscriminator
from artgan.models.ensemble import EnsembleDiscriminator
from artgan.models.projected import ProjectedDiscriminator


def members(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return {"pixel": DCGANDiscriminator(64, ndf=8, norm="none", spectral_norm=True),
            "features": ProjectedDiscriminator(64, proj_channels=8, max_channels=16)}


@pytest.fixture(scope="module")
def ensemble() -> EnsembleDiscriminator:
    return EnsembleDiscriminator(64, members=members())


def images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("weights", [None, {"pixel": 3, "features": 1}])
def test_each_member_weighs_its_share_in_a_loss_that_averages_logits(weights):
    """The pixel D gives 1 logit per image, the projected D 76; a hinge averaged over the ensemble's logits is
    the members' own hinges mixed by their shares, not by their logit counts."""
    parts = members()
    d = EnsembleDiscriminator(64, members=parts, weights=weights).eval()
    x = images()
    shares = weights or {"pixel": 1, "features": 1}
    own = {name: F.relu(1 - parts[name](x).reshape(len(x), -1)).mean() for name in parts}
    mixed = sum(shares[name] * own[name] for name in parts) / sum(shares.values())
    assert torch.allclose(F.relu(1 - d(x)).mean(), mixed, atol=1e-6)
    d.train()


def test_frozen_backbone_stays_frozen_and_out_of_the_optimizer_and_the_checkpoint(ensemble):
    ensemble.train()
    backbone = ensemble.members["features"].backbone
    assert not any(m.training for m in backbone.modules())
    trainable = {id(p) for p in ensemble.trainable_parameters()}
    assert not any(id(p) in trainable for p in backbone.parameters())
    assert {id(p) for p in ensemble.members["pixel"].parameters()} <= trainable
    assert not any(".backbone." in k for k in ensemble.state_dict())


def test_rebuilds_from_its_spec_and_state_dict(ensemble):
    """What generate.py and a checkpoint do: the spec names each member's class and settings."""
    spec = ensemble.spec()
    assert spec["kwargs"]["members"]["pixel"]["class"] == registry.class_path(DCGANDiscriminator)
    buffer = io.BytesIO()
    torch.save(ensemble.state_dict(), buffer)
    torch.manual_seed(99)
    rebuilt = registry.build("discriminator", spec)
    x = images(seed=1)
    assert not torch.allclose(rebuilt.eval()(x), ensemble.eval()(x))
    rebuilt.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True), strict=True)
    assert torch.equal(rebuilt(x), ensemble(x))
    ensemble.train()


def test_gradient_reaches_the_image_through_every_member(ensemble):
    ensemble.train().zero_grad(set_to_none=True)
    x = images().requires_grad_(True)
    ensemble(x).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in ensemble.trainable_parameters())  # DDP: no unused parameters
    ensemble.zero_grad(set_to_none=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"members": {}}, "members is empty"),
    ({"weights": {"pixel": 1}}, "give every member a weight"),
    ({"weights": {"pixel": 0, "features": 1}}, "weights.pixel must be a positive integer"),
    ({"members": {"pixel": 3}}, "members.pixel must be a discriminator config"),
    ({"augment": {"pixels": "color"}}, "augment names \\['pixels'\\], which are not members"),
])
def test_bad_settings_name_the_key(kwargs, message):
    settings = {"members": members(), **kwargs}
    with pytest.raises(ValueError, match=message):
        EnsembleDiscriminator(64, **settings)


def test_members_must_judge_the_ensembles_resolution():
    with pytest.raises(ValueError, match="members.pixel judges 128 px images"):
        EnsembleDiscriminator(64, members={"pixel": DCGANDiscriminator(128, ndf=4)})


def test_member_augmentation_reaches_only_its_member_and_round_trips():
    """augment={features: [color, cutout]}: the projected member judges colour-jittered, cut-out images while the
    pixel member judges the images as given (its logits equal its own D's); the policy travels in the spec, and
    the checkpoint is the one without it."""
    parts = members()
    d = EnsembleDiscriminator(64, members=parts, augment={"features": ["color", "cutout"]}).eval()
    x = images()
    logits = d(x)
    assert torch.equal(logits[:, :1], parts["pixel"](x).reshape(len(x), -1))
    torch.manual_seed(1)
    first = d(x)[:, 1:]
    torch.manual_seed(2)
    assert not torch.allclose(first, d(x)[:, 1:])  # a fresh jitter and cut-out every call
    assert d.spec()["kwargs"]["augment"] == {"features": "color,cutout"}
    plain = EnsembleDiscriminator(64, members=members())
    assert d.state_dict().keys() == plain.state_dict().keys()
    rebuilt = registry.build("discriminator", d.spec())
    assert rebuilt.member_augment["features"].ops == ["color", "cutout"]
    with pytest.raises(ValueError, match=r"model.discriminator.augment.features='blur' names an unknown"):
        EnsembleDiscriminator(64, members=members(), augment={"features": "blur"})
