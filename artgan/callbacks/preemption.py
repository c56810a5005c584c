"""SIGTERM (cluster preemption) and SIGINT (Ctrl+C) save checkpoints/last.ckpt at a batch boundary, then exit.

Built on Lightning 2.6's own SIGTERM handling: its handler sets ``trainer.received_sigterm`` (and, under DDP,
forwards the signal to the other local ranks and broadcasts rank 0's flag at the start of each batch); the
training loop then raises ``SIGTERMException`` between two batches (or after the epoch end), on every rank
at the same batch. This callback routes SIGINT through the same path (a second Ctrl+C stops at once), saves
``last.ckpt`` in ``on_exception`` (all ranks take part, so DDP does not hang) and ``stop_reasons`` turns the
exit into one paragraph and exit code 128 + signal number (143 for SIGTERM, 130 for SIGINT).

The checkpoint is resumable like any other: ``ckpt_path=<run>/checkpoints/last.ckpt`` or ``ckpt_path=auto``.
A mid-epoch one continues the epoch with the exact counters; only the shuffled order of that epoch's
remaining batches differs from an uninterrupted run (the data loader keeps no state).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from artgan import compat
from artgan.callbacks.checkpointing import LastCheckpoint
from artgan.errors import ArtGANError

log = logging.getLogger(__name__)


class TrainingInterrupted(ArtGANError):
    """Training stopped on SIGTERM / SIGINT; exit code 128 + the signal number."""

    def __init__(self, message: str, exit_code: int = 143):
        super().__init__(message)
        self.exit_code = exit_code


class PreemptionCheckpoint(Callback):
    def __init__(self, dirpath: str, filename: str = "last.ckpt"):
        self.path = Path(dirpath) / filename
        self.signal_name: str | None = None
        self.saved: tuple[str, int, int] | None = None  # (path, epoch, global step)
        self._previous_sigint = None
        self._trainer = None

    # ---- SIGINT joins Lightning's SIGTERM path
    def on_train_start(self, trainer, pl_module) -> None:
        self._trainer = trainer
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        if self.signal_name is not None:  # second Ctrl+C: give up on the graceful stop
            self._restore_sigint()
            raise KeyboardInterrupt
        self.signal_name = "SIGINT"
        log.warning("SIGINT: finishing the current batch, saving a checkpoint, then stopping "
                    "(press Ctrl+C again to stop at once, without saving)")
        connector = getattr(self._trainer, "_signal_connector", None)
        notify = getattr(connector, "_sigterm_notifier_fn", None)
        if callable(notify):
            notify(signum, frame)  # sets received_sigterm; forwards to DDP child processes
        elif connector is not None:
            connector.received_sigterm = True

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._restore_sigint()

    # ---- the save
    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore_sigint()
        if not isinstance(exception, SIGTERMException):
            return
        self.signal_name = self.signal_name or "SIGTERM"
        last = next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, LastCheckpoint)), None)
        if last is not None and compat.last_saved_step(last) == trainer.global_step and last.last_model_path:
            path = last.last_model_path  # the end-of-epoch save already covers this step
        elif last is not None:
            path = last.save_now(trainer)
        else:
            trainer.save_checkpoint(self.path)
            path = str(self.path)
        self.saved = (str(path), trainer.current_epoch, trainer.global_step)
        log.warning("%s: saved %s at epoch %d, global step %d", self.signal_name, path, trainer.current_epoch,
                    trainer.global_step)


@contextlib.contextmanager
def stop_reasons(trainer):
    """Around ``trainer.fit``: a SIGTERM/SIGINT stop becomes a one-paragraph TrainingInterrupted."""
    try:
        yield
    except SIGTERMException:
        cb = next((c for c in trainer.callbacks if isinstance(c, PreemptionCheckpoint)), None)
        name = (cb.signal_name if cb else None) or "SIGTERM"
        code = 128 + int(getattr(signal, name, signal.SIGTERM))
        if cb is not None and cb.saved is not None:
            path, epoch, step = cb.saved
            msg = (f"Training stopped by {name} at epoch {epoch}, global step {step}; the checkpoint {path} holds "
                   f"everything up to there. Resume with the same command plus ckpt_path={path} (or "
                   "ckpt_path=auto hydra.run.dir=<this run dir>).")
        else:
            msg = (f"Training stopped by {name} before a checkpoint could be saved (callbacks.preemption is off, "
                   "or training had not started). Resume from the run's last checkpoint, if any, with ckpt_path=...")
        raise TrainingInterrupted(msg, exit_code=code) from None
