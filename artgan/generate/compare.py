"""mode=compare: generated images beside their nearest training images (the memorization check) and a
diversity score, both in the feature space of the offline ImageNet EfficientNet-Lite0.

* Distance: cosine distance ``1 - cos(f_a, f_b)`` between 1280-d pooled EfficientNet-Lite0 features
  (``artgan.metrics.features``; images resized to 224 px), in [0, 2], 0 = same features.
* Nearest neighbours: for each generated image, the ``k`` training images with the smallest distance.
  As a reference, each training image's nearest *other* training image (leave-one-out) is measured too:
  generated images much closer to the training set than training images are to each other are copies.
* Diversity ratio: mean pairwise distance among ``n`` generated images divided by the same among ``n``
  training images (``n = min(num_generated, number of training images)``). ~1: as varied as the data;
  well below 1: mode collapse.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from artgan.errors import ConfigError
from artgan.metrics.diversity import diversity
from artgan.metrics.features import build_feature_extractor
from artgan.metrics.fid import extract_features, load_or_compute_real_features
from artgan.metrics.neighbours import memorization, nearest_neighbours, real_leave_one_out

from .checkpoint import LoadedGenerator
from .images import neighbours_picture
from .sample import generate_images, latents

__all__ = ["diversity", "nearest_neighbours", "print_compare", "run_compare"]

log = logging.getLogger(__name__)


def run_compare(loaded: LoadedGenerator, datamodule, data_desc: str, out_dir: Path, cfg, seed: int,
                batch_size: int, cache_dir: str, device: torch.device, truncation: float | None = None) -> dict:
    k, rows, n_gen = int(cfg.k), int(cfg.num_rows), int(cfg.num_generated)
    if k < 1 or rows < 1 or n_gen < 2:
        raise ConfigError(f"compare.k={k} and compare.num_rows={rows} must be >= 1 and compare.num_generated="
                          f"{n_gen} >= 2.")
    if cfg.order not in ("closest", "random"):
        raise ConfigError(f"compare.order={cfg.order!r}: use 'closest' (the generated images nearest the training "
                          "set first, the memorization check) or 'random'.")
    out_dir.mkdir(parents=True, exist_ok=True)
    extractor = build_feature_extractor(cfg.extractor).to(device)
    res = loaded.resolution
    real_feats = load_or_compute_real_features(
        extractor, lambda: datamodule.real_images(), cache_dir=cache_dir, fingerprint=datamodule.fingerprint,
        # num_images = the count, as the metrics callback keys it when num_real >= the dataset: shared cache.
        resolution=res, num_images=datamodule.dataset_size, batch_size=int(cfg.feature_batch_size))
    if real_feats.shape[0] < 2:
        raise ConfigError(f"compare needs at least 2 real images; {data_desc} has {real_feats.shape[0]}.")
    fake = generate_images(loaded, latents(loaded, n_gen, seed, truncation), batch_size, desc="Generating")
    log.info("Extracting %s features of %d generated images", extractor.name, n_gen)
    fake_feats = extract_features(extractor, fake, batch_size=int(cfg.feature_batch_size))

    nn_dist, nn_idx = nearest_neighbours(fake_feats, real_feats, k)
    loo = real_leave_one_out(real_feats)
    div = diversity(fake_feats, real_feats, seed)
    order = (nn_dist[:, 0].argsort() if cfg.order == "closest" else torch.arange(n_gen))[: min(rows, n_gen)]
    real = datamodule.real_images()
    cell = int(cfg.cell_size) if cfg.get("cell_size") else max(res, 64)
    picture = neighbours_picture(fake[order], real, nn_idx[order], nn_dist[order], cell=cell)
    picture_path = out_dir / "compare.png"
    picture.save(picture_path, optimize=True)

    files = (datamodule.manifest or {}).get("files")
    gen_nn = nn_dist[:, 0]
    result = {
        "mode": "compare",
        "checkpoint": str(loaded.path),
        "used_ema": loaded.used_ema,
        "real_images": data_desc,
        "num_real": int(real_feats.shape[0]),
        "num_generated": n_gen,
        "seed": int(seed),
        "truncation": truncation,
        "resolution": res,
        "feature_space": f"{extractor.name} ({cfg.extractor}), cosine distance",
        "diversity": div,
        "nearest_neighbour_distance": memorization(gen_nn, loo),
        "picture": str(picture_path),
        "rows": [
            {"generated_index": int(i),
             "neighbours": [{"real_index": int(j), "distance": round(float(d), 5),
                             **({"file": str(files[int(j)])} if files and int(j) < len(files) else {})}
                            for j, d in zip(nn_idx[i], nn_dist[i], strict=True)]}
            for i in order
        ],
    }
    (out_dir / "compare.json").write_text(json.dumps(result, indent=1))
    return result


def print_compare(result: dict) -> None:
    d, nn = result["diversity"], result["nearest_neighbour_distance"]
    g, r = nn["generated_to_real"], nn["real_to_other_real"]
    print(f"\nCompare ({result['feature_space']}; {result['num_generated']} generated vs {result['num_real']} real)")
    print(f"  diversity ratio (mean pairwise distance, generated / real, n={d['n']}): {d['diversity_ratio']:.3f}"
          f"   ({d['generated_mean_pairwise_distance']:.4f} / {d['real_mean_pairwise_distance']:.4f})")
    print(f"  nearest training image, generated: median {g['median']:.4f}  min {g['min']:.4f}")
    print(f"  nearest other training image, real: median {r['median']:.4f}  min {r['min']:.4f}")
    print(f"  median ratio {nn['median_ratio']:.3f}; generated closer than the closest 1% of real pairs: "
          f"{100 * nn['fraction_closer_than_real_p1']:.1f}%")
    print(f"  picture: {result['picture']}\n")
