"""Building the optional loggers (conf/logger/mlflow.yaml, wandb.yaml) so they work with no setup and no account.

* **MLflow** keeps one store for all runs of a project: ``mlruns/mlflow.db`` (SQLite; MLflow 3 refuses plain
  ``./mlruns`` folders unless told to) with the artifacts in ``mlruns/artifacts/``, both under the directory
  train.py was started from, so ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`` shows every run of
  every sweep side by side. ``MLFLOW_TRACKING_URI`` (a server) takes precedence.
* **W&B** runs offline (files under ``<run dir>/wandb/``, ``wandb sync`` uploads them later) unless the user
  asked for it: ``WANDB_MODE`` set, or an API key in ``WANDB_API_KEY`` or ``~/.netrc`` (``wandb login``).
* A logger whose package is missing stops at once with the pip command of its extra, not a traceback.

The run name is the run directory's last two parts (``train/2026-01-31_12-00-00``, or ``<sweep>/3`` in a
multirun) and the full run directory is a tag, so a run found in the UI leads back to its samples and checkpoints.
"""

from __future__ import annotations

import logging
import netrc
import os
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

from artgan import compat
from artgan.cli import importable
from artgan.errors import ConfigError


def require(package: str, feature: str) -> None:
    """Stop with the pip command when ``package`` is not installed (each optional logger's extra bears its name)."""
    if not importable(package):
        raise ConfigError(f"{feature} needs the '{package}' package, which is not installed here. Install it with "
                          f"pip install -e '.[{package}]' (or pip install {package}), or choose another logger, e.g. "
                          "logger=tensorboard or logger=csv.")


def run_name(run_dir: str | Path) -> str:
    """``outputs/train/2026-01-31_12-00-00`` -> ``train/2026-01-31_12-00-00``."""
    return "/".join(Path(run_dir).parts[-2:])


def mlflow_logger(run_dir: str, experiment_name: str = "artgan", tracking_uri: str | None = None,
                  artifact_location: str | None = None, tags: dict[str, Any] | None = None,
                  log_model: bool | str = False):
    """Lightning's MLFlowLogger on the project's local store (or ``MLFLOW_TRACKING_URI``)."""
    require("mlflow", "logger=mlflow")
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.tracking import MlflowClient

    for name in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables..." on first use
        logging.getLogger(name).setLevel(logging.WARNING)
    if os.environ.get("MLFLOW_TRACKING_URI"):  # a server: it stores the artifacts where it is configured to
        tracking_uri, artifact_location = os.environ["MLFLOW_TRACKING_URI"], None
    if tracking_uri and tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:  # create the experiment here: Lightning would warn that it was "not found"
        client = MlflowClient(tracking_uri)
        if client.get_experiment_by_name(experiment_name) is None:
            try:
                client.create_experiment(experiment_name, artifact_location=artifact_location)
            except Exception:  # noqa: BLE001 - a parallel sweep job created it first
                if client.get_experiment_by_name(experiment_name) is None:
                    raise
    return MLFlowLogger(experiment_name=experiment_name, run_name=run_name(run_dir), tracking_uri=tracking_uri,
                        tags={"artgan.run_dir": str(Path(run_dir).resolve()), **(tags or {})}, log_model=log_model,
                        artifact_location=artifact_location)


def wandb_has_credentials() -> bool:
    """An API key in the environment or from ``wandb login`` (~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_logger(run_dir: str, project: str = "artgan", offline: bool | None = None, **kwargs: Any):
    """Lightning's WandbLogger, offline unless ``WANDB_MODE`` or credentials say otherwise (``offline: null``)."""
    require("wandb", "logger=wandb")
    from lightning.pytorch.loggers import WandbLogger

    if offline is None:
        offline = not os.environ.get("WANDB_MODE") and not wandb_has_credentials()
    logger = WandbLogger(project=project, name=run_name(run_dir), save_dir=str(run_dir), offline=offline, **kwargs)
    compat.wandb_init_kwargs(logger).pop("anonymous", None)  # a no-op setting wandb warns about on every run
    return logger


def finish(loggers: list) -> None:
    """End this job's W&B run: the next job of an in-process multirun would otherwise log into it (Lightning's
    WandbLogger reuses a run that is still open)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None and any(
            type(lg).__name__ == "WandbLogger" for lg in loggers):
        wandb.finish()
