"""Images and files to every logger of a run, each in the form that logger shows best.

Scalars and hyperparameters reach every Lightning logger through ``self.log`` and ``log_hyperparams``; images
and files have no common Lightning API, so the callbacks that make them (samples, plots, and any panel of
your own) call these two functions instead of talking to one logger type:

=============  ==========================================  ===================================================
logger         ``log_image(trainer, tag, image, step)``     ``log_file(trainer, path, folder)``
=============  ==========================================  ===================================================
TensorBoard    Images tab (``add_image``) at ``step``       nothing: the file is in the run dir, the curves are
                                                            already scalars
MLflow         ``log_image(key=tag, step=step)``: the run's  an artifact under ``folder`` (``log_artifact``)
               image grid with a step slider
W&B            a ``wandb.Image`` under ``tag``              a ``wandb.Image`` (PNG/JPEG) or ``wandb.Video``
                                                            (GIF) under ``folder/<name>``
CSV            nothing: the PNG is on disk beside           nothing
               ``csv/metrics.csv`` (a CSV holds numbers)
=============  ==========================================  ===================================================

Call them on global rank 0 only (the callbacks already do). A logger that fails to take an image logs one
warning and the run goes on: media are a convenience, never a reason to lose a training run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from PIL import Image

log = logging.getLogger(__name__)

_warned: set[str] = set()


def as_uint8_hwc(image: Image.Image | np.ndarray | torch.Tensor) -> np.ndarray:
    """A PIL image, an (H, W, 3) uint8 array or a (3, H, W) float tensor in [0, 1] -> (H, W, 3) uint8."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        image = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(image)


def log_image(trainer: L.Trainer, tag: str, image: Image.Image | np.ndarray | torch.Tensor, step: int) -> None:
    """Show ``image`` under ``tag`` at ``step`` in every logger of ``trainer`` that can show images."""
    array = None
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger):
            continue
        array = as_uint8_hwc(image) if array is None else array
        try:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(tag, array, global_step=step, dataformats="HWC")
            elif isinstance(logger, MLFlowLogger):
                logger.experiment.log_image(logger.run_id, array, key=tag, step=step)
            elif isinstance(logger, WandbLogger):
                logger.log_image(key=tag, images=[array], step=step)
        except Exception as e:  # noqa: BLE001 - any logger backend error: keep training
            _warn_once(logger, f"could not log the image {tag!r}: {e}")


def log_file(trainer: L.Trainer, path: str | Path, folder: str = "") -> None:
    """Attach the file at ``path`` (a plot, the progress GIF) to every logger that keeps files."""
    path = Path(path)
    if not path.is_file():
        return
    for logger in trainer.loggers:
        try:
            if isinstance(logger, MLFlowLogger):
                logger.experiment.log_artifact(logger.run_id, str(path), folder or None)
            elif isinstance(logger, WandbLogger):
                import wandb

                key = f"{folder}/{path.stem}" if folder else path.stem
                media = wandb.Video(str(path), format="gif") if path.suffix.lower() == ".gif" else wandb.Image(str(path))
                logger.experiment.log({key: media})
        except Exception as e:  # noqa: BLE001 - any logger backend error: keep training
            _warn_once(logger, f"could not attach {path.name}: {e}")


def flush(trainer: L.Trainer) -> None:
    """Write buffered TensorBoard events now (a sample grid is visible while the next epoch runs)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.flush()


def _warn_once(logger, message: str) -> None:
    name = type(logger).__name__
    if name not in _warned:
        _warned.add(name)
        log.warning("%s %s (further media errors of this logger are not shown).", name, message)
