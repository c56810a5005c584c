"""Every use of Lightning's (and TensorBoard's) private API, in one place.

Lightning offers no public way to do these few things, so the rest of ArtGAN calls these functions instead of
reaching into private attributes itself. ``check()`` (run by tests/test_compat.py) fails with one message naming
each missing piece, so a Lightning upgrade that moves one is caught by a test that says what broke.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


def logger_step(trainer: L.Trainer) -> int:
    """The x value Lightning's ``self.log`` writes at: batches that stepped so far (``global_step`` counts the
    optimizer steps of both networks). Restored from checkpoints, so curves continue after a resume."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def logger_writes_this_step(trainer: L.Trainer) -> bool:
    """Whether Lightning writes logged step values after this batch (``log_every_n_steps``, or a stop that a
    callback requested in this batch). Values logged on other steps would be overwritten unseen."""
    return bool(trainer._logger_connector.should_update_logs) or bool(trainer.fast_dev_run)


def last_saved_step(callback: ModelCheckpoint) -> int:
    """The global step of the checkpoint callback's latest save."""
    return callback._last_global_step_saved


def save_last_checkpoint(callback: ModelCheckpoint, trainer: L.Trainer) -> None:
    """Write the callback's last.ckpt now (every rank must call this together)."""
    callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


def tensorboard_file_writer(writer: Any) -> Any | None:
    """The event-file writer behind a ``torch.utils.tensorboard.SummaryWriter`` (None for other writers)."""
    get_writer = getattr(writer, "_get_file_writer", None)
    return get_writer() if callable(get_writer) else None


def wandb_init_kwargs(logger: Any) -> dict:
    """The keyword arguments a ``WandbLogger`` will pass to ``wandb.init``. It always passes ``anonymous=None``,
    which wandb >= 0.19 answers with a deprecation warning on every run; artgan.loggers drops that key. An empty
    dict when Lightning renames it (the warning comes back; tests/test_loggers.py notices)."""
    return getattr(logger, "_wandb_init", {})


def check() -> None:
    """Raise one RuntimeError naming every private attribute that the installed versions lack."""
    from torch.utils.tensorboard import SummaryWriter

    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    checkpoint = ModelCheckpoint()
    needed = [  # (object, attribute, who uses it)
        (trainer.fit_loop.epoch_loop, "_batches_that_stepped", "logger_step"),
        (trainer, "_logger_connector", "logger_writes_this_step"),
        (getattr(trainer, "_logger_connector", None), "should_update_logs", "logger_writes_this_step"),
        (checkpoint, "_last_global_step_saved", "last_saved_step"),
        (checkpoint, "_save_last_checkpoint", "save_last_checkpoint"),
        (checkpoint, "_monitor_candidates", "save_last_checkpoint"),
        (checkpoint, "_save_checkpoint", "artgan.callbacks.checkpointing.LastCheckpoint overrides it"),
        (SummaryWriter, "_get_file_writer", "tensorboard_file_writer"),
    ]
    missing = [f"{type(obj).__name__ if not isinstance(obj, type) else obj.__name__}.{name} ({user})"
               for obj, name, user in needed if obj is None or not hasattr(obj, name)]
    if missing:
        raise RuntimeError(
            f"Lightning {L.__version__} lacks private API that ArtGAN relies on: {'; '.join(missing)}. Adapt "
            "artgan/compat.py to the new version, or install the versions pyproject.toml names."
        )
