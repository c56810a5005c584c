"""Checks on how a run is launched across processes, done before any heavy work.

The one combination that cannot work is a Hydra multirun (``-m``, ``hparams_search=optuna``) with a DDP
strategy that Lightning launches by *re-running the script*: for ranks > 0 Lightning starts
``python train.py <the same arguments> hydra.run.dir=...``. Inside a sweep those arguments contain ``-m``
and the sweep's lists, so every extra rank would start its own sweep (other jobs, other directories, a
rendezvous that never completes). ``check_launch`` stops such a run at once with the ways that do work:

* ``trainer.strategy=ddp_spawn_find_unused_parameters_true``: Lightning starts the ranks with
  ``torch.multiprocessing`` inside the job, so nothing is re-run (CPU and GPU);
* ``hydra/launcher=submitit_slurm`` with ``hydra.launcher.tasks_per_node`` = ``trainer.devices``: SLURM
  starts one task per device and Lightning's ``SLURMEnvironment`` joins them, so nothing is re-run either;
* dropping ``-m`` and running the settings one job at a time.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from artgan.errors import ConfigError

# Strategies whose ranks Lightning starts in-process (torch.multiprocessing), never by re-running the script.
IN_PROCESS_LAUNCH = ("spawn", "fork", "notebook")
SINGLE_PROCESS = ("auto", "single_device", "dp", None)
WORKING_STRATEGY = "ddp_spawn_find_unused_parameters_true"
WORKING_DDP = "ddp_find_unused_parameters_true"


def requested_devices(devices: Any) -> int | None:
    """Number of devices ``trainer.devices`` asks for; None for 'auto' / -1 (all the machine has)."""
    if devices is None or devices == "auto" or devices == -1 or str(devices).strip() in ("-1", "auto"):
        return None
    indices = device_indices(devices)
    if indices is not None:
        return len(indices)
    if isinstance(devices, int) and not isinstance(devices, bool):
        return int(devices)
    try:
        return int(str(devices).strip())
    except ValueError:
        raise ConfigError(f"trainer.devices={devices!r} is not a number of devices, a list of indices such as "
                          "[0,1], -1 or 'auto'.") from None


def device_indices(devices: Any) -> list[int] | None:
    """Explicit device indices: a list, or a string with a comma such as '0,1' (Lightning's convention)."""
    try:
        if isinstance(devices, (list, tuple)) or (hasattr(devices, "__iter__") and not isinstance(devices, str)):
            return [int(d) for d in devices]
        if isinstance(devices, str) and "," in devices:
            return [int(d) for d in devices.split(",") if d.strip()]
    except (TypeError, ValueError):
        raise ConfigError(f"trainer.devices={devices!r} is not a list of device indices such as [0,1].") from None
    return None


def show_devices(devices: Any) -> str:
    return str(list(devices)) if device_indices(devices) is not None and not isinstance(devices, str) else str(devices)


def num_processes(trainer_cfg: DictConfig) -> int:
    """Processes per node the Trainer will start, or 2 when it can't tell but it is "all" (more than one)."""
    requested = requested_devices(trainer_cfg.get("devices", 1))
    if requested is None:
        return 2 if str(trainer_cfg.get("devices")).strip() == "-1" else 1
    return max(requested, 1)


def world_size(trainer_cfg: DictConfig) -> int:
    return num_processes(trainer_cfg) * int(trainer_cfg.get("num_nodes", 1) or 1)


def resolve_strategy(trainer_cfg: DictConfig) -> str:
    """G and D share one module and each backward reaches only one of them, so plain DDP would fail on
    'unused parameters'. With several processes, "auto" becomes DDP that tolerates them."""
    strategy = trainer_cfg.get("strategy", "auto")
    if strategy == "auto" and world_size(trainer_cfg) > 1:
        return WORKING_DDP
    return strategy


def strategy_name(strategy) -> str | None:
    """A strategy's registry name, or for a ``_target_`` config, its class name plus start method."""
    if strategy is None or isinstance(strategy, str):
        return strategy
    if isinstance(strategy, (dict, DictConfig)):
        target = str(strategy.get("_target_", "")).rsplit(".", 1)[-1].lower()
        return f"{target}_{strategy.get('start_method', 'popen')}"
    return type(strategy).__name__.lower()


def relaunches_script(strategy, trainer_cfg: DictConfig) -> bool:
    """True when Lightning would start ranks > 0 by re-running ``sys.argv`` (its subprocess launcher)."""
    if world_size(trainer_cfg) <= 1:
        return False
    name = strategy_name(strategy)
    if name in SINGLE_PROCESS:
        return name == "auto"  # train.py turns auto into subprocess DDP for several devices
    return not any(word in name for word in IN_PROCESS_LAUNCH)


def processes_created_externally() -> bool:
    """SLURM (srun / submitit), torchrun or LSF started one process per rank already."""
    from lightning.fabric.plugins.environments import (
        LSFEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    return any(env.detect() for env in (SLURMEnvironment, TorchElasticEnvironment, LSFEnvironment))


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False
    return HydraConfig.get().mode == RunMode.MULTIRUN


def check_launch(cfg: DictConfig) -> None:
    """Raise a ConfigError naming the fix when this run is a multirun job whose DDP would re-run the script."""
    trainer_cfg = cfg.get("trainer")
    if trainer_cfg is None or not is_multirun():
        return
    strategy = trainer_cfg.get("strategy", "auto")
    if not relaunches_script(strategy, trainer_cfg) or processes_created_externally():
        return
    devices = num_processes(trainer_cfg)
    raise ConfigError(
        f"A multirun (-m or hparams_search) can't use trainer.strategy={strategy_name(strategy)} with "
        f"trainer.devices={trainer_cfg.get('devices')} trainer.num_nodes={trainer_cfg.get('num_nodes', 1)}: "
        "Lightning starts the extra DDP processes by re-running this command with hydra.run.dir, which inside "
        "a sweep would start the whole sweep again in every process. Add "
        f"trainer.strategy={WORKING_STRATEGY} (ranks are started inside each job; works on CPU and GPU), "
        f"or send the jobs to SLURM with hydra/launcher=submitit_slurm hydra.launcher.tasks_per_node={devices} "
        f"hydra.launcher.gpus_per_node={devices}, or drop -m and run one setting at a time."
    )
