"""Hydra multirun grid, Optuna search, the multirun + DDP guard and the SLURM launcher config."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from conftest import FAST_TRAIN, REPO, run_script
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from artgan import distributed
from artgan.errors import ConfigError

QUICK = [*FAST_TRAIN, "trainer.limit_train_batches=2", "callbacks.metrics=null", "callbacks.samples.num_images=16",
         "callbacks.samples.num_real_vs_fake=8", "callbacks.plots=null"]


def test_multirun_two_jobs_share_one_sweep_dir(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_script("train.py", "-m", "model.optimizer_g.lr=1e-4,2e-4", *QUICK, f"hydra.sweep.dir={sweep}",
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for job, lr in zip(jobs, ("0.0001", "0.0002")):
        assert list((sweep / job / "tensorboard").glob("events.out.tfevents.*")), f"no TensorBoard log in job {job}"
        assert f"model.optimizer_g.lr={lr}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()
    # `tensorboard --logdir <sweep>` sees one run per job.
    assert len(list(sweep.glob("*/tensorboard/events.out.tfevents.*"))) == 2


def test_optuna_two_trials_minimize_returned_objective(tmp_path):
    sweep = tmp_path / "optuna"
    proc = run_script("train.py", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *QUICK,
                      # metrics/kid_effnet (the config's default) costs ~1 min of effnet features per trial on a shared CPU.
                      "optimized_metric=train/g_loss_epoch", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and math.isfinite(results["best_value"])
    assert set(results["best_params"]) == {"model.optimizer_g.lr", "model.optimizer_d.lr", "adam_beta1",
                                           "model.n_critic", "model.latent_dim"}
    # The sampled beta1 reached both optimizers.
    config = OmegaConf.load(sweep / "0" / ".hydra" / "config.yaml")
    assert config.model.optimizer_g.betas[0] == config.adam_beta1 == config.model.optimizer_d.betas[0]
    # The study is shared through <sweep>/optuna.db: each job found its trial and reported its objective there
    # (at 1 x the 64 images of the data set), which is what pruning compares (tests/test_pruning.py).
    import optuna

    trials = optuna.load_study(study_name="artgan", storage=f"sqlite:///{sweep / 'optuna.db'}").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for job, trial in zip(("0", "1"), trials):
        assert trial.user_attrs["run_dir"] == str(sweep / job)
        assert list(trial.intermediate_values) == [64] and math.isclose(trial.intermediate_values[64], trial.value)


def test_multirun_with_relaunching_ddp_stops_at_once(tmp_path):
    proc = run_script("train.py", "-m", "model.optimizer_g.lr=1e-4,2e-4", *QUICK, "trainer.devices=2",
                      f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert "trainer.strategy=ddp_spawn_find_unused_parameters_true" in proc.stderr
    assert "hydra/launcher=submitit_slurm" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("sweep/*/tensorboard")), "training started before the check"


def trainer_cfg(**kwargs):
    return OmegaConf.create({"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto", **kwargs})


@pytest.mark.parametrize("kwargs, relaunches", [
    ({}, False),
    ({"devices": 2}, True),
    ({"num_nodes": 2}, True),
    ({"devices": "0,1"}, True),
    ({"devices": 2, "strategy": "ddp_find_unused_parameters_true"}, True),
    ({"devices": 2, "strategy": "ddp_spawn_find_unused_parameters_true"}, False),
    ({"devices": 2, "strategy": "ddp_fork"}, False),
    ({"devices": 1, "strategy": "ddp"}, False),
    ({"devices": 2, "strategy": {"_target_": "lightning.pytorch.strategies.DDPStrategy"}}, True),
    ({"devices": 2, "strategy": {"_target_": "lightning.pytorch.strategies.DDPStrategy", "start_method": "spawn"}},
     False),
])
def test_relaunches_script(kwargs, relaunches):
    cfg = trainer_cfg(**kwargs)
    assert distributed.relaunches_script(cfg.strategy, cfg) is relaunches


def test_check_launch(monkeypatch):
    for var in ("SLURM_NTASKS", "SLURM_JOB_NAME", "LOCAL_RANK", "GROUP_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    ddp = OmegaConf.create({"trainer": trainer_cfg(devices=2)})
    distributed.check_launch(ddp)  # a single run: Lightning's re-launch is right there
    monkeypatch.setattr(distributed, "is_multirun", lambda: True)
    with pytest.raises(ConfigError, match="ddp_spawn_find_unused_parameters_true"):
        distributed.check_launch(ddp)
    distributed.check_launch(OmegaConf.create({"trainer": trainer_cfg()}))
    distributed.check_launch(OmegaConf.create(
        {"trainer": trainer_cfg(devices=2, strategy="ddp_spawn_find_unused_parameters_true")}))
    # Inside a SLURM job (submitit_slurm), SLURM started one task per device: nothing is re-run.
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    distributed.check_launch(ddp)


@pytest.mark.parametrize("overrides", [
    ["experiment=best_dcgan64", "model.generator.ngf=4", "model.discriminator.ndf=4"],  # spectral norm + ADA
    ["experiment=projected_64", "model.generator.ngf=4"],  # frozen backbone, not pickled
], ids=["sn_conv_d", "projected_d"])
def test_gan_module_pickles_for_ddp_spawn(overrides):
    """trainer.strategy=ddp_spawn* (the documented multirun + DDP set-up) pickles the LightningModule."""
    import pickle

    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    module = instantiate(cfg.model)
    copy = pickle.loads(pickle.dumps(module))
    assert copy.generator_ema is not None
    assert (copy.augment.ada is not None) == (module.augment.ada is not None)
    torch.manual_seed(0)
    z = copy.generator.sample_latents(2)
    assert torch.equal(copy.generator.eval()(z), module.generator.eval()(z))


def test_submitit_slurm_launcher_composes():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True, overrides=[
            "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
            "hydra.launcher.tasks_per_node=4", "hydra.launcher.nodes=2", "hydra.launcher.timeout_min=1440",
            "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == ("gpu", 4, 4, 2)
    assert launcher.tasks_per_node == cfg.trainer.devices and launcher.nodes == cfg.trainer.num_nodes
    assert cfg.trainer.strategy == "ddp_find_unused_parameters_true" and cfg.trainer.accelerator == "gpu"
