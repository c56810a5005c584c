"""mode=project: the latent whose image comes closest to a given painting (GAN inversion).

For each painting (``image=PATH``, a file or a folder of them), prepared exactly like the training images (the
training run's preprocessing, artgan/data/preprocess.py, at the checkpoint's resolution):

1. search: ``project.search`` random latents are drawn once (from ``seed``) and their images' features extracted;
   the ``project.starts`` closest to the painting are the starting points, and the closest one's distance is
   reported as the yardstick ("best of N random latents");
2. refine: Adam moves the starts together for ``project.steps`` steps (cosine learning-rate decay) to minimise

    pixel_weight * MSE(G(z), painting) + feature_weight * (1 - cos(f(G(z)), f(painting))) + latent_weight * R(z)

where ``f`` is the EfficientNet-Lite0 feature extractor of the metrics (so the distance is the one ``mode=compare``
reports) and ``R(z) = (mean(z^2) / m - 1)^2`` keeps the latent's scale where the generator's own latents live
(``m``: the mean square of 10,000 latents from ``sample_latents``), as StyleGAN2's projector keeps its noise maps
normalised: without it the optimiser walks to latents the generator never saw and paints artefacts. The start with
the lowest final loss wins. ``project.search=0`` starts from random latents instead.

Written per painting ``<name>``: ``<name>_target.png`` (the prepared painting), ``<name>_projection.png``,
``<name>_projection.gif`` (painting | projection during the optimisation) and ``<name>_latent.pt`` (``{"latent":
tensor, ...}``, for ``mode=interpolate interpolate.latents=[a.pt,b.pt]``), and ``project.json``.

Every bad input (no ``image``, a missing path, a file that is not a readable image, one too small for the
generator) stops with one paragraph and exit code 2 before anything is written.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from artgan.data.discovery import IMAGE_EXTENSIONS, find_images
from artgan.data.preprocess import BadImageError, preprocess_file
from artgan.data.transforms import to_model_range, to_uint8
from artgan.errors import ConfigError
from artgan.metrics.diversity import cosine_distances
from artgan.metrics.features import build_feature_extractor
from artgan.metrics.fid import extract_features
from artgan.paths import absolute_path

from .checkpoint import LoadedGenerator
from .images import make_grid, save_gif, to_pil
from .sample import generate_images, latents

log = logging.getLogger(__name__)

#: a painting's shorter side must be at least this fraction of the generator's resolution (more upscaling than 4x
#: leaves a blur no generator paints)
MIN_SIDE_FRACTION = 0.25


def find_targets(image: str | None) -> list[Path]:
    """The painting files ``image=`` names: one file, or every image below a folder."""
    if image is None or not str(image).strip() or str(image) in ("None", "null"):
        raise ConfigError("mode=project needs image=PATH: a painting (jpg, png, ...) or a folder of them, e.g. "
                          "python generate.py mode=project ckpt_path=RUN/checkpoints/last.ckpt image=painting.jpg")
    path = absolute_path(str(image))
    if path.is_dir():
        try:
            return find_images(path)
        except ConfigError:
            raise ConfigError(f"image={str(path)!r} is a folder without image files (looked recursively for "
                              f"{', '.join(sorted(IMAGE_EXTENSIONS))}). Give a painting or a folder of them.") from None
    if not path.is_file():
        raise ConfigError(f"image={str(path)!r} does not exist. Give a painting (jpg, png, ...) or a folder of them.")
    return [path]


def prepare_targets(files: list[Path], datamodule) -> list[tuple[str, torch.Tensor]]:
    """(name, uint8 (3, R, R)) per file, preprocessed like the training images of ``datamodule`` (its settings, not
    its images: nothing is decoded but these files). Raises ConfigError naming the first unusable file."""
    resolution = datamodule.resolution
    out, names = [], set()
    for path in files:
        try:
            with Image.open(path) as im:
                size = im.size
        except Exception as e:  # noqa: BLE001 - Pillow raises many types for non-images
            raise ConfigError(f"image: {str(path)!r} is not an image Pillow can read ({type(e).__name__}: {e}). "
                              "Give a painting as jpg, png, webp, bmp, gif or tif.") from None
        if min(size) < MIN_SIDE_FRACTION * resolution:
            raise ConfigError(f"image: {str(path)!r} is {size[0]}x{size[1]} px, too small for a {resolution} px "
                              f"generator (at least {math.ceil(MIN_SIDE_FRACTION * resolution)} px on the shorter "
                              "side). Give a larger image.")
        try:
            array, upscaled = preprocess_file(path, datamodule.settings)
        except (BadImageError, OSError, ValueError) as e:
            raise ConfigError(f"image: {str(path)!r} cannot be used ({e}). Give a readable painting.") from None
        if upscaled:
            log.warning("%s is smaller than %d px (after border trim) and was upscaled: the target is blurred.", path,
                        datamodule.settings.size)
        o = (array.shape[-1] - resolution) // 2  # the centre crop training images get (data.crop=random caches more)
        name = path.stem
        while name in names:  # same file name in two folders
            name += "_"
        names.add(name)
        out.append((name, torch.from_numpy(np.ascontiguousarray(array[:, o:o + resolution, o:o + resolution]))))
    return out


def latent_scale(loaded: LoadedGenerator, n: int = 10_000) -> float:
    """Mean square of the generator's own latents (1 for a standard normal)."""
    return float(loaded.generator.sample_latents(n, generator=torch.Generator().manual_seed(0)).square().mean())


def project_one(loaded: LoadedGenerator, extractor, target: torch.Tensor, z0: torch.Tensor, cfg, scale: float
                ) -> dict:
    """Optimise the latents ``z0`` (one per start) towards ``target`` (float (1, 3, R, R) in [-1, 1]); the best
    start's latent, image, distances and the frames of its optimisation."""
    generator = loaded.generator
    steps = int(cfg.steps)
    z = z0.clone().to(loaded.device).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=float(cfg.lr), betas=(0.9, 0.999))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    with torch.no_grad():
        target_features = extractor.embed(target)
    frame_at = set(np.linspace(0, steps, max(2, int(cfg.frames))).round().astype(int).tolist())
    frames: list[torch.Tensor] = []
    bar = tqdm(range(steps + 1), desc="Projecting", unit="step", dynamic_ncols=True, leave=False)
    for step in bar:
        images = generator(z)
        pixel = (images - target).square().flatten(1).mean(1)
        feature = 1.0 - F.cosine_similarity(extractor.embed(images), target_features, dim=1)
        prior = (z.square().flatten(1).mean(1) / scale - 1.0).square()
        loss = float(cfg.pixel_weight) * pixel + float(cfg.feature_weight) * feature + float(cfg.latent_weight) * prior
        if step in frame_at:
            frames.append(to_uint8(images.detach()).cpu())
        if step == 0:
            first_loss, first_feature = loss.detach().clone(), feature.detach().clone()
        if step == steps:  # the last evaluation: scores of the final latents, no update
            break
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(feature=f"{float(feature.detach().min()):.4f}", pixel=f"{float(pixel.detach().min()):.4f}")
    bar.close()
    best = int(loss.detach().argmin())
    return {"latent": z.detach()[best].cpu(), "image": to_uint8(images.detach()[best]).cpu(),
            "feature_distance": float(feature.detach()[best]), "pixel_mse": float(pixel.detach()[best]),
            "loss": float(loss.detach()[best]), "loss_at_start": float(first_loss[best]),
            "feature_distance_at_start": float(first_feature[best]),
            "latent_mean_square": float(z.detach()[best].square().mean()), "start": best,
            "frames": torch.stack([f[best] for f in frames])}


def search(loaded: LoadedGenerator, extractor, n: int, seed: int, batch_size: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random latents and the features (n, D) of their images: the pool the starts are picked from."""
    z = latents(loaded, n, seed)
    images = generate_images(loaded, z, batch_size, desc="Random latents")
    return z, extract_features(extractor, images, batch_size=batch_size)


def run_project(loaded: LoadedGenerator, datamodule, out_dir: Path, image: str | None, cfg, seed: int,
                batch_size: int) -> dict:
    for key in ("steps", "starts", "frames"):
        if int(cfg[key]) < 1:
            raise ConfigError(f"project.{key}={cfg[key]} must be >= 1.")
    if int(cfg.search) < 0 or float(cfg.lr) <= 0 \
            or min(float(cfg.pixel_weight), float(cfg.feature_weight), float(cfg.latent_weight)) < 0:
        raise ConfigError("project.search must be >= 0, project.lr > 0 and project.pixel_weight, feature_weight "
                          "and latent_weight >= 0.")
    targets = prepare_targets(find_targets(image), datamodule)  # every input checked before a file is written
    out_dir.mkdir(parents=True, exist_ok=True)
    extractor = build_feature_extractor("effnet_lite0").to(loaded.device)
    scale = latent_scale(loaded)
    starts, n_search = int(cfg.starts), int(cfg.search)
    pool = search(loaded, extractor, max(n_search, starts), seed, batch_size) if n_search else None
    rows = []
    for name, target_u8 in targets:
        row = {"name": name}
        if pool is None:
            z0 = latents(loaded, starts, seed)
        else:
            # Start where the random search got closest: gradient descent refines a good guess, and on a
            # painting far from everything the generator paints, random starts stall above the best guess.
            distances = cosine_distances(extract_features(extractor, target_u8[None]), pool[1])[0]
            nearest = distances.topk(starts, largest=False)
            z0 = pool[0][nearest.indices]
            row["best_random_feature_distance"] = float(nearest.values[0])
        with torch.enable_grad():  # generate.run works under no_grad
            found = project_one(loaded, extractor, to_model_range(target_u8)[None].to(loaded.device), z0, cfg, scale)
        to_pil(target_u8).save(out_dir / f"{name}_target.png")
        to_pil(found["image"]).save(out_dir / f"{name}_projection.png")
        pairs = [make_grid(torch.stack([target_u8, frame]), nrow=2) for frame in found["frames"]]
        save_gif(torch.stack(pairs), out_dir / f"{name}_projection.gif", duration_ms=int(cfg.frame_ms))
        torch.save({"latent": found["latent"], "checkpoint": str(loaded.path), "image": name,
                    "feature_distance": found["feature_distance"]}, out_dir / f"{name}_latent.pt")
        row.update({k: found[k] for k in ("feature_distance", "pixel_mse", "loss", "loss_at_start",
                                          "feature_distance_at_start", "latent_mean_square", "start")})
        row["latent"] = str(out_dir / f"{name}_latent.pt")
        rows.append(row)
        log.info("%s: feature distance %.4f, pixel MSE %.4f%s", name, row["feature_distance"], row["pixel_mse"],
                 f" (best of {n_search} random latents: {row['best_random_feature_distance']:.4f})" if pool else "")
    result = {"mode": "project", "checkpoint": str(loaded.path), "used_ema": loaded.used_ema,
              "resolution": loaded.resolution, "seed": int(seed), "latent_mean_square_prior": scale,
              "settings": {k: cfg[k] for k in cfg}, "search": n_search, "paintings": rows}
    (out_dir / "project.json").write_text(json.dumps(result, indent=1))
    return result


def print_project(result: dict) -> None:
    n = result["search"]
    print(f"\nProjected {len(result['paintings'])} painting(s) into {result['checkpoint']} (feature distance: cosine, "
          "EfficientNet-Lite0; 0 = same features)")
    for row in result["paintings"]:
        extra = f"   best of {n} random latents {row['best_random_feature_distance']:.4f}" if n else ""
        print(f"  {row['name']}: feature distance {row['feature_distance']:.4f}, pixel MSE {row['pixel_mse']:.4f}"
              f"{extra}  -> {row['latent']}")
    print()
