"""FID / KID: agreement with torchmetrics, the real-feature disk cache, KID subsets, real vs noise, DDP."""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from artgan.metrics.features import build_feature_extractor
from artgan.metrics.fid import (
    FeatureDistances,
    extract_features,
    frechet_distance,
    load_or_compute_real_features,
    real_features_cache_path,
)
from artgan.metrics.kl import ColorKL

SAMPLE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "abstract-art-gallery-sample"


@pytest.fixture(scope="module")
def effnet():
    return build_feature_extractor("effnet_lite0")


class CountingExtractor(torch.nn.Module):
    """Wraps an extractor and counts the images it sees."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.name = inner.name
        self.num_features = inner.num_features
        self.cache_key = getattr(inner, "cache_key", inner.name)
        self.seen = 0

    def forward(self, x):
        self.seen += x.shape[0]
        return self.inner(x)


class ProjectionExtractor(torch.nn.Module):
    """Cheap deterministic extractor (fixed random projection of 8x8-pooled pixels) for maths tests."""

    name = "proj"
    cache_key = "proj-v1"

    def __init__(self, dim: int = 32, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.num_features = dim
        self.register_buffer("w", torch.randn(3 * 8 * 8, dim, generator=g))

    def forward(self, x):
        x = torch.nn.functional.adaptive_avg_pool2d(x.float(), 8).flatten(1)
        return torch.tanh(x @ self.w)


@functools.lru_cache(maxsize=1)
def _load_sample_images(n: int, size: int = 64) -> torch.Tensor:
    from PIL import Image

    files = sorted(SAMPLE_DIR.glob("*.jpg"))[:n]
    out = []
    for f in files:
        with Image.open(f) as im:
            im.draft("RGB", (2 * size, 2 * size))
            im = im.convert("RGB")
            s = min(im.size)
            left, top = (im.width - s) // 2, (im.height - s) // 2
            im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.BICUBIC)
            out.append(torch.from_numpy(__import__("numpy").asarray(im).copy()).permute(2, 0, 1))
    return torch.stack(out)


def test_frechet_distance_matches_torchmetrics():
    from torchmetrics.image.fid import _compute_fid

    torch.manual_seed(0)
    for n, d in ((300, 64), (40, 128)):  # full-rank and rank-deficient covariances
        a = torch.randn(n, d, dtype=torch.float64) @ torch.randn(d, d, dtype=torch.float64) * 0.2
        b = torch.randn(n, d, dtype=torch.float64) + 0.3
        ca, cb = torch.cov(a.T), torch.cov(b.T)
        ref = float(_compute_fid(a.mean(0), ca, b.mean(0), cb))
        assert frechet_distance(a.mean(0), ca, b.mean(0), cb) == pytest.approx(ref, rel=1e-6)
    assert abs(frechet_distance(a.mean(0), ca, a.mean(0), ca)) < 1e-6 * float(ca.trace())


def test_matches_torchmetrics_fid_and_kid_classes():
    """Same features -> same FID as FrechetInceptionDistance and same KID as KernelInceptionDistance."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    ex = ProjectionExtractor(dim=32)
    torch.manual_seed(1)
    real = torch.rand(60, 3, 16, 16) * 2 - 1
    fake = (torch.rand(50, 3, 16, 16) * 2 - 1) * 0.7 + 0.1
    ours = FeatureDistances(ex, extract_features(ex, real), kid_subset_size=50, kid_subsets=1)
    ours.update(fake[:20])
    ours.update(fake[20:])
    got = ours.compute()
    prdc_keys = {"precision_proj", "recall_proj", "density_proj", "coverage_proj"}  # from the same features
    assert set(got) == {"fid_proj", "kid_proj", "kid_proj_std", "diversity_proj"} | prdc_keys
    assert all(0.0 <= got[k] <= 1.0 for k in prdc_keys - {"density_proj"})

    tm_fid = FrechetInceptionDistance(feature=ex, reset_real_features=False)
    tm_fid.update(real, real=True)
    tm_fid.update(fake, real=False)
    assert got["fid_proj"] == pytest.approx(float(tm_fid.compute()), rel=1e-4)

    # With subsets covering all fake samples, KID depends only on the real subset: use all 50 of 60
    # real ones in both implementations by giving torchmetrics exactly our subset.
    g = torch.Generator().manual_seed(0)
    idx_real = torch.randperm(60, generator=g)[:50]
    idx_fake = torch.randperm(50, generator=g)[:50]
    tm_kid = KernelInceptionDistance(feature=ex, subsets=1, subset_size=50, reset_real_features=False)
    tm_kid.update(real[idx_real], real=True)
    tm_kid.update(fake[idx_fake], real=False)
    kid_mean, _ = tm_kid.compute()
    assert got["kid_proj"] == pytest.approx(float(kid_mean), rel=1e-4, abs=1e-7)

    # reset() clears the fake side only.
    ours.reset()
    assert int(ours.fake_n) == 0 and ours.num_real == 60
    ours.update(fake)
    assert ours.compute()["fid_proj"] == pytest.approx(got["fid_proj"], rel=1e-9)


def test_kid_from_whole_set_kernels_equals_torchmetrics_per_subset(monkeypatch):
    """KID reads each subset's kernels from the kernels of the whole sets (faster): over many subsets, with a real
    set reused by a second evaluation, it must equal torchmetrics' poly_mmd computed subset by subset (the path
    taken for sets too large to hold their kernels)."""
    import artgan.metrics.fid as fid

    ex = ProjectionExtractor(dim=24)
    torch.manual_seed(3)
    real = torch.rand(70, 3, 16, 16) * 2 - 1
    fakes = [(torch.rand(40, 3, 16, 16) * 2 - 1) * s for s in (0.6, 0.9)]

    def kids() -> list[tuple[float, float]]:
        m = FeatureDistances(ex, extract_features(ex, real), kid_subset_size=30, kid_subsets=25)
        out = []
        for fake in fakes:  # two evaluations against one real set: the cached real kernel serves both
            m.reset()
            m.update(fake)
            got = m.compute()
            out.append((got["kid_proj"], got["kid_proj_std"]))
        return out

    shared = kids()
    monkeypatch.setattr(fid, "KID_FULL_KERNEL_MAX", 10)  # both sets "too large": torchmetrics per subset
    per_subset = kids()
    assert shared[0] != shared[1]
    for (a_mean, a_std), (b_mean, b_std) in zip(shared, per_subset):
        assert a_mean == pytest.approx(b_mean, rel=1e-9, abs=1e-12) and a_std == pytest.approx(b_std, rel=1e-9)


def test_kid_subset_size_adapts_and_small_sets_do_not_crash():
    ex = ProjectionExtractor(dim=16)
    torch.manual_seed(2)
    real = torch.rand(30, 3, 8, 8) * 2 - 1
    m = FeatureDistances(ex, extract_features(ex, real), kid_subset_size=1000, kid_subsets=10)
    m.update(torch.rand(12, 3, 8, 8) * 2 - 1)
    assert m.kid_subset_size_for(30, 12) == 12
    out = m.compute()
    assert all(math.isfinite(v) for v in out.values()), out
    m.reset()
    m.update(torch.rand(1, 3, 8, 8) * 2 - 1)
    with pytest.warns(UserWarning, match="at least 2 generated"):
        out = m.compute()
    assert all(math.isnan(v) for v in out.values())
    with pytest.raises(RuntimeError, match="no real features"):
        FeatureDistances(ex).compute()


def test_real_features_cached_once_and_loading_computes_nothing(tmp_path):
    counting = CountingExtractor(ProjectionExtractor(dim=24))
    torch.manual_seed(3)
    real = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    kw = {"cache_dir": tmp_path, "fingerprint": "data-v1", "resolution": 32, "num_images": 6}

    first = load_or_compute_real_features(counting, real, **kw)
    assert counting.seen == 6 and first.shape == (6, 24)
    path = real_features_cache_path(tmp_path, counting, **{k: v for k, v in kw.items() if k != "cache_dir"})
    assert path.is_file() and path.name.startswith("real_proj_32px_n6_")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # atomic write left no temp file

    def must_not_be_called():
        raise AssertionError("the images were requested although the cache exists")

    again = load_or_compute_real_features(counting, must_not_be_called, **kw)
    assert counting.seen == 6  # no features computed
    assert torch.equal(first, again)

    # FeatureDistances.prepare_real goes through the same cache.
    m = FeatureDistances(counting, kid_subset_size=4, kid_subsets=2)
    m.prepare_real(must_not_be_called, **kw)
    assert counting.seen == 6 and m.num_real == 6

    # Any key change (dataset, resolution, count) is a different file and recomputes.
    load_or_compute_real_features(counting, real, **{**kw, "fingerprint": "data-v2"})
    assert counting.seen == 12
    assert len(list(tmp_path.glob("real_*.pt"))) == 2

    # A corrupt cache file is recomputed, not fatal.
    path.write_bytes(b"garbage")
    load_or_compute_real_features(counting, real, **kw)
    assert counting.seen == 18


def test_effnet_fid_real_split_far_below_noise(tmp_path, effnet):
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"shared sample paintings not found at {SAMPLE_DIR} (only on dev/CI machines)")
    n = 96
    imgs = _load_sample_images(2 * n)
    real_a, real_b = imgs[0::2], imgs[1::2]  # disjoint halves of the sample paintings, 64 px
    torch.manual_seed(4)
    noise = torch.rand(n, 3, 64, 64) * 2 - 1

    m = FeatureDistances(effnet, kid_subset_size=50, kid_subsets=20)
    m.prepare_real(real_a, cache_dir=tmp_path, fingerprint="sample-even", resolution=64, num_images=n)
    m.update(real_b)
    split = m.compute()
    m.reset()
    m.update(noise)
    vs_noise = m.compute()
    # FID from ~100 samples in 1280-d is strongly biased upwards (measured: split ~175 vs noise ~350
    # at n = 100), KID is unbiased (measured: ~0.00 vs ~0.46).
    assert split["fid_effnet"] < 0.65 * vs_noise["fid_effnet"], (split, vs_noise)
    assert abs(split["kid_effnet"]) < 0.05 * vs_noise["kid_effnet"], (split, vs_noise)
    assert vs_noise["kid_effnet"] > 0.1


# ---------------------------------------------------------------------------------------------
# DDP: two CPU processes (gloo), each feeding half of the same fake set.
# ---------------------------------------------------------------------------------------------


def _ddp_worker(
    rank: int, world: int, init_file: str, cache_dir: str, real: torch.Tensor, fake: torch.Tensor, out_dir: str
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ex = build_feature_extractor("effnet_lite0")
        m = FeatureDistances(ex, kid_subset_size=8, kid_subsets=10, seed=0)

        def no_images():
            raise AssertionError("real features must come from the cache")

        m.prepare_real(no_images, cache_dir=cache_dir, fingerprint="ddp", resolution=32, num_images=16)
        share = fake.shape[0] // world
        part = fake[rank * share : (rank + 1) * share]
        m.update(part[: share // 2])  # two updates per rank
        m.update(part[share // 2 :])
        out = m.compute()  # syncs the fake states across ranks
        out["local_fake_n_after"] = int(m.fake_n)  # local state restored after the synced compute

        # Colour KL under DDP: every rank adds the full real set and its share of the fakes.
        kl = ColorKL(bins=8)
        kl.update(real, real=True)
        kl.update(part, real=False)
        out.update({f"colorkl_{k}": v for k, v in kl.compute().items()})
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_match_single_process(tmp_path, effnet):
    torch.manual_seed(5)
    real = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    fake = torch.rand(12, 3, 32, 32) * 2 - 1
    cache = tmp_path / "cache"

    single = FeatureDistances(effnet, kid_subset_size=8, kid_subsets=10, seed=0)
    single.prepare_real(real, cache_dir=cache, fingerprint="ddp", resolution=32, num_images=16)
    single.update(fake)
    want = single.compute()
    kl = ColorKL(bins=8)
    kl.update(real, real=True)
    kl.update(fake, real=False)
    want_kl = kl.compute()

    mp.spawn(
        _ddp_worker,
        args=(2, str(tmp_path / "init"), str(cache), real, fake, str(tmp_path)),
        nprocs=2,
        join=True,
    )
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["fid_effnet"] == pytest.approx(want["fid_effnet"], rel=1e-3), (rank, got, want)
        assert got["kid_effnet"] == pytest.approx(want["kid_effnet"], rel=1e-3, abs=1e-6), (rank, got, want)
        assert got["kid_effnet_std"] == pytest.approx(want["kid_effnet_std"], rel=1e-2, abs=1e-6)
        assert got["local_fake_n_after"] == 6
        for k, v in want_kl.items():
            assert got[f"colorkl_{k}"] == pytest.approx(v, rel=1e-9), (rank, k)


def test_try_build_skips_unavailable_extractor_with_one_warning(caplog, tmp_path):
    from artgan.errors import ArtGANError
    from artgan.metrics.fid import try_build_feature_distances

    with caplog.at_level("WARNING", logger="artgan.metrics.fid"):
        assert try_build_feature_distances("inception", str(tmp_path / "missing.pth")) is None
    warnings_ = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings_) == 1 and "inception" in warnings_[0].getMessage()
    with pytest.raises(ArtGANError):
        try_build_feature_distances("no-such-net")
