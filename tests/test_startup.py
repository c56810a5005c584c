"""What a newcomer sees at start: the pip command of a missing extra, and a model summary that is right.

The console output of a real run (no advertisement, no warning a user cannot act on) is checked on the run of
tests/test_loggers.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import FAST_TRAIN, REPO
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.utilities.model_summary import ModelSummary

from artgan import loggers
from artgan.errors import ConfigError
from artgan.train import warn_trainable_in_eval_mode

# train.py as a user runs it, in an environment where the Optuna sweeper plugin is not installed.
WITHOUT_PLUGIN = """
import runpy, sys
sys.modules["hydra_plugins.hydra_optuna_sweeper"] = None  # what a plain `pip install -e .` leaves
sys.argv = ["train.py", "hparams_search=optuna", "trainer.max_epochs=1"]
runpy.run_path("train.py", run_name="__main__")
"""


def test_optuna_without_the_sweep_extra_names_the_pip_command(tmp_path):
    proc = subprocess.run([sys.executable, "-c", WITHOUT_PLUGIN], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    message = proc.stderr.strip()
    assert message.startswith("Error: hparams_search=optuna needs the Hydra plugin hydra-optuna-sweeper")
    assert "pip install -e '.[sweep]'" in message and "\n" not in message and "Could not find" not in message


def tiny_module(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return instantiate(compose("train", overrides=[*FAST_TRAIN, *overrides]).model)


def test_model_summary_counts_the_ema_generator_as_frozen():
    module = tiny_module("model.ema_decay=0.999")
    summary = ModelSummary(module, max_depth=1)
    trained = sum(p.numel() for p in [*module.generator.parameters(), *module.discriminator.parameters()])
    ema = sum(p.numel() for p in module.generator_ema.parameters())
    assert ema == sum(p.numel() for p in module.generator.parameters())
    assert summary.trainable_parameters == trained
    assert summary.total_parameters - summary.trainable_parameters == ema


def test_trainable_modules_in_eval_mode_are_named(caplog):
    module = tiny_module("model.ema_decay=0.999")
    warn_trainable_in_eval_mode(module)  # the EMA copy is frozen: nothing to say
    assert "eval mode" not in caplog.text
    module.discriminator.eval()
    warn_trainable_in_eval_mode(module)
    assert "trainable module(s) are in eval mode" in caplog.text and "discriminator" in caplog.text


def test_a_logger_without_its_extra_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(loggers, "importable", lambda module: False)
    for factory, extra in ((loggers.mlflow_logger, "mlflow"), (loggers.wandb_logger, "wandb")):
        with pytest.raises(ConfigError, match=rf"logger={extra} needs .* pip install -e '\.\[{extra}\]'"):
            factory(run_dir="outputs/train/x")
