"""mode=interpolate: a spherical walk through K latent points, as a grid PNG and an animated GIF.

The points are drawn from ``seed`` (``interpolate.num_points`` of them, with ``truncation`` if set), or read from
latent files (``interpolate.latents=[a.pt,b.pt]``, e.g. two paintings found by ``mode=project``): a walk from one
real painting to another."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from artgan.errors import ConfigError
from artgan.paths import absolute_path

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


def load_latents(loaded: LoadedGenerator, paths: list) -> torch.Tensor:
    """The latents saved by ``mode=project`` (or any ``.pt`` holding a tensor, or a dict with ``"latent"``), stacked
    as (K, *latent shape); every way a file can be wrong is a ConfigError naming it."""
    shape = tuple(loaded.generator.sample_latents(1).shape[1:])
    points = []
    for given in paths:
        path = absolute_path(str(given))
        if not path.is_file():
            raise ConfigError(f"interpolate.latents: {str(path)!r} is not a file. Give latents saved by "
                              "mode=project, e.g. interpolate.latents=[art/a_latent.pt,art/b_latent.pt].")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - pickles, truncated files, text: all the same to the user
            raise ConfigError(f"interpolate.latents: {str(path)!r} is not a latent file torch can read safely "
                              f"({type(e).__name__}). Give latents saved by mode=project.") from None
        z = blob.get("latent") if isinstance(blob, dict) else blob
        if not isinstance(z, torch.Tensor) or z.reshape(-1).numel() != math.prod(shape) \
                or not torch.isfinite(z).all():
            raise ConfigError(f"interpolate.latents: {str(path)!r} does not hold a finite latent of shape {shape} "
                              "for this checkpoint's generator (was it projected with another checkpoint?).")
        points.append(z.float().reshape(shape))
    if len(points) < 2:
        raise ConfigError(f"interpolate.latents has {len(points)} file(s): a walk needs at least 2.")
    return torch.stack(points)


def run_interpolate(loaded: LoadedGenerator, out_dir: Path, num_points: int, steps: int, seed: int,
                    batch_size: int, closed: bool = True, frame_ms: int = 80, truncation: float | None = None,
                    latent_files: list | None = None) -> dict:
    if latent_files:
        points = load_latents(loaded, list(latent_files))
        num_points = len(points)
    elif num_points < 2:
        raise ConfigError(f"interpolate.num_points={num_points}: a walk needs at least 2 latent points.")
    else:
        points = latents(loaded, num_points, seed, truncation)
    if steps < 0:
        raise ConfigError(f"interpolate.steps={steps} must be >= 0 (the frames between two points).")
    out_dir.mkdir(parents=True, exist_ok=True)
    segments, _ = walk(points, steps, closed)
    s, per = segments.shape[:2]
    grid_images = generate_images(loaded, segments.flatten(0, 1), batch_size)
    by_segment = grid_images.reshape(s, per, *grid_images.shape[1:])  # the GIF reuses the grid's images
    frame_images = torch.cat([seg[:-1] for seg in by_segment] + ([] if closed else [by_segment[-1][-1:]]))
    grid_path = save_grid(grid_images, out_dir / "interpolation.png", nrow=per)
    gif_path = save_gif(frame_images, out_dir / "interpolation.gif", duration_ms=frame_ms)
    log.info("Wrote %s (%d rows of %d) and %s (%d frames)", grid_path, s, per, gif_path, len(frame_images))
    return {"mode": "interpolate", "num_points": num_points, "steps": steps, "closed": bool(closed),
            "seed": int(seed), "truncation": truncation, "latents": [str(p) for p in latent_files or []],
            "frames": len(frame_images), "used_ema": loaded.used_ema,
            "grid": str(grid_path), "gif": str(gif_path)}
