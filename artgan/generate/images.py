"""Turning generated tensors into files: PNGs, grids, GIFs."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image

from artgan.data.transforms import to_uint8


def to_pil(image: torch.Tensor) -> Image.Image:
    """One image, float in [-1, 1] (3, H, W) or uint8, -> PIL RGB."""
    if image.dtype != torch.uint8:
        image = to_uint8(image)
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy(), "RGB")


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> torch.Tensor:
    """uint8 (N, 3, H, W) (or float in [-1, 1]) -> one uint8 (3, H', W') grid, ``nrow`` images per row."""
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    grid = torch.full((c, ncol * (h + padding) + padding, nrow * (w + padding) + padding), pad_value,
                      dtype=torch.uint8)
    for i, img in enumerate(images.cpu()):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, y:y + h, x:x + w] = img
    return grid


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, padding: int = 2) -> Path:
    path = Path(path)
    to_pil(make_grid(images, nrow=nrow, padding=padding)).save(path)
    return path


def save_gif(frames: torch.Tensor, path: str | Path, duration_ms: int = 80, loop: int = 0) -> Path:
    """Frames uint8/float (T, 3, H, W) -> animated GIF (adaptive palette per frame)."""
    path = Path(path)
    pil = [to_pil(f) for f in frames]
    pil[0].save(path, save_all=True, append_images=pil[1:], duration=int(duration_ms), loop=int(loop),
                optimize=False, disposal=1)
    return path
