"""The "add a model" how-to of docs/architecture.md, done by a test: a generator, a discriminator and a loss
defined outside the artgan package, trained through train.py with nothing edited but this file and its YAMLs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from artgan.losses import AdversarialLoss
from artgan.models.base import Discriminator, Generator


class ToyGenerator(Generator):
    """A linear map from the latent to an 8 x 8 image, upsampled to the resolution."""

    def __init__(self, resolution: int = 64, latent_dim: int = 16, width: int = 8):
        super().__init__(resolution, latent_dim, width=width)
        self.net = nn.Sequential(nn.Linear(latent_dim, width * 64), nn.ReLU(), nn.Linear(width * 64, 3 * 64))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        small = self.net(z).view(-1, 3, 8, 8)
        return torch.tanh(F.interpolate(small, size=self.resolution, mode="nearest"))


class ToyDiscriminator(Discriminator):
    """Average-pools to 8 x 8 and scores with one linear layer."""

    def __init__(self, resolution: int = 64):
        super().__init__(resolution)
        self.score = nn.Linear(3 * 64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(F.adaptive_avg_pool2d(x, 8).flatten(1)).flatten()


class SoftHingeLoss(AdversarialLoss):
    """A smooth hinge: softplus instead of relu."""

    d_wins_g_loss = 3.0

    def d_terms(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.softplus(1.0 - real_logits).mean() + F.softplus(1.0 + fake_logits).mean()

    def g_term(self, fake_logits: torch.Tensor, real_logits: torch.Tensor | None) -> torch.Tensor:
        return -fake_logits.mean()
