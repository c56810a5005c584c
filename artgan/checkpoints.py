"""What ArtGAN adds to a Lightning checkpoint, how checkpoints are read safely, and how checkpoints of older
formats are brought up to date.

``checkpoint["artgan"]`` (format 2) holds ``version``, the ``generator`` and ``discriminator`` specs
(``{"class": path, "kwargs": {...}}``, enough to rebuild them without Hydra), the ``loss`` description,
``has_ema``, ``images_seen`` and ``d_steps``. Format 1 (before the model zoo) named the generator ``"dcgan"``,
kept ADA's state under ``ada.*`` and the fixed noise as ``(N, latent_dim, 1, 1)``; :func:`upgrade` rewrites
those in place, so ``generate.py`` and ``train.py ckpt_path=...`` read both.

Every checkpoint the project reads goes through :func:`safe_load` (``generate.py``, the resume check in
``train.py`` and Lightning's own resume, via ``AtomicCheckpointIO.load_checkpoint``): a file runs no code when
it is read, and each way a file can be wrong is one :class:`ConfigError` paragraph (exit 2).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from artgan.errors import ArtGANError, ConfigError
from artgan.paths import absolute_path

FORMAT_VERSION = 2
# Where Lightning's fsspec loader takes over (s3://, gs://, http(s)://); file:// stays local.
_REMOTE = "://"


def is_local_file(ckpt_path: Any) -> bool:
    """Whether ``ckpt_path`` names a local file, not ``auto``, one of Lightning's names or a remote URL."""
    return ckpt_path not in (None, "", "auto", "last", "hpc", "best", "registry") and (
        _REMOTE not in str(ckpt_path) or str(ckpt_path).startswith("file://"))


def checkpoint_file(ckpt_path: str | Path, key: str = "ckpt_path") -> Path:
    """``ckpt_path`` as an existing file, or one paragraph: no such file, or a folder (naming the .ckpt in it)."""
    path = absolute_path(str(ckpt_path).removeprefix("file://"))
    if not path.exists():
        raise ConfigError(f"{key}={str(ckpt_path)!r} does not exist: no such file (resolved to {path}). Training "
                          "runs write their checkpoints to <run dir>/checkpoints/, e.g. "
                          "outputs/train/<date>/checkpoints/last.ckpt.")
    if path.is_dir():
        found = sorted(path.glob("*.ckpt")) + sorted(path.glob("checkpoints/*.ckpt"))
        best = next((f for f in found if f.name == "last.ckpt"), found[-1] if found else None)
        hint = f" It contains {len(found)} checkpoint(s); try {key}={best}." if best else " It holds no .ckpt file."
        raise ConfigError(f"{key}={str(ckpt_path)!r} is a directory, not a checkpoint file.{hint}")
    return path


def safe_load(path: str | Path, map_location: Any = "cpu", key: str = "ckpt_path") -> Any:
    """``torch.load`` with ``weights_only=True`` passed explicitly: only tensors and plain data are unpickled, so
    no code from the file runs. torch lets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (a workaround copied from
    forums) switch off the default, but never an explicit ``weights_only=True`` (torch/serialization.py;
    tests/test_user_work.py checks it with a crafted payload). Unreadable files raise one ConfigError."""
    try:
        if _REMOTE in str(path) and not str(path).startswith("file://"):
            from lightning.fabric.utilities.cloud_io import _load as remote_load

            return remote_load(str(path), map_location=map_location, weights_only=True)
        return torch.load(Path(str(path).removeprefix("file://")), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e).lower():
            raise ConfigError(
                f"{key}={str(path)!r} is not an ArtGAN checkpoint: it holds Python objects that a safe load refuses "
                "(only tensors and plain data are allowed, so no code from the file is run). It was probably "
                "written by another program; use a checkpoint written by train.py."
            ) from None
        raise _unreadable(path, e, key) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, UnicodeDecodeError, KeyError,
            IndexError, TypeError, AttributeError, ImportError) as e:
        raise _unreadable(path, e, key) from None


def _unreadable(path: str | Path, err: BaseException, key: str) -> ConfigError:
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError):  # permissions, an unmounted disk, ...
        return ConfigError(f"{key}={str(path)!r} could not be read: {err.strerror or err}. Check that the file is "
                           f"readable by this user (ls -l {path}) and its disk is mounted.")
    try:
        size = f"{Path(path).stat().st_size:,} bytes"
    except OSError:
        size = "size unknown"
    detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    return ConfigError(
        f"{key}={str(path)!r} could not be read: the file ({size}) is truncated or corrupt ({detail}). A copy "
        "that stopped early or a run killed while saving does this; use another checkpoint, e.g. an "
        "epoch_*.ckpt from the same checkpoints/ folder, or copy the file again."
    )


def read(ckpt_path: str | Path, key: str = "ckpt_path") -> dict:
    """An ArtGAN checkpoint as a dict, upgraded to :data:`FORMAT_VERSION`: the file exists, is read safely and
    has an ``artgan`` section and a state dict; anything else is one ConfigError paragraph."""
    path = checkpoint_file(ckpt_path, key)
    ckpt = safe_load(path, key=key)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("artgan"), dict):
        upgrade(ckpt, f"{key}={str(path)!r}")
    if not isinstance(ckpt, dict) or "artgan" not in ckpt or not isinstance(ckpt.get("state_dict"), dict):
        found = sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ConfigError(
            f"{key}={str(path)!r} is not an ArtGAN checkpoint: it has no 'artgan' section (found {found}). "
            "It was written by another program or an older version; use a checkpoint that train.py wrote "
            "(<run dir>/checkpoints/last.ckpt)."
        )
    return ckpt


def check_finite(tensors: dict, path: object, key: str = "ckpt_path") -> None:
    """Stop with one paragraph when any floating tensor of ``tensors`` (a state dict) holds NaN or inf: a run
    saved after it diverged paints black images and cannot train on."""
    bad = [name for name, t in tensors.items()
           if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise ConfigError(
            f"{key}={str(path)!r} holds non-finite weights (NaN or inf in {bad[0]}{more}): its run had diverged "
            "when it was saved. Use an earlier checkpoint of that run (an epoch_*.ckpt in the same checkpoints/ "
            "folder) and, to train on, a gentler setting (e.g. lower model.optimizer_g.lr / model.optimizer_d.lr)."
        )


def upgrade(checkpoint: dict, path: object = "the checkpoint") -> dict:
    """Bring ``checkpoint`` (a loaded dict) to :data:`FORMAT_VERSION` in place and return it."""
    meta = checkpoint.get("artgan")
    if not isinstance(meta, dict):
        return checkpoint
    version = int(meta.get("version", 1))
    if version > FORMAT_VERSION:
        raise ArtGANError(
            f"{path} was written by a newer ArtGAN (checkpoint format {version}; this version reads formats 1 to "
            f"{FORMAT_VERSION}). Update ArtGAN (git pull && pip install -e .) to use it."
        )
    if version == 1:
        _upgrade_from_1(checkpoint, meta)
    return checkpoint


def _upgrade_from_1(checkpoint: dict, meta: dict) -> None:
    spec = meta.get("generator")
    if isinstance(spec, dict) and "class" not in spec and "name" in spec:
        from artgan.models import registry

        # Format 1 knew one generator by a short name; the registry maps it to today's class.
        spec = {"class": registry.class_path(registry.resolve("generator", spec["name"])), "kwargs": spec["kwargs"]}
        meta["generator"] = spec
    state = checkpoint.get("state_dict")
    if isinstance(state, dict):
        for key in [k for k in state if k.startswith("ada.")]:
            state["augment." + key] = state.pop(key)  # ADA now belongs to the augmentation
        noise = state.get("fixed_noise")
        if noise is not None and noise.dim() == 4:
            state["fixed_noise"] = noise.flatten(1)  # DCGAN latents are vectors now
    meta["version"] = FORMAT_VERSION


def check_same_networks(checkpoint: dict, networks: dict, path: object = "ckpt_path") -> None:
    """Stop with one paragraph when a checkpoint holds other networks than this run builds (a resume with other
    model settings, e.g. ``model=dcgan128`` on a 64 px run), naming the settings that differ and the command
    that matches the checkpoint."""
    meta = checkpoint.get("artgan") or {}
    differences, fixes = [], {}
    for part, network in networks.items():
        saved, current = meta.get(part), network.spec()
        if not isinstance(saved, dict):
            continue
        kwargs = saved.get("kwargs") or {}
        if saved.get("class") != current["class"]:
            differences.append(f"model.{part} is {current['class']} here but {saved.get('class')} in the checkpoint")
            fixes.update(_part_override(part, str(saved.get("class"))))
            fixes.update({_setting(part, key): value for key, value in kwargs.items()})
            continue
        for key in sorted(set(kwargs) | set(current["kwargs"])):
            mine, theirs = current["kwargs"].get(key), kwargs.get(key)
            if mine != theirs:
                differences.append(f"model.{part}.{key}={mine} here but {theirs} in the checkpoint")
                fixes[_setting(part, key)] = theirs
    if differences:
        raise ConfigError(
            f"{path} was trained with other model settings than this run: {'; '.join(differences)}. Resume it "
            f"with the settings it was trained with: {_matching_command(fixes)} (or start a new run without "
            "ckpt_path)."
        )


def _setting(part: str, key: str) -> str:
    """The override that sets a part's constructor argument; the shared ones are set once for both parts."""
    return f"model.{key}" if key in ("resolution", "latent_dim") else f"model.{part}.{key}"


def _part_override(part: str, class_path: str) -> dict:
    """``model/<part>=<option>`` for the conf/model/<part>/ option that builds ``class_path``, else its _target_."""
    from omegaconf import OmegaConf

    from artgan.config_validation import CONF_DIR

    for option in sorted((CONF_DIR / "model" / part).glob("*.yaml")):
        if OmegaConf.load(option).get("_target_") == class_path:
            return {f"model/{part}": option.stem}
    return {f"model.{part}._target_": class_path}


def _matching_command(fixes: dict) -> str:
    """This run's command line with ``fixes`` in place of the overrides they replace (just the fixes outside a
    Hydra run)."""
    def value(v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return "null" if v is None else str(v).lower()
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(value(x) for x in v) + "]"
        return str(v)

    settings = [f"{key}={value(v)}" for key, v in fixes.items()]
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = HydraConfig.get().overrides if HydraConfig.initialized() else None
    except ValueError:
        overrides = None
    if overrides is None:
        return " ".join(settings)
    kept = [o for o in overrides.task if o.split("=", 1)[0].lstrip("+~") not in fixes]
    run_dir = [o for o in overrides.hydra if o.startswith("hydra.run.dir=")]  # ckpt_path=auto needs it
    return "python train.py " + " ".join(kept + settings + run_dir)
