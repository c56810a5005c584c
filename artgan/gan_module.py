"""The GAN LightningModule: manual optimization, ``n_critic`` discriminator steps then one generator step.

Step accounting: Lightning's ``global_step`` counts optimizer steps of *both* networks, so it grows by
``n_critic + 1`` per batch and ``trainer.max_steps`` is in those units. The module logs the number of
generator updates (``train/g_steps``) and real images seen (``train/images_seen``, all devices).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel
from torchmetrics import MeanMetric

from artgan.data.transforms import to_model_range
from artgan.losses import get_loss, gradient_penalty, r1_penalty

CHECKPOINT_FORMAT_VERSION = 1
LOGGED_STATS = ("d_loss", "g_loss", "d_real", "d_fake", "d_acc_real", "d_acc_fake")


class EMAWithWarmup:
    """EMA update for ``AveragedModel`` whose decay ramps up as min(decay, (1 + n) / (10 + n)).

    A fixed decay of 0.999 would leave the EMA generator mostly at its random init for the first
    thousands of steps (a short CPU run shows grey noise); the ramp-up tracks the live weights early and
    averages over ~1 / (1 - decay) steps later. The decay stays a device tensor: no host sync per step.
    A class, not a closure, so the module pickles for ``ddp_spawn``.
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


class GANModule(L.LightningModule):
    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        optimizer_g: Callable[..., torch.optim.Optimizer],
        optimizer_d: Callable[..., torch.optim.Optimizer],
        loss: str = "bce",
        n_critic: int = 1,
        label_smoothing: float = 0.0,
        gp_weight: float = 10.0,
        r1_gamma: float = 0.0,
        r1_every: int = 16,
        ema_decay: float | None = None,
        augment: nn.Module | None = None,
        ada: nn.Module | None = None,
        num_fixed_samples: int = 64,
        fixed_noise_seed: int = 1234,
        channels_last: bool = False,
        compile: bool = False,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.save_hyperparameters(ignore=["generator", "discriminator", "optimizer_g", "optimizer_d", "augment",
                                          "ada"])
        self.loss_fn = get_loss(loss)
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        self.generator, self.discriminator = generator, discriminator
        self.optimizer_g_factory, self.optimizer_d_factory = optimizer_g, optimizer_d
        self.latent_dim = generator.latent_dim
        if ada is not None and augment is None:
            raise ValueError("model.ada=true needs a DiffAugment policy, e.g. model.augment_policy=color,translation,cutout")
        self.augment, self.ada = augment, ada
        if ada is not None:
            augment.p = ada.p
        # EMA of G (Karras et al.): smoother weights for samples, metrics and generate.py. Buffers (BatchNorm
        # running statistics) are averaged too, so the EMA generator is usable in eval mode.
        self.generator_ema = (
            AveragedModel(generator, multi_avg_fn=EMAWithWarmup(ema_decay), use_buffers=True)
            if ema_decay else None
        )
        noise = torch.randn(num_fixed_samples, self.latent_dim, 1, 1,
                            generator=torch.Generator().manual_seed(fixed_noise_seed))
        self.register_buffer("fixed_noise", noise)  # in the checkpoint, so a resumed run keeps its noise
        # nan_strategy="disable": the default ("warn") checks every update for NaN with `if nans.any()`, a host
        # sync per logged value per step on a GPU. A NaN loss now shows up as a NaN epoch mean (the divergence
        # guard's business) instead of being dropped with a warning.
        self.epoch_means = nn.ModuleDict({k: MeanMetric(nan_strategy="disable") for k in LOGGED_STATS})
        self.images_seen = 0
        self.d_steps = 0
        self._epoch_means_logged = False
        self.step_stats: dict[str, Tensor] = {}  # this step's losses and D scores, on the device
        self.progress_values: dict[str, float] = {}  # host copies for the progress bar, refreshed when logged
        if channels_last:
            self.to(memory_format=torch.channels_last)

    # ----------------------------------------------------------------------------------------- setup
    def configure_model(self) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.generator.compile()
            self.discriminator.compile()
            self._compiled = True

    def configure_optimizers(self):
        return (self.optimizer_g_factory(self.generator.parameters()),
                self.optimizer_d_factory(self.discriminator.parameters()))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        images = to_model_range(images) if images.dtype == torch.uint8 else images
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    # -------------------------------------------------------------------------------------- sampling
    @property
    def g_steps(self) -> int:
        """Generator updates so far (global_step counts the discriminator's steps too)."""
        return self.global_step // (self.hparams.n_critic + 1)

    def noise(self, n: int) -> Tensor:
        return torch.randn(n, self.latent_dim, 1, 1, device=self.device)

    def sampling_generator(self) -> nn.Module:
        """The network to sample from: the EMA generator when there is one (its BatchNorm statistics
        recomputed for its own weights first, see :meth:`refresh_ema_batchnorm`)."""
        if self.generator_ema is None:
            return self.generator
        self.refresh_ema_batchnorm()
        return self.generator_ema.module

    @torch.no_grad()
    def refresh_ema_batchnorm(self, num_batches: int = 2, batch_size: int = 64, seed: int = 0) -> None:
        """Recompute the EMA generator's BatchNorm running statistics for the EMA weights.

        The averaged running statistics do not match the averaged weights: averaging weights that still move
        (early training, short runs) shrinks the activations, so the eval-mode EMA generator would paint
        washed-out grey images. Like ``torch.optim.swa_utils.update_bn``, this resets the statistics and
        re-estimates them (cumulative average) from ``num_batches`` train-mode forward passes of seeded noise
        (its own RNG: the training RNG streams are untouched). Done at most once per training step.
        """
        if self.generator_ema is None or getattr(self, "_ema_bn_step", None) == self.global_step:
            return
        net = self.generator_ema.module
        norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if norms:
            saved = [(m.momentum, type(m)) for m in norms]
            was_training = net.training
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # cumulative moving average over the refresh batches
                if isinstance(m, nn.SyncBatchNorm):  # sync_batchnorm=true: local statistics, no collective
                    m.__class__ = nn.BatchNorm2d  # (every rank draws the same noise, so they agree anyway)
            net.train()
            gen = torch.Generator(device=self.fixed_noise.device).manual_seed(seed)
            for _ in range(num_batches):
                net(torch.randn(batch_size, self.latent_dim, 1, 1, device=self.fixed_noise.device, generator=gen))
            for m, (momentum, cls) in zip(norms, saved):
                m.momentum = momentum
                m.__class__ = cls
            net.train(was_training)
        self._ema_bn_step = self.global_step

    @torch.no_grad()
    def sample(self, z: Tensor | None = None, n: int | None = None, batch_size: int = 256) -> Tensor:
        """Images in [-1, 1] from ``z`` (or ``n`` fresh latents), in eval mode, batched."""
        z = self.noise(n) if z is None else z.to(self.device)
        net = self.sampling_generator()
        was_training = net.training
        net.eval()
        try:
            return torch.cat([net(chunk) for chunk in z.split(batch_size)])
        finally:
            net.train(was_training)

    # -------------------------------------------------------------------------------------- training
    def _d_forward(self, images: Tensor) -> Tensor:
        return self.discriminator(self.augment(images) if self.augment is not None else images)

    def _discriminator_step(self, opt_d, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
        hp = self.hparams
        lazy_r1 = hp.r1_gamma > 0 and self.d_steps % hp.r1_every == 0
        if lazy_r1:
            real = real.detach().requires_grad_(True)
        real_logits = self._d_forward(real)
        fake_logits = self._d_forward(fake)
        d_loss = self.loss_fn.d_loss(real_logits, fake_logits, hp.label_smoothing)
        penalty = torch.zeros((), device=self.device)
        if hp.loss == "wgan-gp":
            penalty = hp.gp_weight * gradient_penalty(self._d_forward, real, fake)
        if lazy_r1:  # lazy regularization (StyleGAN2): every r1_every steps, scaled up to compensate
            penalty = penalty + 0.5 * hp.r1_gamma * hp.r1_every * r1_penalty(real_logits, real)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss + penalty)
        opt_d.step()
        self.d_steps += 1
        if self.ada is not None:
            self.ada.accumulate(real_logits.detach())
            self.ada.step(real.shape[0])
            self.augment.p = self.ada.p
        return {"d_loss": d_loss.detach(), "real_logits": real_logits.detach(), "fake_logits": fake_logits.detach()}

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        real = batch
        opt_g, opt_d = self.optimizers()
        batch_size = real.shape[0]

        for i in range(self.hparams.n_critic):
            # The last critic step's fakes keep their graph so the G step reuses them (saves a G forward);
            # D sees them detached, so its backward never reaches G.
            with torch.set_grad_enabled(i == self.hparams.n_critic - 1):
                fake = self.generator(self.noise(batch_size))
            d_out = self._discriminator_step(opt_d, real, fake.detach())

        with self.toggled_optimizer(opt_g):  # D's parameters get no gradients in the G step
            g_loss = self.loss_fn.g_loss(self._d_forward(fake))
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)

        self.images_seen += batch_size * self.trainer.world_size
        self._record_step(d_out, g_loss.detach())

    def _record_step(self, d_out: dict[str, Tensor], g_loss: Tensor) -> None:
        score, says_real = self.loss_fn.score, self.loss_fn.says_real
        # Device tensors, no host sync: the divergence guard reads them (one sync per check) and
        # on_train_batch_end logs them on the steps the logger writes.
        self.step_stats = {
            "d_loss": d_out["d_loss"],
            "g_loss": g_loss,
            "d_real": score(d_out["real_logits"]).mean(),
            "d_fake": score(d_out["fake_logits"]).mean(),
            "d_acc_real": says_real(d_out["real_logits"]).float().mean(),
            "d_acc_fake": (~says_real(d_out["fake_logits"])).float().mean(),
        }
        for name, value in self.step_stats.items():
            self.epoch_means[name].update(value)
        # Lightning keeps a reference to a logged Metric and computes it (synced across devices) at the end of
        # the epoch, so registering each epoch mean once per epoch is enough. Each self.log call walks the value
        # and deep-copies its metadata: at 14 calls per step that was the loop's largest cost outside torch
        # (docs/benchmarks.md).
        if not self._epoch_means_logged:
            for name in self.step_stats:
                self.log(f"train/{name}_epoch", self.epoch_means[name], on_step=False, on_epoch=True)
            self._epoch_means_logged = True
        every = max(1, self.trainer.log_every_n_steps)
        if self.g_steps % every == 0 or not self.progress_values:
            self.progress_values = {"d_loss": float(self.step_stats["d_loss"]), "g_loss": float(g_loss)}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Step values go to the logger only on the steps it writes (log_every_n_steps, fast_dev_run, or a stop
        # that a callback requested in this batch: the module's hook runs after the callbacks', just before
        # Lightning writes, so this is exactly its test). Values logged on other steps would be overwritten unseen.
        trainer = self.trainer
        connector = getattr(trainer, "_logger_connector", None)
        if not (getattr(connector, "should_update_logs", True) or trainer.fast_dev_run):
            return
        for name, value in self.step_stats.items():
            self.log(f"train/{name}_step", value, on_step=True, on_epoch=False)
        self.log("train/g_steps", float(self.g_steps), on_step=True, on_epoch=False)
        self.log("train/images_seen", float(self.images_seen), on_step=True, on_epoch=False)
        if self.ada is not None:
            self.log("train/augment_p", float(self.ada.p), on_step=True, on_epoch=False)

    def on_train_epoch_start(self) -> None:
        self._epoch_means_logged = False

    # ---------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.generator_ema is not None:
            # generate.py and resumed runs get EMA BatchNorm statistics that fit the EMA weights.
            self.refresh_ema_batchnorm()
            state = checkpoint.get("state_dict")
            if isinstance(state, dict):
                for name, buf in self.generator_ema.named_buffers():
                    key = f"generator_ema.{name}"
                    if key in state:
                        state[key] = buf.detach().clone()
        checkpoint["artgan"] = {
            "version": CHECKPOINT_FORMAT_VERSION,
            "generator": self.generator.spec(),
            "has_ema": self.generator_ema is not None,
            "images_seen": self.images_seen,
            "d_steps": self.d_steps,
        }

    def on_fit_start(self) -> None:
        if self.ada is not None:  # a resumed run restores ada.p with the weights, after on_load_checkpoint
            self.augment.p = self.ada.p

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("artgan", {})
        self.images_seen = int(state.get("images_seen", 0))
        self.d_steps = int(state.get("d_steps", 0))
