"""mode=interpolate: a spherical walk through K latent points, as a grid PNG and an animated GIF."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from artgan.errors import ConfigError

from .checkpoint import LoadedGenerator
from .images import save_gif, save_grid
from .sample import generate_images, latents

log = logging.getLogger(__name__)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Spherical interpolation between latent vectors ``a`` and ``b`` (D,) at fractions ``t`` (T,) -> (T, D).

    Gaussian latents live near a sphere of radius sqrt(D); a straight line between two of them passes
    through low-norm points the generator never saw in training, slerp stays on the shell (White, 2016).
    Nearly parallel vectors fall back to linear interpolation.
    """
    a, b, t = a.double(), b.double(), t.double()[:, None]
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(eps)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    so = torch.sin(omega)
    if so.abs() < eps:
        out = (1.0 - t) * a + t * b
    else:
        out = (torch.sin((1.0 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b
    return out.float()


def walk(points: torch.Tensor, steps: int, closed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(segments, frames): per-segment latents (S, steps + 2, *latent shape) including both ends, and the GIF
    path (each point once, ``steps`` in-between frames after each). Latents of any shape are walked as vectors."""
    ends = list(range(len(points)))
    pairs = list(zip(ends[:-1], ends[1:], strict=True)) + ([(ends[-1], ends[0])] if closed else [])
    t = torch.linspace(0.0, 1.0, steps + 2)
    flat = points.flatten(1)
    segments = torch.stack([slerp(flat[i], flat[j], t) for i, j in pairs])
    segments = segments.reshape(*segments.shape[:2], *points.shape[1:])
    frames = torch.cat([seg[:-1] for seg in segments] + ([] if closed else [segments[-1][-1:]]))
    return segments, frames


def run_interpolate(loaded: LoadedGenerator, out_dir: Path, num_points: int, steps: int, seed: int,
                    batch_size: int, closed: bool = True, frame_ms: int = 80) -> dict:
    if num_points < 2:
        raise ConfigError(f"interpolate.num_points={num_points}: a walk needs at least 2 latent points.")
    if steps < 0:
        raise ConfigError(f"interpolate.steps={steps} must be >= 0 (the frames between two points).")
    out_dir.mkdir(parents=True, exist_ok=True)
    points = latents(loaded, num_points, seed)
    segments, _ = walk(points, steps, closed)
    s, per = segments.shape[:2]
    grid_images = generate_images(loaded, segments.flatten(0, 1), batch_size)
    by_segment = grid_images.reshape(s, per, *grid_images.shape[1:])  # the GIF reuses the grid's images
    frame_images = torch.cat([seg[:-1] for seg in by_segment] + ([] if closed else [by_segment[-1][-1:]]))
    grid_path = save_grid(grid_images, out_dir / "interpolation.png", nrow=per)
    gif_path = save_gif(frame_images, out_dir / "interpolation.gif", duration_ms=frame_ms)
    log.info("Wrote %s (%d rows of %d) and %s (%d frames)", grid_path, s, per, gif_path, len(frame_images))
    return {"mode": "interpolate", "num_points": num_points, "steps": steps, "closed": bool(closed),
            "seed": int(seed), "frames": len(frame_images), "used_ema": loaded.used_ema,
            "grid": str(grid_path), "gif": str(gif_path)}
