"""Adversarial losses as objects that own both objectives and the discriminator's regularizers.

A loss sees the discriminator as a callable ``d(images) -> logits`` (the module passes D behind DiffAugment), so
it can run D itself wherever its objective needs it: on interpolates for a gradient penalty, on real images
with input gradients for R1, or on real images in the generator step for a relativistic loss. The module calls

* ``discriminator_loss(d, real, fake, step)`` -> :class:`DiscriminatorLoss` (the total to minimize, the
  adversarial part for logging, and D's logits on real and fake for its scores and ADA);
* ``generator_loss(d, fake, real, latents)`` -> the generator's objective, plus the mode-seeking term when
  ``mode_seeking > 0``, the spectral regularizer when ``spectrum_matching > 0`` and minibatch optimal transport
  when ``ot_matching > 0`` (regularizers of G, so they live here beside D's).

``discriminator_loss`` adds LeCam's regularizer when ``lecam > 0``; its anchors are the loss's only training state
(``state_dict``, saved in checkpoints). ``score`` turns logits into the number logged as D's score (a probability
for the BCE loss), ``says_real`` is D's decision (for its accuracy) and ``d_wins_g_loss`` tells the divergence
guard which generator loss means "D wins completely" (None: the rule does not apply). A new loss is a subclass
that implements ``d_terms`` and ``g_term`` (and overrides what else differs) plus a YAML in conf/model/loss/.

All classes are plain picklable objects (``trainer.strategy=ddp_spawn`` pickles the module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from artgan.metrics.spectral import log_radial_spectrum

DiscriminatorFn = Callable[[Tensor], Tensor]


@dataclass
class DiscriminatorLoss:
    total: Tensor        # what D's optimizer minimizes: adversarial + penalties
    adversarial: Tensor  # the adversarial part alone (logged as d_loss)
    real_logits: Tensor
    fake_logits: Tensor


class AdversarialLoss:
    """Base class: lazy R1 on real images (Mescheder et al. 2018) and the mode-seeking term (Mao et al. 2019)
    for any loss; subclasses add the objectives."""

    #: generator loss at which D wins completely (with D's accuracy near 1); None disables the guard's rule
    d_wins_g_loss: float | None = None

    def __init__(self, r1_gamma: float = 0.0, r1_every: int = 16, mode_seeking: float = 0.0,
                 spectrum_matching: float = 0.0, lecam: float = 0.0, lecam_decay: float = 0.99,
                 ot_matching: float = 0.0, ot_matching_size: int = 16):
        if r1_gamma < 0 or r1_every < 1:
            raise ValueError(f"r1_gamma must be >= 0 and r1_every >= 1, got {r1_gamma} and {r1_every}")
        for name, weight in (("mode_seeking", mode_seeking), ("spectrum_matching", spectrum_matching),
                             ("lecam", lecam), ("ot_matching", ot_matching)):
            if weight < 0:
                raise ValueError(f"{name} is a loss weight and must be >= 0, got {weight}")
        if not 0.0 <= lecam_decay < 1.0:
            raise ValueError(f"lecam_decay must be in [0, 1), got {lecam_decay}")
        self.r1_gamma, self.r1_every = float(r1_gamma), int(r1_every)
        self.mode_seeking = float(mode_seeking)
        self.spectrum_matching = float(spectrum_matching)
        self.lecam, self.lecam_decay = float(lecam), float(lecam_decay)
        if int(ot_matching_size) < 1:
            raise ValueError(f"ot_matching_size is a side in pixels and must be >= 1, got {ot_matching_size}")
        self.ot_matching, self.ot_matching_size = float(ot_matching), int(ot_matching_size)
        self._anchors = LogitAnchors(self.lecam_decay)  # training state, not a setting: see state_dict

    # -- what subclasses define
    def d_terms(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def g_term(self, fake_logits: Tensor, real_logits: Tensor | None) -> Tensor:
        raise NotImplementedError

    #: whether ``g_term`` needs D's logits on real images (computed in the generator step)
    g_needs_real_logits = False

    def score(self, logits: Tensor) -> Tensor:
        return logits

    def says_real(self, logits: Tensor) -> Tensor:
        return logits > 0

    def penalty(self, d: DiscriminatorFn, real: Tensor, fake: Tensor) -> Tensor | None:
        """An extra regularizer computed every step (WGAN-GP's gradient penalty); None when there is none."""
        return None

    # -- what the module calls
    def discriminator_loss(self, d: DiscriminatorFn, real: Tensor, fake: Tensor, step: int) -> DiscriminatorLoss:
        lazy_r1 = self.r1_gamma > 0 and step % self.r1_every == 0
        if lazy_r1:
            real = real.detach().requires_grad_(True)
        # Objectives in float32 whatever precision D ran in (bf16 autocast): sums of many small terms.
        real_logits, fake_logits = d(real).float(), d(fake).float()
        adversarial = self.d_terms(real_logits, fake_logits)
        total = adversarial
        extra = self.penalty(d, real, fake)
        if extra is not None:
            total = total + extra
        if lazy_r1:  # lazy regularization (StyleGAN2): every r1_every steps, scaled up to compensate
            total = total + 0.5 * self.r1_gamma * self.r1_every * r1_penalty(real_logits, real)
        if self.lecam > 0:
            self._anchors.update(real_logits, fake_logits)
            total = total + self.lecam * lecam_term(real_logits, fake_logits, self._anchors)
        return DiscriminatorLoss(total, adversarial.detach(), real_logits.detach(), fake_logits.detach())

    def generator_loss(self, d: DiscriminatorFn, fake: Tensor, real: Tensor, latents: Tensor | None = None) -> Tensor:
        real_logits = d(real).float() if self.g_needs_real_logits else None
        total = self.g_term(d(fake).float(), real_logits)
        if self.mode_seeking > 0 and latents is not None:
            total = total + self.mode_seeking * mode_seeking_term(fake, latents)
        if self.spectrum_matching > 0:
            total = total + self.spectrum_matching * spectrum_matching_term(fake, real)
        if self.ot_matching > 0:
            total = total + self.ot_matching * ot_matching_term(fake, real, self.ot_matching_size)
        return total

    def settings(self) -> dict:
        """The constructor's settings (what ``spec`` and ``repr`` show), without training state."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def spec(self) -> dict:
        """A plain description for checkpoints and logs."""
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}", **self.settings()}

    def state_dict(self) -> dict:
        """What the loss learns while training (LeCam's anchors), for checkpoints and exact resume."""
        return {"lecam_anchors": self._anchors.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self._anchors.load_state_dict(state.get("lecam_anchors", {}))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


class NonSaturatingLoss(AdversarialLoss):
    """Non-saturating BCE (Goodfellow et al. 2014), the seed notebooks' loss: G maximizes log D(G(z)).
    One-sided label smoothing (Salimans et al. 2016): real targets become 1 - label_smoothing."""

    d_wins_g_loss = 5.0  # softplus(-logit) >= 5: D(G(z)) < 0.7 %

    def __init__(self, label_smoothing: float = 0.0, **regularizers):
        super().__init__(**regularizers)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def d_terms(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        target = torch.full_like(real_logits, 1.0 - self.label_smoothing)
        return F.binary_cross_entropy_with_logits(real_logits, target) + F.softplus(fake_logits).mean()

    def g_term(self, fake_logits: Tensor, real_logits: Tensor | None) -> Tensor:
        return F.softplus(-fake_logits).mean()

    def score(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)


class HingeLoss(AdversarialLoss):
    """Hinge loss (Lim & Ye 2017; SAGAN, BigGAN, Projected GAN)."""

    d_wins_g_loss = 2.0  # -logit >= 2: fakes far past the margin

    def d_terms(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()

    def g_term(self, fake_logits: Tensor, real_logits: Tensor | None) -> Tensor:
        return -fake_logits.mean()


class LeastSquaresLoss(AdversarialLoss):
    """LSGAN (Mao et al. 2017) with targets 1 (real) and 0 (fake); D's decision threshold is 0.5."""

    d_wins_g_loss = 0.45  # 0.5 (logit - 1)^2 >= 0.45: D(G(z)) <= 0.05

    def __init__(self, label_smoothing: float = 0.0, **regularizers):
        super().__init__(**regularizers)
        self.label_smoothing = float(label_smoothing)

    def d_terms(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return 0.5 * ((real_logits - (1.0 - self.label_smoothing)) ** 2).mean() + 0.5 * (fake_logits**2).mean()

    def g_term(self, fake_logits: Tensor, real_logits: Tensor | None) -> Tensor:
        return 0.5 * ((fake_logits - 1.0) ** 2).mean()

    def says_real(self, logits: Tensor) -> Tensor:
        return logits > 0.5


class WassersteinGPLoss(AdversarialLoss):
    """WGAN-GP (Gulrajani et al. 2017). The penalty is per sample: use a discriminator without BatchNorm.
    An unbounded critic's accuracy says nothing, so the guard's "D wins" rule is off (NaN is still caught)."""

    def __init__(self, gp_weight: float = 10.0, **regularizers):
        super().__init__(**regularizers)
        self.gp_weight = float(gp_weight)

    def d_terms(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return fake_logits.mean() - real_logits.mean()

    def g_term(self, fake_logits: Tensor, real_logits: Tensor | None) -> Tensor:
        return -fake_logits.mean()

    def penalty(self, d: DiscriminatorFn, real: Tensor, fake: Tensor) -> Tensor:
        return self.gp_weight * gradient_penalty(d, real, fake)


class RelativisticLoss(AdversarialLoss):
    """Relativistic pairing GAN (RpGAN; Jolicoeur-Martineau 2018, R3GAN 2024): D judges whether a real image is
    more real than a generated one, softplus(-(D(x_real) - D(x_fake))), and G the reverse. Pair it with R1."""

    g_needs_real_logits = True
    d_wins_g_loss = 5.0

    def d_terms(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return F.softplus(-(real_logits - fake_logits)).mean()

    def g_term(self, fake_logits: Tensor, real_logits: Tensor | None) -> Tensor:
        return F.softplus(-(fake_logits - real_logits)).mean()


def ot_matching_term(fake: Tensor, real: Tensor, size: int = 16) -> Tensor:
    """Minibatch optimal transport at a coarse scale (Salimans et al., ICLR 2018, OT-GAN; the coverage idea of
    Li & Malik's IMLE): the batch's generated and real images, shrunk to ``size`` px, are paired one to one so
    that the summed squared distance is least, and the term is the mean distance of the pairs. Every painting in
    the batch pulls one generated image towards its layout, so a kind of composition G never paints still costs
    it, which D's gradient, felt only where G's samples already are, does not do. Coarse, so D keeps the detail."""
    f = F.adaptive_avg_pool2d(fake.float(), size).flatten(1)
    r = F.adaptive_avg_pool2d(real.detach().float(), size).flatten(1)
    n = min(len(f), len(r))
    f, r = f[:n], r[:n]
    cost = (r[:, None, :] - f[None, :, :]).square().mean(-1)  # (real, fake) mean squared difference
    rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())  # 16 x 16: microseconds on the host
    return cost[torch.as_tensor(rows, device=cost.device), torch.as_tensor(cols, device=cost.device)].mean()


def gradient_penalty(d: DiscriminatorFn, real: Tensor, fake: Tensor) -> Tensor:
    """(||grad D(x_hat)||_2 - 1)^2 on random real/fake interpolates."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(d(x_hat).float().sum(), x_hat, create_graph=True)
    return ((grad.float().flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def mode_seeking_term(fake: Tensor, latents: Tensor, eps: float = 1e-5) -> Tensor:
    """MSGAN's regularizer (Mao et al., CVPR 2019, "Mode Seeking GANs"): the batch's two halves are paired, and
    the term is the inverse of how far apart their images are per unit of latent distance, so G is pushed to
    map distinct latents to distinct images instead of painting one picture for many of them."""
    half = fake.shape[0] // 2
    if half == 0:
        return fake.new_zeros((), dtype=torch.float32)
    image_gap = (fake[:half].float() - fake[half:2 * half].float()).abs().mean()
    latent_gap = (latents[:half].float() - latents[half:2 * half].float()).abs().mean()
    return 1.0 / (image_gap / latent_gap + eps)


def spectrum_matching_term(fake: Tensor, real: Tensor) -> Tensor:
    """Spectral regularization (Durall et al., CVPR 2020): the squared gap between the batch-mean log power
    spectra of the generated and the real images, ring by ring (``log_radial_spectrum``). Up-samplers leave
    power at high frequencies that a discriminator looking at pixels barely penalises; this asks G for the
    paintings' share of power at every scale. The real batch is a noisy target; a squared gap keeps its
    gradient unbiased. It is the same spectrum ``spectral_hf`` measures, so with this on, that metric is
    one G trains against: judge by SWD and the pictures too."""
    gap = log_radial_spectrum(fake.float()).mean(0) - log_radial_spectrum(real.detach().float()).mean(0)
    return gap.square().mean().float()


class LogitAnchors:
    """Moving averages of D's mean logit on real and on generated images, LeCam's anchors; they start at the
    first batch's means. Tensors on D's device, so updating them costs no host sync."""

    def __init__(self, decay: float):
        self.decay = decay
        self.real: Tensor | float | None = None
        self.fake: Tensor | float | None = None

    def update(self, real_logits: Tensor, fake_logits: Tensor) -> None:
        real, fake = real_logits.detach().float().mean(), fake_logits.detach().float().mean()
        if self.real is None:
            self.real, self.fake = real, fake
        else:
            self.real = torch.lerp(real, torch.as_tensor(self.real, device=real.device), self.decay)
            self.fake = torch.lerp(fake, torch.as_tensor(self.fake, device=fake.device), self.decay)

    def state_dict(self) -> dict:
        return {} if self.real is None else {"real": float(self.real), "fake": float(self.fake)}

    def load_state_dict(self, state: dict) -> None:
        self.real, self.fake = state.get("real"), state.get("fake")


def lecam_term(real_logits: Tensor, fake_logits: Tensor, anchors: LogitAnchors) -> Tensor:
    """LeCam regularization (Tseng et al., CVPR 2021, "Regularizing GANs under Limited Data"): D's logits on
    real images are pulled towards the moving average of its logits on generated ones, and vice versa (one-sided,
    as in the paper's BigGAN code). It bounds how far D can separate the two sets on a small dataset, the
    overconfidence that makes it memorise the paintings and starves G of a useful gradient."""
    return (F.relu(real_logits - anchors.fake).square().mean()
            + F.relu(anchors.real - fake_logits).square().mean())


def r1_penalty(real_logits: Tensor, real_images: Tensor) -> Tensor:
    """Mean squared gradient norm of D's output w.r.t. real images."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.float().flatten(1).pow(2).sum(1).mean()  # float32: squares of small gradients
