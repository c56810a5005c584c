"""Where a generator's diversity gap lies in a feature space: a shared offset or a narrower spread.

The diversity ratio (artgan/metrics/diversity.py) is the generated images' mean pairwise cosine distance over
the paintings'. Two things lower it: every sample sharing something the paintings do not (a common texture, tint
or artefact, so the generated features' mean sits away from the paintings'), and samples that vary less than the
paintings (a narrower spread). For each snapshot (a ``bench/quality.py`` snapshot or a training checkpoint) this
prints:

* ``diversity``: the ratio as the evaluator computes it (the same seeded latents as ``bench/quality.py``);
* ``without offset``: the ratio after moving the generated features' mean onto the paintings' mean, i.e. what
  removing the shared offset alone would give;
* ``spread``: total feature variance, generated over paintings;
* ``offset``: the distance between the two means over the paintings' feature standard deviation (root of the
  total variance).

For scale it first prints the same for the paintings themselves blurred (down to 32, 16 and 8 px and back up):
how much of the ratio is fine detail rather than composition. Then, per snapshot, two more views:

* **at which scale**: the ratio with both sets blurred to 48, 32 and 16 px; where it jumps towards 1 is the scale
  whose variety the samples lack;
* **kinds of painting**: the paintings clustered (k-means, ``--clusters``, in the same features), each sample put
  in its nearest cluster. ``share gap`` is the total-variation distance between the two cluster histograms (0: the
  samples paint every kind as often as the paintings show it); ``rebalanced`` is the ratio with each sample
  weighted by its cluster's painting share over its generated share, the most that painting the kinds in the
  paintings' proportions could give (what conditioning on the clusters aims at); ``within`` is the generated
  over the painted diversity inside each cluster, averaged over clusters.

    .venv/bin/python bench/diversity_gap.py bench/results/runs/amd_r31_ens_mbstd_tr_s0/snapshots/t01500.pt
    .venv/bin/python bench/diversity_gap.py --extractor effnet_lite2 outputs/train/<run>/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from quality import DEFAULT_DATA, EVAL_SEED, compose, load_snapshot  # noqa: E402

from artgan.errors import ArtGANError  # noqa: E402
from artgan.metrics.diversity import cosine_distances, diversity, mean_pairwise_distance  # noqa: E402
from artgan.metrics.features import build_feature_extractor  # noqa: E402


def load_generator(path: Path):
    """The sampling generator of a bench snapshot, or the EMA (else live) generator of a training checkpoint."""
    from artgan.generate.checkpoint import load_generator as from_checkpoint

    if path.suffix == ".ckpt":
        return from_checkpoint(str(path), use_ema=True).generator
    return load_snapshot(path)[0]


def gap(fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    real_var = real.var(0).sum()
    return {"diversity": diversity(fake, real)["diversity_ratio"],
            "without offset": diversity(fake - fake.mean(0) + real.mean(0), real)["diversity_ratio"],
            "spread": float(fake.var(0).sum() / real_var),
            "offset": float((fake.mean(0) - real.mean(0)).norm() / real_var.sqrt())}


def weighted_diversity(fake: torch.Tensor, real: torch.Tensor, weights: torch.Tensor) -> float:
    """The diversity ratio with each generated sample's pairs weighted by ``weights`` (pairs i != j)."""
    pair = weights.double()[:, None] * weights.double()[None, :]
    pair.fill_diagonal_(0)
    return float((cosine_distances(fake, fake) * pair).sum() / pair.sum()) / mean_pairwise_distance(real)


def kinds(fake: torch.Tensor, real: torch.Tensor, k: int) -> dict[str, float]:
    """Cluster coverage of the generated samples over k-means clusters of the paintings (cosine geometry)."""
    from scipy.cluster.vq import kmeans2

    real_unit, fake_unit = F.normalize(real.double(), dim=1), F.normalize(fake.double(), dim=1)
    centroids, real_of = kmeans2(real_unit.numpy(), k, seed=0, minit="++")
    real_of = torch.as_tensor(real_of)
    fake_of = torch.cdist(fake_unit, torch.as_tensor(centroids)).argmin(1)
    real_share = torch.bincount(real_of, minlength=k).double() / len(real_of)
    fake_share = torch.bincount(fake_of, minlength=k).double() / len(fake_of)
    weights = (real_share / fake_share.clamp_min(1e-12))[fake_of]
    within = [mean_pairwise_distance(fake[fake_of == j]) / mean_pairwise_distance(real[real_of == j])
              for j in range(k) if (fake_of == j).sum() > 1 and (real_of == j).sum() > 1]
    return {"share gap": float(0.5 * (real_share - fake_share).abs().sum()),
            "rebalanced": weighted_diversity(fake, real, weights),
            "within": sum(within) / len(within)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("snapshots", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--extractor", default="effnet", help="effnet (Lite0) or effnet_lite2")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=8, help="k-means clusters of the paintings (kinds)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.snapshots if not p.is_file()]
    if missing:
        print(f"diversity_gap.py: no such snapshot or checkpoint: {', '.join(missing)}. Pass bench/quality.py "
              "snapshots (bench/results/runs/<run>/snapshots/t*.pt) or train.py checkpoints (*.ckpt).",
              file=sys.stderr)
        return 2
    torch.set_grad_enabled(False)
    from hydra.utils import instantiate

    cfg = compose([f"model.resolution={args.resolution}", "data=abstract_art", f"data.root={args.data}"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    real_images = datamodule.real_images().float() / 127.5 - 1.0
    extractor = build_feature_extractor(args.extractor)

    def blur(images: torch.Tensor, low: int) -> torch.Tensor:
        return F.interpolate(F.interpolate(images, size=low, mode="area"), size=size, mode="bilinear")

    def features(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([extractor(batch).float() for batch in images.clamp(-1, 1).split(64)])

    def show(name: str, values: dict[str, float]) -> None:
        print(f"{name:>40}  " + "  ".join(f"{k} {v:.3f}" for k, v in values.items()), flush=True)

    real = features(real_images)
    size = args.resolution
    for low in (32, 16, 8):
        show(f"paintings blurred to {low} px", gap(features(blur(real_images, low)), real))
    lows = [low for low in (48, 32, 16) if low < size]
    real_blurred = {low: features(blur(real_images, low)) for low in lows}
    for path in args.snapshots:
        generator = load_generator(path).eval()
        latents = generator.sample_latents(args.num_samples, generator=torch.Generator().manual_seed(EVAL_SEED))
        images = torch.cat([generator(z) for z in latents.split(64)]).clamp(-1, 1)
        fake = features(images)
        show(str(path)[-40:], gap(fake, real))
        show("both blurred to", {f"{low} px": diversity(features(blur(images, low)), real_blurred[low])
                                 ["diversity_ratio"] for low in lows})
        show(f"kinds ({args.clusters} clusters)", kinds(fake, real, args.clusters))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ArtGANError as err:  # a data folder or checkpoint it cannot use: the message says which and what to do
        print(f"diversity_gap.py: {err}", file=sys.stderr)
        sys.exit(2)
