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
from PIL import Image, ImageDraw

from artgan.errors import ConfigError
from artgan.metrics.diversity import cosine_distances, diversity
from artgan.metrics.features import build_feature_extractor
from artgan.metrics.fid import extract_features, load_or_compute_real_features

from .checkpoint import LoadedGenerator
from .images import to_pil
from .sample import generate_images, latents

log = logging.getLogger(__name__)


def nearest_neighbours(fake: torch.Tensor, real: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, indices), each (N_fake, k), nearest first."""
    d = cosine_distances(fake, real)
    dist, idx = d.topk(min(k, real.shape[0]), dim=1, largest=False)
    return dist.float(), idx


def real_leave_one_out(real: torch.Tensor) -> torch.Tensor:
    """Each real image's distance to its nearest other real image."""
    d = cosine_distances(real, real)
    d.fill_diagonal_(float("inf"))
    return d.min(dim=1).values.float()


def _stats(x: torch.Tensor) -> dict:
    x = x.double()
    return {"mean": float(x.mean()), "median": float(x.median()), "min": float(x.min()), "max": float(x.max())}


def compare_picture(fake: torch.Tensor, real: torch.Tensor, nn_idx: torch.Tensor, nn_dist: torch.Tensor,
                    cell: int, gap: int = 12, pad: int = 4, label_h: int = 14) -> Image.Image:
    """One row per generated image: the image, a gap, then its k nearest training images with distances."""
    rows, k = nn_idx.shape
    header = 18
    width = pad + cell + gap + k * (cell + pad)
    height = header + rows * (cell + label_h + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 3), "generated", fill=(0, 0, 0))
    draw.text((pad + cell + gap, 3), f"{k} nearest training images (cosine distance, EfficientNet-Lite0)",
              fill=(0, 0, 0))

    def paste(img: torch.Tensor, x: int, y: int) -> None:
        pil = to_pil(img)
        if pil.size != (cell, cell):
            pil = pil.resize((cell, cell), Image.Resampling.LANCZOS)
        canvas.paste(pil, (x, y))

    for r in range(rows):
        y = header + r * (cell + label_h + pad)
        paste(fake[r], pad, y)
        draw.rectangle([pad - 1, y - 1, pad + cell, y + cell], outline=(200, 30, 30))
        for j in range(k):
            x = pad + cell + gap + j * (cell + pad)
            paste(real[int(nn_idx[r, j])], x, y)
            draw.text((x + 2, y + cell + 1), f"{float(nn_dist[r, j]):.3f}", fill=(60, 60, 60))
    return canvas


def run_compare(loaded: LoadedGenerator, datamodule, data_desc: str, out_dir: Path, cfg, seed: int,
                batch_size: int, cache_dir: str, device: torch.device) -> dict:
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
    fake = generate_images(loaded, latents(loaded, n_gen, seed), batch_size, desc="Generating")
    log.info("Extracting %s features of %d generated images", extractor.name, n_gen)
    fake_feats = extract_features(extractor, fake, batch_size=int(cfg.feature_batch_size))

    nn_dist, nn_idx = nearest_neighbours(fake_feats, real_feats, k)
    loo = real_leave_one_out(real_feats)
    div = diversity(fake_feats, real_feats, seed)
    order = (nn_dist[:, 0].argsort() if cfg.order == "closest" else torch.arange(n_gen))[: min(rows, n_gen)]
    real = datamodule.real_images()
    cell = int(cfg.cell_size) if cfg.get("cell_size") else max(res, 64)
    picture = compare_picture(fake[order], real, nn_idx[order], nn_dist[order], cell=cell)
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
        "resolution": res,
        "feature_space": f"{extractor.name} ({cfg.extractor}), cosine distance",
        "diversity": div,
        "nearest_neighbour_distance": {
            "generated_to_real": _stats(gen_nn),
            "real_to_other_real": _stats(loo),
            "median_ratio": float(gen_nn.median() / loo.median()) if float(loo.median()) > 0 else float("nan"),
            # Generated images closer to a training image than the closest 1% of training pairs are.
            "fraction_closer_than_real_p1": float((gen_nn < torch.quantile(loo.double(), 0.01).float())
                                                  .float().mean()),
        },
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
