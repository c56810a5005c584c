"""The training step: who gets updated, what is logged, what a checkpoint holds."""

import lightning as L
import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader


def build_module(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["model.generator.ngf=8", "model.discriminator.ndf=8", *overrides])
    return instantiate(cfg.model)


def fit(module, tmp_path, batches=2, **trainer_kwargs):
    images = torch.randint(0, 256, (16 * batches, 3, 64, 64), dtype=torch.uint8)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=tmp_path, **trainer_kwargs)
    trainer.fit(module, DataLoader(images, batch_size=16))
    return trainer


def snapshot(net):
    return [p.detach().clone() for p in net.parameters()]


def changed(before, net):
    return any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_d_step_changes_only_d_and_g_step_only_g(tmp_path):
    module = build_module()
    trainer = fit(module, tmp_path, batches=1)  # attaches optimizers
    opt_g, opt_d = module.optimizers()
    real = torch.rand(8, 3, 64, 64) * 2 - 1

    g_before, d_before = snapshot(module.generator), snapshot(module.discriminator)
    fake = module.generator(module.generator.sample_latents(8)).detach()
    module._discriminator_step(opt_d, real, fake)
    assert changed(d_before, module.discriminator) and not changed(g_before, module.generator)

    g_before, d_before = snapshot(module.generator), snapshot(module.discriminator)
    opt_d.zero_grad(set_to_none=True)
    with module.toggled_optimizer(opt_g):
        g_loss = module.loss.generator_loss(module.discriminator, module.generator(module.generator.sample_latents(8)),
                                            real)
        opt_g.zero_grad()
        module.manual_backward(g_loss)
        opt_g.step()
    assert changed(g_before, module.generator) and not changed(d_before, module.discriminator)
    assert all(p.grad is None for p in module.discriminator.parameters())
    assert trainer.global_step > 0


@pytest.mark.parametrize("loss", ["bce", "hinge", "lsgan", "wgan-gp", "relativistic"])
def test_each_loss_trains_and_logs(tmp_path, loss):
    extra = ["model.discriminator.norm=instance"] if loss == "wgan-gp" else []
    module = build_module(f"model/loss={loss}", "model.n_critic=2", *extra)
    trainer = fit(module, tmp_path, batches=3)
    # global_step counts both optimizers: (n_critic + 1) per batch.
    assert trainer.global_step == 3 * (2 + 1)
    assert module.g_steps == 3 and module.images_seen == 48
    metrics = trainer.callback_metrics
    for name in ("d_loss", "g_loss", "d_real", "d_fake", "d_acc_real", "d_acc_fake"):
        assert torch.isfinite(metrics[f"train/{name}_epoch"]), name
    if loss == "bce":
        assert 0 <= metrics["train/d_real_epoch"] <= 1  # a probability


class RecordingLogger(Logger):
    """Keeps every (step, metrics) the trainer writes, as TensorBoard would receive them."""

    name, version = "recording", 0

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def test_logger_gets_step_values_on_logging_steps_and_true_epoch_means(tmp_path):
    # Every step logged: each epoch mean must be the mean of that epoch's step values (and reset per epoch).
    logger = RecordingLogger()
    images = torch.randint(0, 256, (16 * 4, 3, 64, 64), dtype=torch.uint8)
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=logger, log_every_n_steps=1,
                        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(build_module(), DataLoader(images, batch_size=16))
    steps = [(step, m) for step, m in logger.rows if "train/d_loss_step" in m]
    epochs = [m for _, m in logger.rows if "train/d_loss_epoch" in m]
    assert [step for step, _ in steps] == list(range(8)) and len(epochs) == 2
    for epoch, means in enumerate(epochs):
        for name in ("d_loss", "g_loss", "d_real", "d_acc_fake"):
            values = [m[f"train/{name}_step"] for _, m in steps[4 * epoch:4 * epoch + 4]]
            assert means[f"train/{name}_epoch"] == pytest.approx(sum(values) / 4, rel=1e-5), (epoch, name)
    assert [m["train/images_seen"] for _, m in steps] == [16.0 * (i + 1) for i in range(8)]

    # log_every_n_steps=3 over 7 batches: the logger writes step values after batches 3 and 6 only.
    logger = RecordingLogger()
    images = torch.randint(0, 256, (16 * 7, 3, 64, 64), dtype=torch.uint8)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=logger, log_every_n_steps=3,
                        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(build_module(), DataLoader(images, batch_size=16))
    assert [m["train/g_steps"] for _, m in logger.rows if "train/d_loss_step" in m] == [3.0, 6.0]


def test_regularizers_and_augmentation_train(tmp_path):
    module = build_module("model/augment=diffaugment", "model.augment.ada=true", "model.loss.r1_gamma=1.0",
                          "model.loss.r1_every=2", "model.ema_decay=0.9", "model.loss.label_smoothing=0.1",
                          "model.discriminator.spectral_norm=true")
    fit(module, tmp_path, batches=4)
    assert module.augment.ada is not None and module.d_steps == 4
    assert module.generator_ema is not None
    ema = dict(module.generator_ema.module.named_parameters())
    live = dict(module.generator.named_parameters())
    assert not torch.equal(ema["net.0.weight"], live["net.0.weight"])  # averaged, not copied
    assert module.sample(n=4).shape == (4, 3, 64, 64)


def test_self_supervised_discriminator_trains_its_decoders_in_the_d_step(tmp_path):
    module = build_module("experiment=pixel_64", "model.discriminator.reconstruction=1.0",
                          "model.discriminator.highpass_gain=4.0", "model.generator.skip_rgb=true")
    fit(module, tmp_path, batches=1)
    opt_g, opt_d = module.optimizers()
    decoders = snapshot(module.discriminator.reconstruction)
    real = torch.rand(8, 3, 64, 64) * 2 - 1
    module._discriminator_step(opt_d, real, module.generator(module.generator.sample_latents(8)).detach())
    assert changed(decoders, module.discriminator.reconstruction)
    assert module.sample(n=2).shape == (2, 3, 64, 64)


def test_self_supervised_loss_is_logged_only_when_d_has_one(tmp_path):
    for reconstruction, expected in ((1.0, True), (0.0, False)):
        logger = RecordingLogger()
        images = torch.randint(0, 256, (16 * 2, 3, 64, 64), dtype=torch.uint8)
        trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=logger, log_every_n_steps=1,
                            enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
        trainer.fit(build_module("experiment=pixel_64", f"model.discriminator.reconstruction={reconstruction}"),
                    DataLoader(images, batch_size=16))
        steps = [m["train/d_self_supervised_step"] for _, m in logger.rows if "train/d_self_supervised_step" in m]
        epochs = [m["train/d_self_supervised_epoch"] for _, m in logger.rows if "train/d_self_supervised_epoch" in m]
        if expected:  # an L1 error of images in [-1, 1]: positive, at most 2 per reconstruction
            assert len(steps) == 2 and all(0.0 < v < 4.0 for v in steps)
            assert epochs == [pytest.approx(sum(steps) / 2, rel=1e-5)]
        else:
            assert steps == [] and epochs == []


def test_checkpoint_keeps_fixed_noise_and_generator_spec(tmp_path):
    module = build_module("model.ema_decay=0.99")
    trainer = fit(module, tmp_path, batches=1)
    path = tmp_path / "x.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert torch.equal(ckpt["state_dict"]["fixed_noise"], module.fixed_noise)
    assert ckpt["artgan"]["generator"]["class"] == "artgan.models.dcgan.DCGANGenerator" and ckpt["artgan"]["has_ema"]
    assert ckpt["artgan"]["discriminator"]["kwargs"]["ndf"] == 8 and ckpt["artgan"]["version"] == 2
    assert any(k.startswith("generator_ema.") for k in ckpt["state_dict"])


def test_ema_warmup_tracks_live_weights_early_and_pickles():
    import pickle

    from torch.optim.swa_utils import AveragedModel

    from artgan.ema import EMAWithWarmup

    live = torch.nn.Linear(4, 4)
    ema = AveragedModel(live, multi_avg_fn=EMAWithWarmup(0.999), use_buffers=True)
    init = ema.module.weight.detach().clone()
    for _ in range(5):
        with torch.no_grad():
            live.weight.add_(1.0)
        ema.update_parameters(live)
    # A fixed 0.999 decay would have moved the EMA by ~0.5%; the ramp-up keeps it near the live weights.
    gap_live = (ema.module.weight - live.weight).abs().mean().item()
    gap_init = (ema.module.weight - init).abs().mean().item()
    assert gap_live < 1.0 < gap_init
    pickle.dumps(EMAWithWarmup(0.99))  # ddp_spawn pickles the module


def test_bf16_cpu_step_matches_fp32_and_stays_finite(tmp_path):
    """trainer.precision=bf16-mixed (what auto picks on CPUs with AVX-512 BF16): one step gives the losses and
    scores of a float32 step within 0.02 (bf16 keeps 8 significant bits, ~0.4% per operation; the losses are
    computed in float32), and 200 steps with R1, DiffAugment + ADA and an EMA generator stay finite."""
    overrides = ("model/augment=diffaugment", "model.augment.ada=true", "model/loss=hinge",
                 "model.loss.r1_gamma=1.0", "model.loss.r1_every=4", "model.ema_decay=0.99")
    stats = {}
    for precision in ("32-true", "bf16-mixed"):
        L.seed_everything(0)
        module = build_module(*overrides)
        L.seed_everything(1)
        fit(module, tmp_path, batches=1, precision=precision, max_steps=2)
        stats[precision] = {k: float(v) for k, v in module.step_stats.items()}
    for name, value in stats["32-true"].items():
        assert stats["bf16-mixed"][name] == pytest.approx(value, abs=0.02), name

    L.seed_everything(2)
    module = build_module(*overrides, "model.generator.ngf=4", "model.discriminator.ndf=4")
    images = torch.randint(0, 256, (4 * 20, 3, 64, 64), dtype=torch.uint8)
    trainer = L.Trainer(accelerator="cpu", max_steps=400, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, precision="bf16-mixed",
                        default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(images, batch_size=4))
    assert module.g_steps == 200
    assert all(torch.isfinite(v).all() for v in module.step_stats.values())
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert torch.isfinite(module.sample(n=4)).all()


def test_bf16_g_step_sees_the_d_its_d_step_just_updated(tmp_path):
    """Under bf16-mixed Lightning runs the whole training step in one autocast region. torch.autocast's weight cache
    would keep the bf16 copies cast before an optimizer step and hand them to the next D step and to the G step
    (stale D); Lightning turns that cache off (cache_enabled=False). Every D forward must use D's weights as they
    are at that moment: this fails if a precision plugin or a torch upgrade brings the cache back."""
    L.seed_everything(0)
    module = build_module("model/loss=hinge", "model.n_critic=2", "model.generator.ngf=4",
                          "model.discriminator.ndf=4")
    first = next(m for m in module.discriminator.modules() if isinstance(m, torch.nn.Conv2d))
    mismatches = []

    def check(conv, inputs, output):
        if torch.is_autocast_enabled("cpu"):
            expected = conv._conv_forward(inputs[0].to(torch.bfloat16), conv.weight.to(torch.bfloat16),
                                          None if conv.bias is None else conv.bias.to(torch.bfloat16))
            mismatches.append(float((output.float() - expected.float()).abs().max()))

    first.register_forward_hook(check)
    fit(module, tmp_path, batches=1, precision="bf16-mixed", max_steps=3)
    assert len(mismatches) == 5  # two D steps (real + fake each), one G step
    assert max(mismatches) == 0.0, mismatches


def test_spectral_regularizer_trains_the_generator_under_bf16(tmp_path):
    module = build_module("experiment=pixel_64", "model.loss.spectrum_matching=1.0")
    assert module.loss.spectrum_matching == 1.0
    fit(module, tmp_path, batches=1)
    opt_g, _ = module.optimizers()
    real = torch.rand(8, 3, 64, 64) * 2 - 1
    critic = module.discriminator.eval()  # no augmentation, no power iteration: both losses see one D
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what trainer.precision=bf16-mixed runs
        fake = module.generator(module.generator.sample_latents(8))
        with_term = module.loss.generator_loss(critic, fake, real)
        without = type(module.loss)().generator_loss(critic, fake, real)
    assert with_term.dtype == torch.float32 and torch.isfinite(with_term)
    assert with_term.item() > without.item()  # the term is positive for a generator that is not yet the paintings
    weights = snapshot(module.generator)
    opt_g.zero_grad()
    with_term.backward()
    opt_g.step()
    assert changed(weights, module.generator)


def test_lecam_anchors_are_saved_in_the_checkpoint_and_restored(tmp_path):
    module = build_module("model.loss.lecam=0.3")
    trainer = fit(module, tmp_path, batches=2)
    path = tmp_path / "lecam.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)["artgan"]["loss_state"]["lecam_anchors"]
    assert saved == {"real": pytest.approx(float(module.loss._anchors.real)),
                     "fake": pytest.approx(float(module.loss._anchors.fake))}
    resumed = build_module("model.loss.lecam=0.3")
    assert resumed.loss._anchors.real is None
    resumed.on_load_checkpoint(torch.load(path, weights_only=True))
    assert float(resumed.loss._anchors.real) == pytest.approx(saved["real"])
    assert float(resumed.loss._anchors.fake) == pytest.approx(saved["fake"])


def test_ema_batchnorm_refresh_leaves_the_training_random_stream_alone():
    """Saving a checkpoint refreshes the EMA generator's BatchNorm statistics; with noise injection those forward
    passes draw noise, and they must not from the global stream the checkpoint recorded (exact resume)."""
    from artgan.ema import GeneratorEMA
    from artgan.models.fastgan import FastGANGenerator, NoiseInjection

    generator = FastGANGenerator(64, latent_dim=16, ngf=8, noise=True)
    with torch.no_grad():
        for m in generator.modules():
            if isinstance(m, NoiseInjection):
                m.weight.fill_(0.5)
    ema = GeneratorEMA(generator, decay=0.99)
    torch.manual_seed(7)
    recorded = torch.get_rng_state()
    ema.refresh_batchnorm(step=1, num_batches=1, batch_size=4)
    assert torch.equal(torch.get_rng_state(), recorded)
    assert not torch.equal(ema.module.initial[1].running_var, torch.ones_like(ema.module.initial[1].running_var))
