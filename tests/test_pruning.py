"""Optuna pruning: a job finds its trial in the shared SQLite study, reports at equal image budgets, and stops
when it falls behind the median of the other trials. The sweep itself runs in tests/test_sweeps.py."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest

from artgan.callbacks.pruning import OptunaPruning

LR = "model.optimizer_g.lr"


@pytest.fixture
def study(tmp_path):
    """A study in SQLite with two finished trials that reported 0.1 and 0.2 after 200 images."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="artgan", storage=storage)
    for value in (0.1, 0.2):
        trial = study.ask()
        trial.suggest_float(LR, 1e-5, 1e-3, log=True)
        trial.report(value, 200)
        study.tell(trial, value)
    return study, storage


def reloaded(storage):
    """The study as another process sees it (the test's own Study object caches its running trials)."""
    return optuna.load_study(study_name="artgan", storage=storage)


def job(study, storage, run_dir="/runs/2"):
    """A running trial as the sweeper launches it, and the pruning callback of its job."""
    trial = study.ask()
    lr = trial.suggest_float(LR, 1e-5, 1e-3, log=True)
    overrides = ["hparams_search=optuna", "seed=0", f"{LR}={lr}"]  # what hydra.overrides.task holds
    callback = OptunaPruning("metrics/kid_effnet", storage, "artgan", overrides, run_dir,
                             optuna.pruners.MedianPruner(n_startup_trials=2))
    return trial, callback


def trainer_at(epoch: int, kid: float, evaluated: bool = True, max_epochs: int = 10):
    step = 10 * (epoch + 1)
    history = [{"epoch": epoch, "step": step if evaluated else step - 10, "metrics/kid_effnet": kid}]
    return SimpleNamespace(is_global_zero=True, current_epoch=epoch, global_step=step, should_stop=False,
                           max_epochs=max_epochs, max_steps=-1,
                           datamodule=SimpleNamespace(dataset_size=100), callback_metrics={},
                           callbacks=[SimpleNamespace(metric_history=history)],
                           strategy=SimpleNamespace(broadcast=lambda value, src: value))


def test_a_trial_behind_the_median_is_stopped(study):
    study, storage = study
    trial, callback = job(study, storage)
    trainer = trainer_at(0, kid=0.5)
    callback.on_train_epoch_end(trainer, None)
    assert not trainer.should_stop  # 100 images: no other trial reported there
    trainer = trainer_at(1, kid=0.5)
    callback.on_train_epoch_end(trainer, None)
    assert trainer.should_stop and callback.pruned_at == 200
    frozen = reloaded(storage).trials[trial.number]
    assert frozen.intermediate_values == {100: 0.5, 200: 0.5}
    assert frozen.user_attrs == {"run_dir": "/runs/2", "pruned_at_images": 200}


def test_the_last_epoch_reports_but_is_not_pruned(study):
    study, storage = study
    trial, callback = job(study, storage)
    trainer = trainer_at(1, kid=0.9, max_epochs=2)
    callback.on_train_epoch_end(trainer, None)
    assert not trainer.should_stop and callback.pruned_at is None
    assert reloaded(storage).trials[trial.number].intermediate_values == {200: 0.9}


def test_a_trial_ahead_goes_on_and_stale_values_are_not_reported(study):
    study, storage = study
    trial, callback = job(study, storage)
    trainer = trainer_at(1, kid=0.05)
    callback.on_train_epoch_end(trainer, None)
    assert not trainer.should_stop
    callback.on_train_epoch_end(trainer_at(2, kid=0.01, evaluated=False), None)  # no evaluation this epoch
    assert reloaded(storage).trials[trial.number].intermediate_values == {200: 0.05}


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_identical_parameters_are_told_apart_by_run_dir(study):
    study, storage = study
    first, callback_a = job(study, storage, run_dir="/runs/2")
    study.enqueue_trial(first.params)  # the sampler proposes the same parameters again, in parallel
    second = study.ask()
    assert second.suggest_float(LR, 1e-5, 1e-3, log=True) == first.params[LR]
    callback_b = OptunaPruning("metrics/kid_effnet", storage, "artgan", callback_a.overrides, "/runs/3")
    assert callback_a._trial().number == first.number
    assert callback_b._trial().number == second.number


def test_without_storage_pruning_is_off_with_one_warning():
    callback = OptunaPruning("metrics/kid_effnet", None, "artgan", [], "/runs/0")
    with pytest.warns(UserWarning, match="hydra.sweeper.storage is null"):
        callback.on_train_epoch_end(trainer_at(0, kid=0.5), None)
    callback.on_train_epoch_end(trainer_at(1, kid=0.5), None)  # no second warning
