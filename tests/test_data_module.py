"""Cache reuse / invalidation / concurrent builds, ArtDataModule batches, procedural data, shared sample."""

import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import artgan.data.datamodule as dm_module
from artgan.data.datamodule import ArtDataModule
from artgan.data.procedural import render_image, render_images
from artgan.data.transforms import denormalize, to_model_range, to_uint8
from artgan.errors import ArtGANError

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "abstract-art-gallery-sample"


def make_folder(root: Path, n: int = 12, size=(40, 30)) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = root / ("nested" if i % 3 == 0 else "") / f"img_{i}.png"
        sub.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(sub)
    return root


def folder_dm(root, cache, **kw):
    kw = {"resolution": 16, "batch_size": 4, "progress": False, **kw}
    return ArtDataModule(source="folder", root=str(root), cache_dir=str(cache), **kw)


def _forbid_decoding(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(dm_module, "decode_folder", fail)


def test_batches_are_uint8_and_real_images(tmp_path):
    dm = folder_dm(make_folder(tmp_path / "imgs"), tmp_path / "cache")
    dm.prepare_data()
    dm.setup("fit")
    assert dm.dataset_size == 12
    batches = list(dm.train_dataloader())
    assert len(batches) == 3  # drop_last with 12 / 4
    assert all(b.dtype == torch.uint8 and b.shape == (4, 3, 16, 16) for b in batches)
    real = dm.real_images(5)
    assert real.dtype == torch.uint8 and real.shape == (5, 3, 16, 16)
    assert torch.equal(real, dm.real_images()[:5])


def test_hflip_and_random_crop(tmp_path):
    root = make_folder(tmp_path / "imgs", n=8)
    dm = folder_dm(root, tmp_path / "cache", crop="random", batch_size=8, hflip=True)
    dm.setup()
    assert dm._images.shape[-1] == 18  # cached at 1.125x for random crops
    torch.manual_seed(0)
    (b,) = list(dm.train_dataloader())
    assert b.shape == (8, 3, 16, 16)
    plain = folder_dm(root, tmp_path / "cache", hflip=False, batch_size=8)
    plain.setup()
    torch.manual_seed(0)
    flipped = 0
    for _ in range(5):
        (b,) = list(plain.train_dataloader())
        assert {tuple(x.flatten()[:20].tolist()) for x in b} <= {
            tuple(x.flatten()[:20].tolist()) for x in plain.real_images()
        }
    ds = dm_module.CachedImages(plain._images, 16, hflip=True, random_crop=False)
    for _ in range(5):
        out = ds.__getitems__([0] * 16)
        flipped += int((out == plain.real_images(1).flip(-1)).all(dim=(1, 2, 3)).sum())
    assert 0 < flipped < 80


def test_setup_without_prepare_and_cache_reuse(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "imgs")
    first = folder_dm(root, tmp_path / "cache")
    first.setup("fit")  # no prepare_data: builds under the lock
    _forbid_decoding(monkeypatch)
    second = folder_dm(root, tmp_path / "cache")
    second.prepare_data()
    second.setup("fit")
    assert second.fingerprint == first.fingerprint
    assert torch.equal(second.real_images(), first.real_images())


def test_cache_invalidation(tmp_path):
    root = make_folder(tmp_path / "imgs")
    cache = tmp_path / "cache"
    base = folder_dm(root, cache)
    base.setup()
    fingerprints = {base.fingerprint}

    t = time.time() + 10
    os.utime(root / "img_1.png", (t, t))  # touched
    touched = folder_dm(root, cache)
    fingerprints.add(touched.fingerprint)

    Image.new("RGB", (20, 20)).save(root / "img_99.png")  # a file added
    added = folder_dm(root, cache)
    added.setup()
    assert added.dataset_size == 13
    fingerprints.add(added.fingerprint)

    for kw in (
        {"resolution": 8},
        {"trim_borders": True},
        {"border_crop": 0.1},
        {"subset": 5},
        {"crop": "random"},
    ):
        fingerprints.add(folder_dm(root, cache, **kw).fingerprint)
    assert len(fingerprints) == 8
    res8 = folder_dm(root, cache, resolution=8)
    res8.setup()
    assert res8.real_images().shape == (13, 3, 8, 8)
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 3  # base, added, res8


def test_subset_takes_first_images_in_order(tmp_path):
    root = make_folder(tmp_path / "imgs")
    full, sub = folder_dm(root, tmp_path / "c"), folder_dm(root, tmp_path / "c", subset=5)
    assert sub.dataset_size == 5
    assert torch.equal(sub.real_images(), full.real_images(5))
    assert sub.manifest["files"] == full.manifest["files"][:5]


def _build_in_child(root, cache, log_path, out_path):
    # Count builds across processes and make the build slow enough for the two to overlap.
    original = dm_module.decode_folder

    def slow_decode(*a, **k):
        with open(log_path, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        return original(*a, **k)

    dm_module.decode_folder = slow_decode
    dm = folder_dm(root, cache)
    dm.setup()
    np.save(out_path, dm.real_images().numpy())


def test_two_processes_build_the_cache_once(tmp_path):
    root = make_folder(tmp_path / "imgs")
    ctx = mp.get_context("fork")
    log = tmp_path / "builds.log"
    procs = [
        ctx.Process(target=_build_in_child, args=(root, tmp_path / "cache", log, tmp_path / f"out{i}.npy"))
        for i in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(log.read_text().split()) == 1  # built once
    a, b = np.load(tmp_path / "out0.npy"), np.load(tmp_path / "out1.npy")
    assert a.shape == (12, 3, 16, 16) and np.array_equal(a, b)


def test_user_errors(tmp_path):
    with pytest.raises(ArtGANError, match="does_not_exist"):
        folder_dm(tmp_path / "does_not_exist", tmp_path / "c").setup()
    with pytest.raises(ArtGANError, match="data.root is not set"):
        ArtDataModule(source="folder", root=None).setup()
    with pytest.raises(ArtGANError, match="data.crop='middle'"):
        ArtDataModule(crop="middle").validate()
    with pytest.raises(ArtGANError, match="data.batch_size=64"):
        folder_dm(make_folder(tmp_path / "imgs", n=3), tmp_path / "c", batch_size=64).train_dataloader()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_text("nope")
    with pytest.raises(ArtGANError, match="its only image file could not be read"):
        folder_dm(tmp_path / "bad", tmp_path / "c").setup()


def test_procedural_is_deterministic(tmp_path):
    a = render_images(6, seed=1, size=32, workers=1, progress=False)
    b = render_images(6, seed=1, size=32, workers=2, progress=False)
    c = render_images(6, seed=2, size=32, workers=1, progress=False)
    assert a.shape == (6, 3, 32, 32) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.array_equal(render_image(1, 3, 32), a[3])
    assert a.reshape(6, -1).std(axis=1).min() > 5  # not flat


def test_procedural_datamodule(tmp_path, monkeypatch):
    dm = ArtDataModule(
        source="procedural",
        resolution=32,
        num_images=40,
        seed=3,
        batch_size=8,
        cache_dir=str(tmp_path),
        progress=False,
    )
    dm.prepare_data()
    dm.setup()
    assert dm.dataset_size == 40
    assert next(iter(dm.train_dataloader())).shape == (8, 3, 32, 32)
    monkeypatch.setattr(dm_module.procedural, "render_images", None)  # a rebuild would crash
    again = ArtDataModule(
        source="procedural", resolution=32, num_images=40, seed=3, cache_dir=str(tmp_path), progress=False
    )
    assert torch.equal(again.real_images(), dm.real_images())
    other = ArtDataModule(source="procedural", resolution=32, num_images=40, seed=4, cache_dir=str(tmp_path))
    assert other.fingerprint != dm.fingerprint


def test_transforms_roundtrip():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    y = to_model_range(x)
    assert y.min() == -1 and y.max() == 1 and y.dtype == torch.float32
    assert torch.equal(to_uint8(y), x)
    assert denormalize(torch.tensor([-3.0, 0.0, 3.0])).tolist() == [0.0, 0.5, 1.0]


@pytest.mark.skipif(
    not SAMPLE.is_dir(), reason=f"shared sample not found at {SAMPLE} (only in the dev workspace)"
)
def test_shared_sample_loads(tmp_path):
    dm = ArtDataModule(
        source="folder",
        root=str(SAMPLE),
        resolution=32,
        subset=40,
        batch_size=16,
        cache_dir=str(tmp_path),
        trim_borders=True,
        progress=False,
    )
    dm.setup()
    assert dm.dataset_size == 40
    b = next(iter(dm.train_dataloader()))
    assert b.shape == (16, 3, 32, 32) and b.dtype == torch.uint8 and b.float().std() > 20
