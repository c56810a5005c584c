"""Differentiable augmentation for data-efficient GAN training.

`DiffAugment` applies the same random, differentiable ops to real and fake images before
the discriminator sees them (Zhao et al. 2020), so D cannot memorise a small data set while
gradients still reach the generator. `AdaptiveAugmentProbability` tunes how often the ops
fire from D's overfitting signal r_t = E[sign(D(real))] (Karras et al. 2020, StyleGAN2-ADA).

With ADA the augmentation owns its controller: the training step reports D's logits on real images with
``augment.observe(real_logits, batch_size)`` and the probability follows.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from artgan.errors import ConfigError

AUGMENT_OPS = ("color", "translation", "cutout", "rotate90")


class AugmentPolicyError(ConfigError, ValueError):
    """An unknown op name in the augment policy string."""


def _uniform(batch: int, low: float, high: float, like: Tensor) -> Tensor:
    return torch.rand(batch, 1, 1, 1, dtype=like.dtype, device=like.device) * (high - low) + low


def random_color(x: Tensor) -> Tensor:
    """Brightness, then saturation, then contrast, each with a per-sample random factor."""
    batch = x.shape[0]
    x = x + _uniform(batch, -0.5, 0.5, x)
    channel_mean = x.mean(dim=1, keepdim=True)
    x = (x - channel_mean) * _uniform(batch, 0.0, 2.0, x) + channel_mean
    image_mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - image_mean) * _uniform(batch, 0.5, 1.5, x) + image_mean


def translate(x: Tensor, shift_y: Tensor, shift_x: Tensor) -> Tensor:
    """Shift each image by integer (shift_y[b], shift_x[b]) pixels, filling with zeros.

    A gather, so the gradient w.r.t. x is the inverse shift (no interpolation blur).
    """
    batch, _, height, width = x.shape
    rows = torch.arange(height, device=x.device)
    cols = torch.arange(width, device=x.device)
    src_y = rows.view(1, height, 1) - shift_y.view(batch, 1, 1)
    src_x = cols.view(1, 1, width) - shift_x.view(batch, 1, 1)
    inside = (src_y >= 0) & (src_y < height) & (src_x >= 0) & (src_x < width)  # (B, H, W)
    batch_index = torch.arange(batch, device=x.device).view(batch, 1, 1)
    # Mixed advanced indexing puts the (B, H, W) index dims first: result is (B, H, W, C).
    gathered = x[batch_index, :, src_y.clamp(0, height - 1), src_x.clamp(0, width - 1)]
    return gathered.permute(0, 3, 1, 2) * inside.unsqueeze(1).to(x.dtype)


def random_translation(x: Tensor, ratio: float) -> Tensor:
    batch, _, height, width = x.shape
    max_y, max_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    shift_y = torch.randint(-max_y, max_y + 1, (batch,), device=x.device)
    shift_x = torch.randint(-max_x, max_x + 1, (batch,), device=x.device)
    return translate(x, shift_y, shift_x)


def random_cutout(x: Tensor, ratio: float) -> Tensor:
    """Zero one square per image; its centre is anywhere in the image, so it may be clipped."""
    batch, _, height, width = x.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    top = torch.randint(0, height + (1 - size_y % 2), (batch, 1, 1), device=x.device) - size_y // 2
    left = torch.randint(0, width + (1 - size_x % 2), (batch, 1, 1), device=x.device) - size_x // 2
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    hole = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return x * (~hole).unsqueeze(1).to(x.dtype)


def random_rotate90(x: Tensor, p: float) -> Tensor:
    """With probability ``p`` per image, a quarter, half or three-quarter turn (equally likely).

    StyleGAN2-ADA's ``rotate90``: below p = 0.75 the upright orientation stays the most common one, so D can
    still tell which way up the paintings hang and G is not pushed to paint sideways (the augmentation does not
    leak). Whole-pixel moves, so the gradient passes through unblurred.
    """
    batch, _, height, width = x.shape
    if height != width:
        raise ValueError(f"rotate90 needs square images, got {height}x{width}")
    turns = torch.randint(1, 4, (batch, 1, 1, 1), device=x.device)
    turns = torch.where(torch.rand(batch, 1, 1, 1, device=x.device) < p, turns, torch.zeros_like(turns))
    out = x
    for k in (1, 2, 3):
        out = torch.where(turns == k, torch.rot90(x, k, dims=(2, 3)), out)
    return out


class DiffAugment(nn.Module):
    """Apply each op of `policy` ("color,translation,cutout") to each sample with probability p.

    ``rotate90`` fires with probability ``p * rotate90_p`` (default 0.5, so at most half the images turn: see
    :func:`random_rotate90`); put it first in the policy, as ADA applies geometric ops before colour.
    With an ``ada`` controller, p is the controller's (it starts at 0 and rises only once D overfits) and
    :meth:`observe` feeds it; without one, p is fixed.
    """

    def __init__(
        self,
        policy: str = "color,translation,cutout",
        p: float = 1.0,
        translation_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
        ada: AdaptiveAugmentProbability | None = None,
        rotate90_p: float = 0.5,
    ) -> None:
        super().__init__()
        self.ops = [name.strip() for name in policy.split(",") if name.strip()]
        unknown = [name for name in self.ops if name not in AUGMENT_OPS]
        if unknown:
            raise AugmentPolicyError(
                f"Unknown augment op(s) {unknown} in model.augment.policy={policy!r}; allowed: "
                f"{', '.join(AUGMENT_OPS)} (comma separated, e.g. model.augment.policy=\"color,translation\", or "
                "empty for no augmentation)."
            )
        self._p = float(p)
        self.translation_ratio = translation_ratio
        self.cutout_ratio = cutout_ratio
        if not 0.0 <= rotate90_p <= 0.75:
            raise ConfigError(f"model.augment.rotate90_p={rotate90_p} must be in [0, 0.75]: above 0.75 a sideways "
                              "turn is as likely as none, D can no longer tell which way up the paintings hang, and "
                              "G learns to paint them sideways. StyleGAN2-ADA's default strength is 0.5.")
        self.rotate90_p = float(rotate90_p)
        self.ada = ada

    @property
    def p(self) -> float:
        return self.ada.p if self.ada is not None else self._p

    @p.setter
    def p(self, value: float) -> None:
        self._p = float(value)

    @torch.no_grad()
    def observe(self, real_logits: Tensor, batch_size: int) -> None:
        """After each D step: let the ADA controller (if any) see D's logits on real images."""
        if self.ada is not None:
            self.ada.accumulate(real_logits)
            self.ada.step(batch_size)

    def forward(self, x: Tensor) -> Tensor:
        p = self.p
        if not self.ops or p <= 0.0:
            return x
        for name in self.ops:
            if name == "rotate90":  # its own per-image coin flip (p * rotate90_p)
                x = random_rotate90(x, p * self.rotate90_p)
                continue
            if name == "color":
                augmented = random_color(x)
            elif name == "translation":
                augmented = random_translation(x, self.translation_ratio)
            else:
                augmented = random_cutout(x, self.cutout_ratio)
            if p < 1.0:  # per-sample coin flip; skipped samples pass through unchanged
                apply = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < p
                augmented = torch.where(apply, augmented, x)
            x = augmented
        return x

    def extra_repr(self) -> str:
        return f"policy={','.join(self.ops)!r}, p={self.p:.3f}"


class AdaptiveAugmentProbability(nn.Module):
    """ADA controller: raise p while D is confident on reals (r_t > target), lower it otherwise.

    `speed_images` is how many images it takes p to move from 0 to 1. StyleGAN2-ADA's 500_000
    suits long GPU runs; small-data CPU runs see far fewer images and want e.g. 20_000.
    State (p and the partial sign statistic) is in buffers, so checkpoints resume with the same p.
    """

    def __init__(
        self, target: float = 0.6, speed_images: int = 500_000, interval: int = 4, initial_p: float = 0.0
    ) -> None:
        super().__init__()
        if interval < 1 or speed_images <= 0:
            raise ConfigError(
                f"ADA needs interval >= 1 and speed_images > 0, got {interval} and {speed_images}."
            )
        self.target = target
        self.speed_images = speed_images
        self.interval = interval
        self.register_buffer("probability", torch.tensor(float(initial_p), dtype=torch.float64))
        self.register_buffer("sign_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sign_count", torch.zeros((), dtype=torch.float64))
        self._p = float(initial_p)  # host copy, so reading p never syncs with the device
        self._calls = 0
        self.last_rt: float | None = None  # for logging

    @property
    def p(self) -> float:
        return self._p

    @torch.no_grad()
    def accumulate(self, real_logits: Tensor) -> None:
        """Add sign(D(real)) to the running statistic, on the logits' device (no host sync)."""
        if self.sign_sum.device != real_logits.device:
            self.sign_sum = self.sign_sum.to(real_logits.device)
            self.sign_count = self.sign_count.to(real_logits.device)
        self.sign_sum += real_logits.detach().sign().sum().to(torch.float64)
        self.sign_count += real_logits.numel()

    @torch.no_grad()
    def step(self, batch_size: int) -> float:
        """Call once per D step with the per-process batch size; updates p every `interval` calls."""
        self._calls += 1
        if self._calls % self.interval:
            return self._p
        stats = torch.stack([self.sign_sum, self.sign_count])
        world_size = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)  # sum of signs and count over all processes
            world_size = dist.get_world_size()
        sign_sum, count = stats.tolist()  # the one host sync per interval
        self.sign_sum.zero_()
        self.sign_count.zero_()
        if count == 0:
            return self._p
        self.last_rt = sign_sum / count
        direction = (self.last_rt > self.target) - (self.last_rt < self.target)
        images_seen = batch_size * self.interval * world_size
        self._p = min(max(self._p + direction * images_seen / self.speed_images, 0.0), 1.0)
        self.probability.fill_(self._p)
        return self._p

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._p = float(self.probability)

    def extra_repr(self) -> str:
        return f"p={self._p:.4f}, target={self.target}, speed_images={self.speed_images}, interval={self.interval}"


def build_augment(policy: str | list[str] = "", p: float = 1.0, ada: bool = False, ada_target: float = 0.6,
                  ada_speed_images: int = 20_000, ada_interval: int = 4, rotate90_p: float = 0.5
                  ) -> DiffAugment | None:
    """The config's entry point (model.augment.*): None when no policy is set, so the seed recipe pays nothing.
    ``policy`` is "color,translation" or a list (``model.augment.policy=[color,translation]`` on a command line,
    where Hydra reads an unquoted comma as a sweep)."""
    if not isinstance(policy, str):
        policy = ",".join(policy)
    if not policy:
        if ada:
            raise ConfigError("model.augment.ada=true needs a DiffAugment policy, e.g. "
                              "model.augment.policy=\"color,translation,cutout\".")
        return None
    controller = AdaptiveAugmentProbability(target=ada_target, speed_images=ada_speed_images,
                                            interval=ada_interval) if ada else None
    return DiffAugment(policy, p, ada=controller, rotate90_p=rotate90_p)
