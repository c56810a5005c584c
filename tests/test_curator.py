"""The evaluator's held-out and precision/recall numbers, what it keeps for the curator panel, and the panel itself,
on hand-built image sets with known answers (a cheap stand-in extractor: no network); then one short train.py run
on a folder with data.holdout, read back from its TensorBoard event files."""

from __future__ import annotations

import io
import math
import re

import numpy as np
import pytest
import torch
from conftest import FAST_TRAIN, run_script
from PIL import Image

import artgan.metrics.evaluator as evaluator_module
from artgan.callbacks.curator import CuratorCallback, histogram_picture
from artgan.metrics.evaluator import Evaluation, Evaluator


class PooledPixels(torch.nn.Module):
    """Features = 4x4-pooled pixels: cheap, deterministic, and far apart for images of different colours."""

    name = "effnet"  # stands in for the default extractor, so the curator finds it
    cache_key = "pooled-4x4-v1"
    num_features = 48

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x.float(), 4).flatten(1)


def cluster(n: int, level: float, seed: int) -> torch.Tensor:
    """n uint8 16 px images around one grey level, with noise of their own."""
    g = torch.Generator().manual_seed(seed)
    x = level + 0.15 * torch.randn(n, 3, 16, 16, generator=g)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class Paintings:
    """What the evaluator asks of a datamodule, with a training and a held-out set."""

    resolution, fingerprint, heldout_fingerprint = 16, "train-v1", "heldout-v1"

    def __init__(self, train: torch.Tensor, heldout: torch.Tensor):
        self.train, self.heldout = train, heldout
        self.dataset_size, self.heldout_size = len(train), len(heldout)

    def real_images(self, n=None):
        return self.train[:n]

    def heldout_images(self, n=None):
        return self.heldout[:n]


@pytest.fixture
def evaluator(monkeypatch, tmp_path):
    monkeypatch.setattr(evaluator_module, "build_feature_extractor", lambda name, weights=None, **kwargs: PooledPixels())
    return Evaluator(num_samples=40, num_real=None, batch_size=16, cache_dir=str(tmp_path), keep_images=8,
                     kl={"enabled": False}, swd={"enabled": False}, spectral={"enabled": False},
                     fid={"kid_subset_size": 10, "kid_subsets": 20})


def test_identical_sets_give_precision_recall_one_and_a_far_heldout_set_zero(evaluator):
    train, heldout = cluster(40, -0.6, 0), cluster(12, 0.7, 1)  # held-out paintings of another colour
    assert evaluator.prepare(Paintings(train, heldout), "cpu")
    values = evaluator.evaluate_images(iter(train.split(16)))  # "generated" = the training images themselves
    for name in ("precision", "recall", "coverage"):
        assert values[f"{name}_effnet"] == pytest.approx(1.0), name
        assert values[f"{name}_effnet_heldout"] == 0.0, name  # disjoint clusters
    assert values["density_effnet"] == pytest.approx(1.0, abs=0.05) and values["density_effnet_heldout"] == 0.0
    assert abs(values["kid_effnet"]) < 1e-3 < values["kid_effnet_heldout"]
    assert values["kid_effnet_gap"] == pytest.approx(values["kid_effnet_heldout"] - values["kid_effnet"])
    assert values["fid_effnet"] < 1e-3 < values["fid_effnet_heldout"]
    assert "diversity_effnet_heldout" not in values and "kid_effnet_heldout_std" in values
    assert evaluator.describe()["num_heldout"] == 12
    # What the curator panel reads: this evaluation's features and small copies of its images.
    last = evaluator.last
    assert last.index == 0 and last.features["effnet"].shape == (40, 48) and last.images.shape == (40, 3, 8, 8)
    assert last.real_features["effnet"].shape == (40, 48) and last.heldout_features["effnet"].shape == (12, 48)
    evaluator.evaluate_images(iter(train.split(16)))
    assert evaluator.last.index == 1


def test_without_heldout_images_there_are_no_heldout_numbers(evaluator):
    evaluator.prepare(Paintings(cluster(20, 0.0, 2), cluster(0, 0.0, 3)), "cpu")
    values = evaluator.evaluate_images(iter([cluster(20, 0.0, 4)]))
    assert not [k for k in values if "heldout" in k or "gap" in k] and 0 < values["precision_effnet"] <= 1


def test_prdc_off_and_too_few_samples():
    from artgan.metrics.fid import FeatureDistances

    real = torch.randn(30, 48)
    off = FeatureDistances(PooledPixels(), real, prdc_k=0, kid_subset_size=4, kid_subsets=2)
    off.update(features=real[:10])
    assert "precision_effnet" not in off.compute()
    few = FeatureDistances(PooledPixels(), real, kid_subset_size=2, kid_subsets=2)
    few.update(features=real[:3])  # k = 3 needs more than 3 samples
    assert math.isnan(few.compute()["recall_effnet"])


def test_curator_panel_finds_the_copy_and_the_uncovered_painting():
    g = torch.Generator().manual_seed(0)
    real = torch.nn.functional.normalize(torch.randn(30, 64, generator=g), dim=1)  # 64-d: all nearly orthogonal
    fake = torch.nn.functional.normalize(torch.randn(10, 64, generator=g), dim=1)
    fake[3] = real[17]  # a copy of painting 17
    uncovered = -fake.mean(0)  # painting 29 points away from every sample
    real[29] = uncovered / uncovered.norm()
    images = cluster(10, 0.0, 5)
    last = Evaluation(index=0, features={"effnet": fake}, real_features={"effnet": real}, images=images[:, :, :8, :8],
                      heldout_features={"effnet": real[:5] + 0.01})
    curator = CuratorCallback(num_rows=3, num_least_covered=2, k=2, cell=8)
    pictures, scalars = curator.panel(last, cluster(30, 0.0, 6))
    assert set(pictures) == {"nearest_paintings", "least_covered", "nn_histogram"}
    assert all(isinstance(p, Image.Image) and p.width > 16 for p in pictures.values())
    assert pictures["nearest_paintings"].height > pictures["least_covered"].height  # 3 rows against 2
    assert scalars["copies"] == pytest.approx(0.1)  # 1 of 10 generated images is closer than any painting pair
    assert 0 < scalars["nn_median_ratio"] < math.inf
    # The closest row is the copy and the least covered painting is 29 (checked through the helpers it uses).
    from artgan.metrics.neighbours import nearest_neighbours

    dist, idx = nearest_neighbours(fake, real, 1)
    assert int(dist[:, 0].argmin()) == 3 and int(idx[3, 0]) == 17 and float(dist[3, 0]) < 1e-6
    from artgan.metrics.diversity import cosine_distances

    assert int(cosine_distances(real, fake).min(dim=1).values.argmax()) == 29


def test_histogram_picture_draws_two_or_three_sets():
    a, b = torch.rand(50), torch.rand(40) + 0.5
    two, three = histogram_picture(a, b), histogram_picture(a, b, torch.rand(10))
    assert two.size == three.size and two.mode == "RGB" and two.tobytes() != three.tobytes()


# ------------------------------------------------------------------------------------- a real run in TensorBoard
@pytest.mark.slow
def test_a_run_with_heldout_paintings_shows_the_curator_in_tensorboard(tmp_path):
    """data=abstract_art data.holdout on a folder: held-out KID and its gap, precision/recall/density/coverage and
    the curator's pictures, at the step of each evaluation, as TensorBoard reads them."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    art = tmp_path / "art"
    art.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):  # stand-ins for paintings: the run cares about files, not content
        Image.fromarray(rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)).save(art / f"painting_{i:02d}.png")
    run_dir = tmp_path / "run"
    overrides = [o for o in FAST_TRAIN if o.split("=")[0] not in ("data.num_images", "trainer.max_epochs")]
    proc = run_script("train.py", "data=abstract_art", f"data.root={art}", "data.holdout=0.25", *overrides,
                      "data.batch_size=8", "trainer.max_epochs=2", "callbacks.metrics.every_n_epochs=1",
                      "evaluator.num_samples=16", "evaluator.fid.kid_subset_size=4", "evaluator.fid.kid_subsets=5",
                      "evaluator.swd.enabled=false", "evaluator.spectral.enabled=false", "callbacks.samples=null",
                      "callbacks.plots=null", "callbacks.curator.num_rows=3", "callbacks.curator.cell=32",
                      f"hydra.run.dir={run_dir}", env={"ARTGAN_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, f"train.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    held_out = re.search(r"Data: (\d+) images? held out of training", proc.stdout + proc.stderr)
    assert held_out and 1 <= int(held_out.group(1)) < 24  # about a quarter, by the hash of each name

    acc = ea.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
    acc.Reload()

    def scalars(tag: str) -> dict[int, float]:
        return {e.step: e.value for e in acc.Scalars(tag)}

    kid, held, gap = scalars("metrics/kid_effnet"), scalars("metrics/kid_effnet_heldout"), \
        scalars("metrics/kid_effnet_gap")
    steps = sorted(kid)
    assert len(steps) == 2 and sorted(held) == sorted(gap) == steps  # every evaluation, both sets
    for step in steps:
        assert gap[step] == pytest.approx(held[step] - kid[step], abs=1e-5)
    for name in ("precision", "recall", "coverage"):
        for tag in (f"metrics/{name}_effnet", f"metrics/{name}_effnet_heldout"):
            values = scalars(tag)
            assert sorted(values) == steps and all(0.0 <= v <= 1.0 for v in values.values()), (tag, values)
    assert sorted(scalars("metrics/density_effnet")) == steps
    copies = scalars("curator/copies")
    assert sorted(copies) == steps and all(0.0 <= v <= 1.0 for v in copies.values())
    assert sorted(scalars("curator/nn_median_ratio")) == steps

    sizes = {}
    for tag in ("curator/nearest_paintings", "curator/least_covered", "curator/nn_histogram"):
        events = acc.Images(tag)
        assert [e.step for e in events] == steps, tag  # beside the metrics they illustrate
        with Image.open(io.BytesIO(events[-1].encoded_image_string)) as im:
            im.load()
            sizes[tag] = im.size
    rows_of = (3 * (32 + 14 + 4) + 18 + 4)  # neighbours_picture: header + 3 rows of a 32 px cell, label and pad
    assert sizes["curator/nearest_paintings"][1] == rows_of
    assert sizes["curator/least_covered"][1] > rows_of  # 8 paintings (the default) against 3 generated rows
    assert sizes["curator/nn_histogram"] == (640, 360)
