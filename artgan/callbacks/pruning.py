"""Optuna pruning at equal budget: trials report their objective after the same numbers of images and the ones
that fall behind stop early (``hparams_search=optuna``, conf/hparams_search/optuna.yaml).

How it reaches the study. hydra-optuna-sweeper (1.2, 1.3) asks the study for a trial, launches the job with the
trial's parameters as overrides and tells the study the value the job returns; it hands the job no trial object
and records any exception a job raises, ``optuna.TrialPruned`` included, as a failed trial that counts against
``max_failure_rate``. So:

* the study lives in a SQLite file that every job can open (``hydra.sweeper.storage``, by default
  ``<sweep dir>/optuna.db``; :class:`StorageFolder`, a Hydra callback, creates its folder before the sweeper
  opens it), which also lets jobs that run in parallel (``n_jobs``, a joblib or SLURM launcher) see each other;
* a job finds its trial as the running trial whose sampled parameters, written as the sweeper writes overrides
  (``name=value``), are all among the job's own overrides (:func:`find_trial`); two running trials with identical
  parameters are told apart by the run dir each job claims in a user attribute;
* at every evaluation :class:`OptunaPruning` reports the objective (``optimized_metric``) with ``step`` = images
  seen, counted as (epoch + 1) x the dataset size so that trials with other batch sizes report at the same steps,
  and asks the pruner (``MedianPruner`` by default: stop when the value is worse than the median of the other
  trials at that step). A pruned job stops training at once (``trainer.should_stop``), records
  ``pruned_at_images`` on its trial and returns its last value: the sweeper records the trial as complete with that
  value (worse than the trials that went on, so the sampler learns from it), and the search goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf

from artgan.callbacks.samples import is_last_epoch

log = logging.getLogger(__name__)

SQLITE = "sqlite:///"


class StorageFolder(HydraCallback):
    """Creates the folder of a ``sqlite:///`` study storage before the sweeper opens it (SQLite creates the file,
    not its folder, and the sweep dir does not exist yet when the sweeper starts)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        storage = OmegaConf.select(config, "hydra.sweeper.storage", default=None)
        if isinstance(storage, str) and storage.startswith(SQLITE):
            Path(storage[len(SQLITE):]).parent.mkdir(parents=True, exist_ok=True)


def find_trial(study, overrides: Sequence[str], claim: str):
    """The running trial of ``study`` launched with ``overrides`` (claimed for ``claim``, this job's run dir)."""
    import optuna

    given = set(overrides)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    matches = [t for t in running if t.params and {f"{k}={v}" for k, v in t.params.items()} <= given]
    for frozen in sorted(matches, key=lambda t: (t.user_attrs.get("run_dir", claim) != claim, t.number)):
        trial = optuna.trial.Trial(study, frozen._trial_id)
        if frozen.user_attrs.get("run_dir") in (None, claim):
            trial.set_user_attr("run_dir", claim)
            return trial
    return None


class OptunaPruning(Callback):
    """Report ``monitor`` to this job's Optuna trial after every evaluation; stop the run when the pruner says so.

    Args:
        monitor: the objective (``optimized_metric``), e.g. ``metrics/kid_effnet``.
        storage, study_name: the sweeper's study (``hydra.sweeper.storage`` / ``study_name``).
        overrides: this job's overrides (``hydra.overrides.task``), to find its trial.
        run_dir: this job's run dir, to claim its trial.
        pruner: an ``optuna.pruners.BasePruner`` (None: Optuna's MedianPruner defaults).
    """

    def __init__(self, monitor: str | None, storage: str | None, study_name: str | None,
                 overrides: Sequence[str] = (), run_dir: str | None = None, pruner: Any = None):
        super().__init__()
        self.monitor, self.storage, self.study_name = monitor, storage, study_name
        self.overrides, self.run_dir, self.pruner = list(overrides or []), str(run_dir or ""), pruner
        self.trial = None
        self.pruned_at: int | None = None
        self._off = False

    def _trial(self):
        """This job's trial, looked up once; None (with one warning) when the study is out of reach."""
        if self.trial is None and not self._off:
            import optuna

            why = None
            if not self.storage:
                why = ("hydra.sweeper.storage is null, so the study lives in the sweeper's memory where jobs cannot "
                       "report to it; set it to a database, e.g. sqlite:///optuna.db")
            elif not self.monitor:
                why = "optimized_metric is not set"
            else:
                study = optuna.load_study(study_name=self.study_name, storage=self.storage, pruner=self.pruner)
                self.trial = find_trial(study, self.overrides, self.run_dir)
                if self.trial is None:
                    why = f"no running trial of study {self.study_name!r} has this job's parameters"
            if why:
                self._off = True
                rank_zero_warn(f"Optuna pruning is off for this job: {why}.")
        return self.trial

    def _fresh_value(self, trainer: L.Trainer) -> float | None:
        """The monitored value if it was measured at this step (evaluation metrics come every N epochs only)."""
        if self.monitor.startswith("metrics/"):
            for cb in trainer.callbacks:
                history = getattr(cb, "metric_history", None)
                if history and history[-1].get("step") == trainer.global_step and self.monitor in history[-1]:
                    return float(history[-1][self.monitor])
            return None
        value = trainer.callback_metrics.get(self.monitor)
        return None if value is None else float(value)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        prune = False
        if trainer.is_global_zero and self.monitor and self._trial() is not None:
            value = self._fresh_value(trainer)
            if value is not None:
                size = getattr(trainer.datamodule, "dataset_size", None) if trainer.datamodule else None
                step = (trainer.current_epoch + 1) * int(size) if size else int(pl_module.images_seen)
                self.trial.report(value, step)
                if not is_last_epoch(trainer) and self.trial.should_prune():  # at the end there is nothing to save
                    prune, self.pruned_at = True, step
                    self.trial.set_user_attr("pruned_at_images", step)
                    log.info("Optuna trial %d pruned after %d images: %s=%.4g is behind the other trials at this "
                             "budget; the run stops here.", self.trial.number, step, self.monitor, value)
        if trainer.strategy.broadcast(prune, src=0):
            trainer.should_stop = True
