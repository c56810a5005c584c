"""Checkpoints that survive crashes: atomic writes, last.ckpt every epoch and every M minutes, RNG states.

* ``AtomicCheckpointIO`` (a Trainer plugin, see conf/trainer/default.yaml) writes ``<path>.tmp`` in the same
  folder, fsyncs it, then ``os.replace``s it over ``<path>``: a crash, kill -9 or power loss during a save
  leaves the previous checkpoint intact. Lightning 2.6's own ``_atomic_save`` serializes to memory and writes
  through an fsspec transaction whose temporary file lives in the system temp dir (``tempfile.mkstemp``), so
  the final step is a cross-filesystem copy when /tmp is another filesystem (often tmpfs), and nothing is
  fsynced: not atomic on the machines that need it. Its ``load_checkpoint`` (Lightning's resume read) is
  ``artgan.checkpoints.safe_load``: ``weights_only=True`` whatever the environment says.
* ``LastCheckpoint`` keeps ``checkpoints/last.ckpt`` fresh: after every epoch and every ``every_n_minutes``.
  (Lightning's ``ModelCheckpoint(save_last=True, every_n_epochs=N)`` only writes last.ckpt when its periodic
  save triggers; its ``train_time_interval`` is ignored under manual optimization and cannot be combined
  with ``every_n_epochs``.) It also stores the global RNG states, which Lightning does not save, so a resumed
  run draws the same noise and data order as an uninterrupted one.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from artgan import checkpoints, compat
from artgan.io import atomic_torch_save

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ atomic writes
class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to ``<path>.tmp`` + flush + fsync, then ``os.replace`` onto ``<path>`` (atomic on POSIX and
    Windows), then fsync the folder so the rename itself is durable. Remote paths (s3://...) keep Lightning's
    fsspec writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not support storage_options, got {storage_options!r}")
        if "://" in str(path) and not str(path).startswith("file://"):
            return super().save_checkpoint(checkpoint, path)
        atomic_torch_save(checkpoint, Path(str(path).removeprefix("file://")))

    def load_checkpoint(self, path, map_location: Any = "cpu", weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's resume read: always ``artgan.checkpoints.safe_load`` (``weights_only=True`` whatever the
        caller or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says), so resuming runs no code from the file."""
        return checkpoints.safe_load(path, map_location=map_location)

    def remove_checkpoint(self, path) -> None:
        fs = get_filesystem(path)
        if fs.exists(path):
            fs.rm(path, recursive=True)


# -------------------------------------------------------------------------------------- RNG states
def collect_rng_states() -> dict[str, Any]:
    """Global torch (CPU + CUDA), numpy and Python RNG states as tensors and plain types, so checkpoints
    still load with ``torch.load(weights_only=True)``."""
    key, mt, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": str(key), "state": torch.from_numpy(np.asarray(mt, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "state": list(py_state), "gauss": py_gauss},
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = states["numpy"]
    np.random.set_state((n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


# ---------------------------------------------------------------------------------------- last.ckpt
class LastCheckpoint(ModelCheckpoint):
    """``<dirpath>/last.ckpt`` after every epoch, every ``every_n_minutes`` (checked every
    ``check_every_n_steps`` batches, so no clock or collective per step) and at the end of training.

    Its state also carries the RNG states: every checkpoint of the run (periodic ones included) stores them,
    and resuming restores them before the data loader draws its shuffle seed. After each save the loggers are
    flushed, so a kill -9 loses no logged step that the checkpoint covers.
    """

    def __init__(self, dirpath: str, every_n_minutes: float | None = None, check_every_n_steps: int = 10,
                 save_rng_states: bool = True):
        super().__init__(dirpath=dirpath, save_last=True, save_top_k=0, enable_version_counter=False,
                         save_on_train_epoch_end=True)
        if every_n_minutes is not None and every_n_minutes <= 0:
            raise ValueError(f"every_n_minutes must be positive or null, got {every_n_minutes}")
        self.every_n_minutes = every_n_minutes
        self.check_every_n_steps = max(1, int(check_every_n_steps))
        self.save_rng_states = save_rng_states
        self._last_save_time = time.monotonic()

    @property
    def state_key(self) -> str:
        return "LastCheckpoint"

    # ---- triggers
    def on_train_start(self, trainer, pl_module) -> None:
        self._last_save_time = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_minutes is None or (trainer.fit_loop.total_batch_idx + 1) % self.check_every_n_steps:
            return
        due = time.monotonic() - self._last_save_time >= 60.0 * self.every_n_minutes
        if trainer.world_size > 1:
            due = trainer.strategy.broadcast(due)  # rank 0's clock decides, so every rank saves together
        if due and not self._skip(trainer):
            self.save_now(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Always at the end of an epoch, even when a timed save just ran at the same step: an end-of-epoch
        # checkpoint resumes with exactly the data order of an uninterrupted run.
        if not self._skip(trainer):
            self.save_now(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        pass  # no validation in GAN training; epoch-end saves are done in on_train_epoch_end

    def save_now(self, trainer) -> str:
        """Write last.ckpt now (all ranks must call this together); returns its path."""
        compat.save_last_checkpoint(self, trainer)
        return self.last_model_path

    @staticmethod
    def _skip(trainer) -> bool:
        from lightning.pytorch.trainer.states import TrainerFn

        return bool(trainer.fast_dev_run) or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self._last_save_time = time.monotonic()
        flush_loggers(trainer)

    # ---- RNG states ride along in every checkpoint
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.save_rng_states:
            state["rng_states"] = collect_rng_states()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        rng = state_dict.pop("rng_states", None)
        super().load_state_dict(state_dict)
        if rng is not None and self.save_rng_states:
            # Called while the trainer restores the checkpoint: after the model was built (which drew from the
            # RNG) and before the training data loader draws its shuffle seed.
            restore_rng_states(rng)


def flush_loggers(trainer) -> None:
    """Push buffered TensorBoard events to disk (rank 0 only; cheap: at most once per save / epoch)."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        flush = getattr(experiment, "flush", None)
        if callable(flush):
            try:
                flush()
            except Exception as err:  # never let a logging hiccup kill a training run
                log.debug("Could not flush logger %s: %s", type(logger).__name__, err)
