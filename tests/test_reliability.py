"""Reliable training (issue 8): kill -9 and exact resume, SIGTERM/SIGINT checkpoints, atomic saves, the
divergence guard, config errors (exit 2, one paragraph) and CPU determinism.

The subprocess runs use tiny models, 64 procedural images (4 batches per epoch) and only the reliability
callbacks (no samples/metrics/plots), with one torch thread each.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import FAST_TRAIN, REPO
from hydra import compose, initialize_config_dir

from artgan.callbacks.checkpointing import AtomicCheckpointIO, collect_rng_states, restore_rng_states
from artgan.callbacks.divergence import DivergenceGuard, TrainingDiverged
from artgan.cli import user_errors_exit
from artgan.config_validation import validate
from artgan.errors import ConfigError

BATCHES_PER_EPOCH = 4  # data.num_images=64 / data.batch_size=16
CALLBACKS = "callbacks=[model_checkpoint,last_checkpoint,preemption,divergence_guard,tensorboard_resume]"
BASE = [o for o in FAST_TRAIN if not o.startswith("trainer.max_epochs")] + [CALLBACKS]
ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}


# ------------------------------------------------------------------------------------------- helpers
def _popen(*overrides: str, prelude: str = "") -> subprocess.Popen:
    """train.py in a subprocess; `prelude` is Python run first (test-only monkeypatches)."""
    code = (f"import runpy, sys; sys.path.insert(0, {str(REPO)!r})\n{prelude}\n"
            f"sys.argv = ['train.py'] + sys.argv[1:]\n"
            f"runpy.run_path({str(REPO / 'train.py')!r}, run_name='__main__')")
    return subprocess.Popen([sys.executable, "-c", code, *BASE, *overrides], cwd=REPO,
                            env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(*overrides: str, prelude: str = "", timeout: int = 240) -> subprocess.CompletedProcess:
    proc = _popen(*overrides, prelude=prelude)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"training exited early ({proc.returncode}):\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for training")
        time.sleep(0.1)


def _scalars(run: Path, tag: str = "train/d_loss_step") -> list[tuple[int, float]]:
    """(step, value) of a tag over all event files of the run, with TensorBoard's purge semantics applied."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # RNG states are weights_only-safe too


def _one_paragraph(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


# ------------------------------------------------------------------------------- kill -9, exact resume
def test_kill9_then_resume_matches_an_uninterrupted_run(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    ref = _popen("trainer.max_epochs=3", "callbacks.model_checkpoint.every_n_epochs=2", "model.ema_decay=0.9",
                 f"hydra.run.dir={reference}")

    run = _popen("trainer.max_epochs=3", "callbacks.model_checkpoint.every_n_epochs=2", "model.ema_decay=0.9",
                 f"hydra.run.dir={killed}")
    _wait_for(lambda: (killed / "checkpoints" / "last.ckpt").is_file(), run)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    assert run.returncode == -signal.SIGKILL
    first = _load(killed / "checkpoints" / "last.ckpt")
    assert first["global_step"] % (2 * BATCHES_PER_EPOCH) == 0  # an end-of-epoch checkpoint

    resumed = _run("trainer.max_epochs=3", "callbacks.model_checkpoint.every_n_epochs=2", "model.ema_decay=0.9",
                   f"hydra.run.dir={killed}", "ckpt_path=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out, err = ref.communicate(timeout=240)
    assert ref.returncode == 0, err[-3000:]

    # Same counters, weights (G, D, EMA), optimizers and fixed noise as the uninterrupted run.
    a, b = _load(reference / "checkpoints" / "last.ckpt"), _load(killed / "checkpoints" / "last.ckpt")
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (2, 3 * 2 * BATCHES_PER_EPOCH)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert any(k.startswith("generator_ema.") for k in a["state_dict"])
    assert a["optimizer_states"][0]["state"][0]["exp_avg"].equal(b["optimizer_states"][0]["state"][0]["exp_avg"])
    assert (reference / "checkpoints" / "epoch_0001.ckpt").is_file()  # kept every 2 epochs

    # TensorBoard: every step exactly once, and the same values: determinism (two processes, one seed)
    # and exact resume (RNG states restored: same noise and data order after the kill).
    expected = list(range(3 * BATCHES_PER_EPOCH))
    ref_curve, resumed_curve = _scalars(reference), _scalars(killed)
    assert [s for s, _ in ref_curve] == expected
    assert [s for s, _ in resumed_curve] == expected
    assert [v for _, v in ref_curve] == pytest.approx([v for _, v in resumed_curve], rel=1e-6, abs=1e-6)
    ref_g, resumed_g = _scalars(reference, "train/g_loss_step"), _scalars(killed, "train/g_loss_step")
    assert [v for _, v in ref_g] == pytest.approx([v for _, v in resumed_g], rel=1e-6, abs=1e-6)


# --------------------------------------------------------------------------------- SIGTERM and SIGINT
def test_sigterm_saves_a_resumable_checkpoint_and_sigint_too(tmp_path):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = _popen("trainer.max_epochs=50", f"hydra.run.dir={run_dir}")
    _wait_for(last.is_file, proc)
    time.sleep(0.5)  # somewhere in epoch 1
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    line = _one_paragraph(err)
    assert "stopped by SIGTERM" in line and f"ckpt_path={last}" in line
    saved = _load(last)
    assert f"global step {saved['global_step']}" in line
    assert saved["global_step"] >= 2 * BATCHES_PER_EPOCH

    # Resume (possibly mid-epoch), then Ctrl+C after its first save: the counters go on, no step twice.
    mtime = last.stat().st_mtime_ns
    proc = _popen("trainer.max_epochs=50", f"hydra.run.dir={run_dir}", f"ckpt_path={last}")
    _wait_for(lambda: last.stat().st_mtime_ns != mtime, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    assert "stopped by SIGINT" in _one_paragraph(err)
    final = _load(last)
    assert final["global_step"] > saved["global_step"]
    steps = [s for s, _ in _scalars(run_dir)]
    assert steps == list(range(final["global_step"] // 2)), steps


# ------------------------------------------------------------------------------------ divergence guard
NAN_AT_BATCH_7 = """
import artgan.losses as L
_g_term, _calls = L.NonSaturatingLoss.g_term, [0]
def _nan_from_batch_7(self, fake, real):
    _calls[0] += 1
    loss = _g_term(self, fake, real)
    return loss * float("nan") if _calls[0] >= 7 else loss
L.NonSaturatingLoss.g_term = _nan_from_batch_7
"""


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    # Timed saves after every batch (every_n_minutes tiny): the last one before the NaN must survive intact.
    result = _run("trainer.max_epochs=3", f"hydra.run.dir={tmp_path}", "callbacks.model_checkpoint=null",
                  "callbacks.last_checkpoint.every_n_minutes=1e-6", "callbacks.last_checkpoint.check_every_n_steps=1",
                  prelude=NAN_AT_BATCH_7)
    assert result.returncode == 1, result.stderr[-3000:]
    line = _one_paragraph(result.stderr)
    assert "Training diverged at epoch 1, step 6" in line and "non-finite g_loss=nan" in line
    assert "last good checkpoint is kept" in line
    ckpt = _load(tmp_path / "checkpoints" / "last.ckpt")
    assert (ckpt["epoch"], ckpt["global_step"]) == (1, 6 * 2)  # after batch 6, the last finite one
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def _fake_trainer():
    return SimpleNamespace(
        log_every_n_steps=1, world_size=1, current_epoch=3, global_step=40, checkpoint_callbacks=[],
        fit_loop=SimpleNamespace(total_batch_idx=19, epoch_loop=SimpleNamespace(_batches_that_stepped=19)),
        state=SimpleNamespace(fn="fit"),
    )


def _module_after_a_step(loss="bce", **stats):
    from artgan.losses import NonSaturatingLoss, WassersteinGPLoss

    loss = {"bce": NonSaturatingLoss(), "wgan-gp": WassersteinGPLoss()}[loss]
    return SimpleNamespace(loss=loss, step_stats={k: torch.tensor(v) for k, v in stats.items()})


def test_divergence_guard_d_wins_needs_patience_consecutive_checks():
    guard, trainer = DivergenceGuard(patience=3), _fake_trainer()
    winning = _module_after_a_step(d_loss=0.01, g_loss=9.0, d_acc_real=1.0, d_acc_fake=1.0)
    fine = _module_after_a_step(d_loss=1.2, g_loss=1.0, d_acc_real=0.6, d_acc_fake=0.5)
    for module in (winning, winning, fine, winning, winning):  # a good check resets the count
        guard.on_train_batch_end(trainer, module, None, None, 0)
    with pytest.raises(TrainingDiverged, match=r"epoch 3, step 19 .*D wins completely.*3 consecutive checks"):
        guard.on_train_batch_end(trainer, winning, None, None, 0)
    # wgan-gp: accuracy says nothing about an unbounded critic, only non-finite losses count.
    wgan = DivergenceGuard(patience=1)
    wgan.on_train_batch_end(trainer, _module_after_a_step("wgan-gp", d_loss=0.01, g_loss=9.0, d_acc_real=1.0,
                                                          d_acc_fake=1.0), None, None, 0)


def test_divergence_guard_refuses_to_save_nan_weights_or_losses():
    guard, trainer = DivergenceGuard(), _fake_trainer()
    net = torch.nn.Linear(2, 2)
    net.step_stats = {"d_loss": torch.tensor(1.0), "g_loss": torch.tensor(1.0)}
    guard.on_save_checkpoint(trainer, net, {})  # finite: the save goes on
    net.step_stats["g_loss"] = torch.tensor(float("inf"))
    with pytest.raises(TrainingDiverged, match="non-finite weights or losses"):
        guard.on_save_checkpoint(trainer, net, {})
    net.step_stats["g_loss"] = torch.tensor(1.0)
    with torch.no_grad():
        net.weight[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="non-finite weights"):
        guard.on_save_checkpoint(trainer, net, {})


# -------------------------------------------------------------------------------------- atomic saves
def test_a_crash_during_a_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(1000)}, path)

    real_save = torch.save

    def half_then_crash(obj, f, *args, **kwargs):
        import io as _io

        buf = _io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # half the bytes reach the disk ...
        raise OSError("simulated crash during save")  # ... then the process "dies"

    monkeypatch.setattr(torch, "save", half_then_crash)
    with pytest.raises(OSError, match="simulated crash"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.setattr(torch, "save", real_save)

    loaded = torch.load(path, weights_only=True)
    assert loaded["global_step"] == 1 and loaded["w"].eq(1).all()
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no stray temporary file


def test_rng_states_round_trip():
    import random

    import numpy as np

    states = collect_rng_states()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    restore_rng_states(states)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


# ------------------------------------------------------------------------------------- config errors
def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=["trainer.accelerator=cpu", "data.num_images=64", *overrides])


BAD_SETTINGS = {
    "model.resolution=100": "model.resolution=100 is not supported by DCGANGenerator and DCGANDiscriminator: use one "
                            "of 64, 128, 256, 512",
    "model.resolution=1024": "model.resolution=1024 is not supported",
    "model.latent_dim=0": "model.latent_dim=0 must be a positive integer",
    "model.latent_dim=1000000000": "model.latent_dim=1000000000 must be a positive integer up to 65,536",
    "model.discriminator.resolution=128": "model.discriminator.resolution=128 differs from model.resolution=64",
    "model.generator.latent_dim=64": "model.generator.latent_dim=64 differs from model.latent_dim=128",
    "data.batch_size=128": "data.batch_size=128 is larger than the dataset: the procedural data set has 64 images",
    "trainer.devices=512": "trainer.devices=512 asks for 512 CPU cores",
    "model.loss._target_=artgan.losses.Nope": "model.loss._target_='artgan.losses.Nope' does not name an importable "
                                              "subclass of artgan.losses.AdversarialLoss. Pick one of the configs with "
                                              "model/loss=<name> (bce, hinge, lsgan, relativistic, wgan-gp)",
    "model.generator._target_=torch.nn.Linear": "model.generator._target_='torch.nn.Linear' does not name an "
                                                "importable subclass of artgan.models.base.Generator",
    "data.num_workers=-1": "data.num_workers=-1 must be 0",
    "model.n_critic=0": "model.n_critic=0 must be a positive integer",
    "model.optimizer_d.lr=0": "model.optimizer_d.lr=0 must be a positive learning rate",
    "ckpt_path=missing.ckpt": "ckpt_path='missing.ckpt' does not exist",
}


@pytest.mark.parametrize("override", list(BAD_SETTINGS))
def test_bad_setting_exits_2_with_one_paragraph(override, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    cfg = _compose(override)
    with pytest.raises(SystemExit) as exit_info:
        user_errors_exit(validate)(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().startswith("Error: " + BAD_SETTINGS[override]) and "\n" not in err.strip()
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # the full traceback on request
    with pytest.raises(ConfigError):
        user_errors_exit(validate)(cfg)


def test_a_part_rejecting_its_settings_is_one_paragraph_naming_the_part(capsys, monkeypatch):
    from artgan.train import build_model

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    cfg = _compose("model.discriminator.norm=layer")
    with pytest.raises(SystemExit) as exit_info:
        user_errors_exit(build_model)(cfg.model)
    assert exit_info.value.code == 2
    assert _one_paragraph(capsys.readouterr().err).startswith(
        "Error: model.discriminator: discriminator norm must be one of batch, instance, none; got 'layer'")


def test_gpu_request_without_gpu_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="trainer.accelerator=gpu but this machine has no usable CUDA GPU"):
        validate(_compose("trainer.accelerator=gpu"))


def test_default_config_is_valid_and_uses_atomic_checkpoints(tmp_path):
    from artgan.train import build_trainer

    cfg = _compose(f"paths.output_dir={tmp_path}")
    validate(cfg)
    trainer = build_trainer(cfg.trainer, [], [], enable_progress_bar=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_bad_setting_from_the_command_line(tmp_path):
    result = _run("model.resolution=96", f"hydra.run.dir={tmp_path}", timeout=120)
    assert result.returncode == 2
    assert "model.resolution=96 is not supported" in _one_paragraph(result.stderr)
    assert not (tmp_path / "checkpoints").exists()  # stopped before any heavy work

