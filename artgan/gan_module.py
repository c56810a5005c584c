"""The GAN LightningModule: manual optimization, ``n_critic`` discriminator steps then one generator step.

It knows the parts only by their contracts (artgan/models/base.py, artgan/losses.py): the generator draws its
own latents, the discriminator returns logits, the loss owns both objectives and D's regularizers. Which
parts: conf/model/ (the model YAML is this module's constructor call).

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
from torchmetrics import MeanMetric

from artgan import checkpoints, compat, finetune
from artgan.augment import DiffAugment
from artgan.data.transforms import to_model_range
from artgan.ema import GeneratorEMA
from artgan.errors import ConfigError
from artgan.instance_contrast import FakeInstanceContrast
from artgan.losses import AdversarialLoss, DiscriminatorLoss
from artgan.models.base import Discriminator, Generator

# The per-step statistics the module logs (train/<name>_step, train/<name>_epoch); plots and the divergence
# guard read them by these names.
LOGGED_STATS = ("d_loss", "g_loss", "d_real", "d_fake", "d_acc_real", "d_acc_fake")
# Logged only when the discriminator has a self-supervised loss (model.discriminator.reconstruction > 0).
SELF_SUPERVISED_STAT = "d_self_supervised"
# Logged only with fake-instance discrimination (model/instance_contrast=fake): its loss in D's step.
INSTANCE_CONTRAST_STAT = "d_instance_contrast"


class GANModule(L.LightningModule):
    """Args:
        generator, discriminator: the networks (artgan.models.base contracts).
        loss: an :class:`~artgan.losses.AdversarialLoss` (objectives and D's regularizers).
        optimizer_g, optimizer_d: partial optimizers, called with each network's trainable parameters.
        resolution, latent_dim: the shared settings the parts must agree on (model.resolution, model.latent_dim).
        n_critic: discriminator steps per generator step.
        ema_decay: keep an EMA copy of G for samples, metrics and generate.py (None: no copy).
        augment: DiffAugment applied to every image D sees (None: none).
        instance_contrast: fake-instance discrimination shared by D and G (None: off); the discriminator must
            offer ``instance_features``.
        num_fixed_samples, fixed_noise_seed: the latents of the sample grids, saved in checkpoints.
        channels_last, compile: speed options.
        init_from: a checkpoint of another run to start from (fine-tuning; artgan/finetune.py): its generator,
            EMA generator, discriminator (when they fit) and fixed noise; optimizers and counters start fresh.
    """

    def __init__(
        self,
        generator: Generator,
        discriminator: Discriminator,
        loss: AdversarialLoss,
        optimizer_g: Callable[..., torch.optim.Optimizer],
        optimizer_d: Callable[..., torch.optim.Optimizer],
        resolution: int | None = None,
        latent_dim: int | None = None,
        n_critic: int = 1,
        ema_decay: float | None = None,
        augment: DiffAugment | None = None,
        instance_contrast: FakeInstanceContrast | None = None,
        num_fixed_samples: int = 64,
        fixed_noise_seed: int = 1234,
        channels_last: bool = False,
        compile: bool = False,
        init_from: str | None = None,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.save_hyperparameters(ignore=["generator", "discriminator", "loss", "optimizer_g", "optimizer_d",
                                          "augment", "instance_contrast"])
        check_parts_agree(generator, discriminator, resolution, latent_dim)
        if n_critic < 1:
            raise ConfigError(f"model.n_critic={n_critic} must be >= 1 (discriminator steps per generator step).")
        self.generator, self.discriminator, self.loss = generator, discriminator, loss
        self.optimizer_g_factory, self.optimizer_d_factory = optimizer_g, optimizer_d
        self.augment = augment
        self.instance_contrast = instance_contrast
        if instance_contrast is not None:
            instance_contrast.attach(instance_feature_dim(discriminator))
        self.generator_ema = GeneratorEMA(generator, ema_decay) if ema_decay else None
        noise = generator.sample_latents(num_fixed_samples, generator=torch.Generator().manual_seed(fixed_noise_seed))
        self.register_buffer("fixed_noise", noise)  # in the checkpoint, so a resumed run keeps its noise
        # nan_strategy="disable": the default ("warn") checks every update for NaN with `if nans.any()`, a host
        # sync per logged value per step on a GPU. A NaN loss shows up as a NaN epoch mean instead.
        self.epoch_means = nn.ModuleDict({k: MeanMetric(nan_strategy="disable")
                                          for k in (*LOGGED_STATS, SELF_SUPERVISED_STAT,
                                                    INSTANCE_CONTRAST_STAT)})
        self.images_seen = 0
        self.d_steps = 0
        self._epoch_means_logged = False
        self.step_stats: dict[str, Tensor] = {}  # this step's losses and D scores, on the device
        self._d_self_supervised: Tensor | None = None  # D's last self-supervised loss, if it has one
        self._d_instance_contrast: Tensor | None = None  # D's last fake-instance loss, if it has one
        self._features_wanted_for: Tensor | None = None  # the batch whose D features _d_forward keeps
        self._features_kept: Tensor | None = None
        self.progress_values: dict[str, float] = {}  # host copies for the progress bar, refreshed when logged
        if init_from:
            finetune.init_from(self, init_from)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    # ----------------------------------------------------------------------------------------- setup
    def configure_model(self) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.generator.compile()
            self.discriminator.compile()
            self._compiled = True

    def configure_optimizers(self):
        d_params = self.discriminator.trainable_parameters()
        if self.instance_contrast is not None:  # its projection head is part of D's side
            d_params = d_params + list(self.instance_contrast.parameters())
        return (self.optimizer_g_factory([p for p in self.generator.parameters() if p.requires_grad]),
                self.optimizer_d_factory(d_params))

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

    @property
    def latent_dim(self) -> int:
        return self.generator.latent_dim

    def sampling_generator(self) -> Generator:
        """The network to sample from: the EMA generator when there is one, its BatchNorm statistics
        recomputed for its own weights (see GeneratorEMA.refresh_batchnorm)."""
        if self.generator_ema is None:
            return self.generator
        self.generator_ema.refresh_batchnorm(self.global_step)
        return self.generator_ema.module

    @torch.no_grad()
    def sample(self, z: Tensor | None = None, n: int | None = None, batch_size: int = 256) -> Tensor:
        """Images in [-1, 1] from latents ``z`` (or ``n`` fresh ones), in eval mode, batched."""
        net = self.sampling_generator()
        z = net.sample_latents(n, device=self.device) if z is None else z.to(self.device)
        was_training = net.training
        net.eval()
        try:
            return torch.cat([net(chunk) for chunk in z.split(batch_size)])
        finally:
            net.train(was_training)

    # -------------------------------------------------------------------------------------- training
    def _d_forward(self, images: Tensor) -> Tensor:
        images_in = self.augment(images) if self.augment is not None else images
        if images is not self._features_wanted_for:
            return self.discriminator(images_in)
        # The loss judges the generated batch: keep D's features of it from the same pass for the contrast.
        logits, self._features_kept = self.discriminator.judge_with_features(images_in)
        return logits

    def _judge_keeping_features(self, fake: Tensor, judge: Callable[[], Any]) -> tuple[Any, Tensor]:
        """``judge()`` (a loss call that runs D on ``fake``), and D's instance features of ``fake`` from it."""
        self._features_wanted_for, self._features_kept = fake, None
        try:
            result = judge()
        finally:
            self._features_wanted_for = None
        features, self._features_kept = self._features_kept, None
        if features is None:  # a loss that never judged ``fake`` as given (none of ours)
            features = self.discriminator.instance_features(
                self.augment(fake) if self.augment is not None else fake)
        return result, features

    def _discriminator_step(self, opt_d, real: Tensor, fake: Tensor, instance_keys: Tensor | None = None
                            ) -> DiscriminatorLoss:
        def judge() -> DiscriminatorLoss:
            return self.loss.discriminator_loss(self._d_forward, real, fake, self.d_steps)

        if instance_keys is None:
            out = judge()
            total = out.total
        else:
            out, features = self._judge_keeping_features(fake, judge)
            contrast = self.instance_contrast.loss(self.instance_contrast.embed(features), instance_keys)
            total = out.total + contrast
            self._d_instance_contrast = contrast.detach()
        self_supervised = self.discriminator.self_supervised_loss(
            self.augment(real) if self.augment is not None else real)
        if self_supervised is not None:
            total = total + self_supervised
            self._d_self_supervised = self_supervised.detach()
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(total)
        opt_d.step()
        self.d_steps += 1
        if self.augment is not None:
            self.augment.observe(out.real_logits, real.shape[0])
        return out

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        real = batch
        opt_g, opt_d = self.optimizers()
        batch_size = real.shape[0]

        for i in range(self.hparams.n_critic):
            # The last critic step's fakes keep their graph so the G step reuses them (saves a G forward);
            # D sees them detached, so its backward never reaches G.
            with torch.set_grad_enabled(i == self.hparams.n_critic - 1):
                latents = self.generator.sample_latents(batch_size, device=self.device)
                fake = self.generator(latents)
            keys = self._instance_keys(latents)
            d_out = self._discriminator_step(opt_d, real, fake.detach(), keys)

        with self.toggled_optimizer(opt_g):  # D's parameters get no gradients in the G step
            def judge() -> Tensor:
                return self.loss.generator_loss(self._d_forward, fake, real, latents)

            if keys is None:
                g_loss = judge()
            else:  # G is rewarded for images D can tell apart
                g_loss, features = self._judge_keeping_features(fake, judge)
                g_loss = g_loss + self.instance_contrast.loss(self.instance_contrast.embed(features), keys)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)
        if keys is not None:
            self.instance_contrast.enqueue(keys)

        self.images_seen += batch_size * self.trainer.world_size
        self._record_step(d_out, g_loss.detach())

    @torch.no_grad()
    def _instance_keys(self, latents: Tensor) -> Tensor | None:
        """Embeddings of each image's second view, G(z + noise), for fake-instance discrimination."""
        if self.instance_contrast is None:
            return None
        pair = self.generator(self.instance_contrast.perturb(latents))
        return self.instance_contrast.keys(
            self.discriminator.instance_features(self.augment(pair) if self.augment is not None else pair))

    def _record_step(self, d_out: DiscriminatorLoss, g_loss: Tensor) -> None:
        score, says_real = self.loss.score, self.loss.says_real
        # Device tensors, no host sync: the divergence guard reads them (one sync per check) and
        # on_train_batch_end logs them on the steps the logger writes.
        self.step_stats = {
            "d_loss": d_out.adversarial,
            "g_loss": g_loss,
            "d_real": score(d_out.real_logits).mean(),
            "d_fake": score(d_out.fake_logits).mean(),
            "d_acc_real": says_real(d_out.real_logits).float().mean(),
            "d_acc_fake": (~says_real(d_out.fake_logits)).float().mean(),
        }
        if self._d_self_supervised is not None:
            self.step_stats[SELF_SUPERVISED_STAT] = self._d_self_supervised
        if self._d_instance_contrast is not None:
            self.step_stats[INSTANCE_CONTRAST_STAT] = self._d_instance_contrast
        for name, value in self.step_stats.items():
            self.epoch_means[name].update(value)
        # Lightning keeps a reference to a logged Metric and computes it (synced across devices) at the end of
        # the epoch, so registering each epoch mean once per epoch is enough (each self.log call is costly).
        if not self._epoch_means_logged:
            for name in self.step_stats:
                self.log(f"train/{name}_epoch", self.epoch_means[name], on_step=False, on_epoch=True)
            self._epoch_means_logged = True
        every = max(1, self.trainer.log_every_n_steps)
        if self.g_steps % every == 0 or not self.progress_values:
            self.progress_values = {"d_loss": float(self.step_stats["d_loss"]), "g_loss": float(g_loss)}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # The module's hook runs after the callbacks', just before Lightning writes: log step values only when
        # it will write them.
        if not compat.logger_writes_this_step(self.trainer):
            return
        for name, value in self.step_stats.items():
            self.log(f"train/{name}_step", value, on_step=True, on_epoch=False)
        self.log("train/g_steps", float(self.g_steps), on_step=True, on_epoch=False)
        self.log("train/images_seen", float(self.images_seen), on_step=True, on_epoch=False)
        if self.augment is not None and self.augment.ada is not None:
            self.log("train/augment_p", float(self.augment.p), on_step=True, on_epoch=False)

    def on_train_epoch_start(self) -> None:
        self._epoch_means_logged = False

    # ---------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.generator_ema is not None:
            # generate.py and resumed runs get EMA BatchNorm statistics that fit the EMA weights.
            self.generator_ema.refresh_batchnorm(self.global_step)
            state = checkpoint.get("state_dict")
            if isinstance(state, dict):
                for name, buf in self.generator_ema.named_buffers():
                    key = f"generator_ema.{name}"
                    if key in state:
                        state[key] = buf.detach().clone()
        checkpoint["artgan"] = {
            "version": checkpoints.FORMAT_VERSION,
            "generator": self.generator.spec(),
            "discriminator": self.discriminator.spec(),
            "loss": self.loss.spec(),
            "loss_state": self.loss.state_dict(),
            "has_ema": self.generator_ema is not None,
            "images_seen": self.images_seen,
            "d_steps": self.d_steps,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        checkpoints.upgrade(checkpoint)  # runs before Lightning loads the state dict
        checkpoints.check_same_networks(checkpoint, {"generator": self.generator,
                                                      "discriminator": self.discriminator})
        saved = any(k.startswith("instance_contrast.") for k in checkpoint.get("state_dict", {}))
        if saved != (self.instance_contrast is not None):
            raise ConfigError(
                f"The checkpoint was trained {'with' if saved else 'without'} fake-instance discrimination and "
                f"this run is configured {'without' if saved else 'with'} it. To continue that run, "
                f"{'add model/instance_contrast=fake' if saved else 'drop model/instance_contrast=fake'}; to start "
                "a new run from its weights instead, use model.init_from=<checkpoint> without ckpt_path.")
        state = checkpoint.get("artgan", {})
        self.images_seen = int(state.get("images_seen", 0))
        self.d_steps = int(state.get("d_steps", 0))
        self.loss.load_state_dict(state.get("loss_state", {}))


def instance_feature_dim(discriminator: Discriminator) -> int:
    """How many features per image the discriminator offers for fake-instance discrimination."""
    was_training = discriminator.training
    discriminator.eval()  # no BatchNorm or spectral-norm state changes from this probe
    try:
        with torch.no_grad():
            size = discriminator.resolution
            features = discriminator.instance_features(torch.zeros(2, 3, size, size))
    finally:
        discriminator.train(was_training)
    if features is None:
        raise ConfigError(
            f"model/instance_contrast needs a discriminator that offers per-image features, and "
            f"{type(discriminator).__name__} does not (the DCGAN discriminator does, unless model.discriminator.pack "
            f"> 1; in an ensemble, any DCGAN member). Choose such a discriminator or drop model/instance_contrast.")
    return int(features.shape[1])


def check_parts_agree(generator: Generator, discriminator: Discriminator, resolution: int | None,
                      latent_dim: int | None) -> None:
    """The generator, the discriminator and the model's shared settings must describe the same images."""
    sizes = {"model.generator.resolution": generator.resolution,
             "model.discriminator.resolution": discriminator.resolution}
    if resolution is not None:
        sizes["model.resolution"] = resolution
    if len(set(sizes.values())) > 1:
        raise ConfigError(
            "The model's parts disagree on the image size: " + ", ".join(f"{k}={v}" for k, v in sizes.items())
            + ". Set model.resolution only (the generator and discriminator read it) and remove the other overrides."
        )
    if latent_dim is not None and generator.latent_dim != latent_dim:
        raise ConfigError(f"model.generator.latent_dim={generator.latent_dim} differs from model.latent_dim="
                          f"{latent_dim}; set model.latent_dim only (the generator reads it).")
