"""Turning generated tensors into pictures and files: PNGs, grids, GIFs, neighbour panels."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image, ImageDraw

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


def labelled_rows(rows: list[torch.Tensor], labels: list[str], label_w: int = 64, padding: int = 2) -> Image.Image:
    """One grid row per tensor of ``rows`` (each uint8 or float ``(N, 3, H, W)``), its label on the left."""
    strips = [to_pil(make_grid(images, nrow=len(images), padding=padding)) for images in rows]
    width, height = max(s.width for s in strips), strips[0].height
    out = Image.new("RGB", (label_w + width, height * len(strips)), "white")
    draw = ImageDraw.Draw(out)
    for i, (strip, label) in enumerate(zip(strips, labels)):
        out.paste(strip, (label_w, i * height))
        draw.text((4, i * height + height // 2 - 6), label, fill="black")
    return out


def save_gif(frames: torch.Tensor, path: str | Path, duration_ms: int = 80, loop: int = 0) -> Path:
    """Frames uint8/float (T, 3, H, W) -> animated GIF (adaptive palette per frame)."""
    path = Path(path)
    pil = [to_pil(f) for f in frames]
    pil[0].save(path, save_all=True, append_images=pil[1:], duration=int(duration_ms), loop=int(loop),
                optimize=False, disposal=1)
    return path


def neighbours_picture(images: torch.Tensor, pool: torch.Tensor, nn_idx: torch.Tensor, nn_dist: torch.Tensor,
                       cell: int, left: str = "generated",
                       right: str = "{k} nearest training images (cosine distance, EfficientNet-Lite0)",
                       gap: int = 12, pad: int = 4, label_h: int = 14) -> Image.Image:
    """One row per image of ``images``: the image (outlined), a gap, then its k neighbours ``pool[nn_idx[row]]``
    with their distances under them. ``left`` and ``right`` title the two sides (``{k}`` is filled in).
    ``mode=compare`` and the curator panel draw generated images beside paintings, and paintings beside the
    generated images nearest them."""
    rows, k = nn_idx.shape
    header = 18
    width = pad + cell + gap + k * (cell + pad)
    height = header + rows * (cell + label_h + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 3), left, fill=(0, 0, 0))
    draw.text((pad + cell + gap, 3), right.format(k=k), fill=(0, 0, 0))

    def paste(img: torch.Tensor, x: int, y: int) -> None:
        pil = to_pil(img)
        if pil.size != (cell, cell):
            pil = pil.resize((cell, cell), Image.Resampling.LANCZOS)
        canvas.paste(pil, (x, y))

    for r in range(rows):
        y = header + r * (cell + label_h + pad)
        paste(images[r], pad, y)
        draw.rectangle([pad - 1, y - 1, pad + cell, y + cell], outline=(200, 30, 30))
        for j in range(k):
            x = pad + cell + gap + j * (cell + pad)
            paste(pool[int(nn_idx[r, j])], x, y)
            draw.text((x + 2, y + cell + 1), f"{float(nn_dist[r, j]):.3f}", fill=(60, 60, 60))
    return canvas
