"""Catch bad settings in a second, before any data is decoded or any network is built.

``validate(cfg)`` is the first thing ``artgan.train.train`` does. Each problem raises a ``ConfigError``: one
paragraph naming the key, the value and what is allowed; ``artgan.cli`` prints it and exits with code 2
(``HYDRA_FULL_ERROR=1`` shows the traceback). Only cheap checks live here: no torch work beyond asking how
many GPUs are visible, no image decoding (a folder is only listed).
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig

from artgan.errors import ConfigError
from artgan.paths import absolute_path

MIN_RESOLUTION, MAX_RESOLUTION = 64, 512
D_NORMS = ("batch", "instance", "none")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first bad setting of a training config; return None when all is well."""
    model, data, trainer = cfg.get("model"), cfg.get("data"), cfg.get("trainer")
    if model is not None:
        _check_model(model)
    if data is not None:
        _check_data(data, model)
    if trainer is not None:
        world = _check_devices(trainer)
        if data is not None:
            _check_batch_size(data, world)
    _check_ckpt_path(cfg)


# ---------------------------------------------------------------------------------------------- model
def _check_model(model: DictConfig) -> None:
    resolution = model.get("resolution")
    if (not _is_int(resolution) or resolution < MIN_RESOLUTION or resolution > MAX_RESOLUTION
            or resolution & (resolution - 1)):
        raise ConfigError(
            f"model.resolution={resolution!r} is not supported: it must be a power of two from {MIN_RESOLUTION} "
            f"to {MAX_RESOLUTION} (64, 128, 256 or 512). Pick one with model=dcgan64 / dcgan128 / dcgan256 / "
            "dcgan512, or model.resolution=128."
        )
    _positive_int(model, "latent_dim", "the size of the generator's noise vector, e.g. 100 or 128")
    for key in ("ngf", "ndf", "max_channels"):
        if key in model:
            _positive_int(model, key, "a channel width, e.g. 64")

    from artgan.losses import LOSSES  # cheap (no torch work), but keep the import local to this check

    loss = model.get("loss")
    if loss not in LOSSES:
        raise ConfigError(f"model.loss={loss!r} is not a known adversarial loss; use one of: {', '.join(LOSSES)}.")
    if "n_critic" in model:
        _positive_int(model, "n_critic", "how many discriminator steps per generator step, usually 1 (5 for wgan-gp)")
    for key in ("lr_g", "lr_d"):
        value = model.get(key)
        if key in model and (not _is_number(value) or not value > 0):
            raise ConfigError(f"model.{key}={value!r} must be a positive learning rate, e.g. 2e-4.")
    d_norm = model.get("d_norm")
    if "d_norm" in model and d_norm not in D_NORMS:
        raise ConfigError(f"model.d_norm={d_norm!r} is not a discriminator normalization; use one of: "
                          f"{', '.join(D_NORMS)}.")
    ema = model.get("ema_decay")
    if ema is not None and (not _is_number(ema) or not 0.0 < ema < 1.0):
        raise ConfigError(f"model.ema_decay={ema!r} must be null (no EMA generator) or a number strictly between "
                          "0 and 1, e.g. 0.999.")
    smoothing = model.get("label_smoothing", 0.0)
    if not _is_number(smoothing) or not 0.0 <= smoothing < 1.0:
        raise ConfigError(f"model.label_smoothing={smoothing!r} must be in [0, 1): real targets become "
                          "1 - label_smoothing (0.1 is typical, 0 turns it off).")


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
    if n is None:
        return
    batch = int(data.batch_size)
    per_device = n // world
    if batch > per_device:
        where = f"each of the {world} devices gets {per_device} of the {n} images" if world > 1 else f"has {n} images"
        raise ConfigError(
            f"data.batch_size={batch} is larger than the dataset: {_data_name(data)} {where}, so an epoch would "
            f"have no full batch. Use data.batch_size <= {max(per_device, 1)}, or more images "
            f"({'data.num_images' if data.get('source', 'procedural') == 'procedural' else 'data.subset=null'})."
        )


def _data_name(data: DictConfig) -> str:
    if data.get("source", "procedural") == "procedural":
        return "the procedural data set"
    return f"data.root={data.root!r}"


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
        return _requested(devices) or 1

    requested = _requested(devices)
    if requested is None:  # "auto" or -1: all of them
        return available * nodes
    indices = _indices(devices)
    if requested < 1:
        raise ConfigError(f"trainer.devices={devices!r} must be a positive number of devices, a list of device "
                          "indices, -1 or 'auto'.")
    if requested > available or (indices and max(indices) >= available):
        what = f"{requested} {kind}{'s' if requested > 1 else ''}" if not indices else f"{kind} indices {indices}"
        raise ConfigError(
            f"trainer.devices={_show(devices)} asks for {what} with trainer.accelerator={accelerator}, but this "
            f"machine has {available} {kind}{'s' if available != 1 else ''}. Use trainer.devices=1 to "
            f"{available}{' (indices 0 to ' + str(available - 1) + ')' if indices else ''}, -1 or auto for all."
        )
    return requested * nodes


def _cuda_count() -> int:
    import torch  # already imported by Hydra's instantiate targets anyway; device_count() does not init CUDA

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _requested(devices: Any) -> int | None:
    """Number of devices asked for; None for 'auto' / -1 (all)."""
    if devices is None or devices == "auto" or devices == -1 or devices == "-1":
        return None
    indices = _indices(devices)
    if indices is not None:
        return len(indices)
    if _is_int(devices):
        return int(devices)
    try:
        return int(str(devices).strip())
    except ValueError:
        raise ConfigError(f"trainer.devices={devices!r} is not a number of devices, a list of indices such as "
                          "[0,1], -1 or 'auto'.") from None


def _indices(devices: Any) -> list[int] | None:
    """Explicit device indices: a list, or a string with a comma such as '0,1' (Lightning's convention)."""
    try:
        if isinstance(devices, (list, tuple)) or (hasattr(devices, "__iter__") and not isinstance(devices, str)):
            return [int(d) for d in devices]
        if isinstance(devices, str) and "," in devices:
            return [int(d) for d in devices.split(",") if d.strip()]
    except (TypeError, ValueError):
        raise ConfigError(f"trainer.devices={devices!r} is not a list of device indices such as [0,1].") from None
    return None


def _show(devices: Any) -> str:
    return str(list(devices)) if _indices(devices) is not None and not isinstance(devices, str) else str(devices)


# ------------------------------------------------------------------------------------------ resume path
def _check_ckpt_path(cfg: DictConfig) -> None:
    ckpt = cfg.get("ckpt_path")
    if ckpt in (None, "auto", "last", "hpc", "best", "registry") or "://" in str(ckpt):
        return
    if not absolute_path(ckpt).is_file():
        raise ConfigError(
            f"ckpt_path={ckpt!r} does not exist (resolved to {absolute_path(ckpt)}). Point it at a checkpoint such as "
            "outputs/train/<run>/checkpoints/last.ckpt, or use ckpt_path=auto with hydra.run.dir=<run dir> to "
            "resume a run when it has a last.ckpt and start fresh otherwise."
        )


# --------------------------------------------------------------------------------------------- helpers
def _positive_int(node: DictConfig, key: str, meaning: str) -> None:
    value = node.get(key)
    if not _is_int(value) or value < 1:
        raise ConfigError(f"model.{key}={value!r} must be a positive integer: {meaning}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


