"""Several discriminators judging the same images, their losses added (Kumari et al., CVPR 2022, "Ensembling
Off-the-shelf Models for GAN Training", Vision-aided GAN).

A discriminator that learns its own features from pixels sees colour and texture but must learn what a
composition is from a few hundred paintings; one that looks through a frozen ImageNet network knows shapes and
layouts from the first step but is blind to what those features ignore (palette, pixel texture, an 8-pixel
lattice). Together each covers the other's blind spot. Vision-aided GAN keeps the original discriminator and
adds one on pretrained features, which is what ``members`` = a pixel D plus a projected D gives.

Every member sees the same (augmented) images; ``augment`` can add DiffAugment ops for one member only (e.g. colour
jitter for the projected member, so that it judges shapes and texture, while the pixel member alone judges the
palette). Their logits are concatenated to ``(B, K)``; since losses average over all logits, each member's logits
are repeated so that member ``i`` holds ``weights[i]`` parts of them, whatever number of logits it returns (a
hinge on repeated logits is the same per-member mean, weighted).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from artgan.augment import AUGMENT_OPS, AugmentPolicyError, DiffAugment
from artgan.models import registry
from artgan.models.base import Discriminator


def _as_module(name: str, member: Any) -> Discriminator:
    """A member built by Hydra (a module) or described by a checkpoint's spec (a dict)."""
    if isinstance(member, Discriminator):
        return member
    if isinstance(member, dict) and ("class" in member or "name" in member):
        return registry.build("discriminator", member)
    raise ValueError(f"model.discriminator.members.{name} must be a discriminator config with a _target_ "
                     f"(e.g. the contents of conf/model/discriminator/dcgan.yaml); got {type(member).__name__}.")


class EnsembleDiscriminator(Discriminator):
    """Named member discriminators on the same images -> ``(B, K)`` logits, member ``i`` weighing ``weights[i]``.

    ``members``: name -> discriminator (or its ``spec()``); every member must judge ``resolution`` px images.
    ``weights``: name -> positive integer share of the loss (None: equal shares).
    ``augment``: name -> DiffAugment ops applied to that member's input only, after the shared augmentation, on
    real and generated images alike ("color,cutout" or a list; None: none).
    """

    def __init__(self, resolution: int = 64, members: dict[str, Any] | None = None,
                 weights: dict[str, int] | None = None, augment: dict[str, Any] | None = None):
        if not members:
            raise ValueError("model.discriminator.members is empty: name at least one discriminator.")
        modules = {str(name): _as_module(str(name), m) for name, m in dict(members).items()}
        weights = {name: 1 for name in modules} if weights is None else {str(k): v for k, v in dict(weights).items()}
        if set(weights) != set(modules):
            raise ValueError(f"model.discriminator.weights names {sorted(weights)}, the members are "
                             f"{sorted(modules)}: give every member a weight, or none (equal shares).")
        for name, w in weights.items():
            if isinstance(w, bool) or not isinstance(w, int) or w < 1:
                raise ValueError(f"model.discriminator.weights.{name} must be a positive integer share, got {w!r}.")
        augment = {str(k): v if isinstance(v, str) else ",".join(map(str, v)) for k, v in dict(augment or {}).items()}
        if not set(augment) <= set(modules):
            raise ValueError(f"model.discriminator.augment names {sorted(set(augment) - set(modules))}, which are not "
                             f"members ({sorted(modules)}): key it by a member's name.")
        super().__init__(resolution, members={name: m.spec() for name, m in modules.items()}, weights=weights,
                         augment=augment or None)
        # no state: plain attributes keep checkpoints the same with and without member augmentation
        self.member_augment: dict[str, DiffAugment] = {}
        for name, policy in augment.items():
            try:
                self.member_augment[name] = DiffAugment(policy)
            except AugmentPolicyError:
                raise AugmentPolicyError(
                    f"model.discriminator.augment.{name}={policy!r} names an unknown DiffAugment op; allowed: "
                    f"{', '.join(AUGMENT_OPS)} (e.g. model.discriminator.augment={{{name}:[color]}})."
                ) from None
        for name, m in modules.items():
            if m.resolution != self.resolution:
                raise ValueError(f"model.discriminator.members.{name} judges {m.resolution} px images, the "
                                 f"ensemble {self.resolution} px: set model.resolution only.")
        self.members = nn.ModuleDict(modules)
        self.weights = weights

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.members.values() for p in m.trainable_parameters()]

    def self_supervised_loss(self, real: Tensor) -> Tensor | None:
        losses = [loss for m in self.members.values() if (loss := m.self_supervised_loss(real)) is not None]
        return sum(losses) if losses else None

    def instance_features(self, images: Tensor) -> Tensor | None:
        features = [f for name, m in self.members.items()
                    if (f := m.instance_features(self._member_input(name, images))) is not None]
        return torch.cat(features, dim=1) if features else None

    def _member_input(self, name: str, images: Tensor) -> Tensor:
        augment = self.member_augment.get(name)
        return images if augment is None else augment(images)

    def judge_with_features(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        judged = {name: m.judge_with_features(self._member_input(name, images)) for name, m in self.members.items()}
        features = [f for _, f in judged.values() if f is not None]
        return (self._weighted({name: logits for name, (logits, _) in judged.items()}, images.shape[0]),
                torch.cat(features, dim=1) if features else None)

    def forward(self, images: Tensor) -> Tensor:
        return self._weighted({name: m(self._member_input(name, images)) for name, m in self.members.items()},
                              images.shape[0])

    def _weighted(self, logits: dict[str, Tensor], batch: int) -> Tensor:
        logits = {name: x.reshape(batch, -1) for name, x in logits.items()}
        common = math.lcm(*(x.shape[1] for x in logits.values()))
        return torch.cat([x.repeat(1, common // x.shape[1] * self.weights[name]) for name, x in logits.items()],
                         dim=1)
