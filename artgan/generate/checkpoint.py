"""Load the generator from an ArtGAN checkpoint safely: ``artgan.checkpoints.read`` runs no code from the file,
and every way a file can be wrong (non-finite weights included) ends in one clear :class:`ArtGANError`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from artgan import checkpoints
from artgan.errors import ArtGANError, ConfigError
from artgan.models import registry

log = logging.getLogger(__name__)

GENERATOR_PREFIX = "generator."
EMA_PREFIX = "generator_ema.module."


@dataclass
class LoadedGenerator:
    """A generator rebuilt from a checkpoint, in eval mode on ``device``."""

    generator: nn.Module
    path: Path
    spec: dict
    used_ema: bool
    device: torch.device
    fixed_noise: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    @property
    def resolution(self) -> int:
        return int(self.generator.resolution)

    @property
    def latent_dim(self) -> int:
        return int(self.generator.latent_dim)

    @property
    def run_dir(self) -> Path:
        """The training run directory (RUN/checkpoints/x.ckpt -> RUN)."""
        return self.path.parent.parent if self.path.parent.name == "checkpoints" else self.path.parent


def resolve_device(device: str | None) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a user error."""
    name = str(device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ArtGANError(f"device={name} was requested but no CUDA GPU is available here. Use device=cpu "
                          "(or device=auto, which picks the GPU when there is one).")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ArtGANError(f"device={device!r} is not a device torch knows; use auto, cpu or cuda (or cuda:N).") from e


def load_checkpoint_dict(ckpt_path: str | Path | None) -> tuple[Path, dict]:
    """Read an ArtGAN checkpoint safely (artgan.checkpoints.read); returns (path, the checkpoint dict)."""
    if ckpt_path is None or str(ckpt_path).strip() in ("", "None", "null"):
        raise ConfigError("ckpt_path is not set. Point it at a checkpoint written by train.py, e.g. "
                          "python generate.py ckpt_path=outputs/train/<run>/checkpoints/last.ckpt")
    path = checkpoints.checkpoint_file(ckpt_path)
    return path, checkpoints.read(path)


def _sub_state(state_dict: dict, prefix: str) -> dict:
    out = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            out[key[len(prefix):].replace("_orig_mod.", "")] = value  # torch.compile wrappers
    return out


def load_generator(ckpt_path: str | Path | None, use_ema: bool = True, device: str | torch.device = "cpu"
                   ) -> LoadedGenerator:
    """Rebuild the generator the checkpoint describes and load its weights (the EMA copy when there is one
    and ``use_ema``); eval mode, on ``device``."""
    device = device if isinstance(device, torch.device) else resolve_device(device)
    path, ckpt = load_checkpoint_dict(ckpt_path)
    meta = ckpt["artgan"] if isinstance(ckpt["artgan"], dict) else {}
    spec = meta.get("generator")
    if not isinstance(spec, dict) or "class" not in spec or not isinstance(spec.get("kwargs"), dict):
        raise ArtGANError(f"ckpt_path={str(path)!r}: its 'artgan' section does not describe a generator "
                          "(no generator class and kwargs). Use a checkpoint written by train.py.")
    try:
        generator = registry.build("generator", spec)
    except (ValueError, TypeError) as e:
        raise ArtGANError(f"ckpt_path={str(path)!r}: cannot rebuild its generator {spec}: {e}. It may come from "
                          "a newer ArtGAN version; update this one.") from None
    state_dict = ckpt["state_dict"]
    has_ema = bool(meta.get("has_ema")) and any(k.startswith(EMA_PREFIX) for k in state_dict)
    used_ema = bool(use_ema) and has_ema
    weights = _sub_state(state_dict, EMA_PREFIX if used_ema else GENERATOR_PREFIX)
    try:
        generator.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ArtGANError(f"ckpt_path={str(path)!r}: the generator weights do not fit the generator it describes "
                          f"({first[1].strip() if len(first) > 1 else first[0][:200]}). The file is damaged or "
                          "was edited; use another checkpoint.") from None
    checkpoints.check_finite(weights, path)  # NaN weights paint black images: refuse before writing any
    if use_ema and not has_ema:
        log.info("The checkpoint has no EMA generator (trained with model.ema_decay=null); using the generator.")
    generator.eval().requires_grad_(False).to(device)
    fixed = state_dict.get("fixed_noise")
    return LoadedGenerator(generator=generator, path=path, spec=spec, used_ema=used_ema, device=device,
                           fixed_noise=fixed if isinstance(fixed, torch.Tensor) else None, meta=dict(meta))
