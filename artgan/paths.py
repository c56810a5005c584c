"""Paths given on the command line, resolved the way the user means them."""

from __future__ import annotations

import os
from pathlib import Path


def absolute_path(path: str | os.PathLike) -> Path:
    """Relative paths are relative to where the user launched, even if Hydra changed the working dir."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import to_absolute_path

        if HydraConfig.initialized():
            return Path(to_absolute_path(str(path)))
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return Path(path).expanduser().absolute()
