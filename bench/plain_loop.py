"""A plain PyTorch GAN training loop: the yardstick for ``GANModule``'s speed (no Lightning, no logging).

It is the algorithm of ``GANModule.training_step`` written as a user would in a notebook, and a strict one:
per batch, ``n_critic`` D steps on real + detached fake images, then one G step that reuses the last fake
(no second G forward) with D's parameters frozen (``requires_grad_(False)``) so the G backward computes no
D weight gradients; D's self-supervised loss on the reals where it has one. Non-saturating BCE or hinge loss,
the DiffAugment module it is given on everything D sees, the optimizers it is given (Adam in the benchmark),
uint8 batches turned into [-1, 1] on the device. Where the recipe has them, the spectral regularizer in G's loss
and an EMA of G's weights and buffers after each G step (a lerp of all of them), so both loops do the same work.
Nothing is logged and nothing is read back to the host.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from artgan.losses import spectrum_matching_term


def d_loss_bce(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) + \
        F.softplus(fake_logits).mean()


def g_loss_bce(fake_logits: Tensor) -> Tensor:
    return F.softplus(-fake_logits).mean()


def d_loss_hinge(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_loss_hinge(fake_logits: Tensor) -> Tensor:
    return -fake_logits.mean()


class PlainGANLoop:
    """``G``, ``D`` and their optimizers, trained step by step on uint8 batches.

    ``precision`` is ``"32-true"``, ``"bf16-mixed"`` or ``"16-mixed"`` (autocast; a GradScaler for fp16, updated
    after every optimizer step as Lightning's MixedPrecision does).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, opt_g: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer, device: torch.device | str = "cpu", n_critic: int = 1,
                 channels_last: bool = False, precision: str = "32-true", hinge: bool = False,
                 augment: nn.Module | None = None, spectrum_matching: float = 0.0, ema_decay: float | None = None):
        self.g, self.d, self.opt_g, self.opt_d = generator, discriminator, opt_g, opt_d
        self.d_loss, self.g_loss = (d_loss_hinge, g_loss_hinge) if hinge else (d_loss_bce, g_loss_bce)
        self.augment = augment or nn.Identity()
        self.d_trained = list(discriminator.trainable_parameters())
        self.device = torch.device(device)
        self.n_critic, self.channels_last = n_critic, channels_last
        dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=dtype)) if dtype else contextlib.nullcontext
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "16-mixed" else None
        self.spectrum_matching, self.ema_decay = spectrum_matching, ema_decay
        if ema_decay:
            ema = copy.deepcopy(generator).requires_grad_(False)
            self.ema_tensors = [t for t in [*ema.parameters(), *ema.buffers()] if t.is_floating_point()]
            self.live_tensors = [t for t in [*generator.parameters(), *generator.buffers()] if t.is_floating_point()]

    def _backward_step(self, loss: Tensor, opt: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()

    def step(self, batch: Tensor) -> None:
        real = batch.to(self.device, non_blocking=True)
        real = real.float() / 127.5 - 1.0
        if self.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        n = real.shape[0]
        for i in range(self.n_critic):
            with torch.set_grad_enabled(i == self.n_critic - 1), self.autocast():
                fake = self.g(self.g.sample_latents(n, device=self.device))
            with self.autocast():
                d_loss = self.d_loss(self.d(self.augment(real)).float(),
                                     self.d(self.augment(fake.detach())).float())
                self_supervised = self.d.self_supervised_loss(self.augment(real))  # FastGAN's reconstruction
                if self_supervised is not None:
                    d_loss = d_loss + self_supervised
            self.opt_d.zero_grad(set_to_none=True)
            self._backward_step(d_loss, self.opt_d)
        for p in self.d_trained:
            p.requires_grad_(False)
        with self.autocast():
            g_loss = self.g_loss(self.d(self.augment(fake)).float())
            if self.spectrum_matching:
                g_loss = g_loss + self.spectrum_matching * spectrum_matching_term(fake, real)
        self.opt_g.zero_grad(set_to_none=True)
        self._backward_step(g_loss, self.opt_g)
        if self.ema_decay:
            with torch.no_grad():
                torch._foreach_lerp_(self.ema_tensors, self.live_tensors, 1.0 - self.ema_decay)
        for p in self.d_trained:  # a frozen backbone stays frozen
            p.requires_grad_(True)

    def run(self, batches: Iterable[Tensor], warmup: int, steps: int) -> float:
        """Train on ``warmup + steps`` batches; returns the seconds the last ``steps`` took (data fetch included)."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        it = iter(batches)
        for _ in range(warmup):
            self.step(next(it))
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            self.step(next(it))
        sync()
        return time.perf_counter() - start
