"""Load the generator from an ArtGAN checkpoint safely: ``torch.load(weights_only=True)`` runs no code
from the file, and every way a file can be wrong ends in one clear :class:`ArtGANError`."""

from __future__ import annotations

import logging
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from artgan import checkpoints
from artgan.errors import ArtGANError
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


def _check_path(ckpt_path: str | Path | None) -> Path:
    if ckpt_path is None or str(ckpt_path).strip() in ("", "None", "null"):
        raise ArtGANError("ckpt_path is not set. Point it at a checkpoint written by train.py, e.g. "
                          "python generate.py ckpt_path=outputs/train/<run>/checkpoints/last.ckpt")
    path = Path(str(ckpt_path)).expanduser()
    if not path.exists():
        raise ArtGANError(f"ckpt_path={str(ckpt_path)!r}: no such file (resolved to {path.absolute()}). Training "
                          "runs write their checkpoints to <run dir>/checkpoints/, e.g. "
                          "outputs/train/<date>/checkpoints/last.ckpt.")
    if path.is_dir():
        found = sorted(path.glob("*.ckpt")) + sorted(path.glob("checkpoints/*.ckpt"))
        best = next((f for f in found if f.name == "last.ckpt"), found[-1] if found else None)
        hint = f" It contains {len(found)} checkpoint(s); try ckpt_path={best}." if best else " It holds no .ckpt file."
        raise ArtGANError(f"ckpt_path={str(ckpt_path)!r} is a directory, not a checkpoint file.{hint}")
    return path


def load_checkpoint_dict(ckpt_path: str | Path | None) -> tuple[Path, dict]:
    """Read the checkpoint with ``weights_only=True``; returns (path, the checkpoint dict)."""
    path = _check_path(ckpt_path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e).lower():
            raise ArtGANError(
                f"ckpt_path={str(path)!r} is not an ArtGAN checkpoint: it holds Python objects that a safe load "
                "refuses (only tensors and plain data are allowed, so no code from the file is run). It was "
                "probably written by another program; use a checkpoint written by train.py."
            ) from None
        raise _corrupt(path, e) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, UnicodeDecodeError, KeyError,
            IndexError, TypeError, AttributeError, ImportError) as e:
        raise _corrupt(path, e) from None
    if isinstance(ckpt, dict) and isinstance(ckpt.get("artgan"), dict):
        checkpoints.upgrade(ckpt, f"ckpt_path={str(path)!r}")
    if not isinstance(ckpt, dict) or "artgan" not in ckpt or "state_dict" not in ckpt:
        keys = sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ArtGANError(
            f"ckpt_path={str(path)!r} is not an ArtGAN checkpoint: it has no 'artgan' section (found {keys}). "
            "It was written by another program or an older version; use a checkpoint that train.py wrote "
            "(<run dir>/checkpoints/last.ckpt)."
        )
    return path, ckpt


def _corrupt(path: Path, err: BaseException) -> ArtGANError:
    size = path.stat().st_size if path.exists() else 0
    detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    return ArtGANError(
        f"ckpt_path={str(path)!r} could not be read: the file ({size:,} bytes) is truncated or corrupt "
        f"({detail}). A copy that stopped early or a run killed while saving does this; use another checkpoint, "
        "e.g. an epoch_*.ckpt from the same checkpoints/ folder, or copy the file again."
    )


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
    if use_ema and not has_ema:
        log.info("The checkpoint has no EMA generator (trained with model.ema_decay=null); using the generator.")
    generator.eval().requires_grad_(False).to(device)
    fixed = state_dict.get("fixed_noise")
    return LoadedGenerator(generator=generator, path=path, spec=spec, used_ema=used_ema, device=device,
                           fixed_noise=fixed if isinstance(fixed, torch.Tensor) else None, meta=dict(meta))
