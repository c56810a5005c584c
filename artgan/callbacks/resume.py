"""TensorBoard curves that continue across a resume with no duplicate and no missing step.

Lightning logs each batch at ``step = fit_loop.epoch_loop._batches_that_stepped``, which is in the checkpoint,
so a resumed run logs the next step after the checkpoint's. A run killed after its last checkpoint may still
have written events past it; on resume this callback writes TensorBoard's purge marker (a ``SessionLog.START``
event at the first new step, what ``SummaryWriter(purge_step=...)`` writes), and TensorBoard drops the older
events at or after that step. Epoch means are logged after the end-of-epoch checkpoint, so the writer is also
flushed at each epoch start (the checkpoint callbacks flush after each save).
"""

from __future__ import annotations

import logging

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from artgan import compat
from artgan.callbacks.checkpointing import flush_loggers

log = logging.getLogger(__name__)


class TensorBoardResume(Callback):
    def __init__(self) -> None:
        self._pending = False

    def on_train_start(self, trainer, pl_module) -> None:
        self._pending = trainer.ckpt_path is not None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        flush_loggers(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self._pending:
            return
        self._pending = False
        # By now the epoch loop has finished restoring: this is the step the next values are logged at.
        step = compat.logger_step(trainer)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    purge_after(logger, step)


def purge_after(logger: TensorBoardLogger, step: int) -> None:
    """Tell TensorBoard to drop this run's earlier events with step >= ``step``."""
    file_writer = compat.tensorboard_file_writer(logger.experiment)
    if file_writer is None:
        return
    try:
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
    except ImportError:  # tensorboardX
        from tensorboardX.proto.event_pb2 import Event, SessionLog  # type: ignore[no-redef]
    file_writer.add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))
    file_writer.flush()
    log.info("Resumed: TensorBoard continues at step %d (older events from step %d on are dropped)", step, step)
