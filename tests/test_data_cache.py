"""Cache reliability: skipped files come back once fixed, stale temp files go, waiting for a lock is said."""

import io
import logging
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import artgan.data.cache as cache_module
from artgan.data.cache import cache_key, load_or_build
from artgan.data.datamodule import ArtDataModule
from artgan.errors import ArtGANError

fcntl = pytest.importorskip("fcntl")


def _png_bytes(seed: int, size=(24, 20)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _folder(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"img_{i}.png").write_bytes(_png_bytes(i))
    return root


def _dm(root, cache, **kw):
    kw = {"resolution": 16, "batch_size": 2, "progress": False, **kw}
    return ArtDataModule(source="folder", root=str(root), cache_dir=str(cache), **kw)


def _messages(caplog, level=logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


# ---- a file that could not be used is picked up once it is fixed ---------------------------------------
def test_corrupt_file_fixed_with_same_size_and_mtime_is_picked_up(tmp_path, caplog):
    """Works as root too: the cache key must notice a same-size rewrite with the old mtime restored."""
    root = _folder(tmp_path / "imgs", 3)
    good = _png_bytes(99)
    late = root / "late.png"
    late.write_bytes(b"\0" * len(good))  # e.g. a download still in progress: unusable
    before = late.stat()

    first = _dm(root, tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        first.setup()
    assert first.dataset_size == 3 and "late.png" not in first.manifest["files"]
    assert any("Skipped 1 of 4 image files" in m for m in _messages(caplog))

    caplog.clear()
    again = _dm(root, tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        again.prepare_data()
        again.setup()  # a cache hit: the build's warning was in the earlier run, so it is repeated once
    (warning,) = _messages(caplog)
    assert "leave out 1 file " in warning and "late.png" in warning and "manifest.json" in warning

    time.sleep(0.02)  # the kernel's file timestamps tick every few ms
    late.write_bytes(good)
    os.utime(late, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = late.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)  # only ctime moved

    caplog.clear()
    fixed = _dm(root, tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        fixed.setup()
    assert fixed.fingerprint != first.fingerprint
    assert fixed.dataset_size == 4 and "late.png" in fixed.manifest["files"]
    assert _messages(caplog) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_picked_up_after_chmod(tmp_path):
    root = _folder(tmp_path / "imgs", 3)
    locked = root / "img_1.png"
    locked.chmod(0)
    try:
        first = _dm(root, tmp_path / "cache")
        first.setup()
        assert first.dataset_size == 2
        assert [p for p, why in first.manifest["skipped"]] == ["img_1.png"]
        time.sleep(0.02)
    finally:
        locked.chmod(0o644)
    fixed = _dm(root, tmp_path / "cache")
    fixed.setup()
    assert fixed.fingerprint != first.fingerprint
    assert fixed.manifest["files"] == ["img_0.png", "img_1.png", "img_2.png"]


# ---- messages say "1 image" ---------------------------------------------------------------------------
def test_messages_about_one_image_are_singular(tmp_path, caplog):
    root = tmp_path / "one"
    root.mkdir()
    Image.new("RGB", (8, 8), (200, 0, 0)).save(root / "small.png")  # below 16 px: upscaled
    dm = _dm(root, tmp_path / "cache", batch_size=1)
    with caplog.at_level(logging.INFO):
        dm.setup()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Cached 1 image in" in text
    assert "Data: 1 folder image at 16 px" in text
    assert "1 of 1 image is smaller than 16 px" in text
    assert not re.search(r"\b1 (images|files|folders|links)\b", text)

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_text("not a jpeg")
    with pytest.raises(ArtGANError, match=r"its only image file could not be read \(x\.jpg: ") as err:
        _dm(bad, tmp_path / "cache").setup()
    assert "1 image files" not in str(err.value)


# ---- temporary files of a killed build ---------------------------------------------------------------
def _build(n: int = 2):
    return lambda: (np.zeros((n, 3, 4, 4), np.uint8), {})


def test_stale_temp_files_are_removed_at_next_build_and_nothing_else(tmp_path, caplog):
    cache = tmp_path / "cache"
    _, done = load_or_build(cache, {"n": 1}, _build())
    complete = cache / done["key"]
    (complete / ".images.npy.99999.tmp").write_bytes(b"x" * 1000)  # killed while re-writing: stale
    killed = cache / cache_key({"n": 2})  # a build killed mid-write: no manifest; rebuilt below
    killed.mkdir()
    (killed / ".images.npy.4242.tmp").write_bytes(b"x" * 1000)
    (killed / ".manifest.json.4242.tmp").write_text("{")
    busy = cache / cache_key({"n": 3})  # another process is writing this one right now
    busy.mkdir()
    (busy / ".images.npy.777.tmp").write_bytes(b"x")
    users = [cache / "notes.tmp", killed / "mine.tmp", killed / ".images.npy.tmp", complete / "a.1.tmp"]
    for f in users:
        f.write_text("not ours")

    with open(cache / f"{busy.name}.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with caplog.at_level(logging.INFO, logger="artgan.data.cache"):
            load_or_build(cache, {"n": 2}, _build())
        fcntl.flock(held, fcntl.LOCK_UN)

    assert not (complete / ".images.npy.99999.tmp").exists()
    assert not list(killed.glob(".*.4242.tmp")) and (killed / "manifest.json").exists()
    assert (busy / ".images.npy.777.tmp").exists()  # its writer is alive
    assert all(f.read_text() == "not ours" for f in users)
    assert (complete / "manifest.json").exists() and (complete / "images.npy").exists()
    (notice,) = [m for m in _messages(caplog, logging.INFO) if "stale temporary" in m]
    assert notice.startswith("Removed 3 stale temporary files") and "4242" in notice


# ---- waiting for another run's lock is said -----------------------------------------------------------
def test_waiting_for_another_runs_lock_is_logged(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(cache_module, "LOCK_NOTICE_AFTER", 0.2)  # 2 s and 30 s in real runs
    monkeypatch.setattr(cache_module, "LOCK_NOTICE_EVERY", 0.4)
    cache, identity = tmp_path / "cache", {"n": 5}
    cache.mkdir()
    lock = cache / f"{cache_key(identity)}.lock"
    seen_in_build, result = [], {}

    def build():
        seen_in_build.append(lock.read_text())  # the holder says who it is, for waiting runs
        return _build()()

    def waiter():
        result["out"] = load_or_build(cache, identity, build)

    with caplog.at_level(logging.INFO, logger="artgan.data.cache"):
        with open(lock, "a+") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            held.write("pid 31337 on otherhost\n")
            held.flush()
            t = threading.Thread(target=waiter, daemon=True)
            t.start()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and len(_waiting(caplog)) < 2:
                time.sleep(0.05)
            assert t.is_alive() and not seen_in_build  # still waiting, not building
            fcntl.flock(held, fcntl.LOCK_UN)
        t.join(5)
    assert not t.is_alive() and result["out"][1]["count"] == 2
    first, second = _waiting(caplog)[:2]
    assert str(lock) in first and "held by another run (pid 31337 on otherhost)" in first
    assert "pid 31337" in second  # repeated while the wait goes on
    assert seen_in_build[0].startswith(f"pid {os.getpid()} on ")


def _waiting(caplog) -> list[str]:
    return [m for m in _messages(caplog, logging.INFO) if m.startswith("Waiting for ")]
