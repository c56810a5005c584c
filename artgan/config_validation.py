"""Catch bad settings in a second, before any data is decoded or any network is built.

``validate(cfg)`` is the first thing ``artgan.train.train`` does. Each problem raises a ``ConfigError``: one
paragraph naming the key, the value and what is allowed; ``artgan.cli`` prints it and exits with code 2
(``HYDRA_FULL_ERROR=1`` shows the traceback). Only cheap checks live here: no torch work beyond asking how
many GPUs are visible, no image decoding (a folder is only listed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from artgan.distributed import device_indices, requested_devices, show_devices
from artgan.errors import ConfigError
from artgan.paths import absolute_path

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# A latent larger than this is a typo (1e9 would try to allocate terabytes); real models use 64 to 1024.
MAX_LATENT_DIM = 65_536


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first bad setting of a training config; return None when all is well."""
    model, data, trainer = cfg.get("model"), cfg.get("data"), cfg.get("trainer")
    if model is not None:
        _check_model(model)
    if data is not None:
        _check_data(data, model)
        if data.get("source") == "folder":
            from artgan.data.discovery import check_run_dir_outside

            check_run_dir_outside(data.get("root"), _run_dir(cfg))
    if trainer is not None:
        from artgan.precision import resolve_precision

        resolve_precision(trainer.get("precision", "auto"), trainer.get("accelerator", "auto"))
        world = _check_devices(trainer)
        if data is not None:
            _check_batch_size(data, world)
    _check_ckpt_path(cfg)
    check_known_keys(cfg, "")


def _run_dir(cfg: DictConfig) -> str | None:
    try:
        return cfg.paths.output_dir
    except Exception:  # noqa: BLE001 - ${hydra:...} outside a Hydra run (tests, notebooks)
        return None


# ---------------------------------------------------------------------------------------------- model
def _check_model(model: DictConfig) -> None:
    """The shared settings and how the parts fit together. Each part checks its own settings when it is built
    (a ValueError there becomes a one-paragraph error naming the part, see artgan.train.build_model)."""
    parts = {key: _part_class(model, key) for key in ("generator", "discriminator", "loss")}
    resolution = model.get("resolution")
    supported = sorted(set(parts["generator"].supported_resolutions)
                       & set(parts["discriminator"].supported_resolutions))
    if not _is_int(resolution) or resolution not in supported:
        raise ConfigError(
            f"model.resolution={resolution!r} is not supported by {parts['generator'].__name__} and "
            f"{parts['discriminator'].__name__}: use one of {', '.join(map(str, supported))} (e.g. model=dcgan128, or "
            "model.resolution=128)."
        )
    latent = model.get("latent_dim")
    if not _is_int(latent) or not 1 <= latent <= MAX_LATENT_DIM:
        raise ConfigError(f"model.latent_dim={latent!r} must be a positive integer up to {MAX_LATENT_DIM:,}: the "
                          "size of the generator's latent vector, e.g. 128 or 256.")
    shared = {"resolution": resolution, "latent_dim": latent}
    for part in ("generator", "discriminator"):
        for key, value in shared.items():
            given = model[part].get(key)
            if key in model[part] and given != value:
                raise ConfigError(
                    f"model.{part}.{key}={given!r} differs from model.{key}={value!r}: the generator and "
                    f"discriminator must agree. Set model.{key} only (both parts read it) and drop the "
                    f"model.{part}.{key} override."
                )
    if not _is_int(model.get("n_critic", 1)) or model.get("n_critic", 1) < 1:
        raise ConfigError(f"model.n_critic={model.get('n_critic')!r} must be a positive integer: how many "
                          "discriminator steps per generator step, usually 1 (5 for wgan-gp).")
    for key in ("optimizer_g", "optimizer_d"):
        lr = (model.get(key) or {}).get("lr")
        if lr is not None and (not _is_number(lr) or not lr > 0):
            raise ConfigError(f"model.{key}.lr={lr!r} must be a positive learning rate, e.g. 2e-4.")
    ema = model.get("ema_decay")
    if ema is not None and (not _is_number(ema) or not 0.0 < ema < 1.0):
        raise ConfigError(f"model.ema_decay={ema!r} must be null (no EMA generator) or a number strictly between "
                          "0 and 1, e.g. 0.999.")


def _part_class(model: DictConfig, key: str) -> type:
    """The class a part's ``_target_`` names, checked against the contract that part must meet."""
    from hydra.utils import get_class

    from artgan.losses import AdversarialLoss
    from artgan.models.base import Discriminator, Generator

    base = {"generator": Generator, "discriminator": Discriminator, "loss": AdversarialLoss}[key]
    options = ", ".join(sorted(p.stem for p in (CONF_DIR / "model" / key).glob("*.yaml")))
    node = model.get(key)
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    try:
        cls = get_class(target) if target else None
    except Exception:  # noqa: BLE001 - Hydra wraps import errors of every kind
        cls = None
    if cls is None or not issubclass(cls, base):
        raise ConfigError(
            f"model.{key}._target_={target!r} does not name an importable subclass of {base.__module__}."
            f"{base.__name__}. Pick one of the configs with model/{key}=<name> ({options}), or point _target_ at your "
            f"own subclass (docs/architecture.md, 'Add a model')."
        )
    return cls


# ----------------------------------------------------------------------------------------------- data
def _check_data(data: DictConfig, model: DictConfig | None) -> None:
    workers = data.get("num_workers", 0)
    if not _is_int(workers) or workers < 0:
        raise ConfigError(f"data.num_workers={workers!r} must be 0 (load in the training process) or a positive "
                          "number of DataLoader worker processes.")
    batch = data.get("batch_size")
    if not _is_int(batch) or batch < 1:
        raise ConfigError(f"data.batch_size={batch!r} must be a positive number of images per device.")
    if model is not None and data.get("resolution") is not None and data.resolution != model.get("resolution"):
        raise ConfigError(f"data.resolution={data.resolution!r} differs from model.resolution="
                          f"{model.get('resolution')!r}; set model.resolution only (data.resolution follows it).")
    subset = data.get("subset")
    if subset is not None and (not _is_int(subset) or subset < 1):
        raise ConfigError(f"data.subset={subset!r} must be null (all images) or a positive number of images.")
    from artgan.data.holdout import check_holdout

    check_holdout(data.get("holdout"))
    if data.get("source", "procedural") == "procedural":
        n = data.get("num_images")
        if not _is_int(n) or n < 1:
            raise ConfigError(f"data.num_images={n!r} must be a positive number of procedural images, e.g. 2800.")


def dataset_size(data: DictConfig) -> int | None:
    """How many training images the data config gives, without decoding any: the procedural count, or the
    number of image files of a folder (after data.subset). None when it cannot be told cheaply."""
    subset = data.get("subset")
    if data.get("source", "procedural") == "procedural":
        n = int(data.num_images)
    elif data.get("source") == "folder" and data.get("root"):
        from artgan.data.discovery import find_images  # lists files only; raises a clear error if missing

        n = len(find_images(absolute_path(data.root)))
    else:
        return None
    return min(n, int(subset)) if subset is not None else n


def _check_batch_size(data: DictConfig, world: int) -> None:
    n = dataset_size(data)
    if n is not None:
        from artgan.data.batching import check_batch_fits

        procedural = data.get("source", "procedural") == "procedural"
        check_batch_fits(int(data.batch_size), n, world,
                         "the procedural data set" if procedural else f"data.root={data.root!r}",
                         "data.num_images" if procedural else "data.subset=null")


# -------------------------------------------------------------------------------------------- devices
def _check_devices(trainer: DictConfig) -> int:
    """Check trainer.devices against the machine; returns the number of processes (world size)."""
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    devices = trainer.get("devices", "auto")
    nodes = trainer.get("num_nodes", 1)
    if not _is_int(nodes) or nodes < 1:
        raise ConfigError(f"trainer.num_nodes={nodes!r} must be a positive number of machines.")

    if accelerator in ("gpu", "cuda"):
        kind, available = "GPU", _cuda_count()
        if available == 0:
            raise ConfigError(
                f"trainer.accelerator={accelerator} but this machine has no usable CUDA GPU (torch sees 0). "
                "Use trainer=cpu (or trainer.accelerator=cpu), or trainer.accelerator=auto to use a GPU only "
                "when there is one."
            )
    elif accelerator == "cpu":
        kind, available = "CPU core", os.cpu_count() or 1
    elif accelerator == "auto":
        cuda = _cuda_count()
        kind, available = ("GPU", cuda) if cuda else ("CPU core", os.cpu_count() or 1)
    else:  # mps, tpu, custom accelerators: let Lightning judge
        return requested_devices(devices) or 1

    requested = requested_devices(devices)
    if requested is None:  # "auto" or -1: all of them
        return available * nodes
    indices = device_indices(devices)
    if requested < 1:
        raise ConfigError(f"trainer.devices={devices!r} must be a positive number of devices, a list of device "
                          "indices, -1 or 'auto'.")
    if requested > available or (indices and max(indices) >= available):
        what = f"{requested} {kind}{'s' if requested > 1 else ''}" if not indices else f"{kind} indices {indices}"
        raise ConfigError(
            f"trainer.devices={show_devices(devices)} asks for {what} with trainer.accelerator={accelerator}, but this "
            f"machine has {available} {kind}{'s' if available != 1 else ''}. Use trainer.devices=1 to "
            f"{available}{' (indices 0 to ' + str(available - 1) + ')' if indices else ''}, -1 or auto for all."
        )
    return requested * nodes


def _cuda_count() -> int:
    import torch  # already imported by Hydra's instantiate targets anyway; device_count() does not init CUDA

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# ------------------------------------------------------------------------------------------ resume path
def _check_ckpt_path(cfg: DictConfig) -> None:
    """The file exists (its contents are checked by artgan.train before anything is built)."""
    from artgan.checkpoints import checkpoint_file, is_local_file

    if is_local_file(cfg.get("ckpt_path")):
        checkpoint_file(cfg.ckpt_path)


# ---------------------------------------------------------------------------------------- unknown keys
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def check_known_keys(node: DictConfig, where: str = "") -> None:
    """Every key of a node with a ``_target_`` is an argument of what it builds: ``+model.nope=1`` (or a typo such
    as ``+model.generator.nfg=32``) stops here, naming the known keys, instead of being ignored or ending in a
    TypeError deep inside Hydra. Targets that take ``**kwargs`` accept anything and are not checked."""
    import difflib
    import inspect

    from hydra.utils import get_object
    from omegaconf import OmegaConf

    target = node.get("_target_") if "_target_" in node else None
    params = None
    if isinstance(target, str):
        try:
            params = inspect.signature(get_object(target)).parameters
        except Exception:  # noqa: BLE001 - an unimportable target is reported by the part checks or Hydra
            params = None
    if params is not None and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        known = [name for name, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        for key in node:
            if key not in HYDRA_KEYS and key not in params:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" Did you mean {where}{close[0]}?" if close else ""
                raise ConfigError(
                    f"{where}{key} is not a setting of {target.rsplit('.', 1)[-1]} ({target}), so it would be "
                    f"ignored or fail later.{hint} Known keys under {where.rstrip('.') or 'the config'}: "
                    f"{', '.join(known)}. Remove the override (+{where}{key}=...) or fix its name."
                )
    for key in node:
        if key == "hydra" or OmegaConf.is_interpolation(node, key):
            continue
        child = node.get(key)
        if isinstance(child, DictConfig):
            check_known_keys(child, f"{where}{key}.")


# --------------------------------------------------------------------------------------------- helpers
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


