"""mode=evaluate: FID / KID (and colour-histogram KL / JS) of a checkpoint, with the protocol of the training
metrics callback (``artgan.callbacks.metrics.MetricsCallback``) and the same defaults:

* real side: the first ``num_real`` (2000) images of the data pipeline at the checkpoint's resolution
  (``ArtDataModule.real_images``: unflipped, centre-cropped), features cached in ``paths.cache_dir`` under
  the same key as the callback's, so evaluating a run after training reuses them;
* fake side: ``num_fake`` (512) images through the EMA generator in eval mode, latents drawn batch by batch
  (``batch_size``) from ``torch.Generator().manual_seed(seed)`` exactly like the callback, so with the same
  seed / batch size / counts the numbers equal the run's final ``metrics/*`` values;
* ``artgan.metrics.fid.FeatureDistances`` (FID, KID with ``kid_subset_size`` / ``kid_subsets``) and
  ``artgan.metrics.kl.ColorKL``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from artgan.errors import ArtGANError, ConfigError
from artgan.metrics import ColorKL, FeatureDistances, FeatureExtractorUnavailable, build_feature_extractor

from .checkpoint import LoadedGenerator

log = logging.getLogger(__name__)


def callback_latents(n: int, latent_dim: int, seed: int, batch_size: int):
    """The metrics callback's evaluation latents: batches drawn in turn from one seeded generator."""
    gen = torch.Generator().manual_seed(int(seed))
    remaining = n
    while remaining > 0:
        b = min(batch_size, remaining)
        yield torch.randn(b, latent_dim, 1, 1, generator=gen)
        remaining -= b


def run_evaluate(loaded: LoadedGenerator, datamodule, data_desc: str, out_dir: Path, cfg, seed: int,
                 batch_size: int, cache_dir: str, device: torch.device) -> dict:
    num_fake = int(cfg.num_fake)
    if num_fake < 2:
        raise ConfigError(f"evaluate.num_fake={num_fake}: FID and KID need at least 2 generated images.")
    if cfg.num_real is not None and int(cfg.num_real) < 2:
        raise ConfigError(f"evaluate.num_real={cfg.num_real} must be >= 2 (or null for all real images).")
    extractors = [cfg.extractors] if isinstance(cfg.extractors, str) else list(cfg.extractors or [])
    out_dir.mkdir(parents=True, exist_ok=True)
    res = loaded.resolution
    size = datamodule.dataset_size
    n_real = size if cfg.num_real is None else min(int(cfg.num_real), size)
    if n_real < 2:
        raise ArtGANError(f"{data_desc} holds {n_real} usable image(s); FID and KID need at least 2.")

    start = time.perf_counter()
    kl = None
    if cfg.get("kl", True):
        kl = ColorKL().to(device)
        for chunk in datamodule.real_images(n_real).split(256):
            kl.update(chunk.to(device), real=True)
    fids, skipped = [], {}
    for name in extractors:
        weights = cfg.get("inception_weights_path") if str(name).lower() == "inception" \
            else cfg.get("effnet_weights_path")
        try:
            extractor = build_feature_extractor(name, weights)
        except FeatureExtractorUnavailable as e:
            if len(extractors) == 1:
                raise
            log.warning("Skipping FID/KID with %s: %s", name, e)
            skipped[str(name)] = str(e)
            continue
        fd = FeatureDistances(extractor, kid_subset_size=int(cfg.kid_subset_size), kid_subsets=int(cfg.kid_subsets),
                              batch_size=int(batch_size), seed=int(seed)).to(device)
        fd.prepare_real(lambda: datamodule.real_images(n_real), cache_dir=cache_dir,
                        fingerprint=datamodule.fingerprint, resolution=res, num_images=n_real)
        fids.append(fd)
    if not fids and kl is None:
        raise ArtGANError(f"Nothing to evaluate: none of evaluate.extractors={extractors} can be built here and "
                          "evaluate.kl=false. " + " ".join(skipped.values()))

    bar = tqdm(total=num_fake, desc="Generating + features", unit="img", disable=num_fake < 256, dynamic_ncols=True)
    for z in callback_latents(num_fake, loaded.latent_dim, seed, int(batch_size)):
        images = loaded.generator(z.to(device))
        if kl is not None:
            kl.update(images, real=False)
        for fd in fids:
            fd.update(images=images)
        bar.update(len(z))
    bar.close()
    values: dict[str, float] = {}
    if kl is not None:
        values.update(kl.compute())
    for fd in fids:
        values.update(fd.compute())
    result = {
        "mode": "evaluate",
        "checkpoint": str(loaded.path),
        "used_ema": loaded.used_ema,
        "real_images": data_desc,
        "resolution": res,
        "num_fake": num_fake,
        "num_real": n_real,
        "seed": int(seed),
        "batch_size": int(batch_size),
        "kid_subset_size": min(int(cfg.kid_subset_size), n_real, num_fake),
        "kid_subsets": int(cfg.kid_subsets),
        "metrics": {k: (None if isinstance(v, float) and not math.isfinite(v) else float(v)) for k, v in values.items()},
        "skipped": skipped,
        "seconds": round(time.perf_counter() - start, 2),
    }
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=1))
    return result


def print_metrics(result: dict) -> None:
    rows = []
    for key, value in result["metrics"].items():
        if key.endswith("_std"):
            continue
        std = result["metrics"].get(f"{key}_std")
        shown = "n/a" if value is None else f"{value:.5g}"
        if std is not None and value is not None:
            shown += f" ± {std:.2g}"
        rows.append((key, shown))
    width = max([6] + [len(k) for k, _ in rows])
    print(f"\nEvaluate {result['checkpoint']}\n  {result['resolution']} px, {'EMA' if result['used_ema'] else 'plain'} "
          f"generator, {result['num_fake']} generated vs {result['num_real']} real images ({result['real_images']})")
    print(f"  {'metric':<{width}}  value")
    print(f"  {'-' * width}  {'-' * 18}")
    for key, shown in rows:
        print(f"  {key:<{width}}  {shown}")
    print()
