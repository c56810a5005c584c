"""The model zoo's promises: a new part is one module plus one YAML, old checkpoints still work, and the one
place that touches Lightning's private API says so when Lightning changes."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import REPO, run_script
from PIL import Image

FIXTURES = REPO / "tests" / "fixtures"
V1_CHECKPOINT = FIXTURES / "checkpoint_v1_dcgan64.ckpt"
# The settings the format-1 fixture was trained with, in today's config tree (tests/fixtures/README.md).
V1_SETTINGS = ["model.generator.ngf=4", "model.discriminator.ndf=4", "model.latent_dim=32", "model.ema_decay=0.999",
               "model/augment=diffaugment", "model.augment.policy=[color,translation]", "model.augment.ada=true",
               "model/loss=hinge", "model.discriminator.spectral_norm=true", "model.discriminator.norm=none",
               "data.num_images=64", "data.batch_size=16", "trainer.accelerator=cpu", "logger=none",
               "callbacks.metrics=null", "callbacks.samples=null", "callbacks.plots=null", "seed=3"]


def test_format_1_checkpoint_paints_the_same_images(tmp_path):
    from artgan.generate import run
    from artgan.generate.checkpoint import load_generator
    from artgan.generate.sample import generate_images, latents

    loaded = load_generator(V1_CHECKPOINT)
    expected = torch.load(FIXTURES / "checkpoint_v1_dcgan64_samples.pt", weights_only=True)
    images = generate_images(loaded, latents(loaded, 4, expected["seed"]), batch_size=4)
    assert loaded.used_ema and torch.equal(images, expected["images"])
    assert loaded.meta["version"] == 2  # upgraded in memory; the file itself is never rewritten
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("generate", overrides=[f"ckpt_path={V1_CHECKPOINT}", "num_images=4", "device=cpu",
                                             f"output_dir={tmp_path}"])
    run(cfg)
    assert len(list(tmp_path.glob("0000*.png"))) == 4


@pytest.mark.slow
def test_format_1_checkpoint_resumes_and_a_mismatch_is_named(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_script("train.py", *V1_SETTINGS, "trainer.max_epochs=3", f"ckpt_path={V1_CHECKPOINT}",
                      f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 2 and resumed["global_step"] == 3 * 4 * 2  # 2 epochs before + 1 more, 4 batches each
    assert resumed["artgan"]["version"] == 2 and "augment.ada.probability" in resumed["state_dict"]

    # Other widths than the checkpoint's: one paragraph naming them, exit 2, nothing trained.
    proc = run_script("train.py", *[s for s in V1_SETTINGS if "ngf" not in s], "trainer.max_epochs=3",
                      f"ckpt_path={V1_CHECKPOINT}", f"hydra.run.dir={tmp_path / 'other'}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    message = proc.stderr.strip().split("\n\n")[-1]
    assert "model.generator.ngf=64 here but 4 in the checkpoint" in message and "Traceback" not in proc.stderr
    assert not (tmp_path / "other" / "checkpoints" / "last.ckpt").exists()


@pytest.mark.slow
def test_a_model_defined_outside_artgan_trains_and_generates(tmp_path):
    """docs/architecture.md's how-to: tests/zoo/toy_parts.py and its YAMLs, no edit anywhere else."""
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "zoo"), os.environ.get("PYTHONPATH", "")])}
    run_dir = tmp_path / "run"
    proc = run_script("train.py", "--config-dir", str(REPO / "tests" / "zoo" / "conf"), "model/generator=toy",
                      "model/discriminator=toy", "model/loss=soft_hinge", "model.latent_dim=16", "data.num_images=32",
                      "data.batch_size=8", "trainer.max_epochs=2", "trainer.accelerator=cpu", "logger=none",
                      "callbacks.metrics=null", f"hydra.run.dir={run_dir}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["artgan"]["generator"]["class"] == "toy_parts.ToyGenerator" and ckpt["global_step"] == 2 * 4 * 2
    assert (run_dir / "samples" / "epoch_0001.png").is_file()

    out = tmp_path / "art"
    proc = run_script("generate.py", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "num_images=3",
                      f"output_dir={out}", f"hydra.run.dir={tmp_path / 'gen'}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with Image.open(out / "00000.png") as im:
        assert im.size == (64, 64)


def test_lightning_private_api_is_where_compat_expects_it(monkeypatch):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from artgan import compat

    compat.check()
    monkeypatch.delattr(ModelCheckpoint, "_save_last_checkpoint")
    with pytest.raises(RuntimeError, match=r"lacks private API .*ModelCheckpoint\._save_last_checkpoint"):
        compat.check()
