"""mode=sample: N images from a checkpoint as PNGs plus grid.png, reproducible with ``seed``."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from tqdm.auto import tqdm

from artgan.data.transforms import to_uint8
from artgan.errors import ConfigError

from .checkpoint import LoadedGenerator
from .images import save_grid, to_pil

log = logging.getLogger(__name__)


def latents(loaded: LoadedGenerator, n: int, seed: int, truncation: float | None = None) -> torch.Tensor:
    """``n`` latents of the loaded generator, drawn on the CPU from ``seed``: the same on any device and for any
    batch size, and the first k of n are the k of a smaller run with the same seed. ``truncation`` (psi < 1):
    the truncation trick (``Generator.sample_latents``); None or 1: the usual latents."""
    g = torch.Generator().manual_seed(int(seed))
    if truncation is None or float(truncation) == 1.0:
        return loaded.generator.sample_latents(n, generator=g)
    return loaded.generator.sample_latents(n, generator=g, truncation=float(truncation))


@torch.no_grad()
def generate_batches(loaded: LoadedGenerator, z: torch.Tensor, batch_size: int, progress: bool = False,
                     desc: str = "Generating") -> Iterator[torch.Tensor]:
    """Yield uint8 (B, 3, R, R) CPU batches of the images for latents ``z``."""
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be a positive number of images per forward pass.")
    bar = tqdm(total=len(z), desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    try:
        for chunk in z.split(int(batch_size)):
            out = loaded.generator(chunk.to(loaded.device))
            batch = to_uint8(out).cpu()
            bar.update(len(batch))
            yield batch
    finally:
        bar.close()


def generate_images(loaded: LoadedGenerator, z: torch.Tensor, batch_size: int = 64, progress: bool = False,
                    desc: str = "Generating") -> torch.Tensor:
    """All images for latents ``z`` as one uint8 (N, 3, R, R) CPU tensor."""
    return torch.cat(list(generate_batches(loaded, z, batch_size, progress, desc)))


def run_sample(loaded: LoadedGenerator, out_dir: Path, num_images: int, seed: int, batch_size: int,
               progress: str | bool = "auto", grid_max: int = 64, truncation: float | None = None) -> dict:
    if num_images < 1:
        raise ConfigError(f"num_images={num_images} must be at least 1.")
    out_dir.mkdir(parents=True, exist_ok=True)
    show = num_images >= 256 if progress == "auto" else bool(progress)
    z = latents(loaded, num_images, seed, truncation)
    width = max(5, len(str(num_images - 1)))
    grid_images: list[torch.Tensor] = []
    start = time.perf_counter()
    gen_time = 0.0
    # PNG encoding (zlib) releases the GIL: two writer threads keep up with the generator on CPU.
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = []
        index = 0
        t0 = time.perf_counter()
        for batch in generate_batches(loaded, z, batch_size, progress=show, desc="Sampling"):
            gen_time += time.perf_counter() - t0
            if sum(len(g) for g in grid_images) < grid_max:
                grid_images.append(batch[: grid_max - sum(len(g) for g in grid_images)])
            for img in batch:
                pending.append(pool.submit(to_pil(img).save, out_dir / f"{index:0{width}d}.png"))
                index += 1
            pending = [f for f in pending if not f.done() or f.result()]
            t0 = time.perf_counter()
        for f in pending:
            f.result()
    total = time.perf_counter() - start
    grid = torch.cat(grid_images)
    save_grid(grid, out_dir / "grid.png")
    result = {
        "mode": "sample", "num_images": num_images, "seed": int(seed), "truncation": truncation,
        "resolution": loaded.resolution,
        "used_ema": loaded.used_ema, "device": str(loaded.device), "output_dir": str(out_dir),
        "seconds": round(total, 3), "images_per_second": round(num_images / total, 2),
        "generator_images_per_second": round(num_images / max(gen_time, 1e-9), 2),
    }
    log.info("Wrote %d images (%d px) and grid.png to %s: %.1f images/s (generator alone %.1f images/s)",
             num_images, loaded.resolution, out_dir, result["images_per_second"],
             result["generator_images_per_second"])
    return result
