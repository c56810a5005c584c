"""KL / JS of colour histograms and FID / KID every N epochs, logged to TensorBoard and callback_metrics.

Every evaluation (after epochs ``N-1, 2N-1, ...`` (0-based, like checkpoints) and after the last one):

* ``num_samples`` images are generated from latents drawn from a seeded generator (the same latents at
  every evaluation, so the curves show the model changing, not the noise), through the EMA generator
  when there is one. Under DDP each rank generates its share (``num_samples / world_size``, the first
  ranks one more) with its own seed, and the metric states are all-reduced by torchmetrics, so every
  rank gets the same numbers, equal to what one process would compute from all the samples.
* The reference set is the first ``num_real`` training images (``ArtDataModule.real_images``: cached,
  center-cropped, not flipped). Their colour histogram is counted once per run; their features are
  computed once per (dataset fingerprint, resolution, extractor, count) and cached in ``cache_dir``.
* Logged (``pl_module.log``, so they reach the loggers *and* ``trainer.callback_metrics``, e.g. for
  ``optimized_metric=metrics/fid_effnet`` or a ModelCheckpoint ``monitor``):
  ``metrics/kl_real_fake``, ``metrics/kl_fake_real``, ``metrics/js`` and, per extractor,
  ``metrics/fid_<name>``, ``metrics/kid_<name>``, ``metrics/kid_<name>_std``
  (``<name>``: ``effnet`` for ``effnet_lite0``, ``inception``).

An extractor that cannot be built here (``inception`` offline without a weights file) gets one warning
and is skipped; the run goes on. At the end of training the final metrics are written with the run's
hyperparameters for TensorBoard's HPARAMS tab (``final/<metric>`` scalars), see ``log_hparams``.

Every hook here runs on every rank and calls the same collectives in the same order on each (the
real-feature cache's barrier, the metric syncs), so it never hangs under DDP. Before its first collective
an evaluation reads ``trainer.callback_metrics`` on every rank, which syncs the epoch-level means the
module logged (rank 0's progress bar may already have synced them on its own).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from omegaconf import DictConfig, ListConfig, OmegaConf

from artgan.callbacks.samples import is_last_epoch
from artgan.errors import ArtGANError
from artgan.metrics import ColorKL, FeatureDistances, FeatureExtractorUnavailable, build_feature_extractor

log = logging.getLogger(__name__)

KL_DEFAULTS = {"enabled": True, "bins": 16, "smoothing": 1e-3}
FID_DEFAULTS = {
    "enabled": True,
    "extractors": ["effnet_lite0"],
    "effnet_weights_path": None,
    "inception_weights_path": None,
    "kid_subset_size": 1000,
    "kid_subsets": 100,
}


def _logger_step(trainer: L.Trainer) -> int:
    """The x value Lightning's own self.log uses: batches so far (global_step counts both optimizers)."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _merge(defaults: dict, given: Any, what: str) -> dict:
    given = dict(_plain(given) or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ArtGANError(f"Unknown key(s) {unknown} in callbacks.metrics.{what}; known keys: {sorted(defaults)}.")
    return {**defaults, **given}


class MetricsCallback(Callback):
    """Colour-histogram KL / JS and FID / KID of generated vs real images, every ``every_n_epochs`` epochs.

    Args:
        every_n_epochs: evaluate after every N-th epoch (0 disables the periodic evaluation).
        num_samples: generated images per evaluation, over all ranks.
        num_real: real reference images (the first ones of the dataset); null for all of them.
        batch_size: generation and feature-extraction batch size.
        seed: seed of the evaluation latents (rank r uses ``seed + r``).
        eval_on_train_end: evaluate after the last epoch even when it is not a multiple of N.
        log_hparams: at the end of training, log the hyperparameters with the final metrics to TensorBoard.
        cache_dir: where real-image features are cached (``${paths.cache_dir}``).
        kl: ``{enabled, bins, smoothing}`` of the colour histograms (see artgan/metrics/kl.py).
        fid: ``{enabled, extractors, effnet_weights_path, inception_weights_path, kid_subset_size, kid_subsets}``.
    """

    def __init__(self, every_n_epochs: int = 5, num_samples: int = 512, num_real: int | None = 2000,
                 batch_size: int = 64, seed: int = 0, eval_on_train_end: bool = True, log_hparams: bool = True,
                 cache_dir: str = ".cache/artgan", kl: dict | None = None, fid: dict | None = None):
        super().__init__()
        if every_n_epochs < 0 or num_samples < 2 or batch_size < 1:
            raise ArtGANError(
                f"Bad callbacks.metrics settings: every_n_epochs={every_n_epochs} (>= 0), num_samples={num_samples} "
                f"(>= 2), batch_size={batch_size} (>= 1)."
            )
        if num_real is not None and num_real < 2:
            raise ArtGANError(f"callbacks.metrics.num_real={num_real} must be >= 2 (or null for all images).")
        self.every_n_epochs, self.num_samples = int(every_n_epochs), int(num_samples)
        self.num_real = None if num_real is None else int(num_real)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.eval_on_train_end, self.log_hparams = bool(eval_on_train_end), bool(log_hparams)
        self.cache_dir = str(cache_dir)
        self.kl_cfg = _merge(KL_DEFAULTS, kl, "kl")
        self.fid_cfg = _merge(FID_DEFAULTS, fid, "fid")
        extractors = self.fid_cfg["extractors"]
        self.fid_cfg["extractors"] = [extractors] if isinstance(extractors, str) else list(extractors or [])
        # Per-evaluation results {"epoch", "step", "seconds", "metrics/...": value}; saved in checkpoints.
        self.metric_history: list[dict[str, float]] = []
        self._kl: ColorKL | None = None
        self._fids: list[FeatureDistances] | None = None
        self._last_eval_step: int | None = None
        self._warned: set[str] = set()

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
                lg.log_metrics(results, step=_logger_step(trainer))
            trainer.callback_metrics.update({k: torch.tensor(v) for k, v in results.items()})
        if self.log_hparams:
            self._log_hparams(trainer, pl_module)

    # ------------------------------------------------------------------------------------- evaluation
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    def _real_count(self, datamodule) -> int:
        size = getattr(datamodule, "dataset_size", None)
        size = int(size) if size is not None else int(datamodule.real_images().shape[0])
        return size if self.num_real is None else min(self.num_real, size)

    def _setup_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        """Build the metrics once (lazily, at the first evaluation). False when there is nothing to compute."""
        if self._fids is not None:
            return self._kl is not None or bool(self._fids)
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "real_images"):
            self._warn_once("datamodule", "MetricsCallback needs a datamodule with real_images(n) (ArtDataModule); "
                                          "KL / FID / KID are skipped.")
            self._fids = []
            return False
        device = pl_module.device
        n_real = self._real_count(datamodule)
        real = None
        if self.kl_cfg["enabled"]:
            real = datamodule.real_images(n_real)
            self._kl = ColorKL(bins=self.kl_cfg["bins"], smoothing=self.kl_cfg["smoothing"]).to(device)
            for chunk in real.split(self.batch_size * 4):
                self._kl.update(chunk, real=True)
        self._fids = []
        if self.fid_cfg["enabled"]:
            for name in self.fid_cfg["extractors"]:
                weights = self.fid_cfg["inception_weights_path"] if str(name).lower() == "inception" \
                    else self.fid_cfg["effnet_weights_path"]
                try:
                    extractor = build_feature_extractor(name, weights)
                except FeatureExtractorUnavailable as e:
                    self._warn_once(f"extractor:{name}", f"FID/KID with the '{name}' extractor are skipped: {e}")
                    continue
                fd = FeatureDistances(extractor, kid_subset_size=self.fid_cfg["kid_subset_size"],
                                      kid_subsets=self.fid_cfg["kid_subsets"], batch_size=self.batch_size,
                                      seed=self.seed).to(device)
                start = time.perf_counter()
                fd.prepare_real(
                    (lambda: real) if real is not None else (lambda: datamodule.real_images(n_real)),
                    cache_dir=self.cache_dir, fingerprint=datamodule.fingerprint,
                    resolution=int(getattr(datamodule, "resolution", real.shape[-1] if real is not None else 0)),
                    num_images=n_real,
                )
                rank_zero_info(f"Metrics: {fd.num_real} real {fd.name} features ready in "
                               f"{time.perf_counter() - start:.1f}s (cache dir {self.cache_dir})")
                self._fids.append(fd)
        return self._kl is not None or bool(self._fids)

    def _local_count(self, trainer: L.Trainer) -> int:
        world, rank = max(1, trainer.world_size), trainer.global_rank
        return max(1, self.num_samples // world + (1 if rank < self.num_samples % world else 0))

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Generate this rank's share, update, sync and compute. Call on every rank. Returns ``metrics/*``."""
        self._last_eval_step = trainer.global_step
        # Epoch-level values logged with torchmetrics objects (the module's train/*_epoch means) are synced
        # lazily, the first time anyone reads them, and the progress bar reads them on rank 0 only. Reading
        # them here on every rank first keeps the collectives of all ranks in the same order: without this,
        # rank 0's (progress bar) sync would meet the other ranks' metric sync below, and DDP would hang.
        _ = trainer.callback_metrics
        if not self._setup_metrics(trainer, pl_module):
            return {}
        start = time.perf_counter()
        metrics = ([self._kl] if self._kl is not None else []) + list(self._fids)
        for m in metrics:
            m.reset()  # fake side only; the real side stays
        gen = torch.Generator().manual_seed(self.seed + trainer.global_rank)
        remaining = self._local_count(trainer)
        while remaining > 0:
            n = min(self.batch_size, remaining)
            z = torch.randn(n, pl_module.latent_dim, 1, 1, generator=gen)
            images = pl_module.sample(z=z)
            if self._kl is not None:
                self._kl.update(images, real=False)
            for fd in self._fids:
                fd.update(images=images)
            remaining -= n
        results: dict[str, float] = {}
        if self._kl is not None:
            results.update(self._kl.compute())
        for fd in self._fids:
            results.update(fd.compute())
        results = {f"metrics/{k}": float(v) for k, v in results.items()}
        seconds = time.perf_counter() - start
        self.metric_history = [r for r in self.metric_history if r["step"] < trainer.global_step]
        self.metric_history.append({"epoch": trainer.current_epoch, "step": trainer.global_step,
                                    "seconds": seconds, **results})
        bad = sorted(k for k, v in results.items() if not math.isfinite(v))
        if bad:
            self._warn_once("nonfinite", f"Non-finite metric values {bad}; raise callbacks.metrics.num_samples.")
        summary = ", ".join(f"{k.split('/', 1)[1]}={v:.4g}" for k, v in results.items())
        rank_zero_info(f"Metrics (epoch {trainer.current_epoch}, {seconds:.1f}s): {summary}")
        return results

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
                lg.log_hyperparams(params, metrics=final, step=_logger_step(trainer))
                lg.experiment.flush()
