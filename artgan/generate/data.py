"""The real images that compare / evaluate measure against, prepared exactly like the training data.

Settings, lowest priority first: ArtDataModule's defaults, the training run's own ``data`` config
(``RUN/.hydra/config.yaml`` next to ``RUN/checkpoints/``), then every non-null ``data.*`` given to
generate.py. The resolution is always the checkpoint's. With ``data.root`` set the source is a folder.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from artgan.errors import ArtGANError

log = logging.getLogger(__name__)

# Keys of the training data config that do not describe which images are used or how they are prepared.
_NOT_COPIED = {"_target_", "resolution", "batch_size", "num_workers", "pin_memory", "cache_dir", "progress",
               "decode_workers"}


def training_data_config(run_dir: Path) -> dict:
    """The ``data`` section of the training run's saved Hydra config, resolved key by key ({} if absent)."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # noqa: BLE001 - a damaged side file only costs the defaults
        log.warning("Could not read the training config %s (%s); using data.* from generate.py only.", path, e)
        return {}
    data = cfg.get("data")
    if not isinstance(data, DictConfig):
        return {}
    out = {}
    for key in data:
        if key in _NOT_COPIED:
            continue
        try:
            value = data[key]  # resolves interpolations against the training config
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value, resolve=True)
        except Exception:  # noqa: BLE001 - one that needs the training process (e.g. ${hydra:...})
            continue
        out[key] = value
    return out


def data_settings(data_cfg: DictConfig | dict | None, run_dir: Path | None) -> tuple[dict, str]:
    """Merged ArtDataModule keyword arguments (without resolution) and a one-line description of the source."""
    overrides = {k: v for k, v in (OmegaConf.to_container(data_cfg, resolve=True) if OmegaConf.is_config(data_cfg)
                                   else dict(data_cfg or {})).items() if v is not None}
    trained = training_data_config(run_dir) if run_dir is not None else {}
    if overrides.get("root"):
        overrides.setdefault("source", "folder")
        if trained.get("source") != "folder" or trained.get("root") != overrides["root"]:
            # Another image set: keep the training's preprocessing (crop, borders) but not its subset.
            trained = {k: v for k, v in trained.items() if k not in ("source", "root", "subset", "num_images",
                                                                       "seed", "holdout", "holdout_seed")}
    elif not trained:
        raise ArtGANError(
            "data.root is not set and the training run's config (RUN/.hydra/config.yaml next to RUN/checkpoints/) "
            "was not found, so there are no real images to compare with. Pass data.root=/path/to/training/images "
            "(the folder the model was trained on)."
        )
    settings = {**trained, **overrides}
    from artgan.data.datamodule import ArtDataModule

    accepted = set(inspect.signature(ArtDataModule.__init__).parameters) - {"self"}
    unknown = sorted(set(settings) - accepted)
    if unknown:
        log.info("Ignoring data settings ArtDataModule does not take: %s", ", ".join(unknown))
    settings = {k: v for k, v in settings.items() if k in accepted}
    source = settings.get("source", "procedural")
    what = (f"folder {settings.get('root')}" if source == "folder"
            else f"procedural images (num_images={settings.get('num_images')}, seed={settings.get('seed')})")
    return settings, what


def build_datamodule(data_cfg, run_dir: Path | None, resolution: int, cache_dir: str):
    """An ArtDataModule for the real images, loaded (decoded into the shared cache if needed)."""
    from artgan.data.datamodule import ArtDataModule

    settings, what = data_settings(data_cfg, run_dir)
    dm = ArtDataModule(**settings, resolution=int(resolution), cache_dir=str(cache_dir))
    dm.setup("fit")
    log.info("Real images: %d from %s at %d px", dm.dataset_size, what, resolution)
    return dm, what


def preparation_datamodule(data_cfg, run_dir: Path | None, resolution: int):
    """An ArtDataModule that only describes how the training run prepared its images (nothing is loaded): for
    preparing other images the same way (``mode=project``). Without the run's config: the defaults and data.*."""
    from artgan.data.datamodule import ArtDataModule

    try:
        settings, _ = data_settings(data_cfg, run_dir)
    except ArtGANError:  # no training config and no data.root: only the preprocessing matters here
        settings = {k: v for k, v in (OmegaConf.to_container(data_cfg, resolve=True) if OmegaConf.is_config(data_cfg)
                                      else dict(data_cfg or {})).items() if v is not None}
        log.warning("The training run's config was not found: images are prepared with the default settings and "
                    "data.* (e.g. data.trim_borders=true as for data=abstract_art).")
    settings = {k: v for k, v in settings.items() if k in ("crop", "border_crop", "trim_borders", "trim_tolerance")}
    return ArtDataModule(**settings, resolution=int(resolution))
