"""Evaluation metrics every N epochs, logged to the loggers and ``trainer.callback_metrics``.

The protocol (which metrics, how many samples, the real reference set) is the run's ``evaluator``
(conf/evaluator/, artgan/metrics/evaluator.py), the same object ``generate.py mode=evaluate`` and the benches
use, so a checkpoint evaluated later gives the numbers its run logged. Evaluations run after epochs
``N-1, 2N-1, ...`` (0-based, like checkpoints) and after the last one, through the EMA generator when there is
one, and are logged as ``metrics/<name>`` (e.g. ``metrics/fid_effnet``, usable as ``optimized_metric`` or a
ModelCheckpoint ``monitor``). At the end of training the final metrics are written with the run's
hyperparameters for TensorBoard's HPARAMS tab (``final/<metric>`` scalars), see ``log_hparams``, and, whatever the
loggers, to ``<run dir>/metrics.json`` (the last evaluation, the protocol it used and every evaluation before it:
what ``python -m artgan.report`` reads to rank a sweep's configurations).

Every hook here runs on every rank and calls the same collectives in the same order on each (the real-feature
cache's barrier, the metric syncs), so it never hangs under DDP. Before its first collective an evaluation
reads ``trainer.callback_metrics`` on every rank, which syncs the epoch-level means the module logged (rank 0's
progress bar may already have synced them on its own).
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from artgan import compat
from artgan.callbacks.samples import is_last_epoch, run_dir
from artgan.errors import ConfigError
from artgan.io import atomic_write
from artgan.metrics.evaluator import Evaluator

log = logging.getLogger(__name__)


class MetricsCallback(Callback):
    """Run ``evaluator`` every ``every_n_epochs`` epochs (0: only at the end with ``eval_on_train_end``);
    ``output_dir`` (the run dir; the trainer's ``default_root_dir`` when null) receives ``metrics.json``."""

    def __init__(self, evaluator: Evaluator, every_n_epochs: int = 5, eval_on_train_end: bool = True,
                 log_hparams: bool = True, output_dir: str | None = None):
        super().__init__()
        if every_n_epochs < 0:
            raise ConfigError(f"callbacks.metrics.every_n_epochs={every_n_epochs} must be >= 0 (0: only at the end).")
        self.evaluator = evaluator
        self.every_n_epochs = int(every_n_epochs)
        self.eval_on_train_end, self.log_hparams = bool(eval_on_train_end), bool(log_hparams)
        self.output_dir = output_dir
        # Per-evaluation results {"epoch", "step", "seconds", "metrics/...": value}; saved in checkpoints.
        self.metric_history: list[dict[str, float]] = []
        self._last_eval_step: int | None = None
        self._warned = False

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"metric_history": [dict(row) for row in self.metric_history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.metric_history = [dict(row) for row in state_dict.get("metric_history", [])]

    # ------------------------------------------------------------------------------------------ hooks
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        periodic = self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        if not (periodic or (self.eval_on_train_end and is_last_epoch(trainer))):
            return
        results = self.evaluate(trainer, pl_module)
        for name, value in results.items():
            # Identical on every rank after the metric sync: no further reduction.
            pl_module.log(name, value, on_step=False, on_epoch=True, sync_dist=False, prog_bar=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.eval_on_train_end and self._last_eval_step != trainer.global_step and trainer.global_step > 0:
            # Training stopped after the last epoch end we saw (e.g. mid-epoch); self.log is not allowed
            # here, so write to the loggers and callback_metrics directly.
            results = self.evaluate(trainer, pl_module)
            for lg in trainer.loggers:
                lg.log_metrics(results, step=compat.logger_step(trainer))
            trainer.callback_metrics.update({k: torch.tensor(v) for k, v in results.items()})
        if self.log_hparams:
            self._log_hparams(trainer, pl_module)
        if trainer.is_global_zero and self.metric_history:
            self.write_summary(trainer, pl_module)

    # ------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Evaluate on every rank (each generates its share); returns ``metrics/*``."""
        self._last_eval_step = trainer.global_step
        # Epoch-level values logged with torchmetrics objects (the module's train/*_epoch means) are synced
        # lazily, the first time anyone reads them, and the progress bar reads them on rank 0 only. Reading
        # them here on every rank first keeps the collectives of all ranks in the same order.
        _ = trainer.callback_metrics
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "real_images"):
            if not self._warned:
                self._warned = True
                rank_zero_warn("MetricsCallback needs a datamodule with real_images(n) (ArtDataModule); the "
                               "evaluation metrics are skipped.")
            return {}
        if not self.evaluator.prepare(datamodule, pl_module.device):
            return {}
        start = time.perf_counter()
        net = pl_module.sampling_generator()
        was_training = net.training
        net.eval()
        try:
            values = self.evaluator.evaluate(net, pl_module.device, trainer.global_rank, trainer.world_size)
        finally:
            net.train(was_training)
        results = {f"metrics/{k}": v for k, v in values.items()}
        seconds = time.perf_counter() - start
        self.metric_history = [r for r in self.metric_history if r["step"] < trainer.global_step]
        self.metric_history.append({"epoch": trainer.current_epoch, "step": trainer.global_step,
                                    "seconds": seconds, **results})
        summary = ", ".join(f"{k.split('/', 1)[1]}={v:.4g}" for k, v in results.items())
        rank_zero_info(f"Metrics (epoch {trainer.current_epoch}, {seconds:.1f}s): {summary}")
        return results

    def write_summary(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """``<run dir>/metrics.json``: the last evaluation (names without ``metrics/``, like generate.py mode=evaluate
        writes them; NaN as null), the protocol and the history of every evaluation."""
        history = [{k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in row.items()}
                   for row in self.metric_history]
        last = history[-1]
        summary = {
            "metrics": {k[len("metrics/"):]: v for k, v in last.items() if k.startswith("metrics/")},
            "epoch": last["epoch"], "step": last["step"], "images_seen": int(getattr(pl_module, "images_seen", 0)),
            "protocol": self.evaluator.describe(), "history": history,
        }
        path = run_dir(trainer, self.output_dir) / "metrics.json"
        try:
            atomic_write(path, lambda f: f.write(json.dumps(summary, indent=1, default=str).encode()))
        except OSError as e:  # a full disk must not turn a finished run into a crash
            log.warning("Could not write %s: %s", path, e)

    # ---------------------------------------------------------------------------------------- hparams
    def final_metrics(self, trainer: L.Trainer) -> dict[str, float]:
        """``final/<name>``: the last evaluation's metrics and the last epoch's training means."""
        out: dict[str, float] = {}
        for key, value in trainer.callback_metrics.items():
            if isinstance(value, torch.Tensor) and value.numel() != 1:
                continue
            value = float(value)
            if key.startswith("train/") and key.endswith("_epoch"):
                out[f"final/{key[len('train/'):-len('_epoch')]}"] = value
            elif key.startswith("metrics/"):
                out[f"final/{key[len('metrics/'):]}"] = value
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def _log_hparams(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        final = self.final_metrics(trainer)
        if not final:
            return
        for lg in trainer.loggers:
            if isinstance(lg, TensorBoardLogger):
                # train.py logged the flat config at the start (lg.hparams keeps it); re-log it with metrics.
                params = dict(lg.hparams) if lg.hparams else dict(pl_module.hparams)
                lg.log_hyperparams(params, metrics=final, step=compat.logger_step(trainer))
                lg.experiment.flush()
