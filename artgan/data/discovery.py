"""Find image files under a folder, whatever its layout, in a deterministic order."""

import os
import re
from pathlib import Path

from artgan.errors import ArtGANError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

KAGGLE_HINT = (
    "To get the Abstract Art Gallery dataset: `kaggle datasets download -d bryanb/abstract-art-gallery` "
    "(or download it from https://www.kaggle.com/datasets/bryanb/abstract-art-gallery), unzip it "
    "(`unzip abstract-art-gallery.zip -d data/abstract-art`) and pass data.root=data/abstract-art; "
    "any folder layout works. Or train on the built-in generator with data=procedural."
)


def natural_key(path: str) -> list:
    """Sort key so that image_2 comes before image_10 (and the order never depends on the OS)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path)]


def find_images(root: str | os.PathLike) -> list[Path]:
    """All image files below `root` (recursive), natural-sorted by relative path.

    Hidden files and folders (".git", macOS "._x.jpg" resource forks) and other extensions are ignored.
    Raises ArtGANError when the folder is missing, is a file, or holds no image.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise ArtGANError(
            f"data.root={str(root)!r} does not exist (resolved to {root.absolute()}). {KAGGLE_HINT}"
        )
    if not root.is_dir():
        raise ArtGANError(f"data.root={str(root)!r} is a file, not a folder of images. {KAGGLE_HINT}")

    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # prune hidden folders
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    if not found:
        raise ArtGANError(
            f"data.root={str(root)!r} holds no image file (looked recursively for "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}). {KAGGLE_HINT}"
        )
    found.sort(key=lambda p: natural_key(p.replace(os.sep, "/")))
    return [root / p for p in found]
