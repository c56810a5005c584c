"""An exponential moving average of the generator (Karras et al.): smoother weights for samples, metrics and
generate.py. Its state_dict keys (``n_averaged``, ``module.*``) are those of ``torch.optim.swa_utils.AveragedModel``,
which it is."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from artgan.models.base import Generator


class EMAWithWarmup:
    """EMA update whose decay ramps up as min(decay, (1 + n) / (10 + n)).

    A fixed decay of 0.999 would leave the EMA generator mostly at its random init for the first thousands of
    steps (a short CPU run shows grey noise); the ramp-up tracks the live weights early and averages over
    ~1 / (1 - decay) steps later. The decay stays a device tensor: no host sync per step. A class, not a
    closure, so the module pickles for ``ddp_spawn``.
    """

    def __init__(self, decay: float):
        self.decay = decay

    @torch.no_grad()
    def __call__(self, ema_params: list[Tensor], params: list[Tensor], num_averaged: Tensor) -> None:
        if not ema_params[0].is_floating_point():  # integer buffers (BatchNorm's batch counter): copy
            torch._foreach_copy_(ema_params, params)
            return
        decay = ((1.0 + num_averaged) / (10.0 + num_averaged)).clamp(max=self.decay).to(ema_params[0].dtype)
        torch._foreach_mul_(ema_params, decay)
        torch._foreach_add_(ema_params, torch._foreach_mul(params, 1.0 - decay))


class GeneratorEMA(AveragedModel):
    """The EMA copy of a generator. Its parameters never get gradients (so summaries count them as frozen);
    buffers (BatchNorm running statistics) are averaged too."""

    def __init__(self, generator: Generator, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be strictly between 0 and 1, got {decay}")
        super().__init__(generator, multi_avg_fn=EMAWithWarmup(decay), use_buffers=True)
        self.module.requires_grad_(False)
        self._refreshed_at: int | None = None

    @torch.no_grad()
    def refresh_batchnorm(self, step: int, num_batches: int = 2, batch_size: int = 64, seed: int = 0) -> None:
        """Recompute the BatchNorm running statistics for the averaged weights, at most once per ``step``.

        Averaged running statistics do not match averaged weights: averaging weights that still move (early
        training, short runs) shrinks the activations, so the eval-mode EMA generator would paint washed-out grey
        images. Like ``torch.optim.swa_utils.update_bn``, this resets the statistics and re-estimates them
        (cumulative average) from ``num_batches`` train-mode forward passes of seeded latents (its own RNG, and the
        global one forked for noise injection: the training RNG streams are untouched).
        """
        if self._refreshed_at == step:
            return
        net: Generator = self.module
        norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if norms:
            saved = [(m.momentum, type(m)) for m in norms]
            was_training = net.training
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # cumulative moving average over the refresh batches
                if isinstance(m, nn.SyncBatchNorm):  # sync_batchnorm=true: local statistics, no collective
                    m.__class__ = nn.BatchNorm2d  # (every rank draws the same latents, so they agree anyway)
            net.train()
            device = next(net.parameters()).device
            gen = torch.Generator().manual_seed(seed)
            # Noise injection draws from the global generator: fork it, so saving a checkpoint (which refreshes)
            # leaves the training stream as it was when the checkpoint recorded it (exact resume).
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                for _ in range(num_batches):
                    net(net.sample_latents(batch_size, generator=gen, device=device))
            for m, (momentum, cls) in zip(norms, saved):
                m.momentum = momentum
                m.__class__ = cls
            net.train(was_training)
        self._refreshed_at = step
