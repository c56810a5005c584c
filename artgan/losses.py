"""Adversarial losses and gradient penalties, in one place.

Every loss works on raw discriminator outputs (logits). ``d_loss(real, fake)`` is what D minimizes,
``g_loss(fake)`` what G minimizes, ``score`` turns logits into the number logged as D's score
(a probability for bce) and ``says_real`` is D's decision, for its accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AdversarialLoss:
    name: str
    d_loss: Callable[[Tensor, Tensor, float], Tensor]  # (real_logits, fake_logits, label_smoothing)
    g_loss: Callable[[Tensor], Tensor]
    score: Callable[[Tensor], Tensor]
    says_real: Callable[[Tensor], Tensor]


def _bce_d(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    # One-sided label smoothing (Salimans et al. 2016): real targets 1 - smoothing, fake targets stay 0.
    real_target = torch.full_like(real, 1.0 - smoothing)
    return F.binary_cross_entropy_with_logits(real, real_target) + F.softplus(fake).mean()


def _hinge_d(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def _lsgan_d(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    return 0.5 * ((real - (1.0 - smoothing)) ** 2).mean() + 0.5 * (fake**2).mean()


def _wgan_d(real: Tensor, fake: Tensor, smoothing: float = 0.0) -> Tensor:
    return fake.mean() - real.mean()  # the gradient penalty is added by the caller, it needs D itself


def _positive(x: Tensor) -> Tensor:
    return x > 0


def _bce_g(fake: Tensor) -> Tensor:
    return F.softplus(-fake).mean()


def _neg_mean_g(fake: Tensor) -> Tensor:
    return -fake.mean()


def _lsgan_g(fake: Tensor) -> Tensor:
    return 0.5 * ((fake - 1.0) ** 2).mean()


def _identity(x: Tensor) -> Tensor:
    return x


def _above_half(x: Tensor) -> Tensor:
    return x > 0.5


# Named functions, not lambdas: the module must pickle for trainer.strategy=ddp_spawn (multirun + DDP).
LOSSES: dict[str, AdversarialLoss] = {
    # Non-saturating BCE (Goodfellow et al. 2014), the seeds' loss: G maximizes log D(G(z)).
    "bce": AdversarialLoss("bce", _bce_d, _bce_g, torch.sigmoid, _positive),
    "hinge": AdversarialLoss("hinge", _hinge_d, _neg_mean_g, _identity, _positive),
    "lsgan": AdversarialLoss("lsgan", _lsgan_d, _lsgan_g, _identity, _above_half),
    "wgan-gp": AdversarialLoss("wgan-gp", _wgan_d, _neg_mean_g, _identity, _positive),
}


def get_loss(name: str) -> AdversarialLoss:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name]


def gradient_penalty(discriminator: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): (||grad D(x_hat)||_2 - 1)^2 on random real/fake interpolates."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def r1_penalty(real_logits: Tensor, real_images: Tensor) -> Tensor:
    """R1 (Mescheder et al. 2018): mean squared gradient norm of D's output w.r.t. real images."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.flatten(1).pow(2).sum(1).mean()
