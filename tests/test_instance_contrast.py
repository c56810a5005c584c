"""Fake-instance discrimination (model/instance_contrast=fake): the contrastive loss, the features D offers for it,
and the module that trains D and G on it."""

import lightning as L
import pytest
import torch
from conftest import FAST_TRAIN, REPO, run_script
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from test_gan_module import RecordingLogger, changed, fit, snapshot
from torch.utils.data import DataLoader

from artgan.instance_contrast import FakeInstanceContrast
from artgan.models.dcgan import DCGANDiscriminator
from artgan.models.ensemble import EnsembleDiscriminator
from artgan.models.projected import ProjectedDiscriminator

IC = "model/instance_contrast=fake"


def build_module(*overrides):
    """best_64 (FastGAN G, pixel + projected ensemble D), narrow, with fake-instance discrimination."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=best_64", IC, "model.instance_contrast.queue_size=64",
                                          "model.discriminator.members.pixel.ndf=8", *overrides])
    return instantiate(cfg.model)


def unit(*shape):
    return torch.nn.functional.normalize(torch.randn(*shape), dim=-1)


def test_loss_is_low_when_each_image_matches_its_own_view_and_high_when_it_matches_the_queue():
    contrast = FakeInstanceContrast(queue_size=8, embed_dim=128)  # random unit vectors: nearly orthogonal
    keys = unit(8, 128)
    own = float(contrast.loss(keys, keys))
    contrast.enqueue(keys)  # the same embeddings now also sit among the negatives
    confused = float(contrast.loss(keys, keys))
    assert own < 0.1 and confused > own + 0.5  # one negative as close as the positive: about log 2 more
    assert float(contrast.loss(keys, unit(8, 128))) > own + 3  # a stranger for a positive


def test_queue_keeps_the_latest_keys_and_wraps_around():
    contrast = FakeInstanceContrast(queue_size=10, embed_dim=4)
    batches = [unit(4, 4) for _ in range(3)]
    for keys in batches:
        contrast.enqueue(keys)
    assert int(contrast.queue_ptr) == 2
    assert torch.equal(contrast.queue[4:8], batches[1])
    assert torch.equal(contrast.queue[8:10], batches[2][:2]) and torch.equal(contrast.queue[:2], batches[2][2:])


@pytest.mark.parametrize("setting, value", [("weight", 0), ("temperature", -1.0), ("latent_noise", "a"),
                                            ("queue_size", 0), ("embed_dim", 2.5)])
def test_bad_settings_name_the_key(setting, value):
    with pytest.raises(ValueError, match=f"model.instance_contrast.{setting}"):
        FakeInstanceContrast(**{setting: value})


@pytest.mark.parametrize("kwargs", [{}, {"patch_logits": 16}, {"minibatch_std": 4}])
def test_dcgan_d_judges_and_gives_features_in_one_pass_as_in_two(kwargs):
    torch.manual_seed(0)
    d = DCGANDiscriminator(64, ndf=8, norm="none", spectral_norm=True, **kwargs).eval()
    x = torch.randn(4, 3, 64, 64)
    logits, features = d.judge_with_features(x)
    assert torch.allclose(logits, d(x)) and torch.allclose(features, d.instance_features(x))
    assert features.shape == (4, 64 * 16)  # the 4 x 4 map of the last block, before minibatch std
    assert DCGANDiscriminator(64, ndf=8, pack=2).judge_with_features(x)[1] is None


def test_ensemble_features_come_from_its_dcgan_member():
    torch.manual_seed(0)
    ensemble = EnsembleDiscriminator(64, {"pixel": DCGANDiscriminator(64, ndf=8, norm="none"),
                                          "features": ProjectedDiscriminator(64, stages=1, max_channels=16)}).eval()
    x = torch.randn(2, 3, 64, 64)
    logits, features = ensemble.judge_with_features(x)
    assert torch.allclose(logits, ensemble(x), atol=1e-6)
    assert torch.allclose(features, ensemble.members["pixel"].instance_features(x))
    assert ProjectedDiscriminator(64, stages=1, max_channels=16).judge_with_features(x)[1] is None


def test_training_updates_head_and_queue_logs_the_loss_and_checkpoints_them(tmp_path):
    module = build_module()
    queue = module.instance_contrast.queue.clone()
    head = snapshot(module.instance_contrast.head)
    logger = RecordingLogger()
    images = torch.randint(0, 256, (32, 3, 64, 64), dtype=torch.uint8)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=logger, log_every_n_steps=1,
                        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(images, batch_size=16))
    assert changed(head, module.instance_contrast.head)  # trained with D's optimizer
    assert int(module.instance_contrast.queue_ptr) == 32 and not torch.equal(module.instance_contrast.queue, queue)
    assert torch.equal(module.instance_contrast.queue[32:], queue[32:])  # the rest still holds the starting keys
    steps = [m["train/d_instance_contrast_step"] for _, m in logger.rows if "train/d_instance_contrast_step" in m]
    assert len(steps) == 2 and all(0 < v < 10 for v in steps)  # InfoNCE over 1 + 64 candidates: below log 65 + 6
    trainer.save_checkpoint(tmp_path / "x.ckpt")
    state = torch.load(tmp_path / "x.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(state["instance_contrast.queue"], module.instance_contrast.queue)
    assert any(k.startswith("instance_contrast.head.") for k in state)


def test_generator_step_carries_the_contrast_to_g(tmp_path):
    """With the adversarial loss out of the way (weight on D's logits zero), G still learns from the contrast."""
    module = build_module()
    fit(module, tmp_path, batches=1)
    module.loss.g_term = lambda fake_logits, real_logits: 0.0 * fake_logits.sum()
    module.loss.spectrum_matching = 0.0
    latents = module.generator.sample_latents(8)
    keys = module._instance_keys(latents)
    fake = module.generator(latents)
    g_loss, features = module._judge_keeping_features(
        fake, lambda: module.loss.generator_loss(module._d_forward, fake, fake.detach(), latents))
    total = g_loss + module.instance_contrast.loss(module.instance_contrast.embed(features), keys)
    total.backward()
    grads = [p.grad for p in module.generator.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_a_discriminator_without_features_is_one_paragraph_and_exit_2(tmp_path):
    fast = [o for o in FAST_TRAIN if "ndf" not in o]  # the projected D has no ndf
    proc = run_script("train.py", *fast, "model=fastgan64", IC, f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    message = proc.stderr.strip().split("\n\n")[-1]
    assert "model/instance_contrast" in message and "ProjectedDiscriminator" in message
    assert "Traceback" not in proc.stderr


def test_resuming_without_the_contrast_it_was_trained_with_is_one_paragraph_and_exit_2(tmp_path):
    run_dir = tmp_path / "run"
    fast = [o for o in FAST_TRAIN if "ndf" not in o] + ["experiment=best_64", "model.discriminator.members.pixel.ndf=8",
                                                         "callbacks.metrics=null", f"hydra.run.dir={run_dir}"]
    assert run_script("train.py", *fast, IC).returncode == 0
    last = run_dir / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    proc = run_script("train.py", *fast, "trainer.max_epochs=2", "ckpt_path=auto")
    assert proc.returncode == 2, proc.stderr[-3000:]
    message = proc.stderr.strip().split("\n\n")[-1]
    assert "add model/instance_contrast=fake" in message and "Traceback" not in proc.stderr
    assert last.read_bytes() == before  # the checkpoint is left as it was
