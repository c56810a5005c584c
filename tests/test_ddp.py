"""Two CPU processes (gloo DDP) running train.py as a user would: one run dir, one set of outputs."""

from __future__ import annotations

import math
from pathlib import Path

from conftest import FAST_TRAIN, run_script

# FID/KID under DDP are covered by tests/test_callbacks.py and tests/test_metrics_fid.py; off here for speed.
TINY_CALLBACKS = ["callbacks.metrics=null", "callbacks.samples.num_images=16", "callbacks.samples.num_real_vs_fake=8"]
METRIC_TAGS = ("train/d_loss_epoch", "train/g_loss_epoch")


def read_scalars(run_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_two_process_cpu_ddp_run_writes_one_run(tmp_path):
    run_dir = tmp_path / "run"
    # The README command (model=dcgan128 trainer.accelerator=cpu trainer.devices=2 trainer.max_epochs=1
    # trainer.limit_train_batches=2) with tiny widths; run from tmp_path so a stray output dir would show.
    proc = run_script("train.py", "model=dcgan128", *FAST_TRAIN, "trainer.devices=2", "trainer.limit_train_batches=2",
                      "data.num_images=64", *TINY_CALLBACKS, f"hydra.run.dir={run_dir}", cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout + proc.stderr
    assert "Starting with 2 processes" in out and "distributed_backend=gloo" in out

    # Exactly one run dir: rank 1 was re-launched into rank 0's directory, nothing else was created.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert (run_dir / "train_ddp_process_1.log").is_file()
    # One set of checkpoints, samples and TensorBoard events (rank 0 writes; no "-v1" duplicates).
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["last.ckpt"], ckpts
    samples = sorted(p.name for p in (run_dir / "samples").iterdir())
    assert samples.count("epoch_0000.png") == 1 and not any("-v" in name for name in samples), samples
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1, events

    scalars = read_scalars(run_dir)
    for tag in METRIC_TAGS:
        assert scalars.get(tag), f"{tag} not logged; tags: {sorted(scalars)}"
        assert all(math.isfinite(v) for v in scalars[tag]), (tag, scalars[tag])
    # images_seen counts both ranks: 2 batches x 16 images x 2 processes.
    assert scalars["train/images_seen"][-1] == 2 * 16 * 2
