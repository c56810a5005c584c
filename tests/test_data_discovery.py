"""Image discovery: any folder layout, deterministic order, symlinks once, run outputs skipped, clear errors."""

import logging
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from artgan.data.discovery import check_run_dir_outside, find_images
from artgan.errors import ArtGANError, ConfigError


def _img(path: Path, color=(200, 30, 30), size=(20, 16), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def test_kaggle_layout(tmp_path):
    for i in (10, 2, 1):
        _img(tmp_path / "Abstract_gallery" / "Abstract_gallery" / f"Abstract_image_{i}.jpg")
    found = find_images(tmp_path)
    assert [p.name for p in found] == [
        "Abstract_image_1.jpg",
        "Abstract_image_2.jpg",
        "Abstract_image_10.jpg",
    ]


def test_flat_and_nested_with_all_extensions(tmp_path):
    _img(tmp_path / "a.JPG", fmt="JPEG")
    _img(tmp_path / "b.jpeg", fmt="JPEG")
    _img(tmp_path / "deep" / "er" / "c.png")
    _img(tmp_path / "d.webp")
    _img(tmp_path / "e.bmp")
    _img(tmp_path / "f.gif")
    _img(tmp_path / "g.TIF", fmt="TIFF")
    _img(tmp_path / "h.tiff")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "thumbs.db").write_bytes(b"\0")
    _img(tmp_path / ".hidden" / "x.jpg")
    _img(tmp_path / "._resource_fork.jpg")
    names = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert names == ["a.JPG", "b.jpeg", "d.webp", "deep/er/c.png", "e.bmp", "f.gif", "g.TIF", "h.tiff"]
    assert find_images(tmp_path) == find_images(str(tmp_path))  # deterministic


def test_missing_path_names_the_path_and_kaggle(tmp_path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(ArtGANError) as err:
        find_images(missing)
    assert "no_such_folder" in str(err.value)
    assert "kaggle datasets download -d bryanb/abstract-art-gallery" in str(err.value)


def test_empty_folder_and_file_root(tmp_path):
    (tmp_path / "readme.md").write_text("hi")
    with pytest.raises(ArtGANError, match="holds no image"):
        find_images(tmp_path)
    with pytest.raises(ArtGANError, match="is a file"):
        find_images(tmp_path / "readme.md")


# ---- symbolic links: each real folder and file once, no hang ------------------------------------------
def _find_within(root, seconds: float = 5.0):
    """find_images(root) in a daemon thread: a looping walk fails the test instead of hanging pytest."""
    result = {}

    def run():
        try:
            result["files"] = find_images(root)
        except BaseException as e:  # re-raised in the test's thread
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    start = time.monotonic()
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"image discovery did not finish within {seconds} s (a symlink loop?)"
    if "error" in result:
        raise result["error"]
    return [p.relative_to(root).as_posix() for p in result["files"]], time.monotonic() - start


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_link_to_itself_adds_no_copies(tmp_path, caplog):
    for name in ("x1.png", "x2.png", "sub/x3.png"):
        _img(tmp_path / name)
    (tmp_path / "a").symlink_to(".")  # the issue's `ln -s . d/a`: used to give 41 copies of each image
    with caplog.at_level(logging.WARNING):
        names, _ = _find_within(tmp_path)
    assert names == ["sub/x3.png", "x1.png", "x2.png"]
    (warning,) = _warnings(caplog)
    assert "skipped 1 link " in warning and "a -> ." in warning


def test_mutual_and_double_loops_finish_fast(tmp_path, caplog):
    _img(tmp_path / "a" / "one.png")
    _img(tmp_path / "b" / "two.png")
    (tmp_path / "a" / "to_b").symlink_to("../b")  # a -> b and b -> a
    (tmp_path / "b" / "to_a").symlink_to("../a")
    (tmp_path / "loop1").symlink_to(".")  # two self-links: the walk used to never end
    (tmp_path / "loop2").symlink_to(".")
    (tmp_path / "c1.jpg").symlink_to("c2.jpg")  # links to each other: ELOOP, not an image
    (tmp_path / "c2.jpg").symlink_to("c1.jpg")
    with caplog.at_level(logging.WARNING):
        names, seconds = _find_within(tmp_path)
    assert names == ["a/one.png", "b/two.png"]
    assert seconds < 2
    (warning,) = _warnings(caplog)  # one line for all of them
    assert "skipped 6 links" in warning and "c1.jpg -> c2.jpg (broken: " in warning


def test_linked_outside_folder_is_followed_once(tmp_path):
    outside, root = tmp_path / "elsewhere", tmp_path / "data"
    _img(outside / "o1.png")
    _img(outside / "deeper" / "o2.png")
    _img(root / "own.png")
    (root / "ext").symlink_to(outside)
    (root / "sub").mkdir()
    (root / "sub" / "ext_again").symlink_to(outside)
    (outside / "back").symlink_to(root)  # the outside folder links back into data.root
    names, _ = _find_within(root)
    assert names == ["ext/deeper/o2.png", "ext/o1.png", "own.png"]


def test_file_linked_twice_counts_once_under_its_real_name(tmp_path):
    _img(tmp_path / "data" / "m.png")
    _img(tmp_path / "outside.png", color=(0, 0, 255))
    root = tmp_path / "data"
    (root / "0_alias.png").symlink_to("m.png")  # sorts before m.png: the real name still wins
    (root / "nested").mkdir()
    (root / "nested" / "alias.png").symlink_to("../m.png")
    (root / "o1.png").symlink_to(tmp_path / "outside.png")
    (root / "o2.png").symlink_to(tmp_path / "outside.png")
    names, _ = _find_within(root)
    assert names == ["m.png", "o1.png"]
    assert find_images(root) == find_images(root)  # deterministic


# ---- ArtGAN run outputs inside data.root ------------------------------------------------------------
def test_run_output_folders_are_skipped(tmp_path, caplog):
    _img(tmp_path / "art" / "p1.jpg")
    _img(tmp_path / "samples" / "user_sample.png")  # a user folder that merely has the name: kept
    hydra_run = tmp_path / "outputs" / "train" / "2024-05-01_10-00-00"
    (hydra_run / ".hydra").mkdir(parents=True)
    _img(hydra_run / "samples" / "epoch_0000.png")
    _img(hydra_run / "plots" / "losses.png")
    ckpt_run = tmp_path / "old_run"
    (ckpt_run / "checkpoints").mkdir(parents=True)
    (ckpt_run / "checkpoints" / "last.ckpt").write_bytes(b"\0")
    _img(ckpt_run / "plots" / "scores.png")
    fresh_run = tmp_path / "fresh"  # killed before its first checkpoint
    (fresh_run / "checkpoints").mkdir(parents=True)
    _img(fresh_run / "samples" / "epoch_0000.png")
    with caplog.at_level(logging.WARNING):
        names, _ = _find_within(tmp_path)
        find_images(tmp_path)  # config validation lists the folder too: still one warning
    assert names == ["art/p1.jpg", "samples/user_sample.png"]
    (warning,) = _warnings(caplog)
    assert "skipped 3 folders" in warning
    for rel in ("outputs/train/2024-05-01_10-00-00/ (.hydra/)", "old_run/ (checkpoints/*.ckpt)",
                "fresh/ (samples/ beside checkpoints/)"):
        assert rel in warning


def test_only_run_outputs_is_an_error_that_says_so(tmp_path):
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    _img(tmp_path / "run" / "samples" / "epoch_0000.png")
    with pytest.raises(ArtGANError, match=r"holds no image file .* 1 ArtGAN run output folder \(run\)"):
        find_images(tmp_path)


def test_run_dir_inside_data_root_is_a_config_error(tmp_path):
    data = tmp_path / "art"
    data.mkdir()
    for run_dir in (data / "outputs" / "run1", data):
        with pytest.raises(ConfigError) as err:
            check_run_dir_outside(data, run_dir)
        message = str(err.value)
        assert str(run_dir) in message and f"data.root={str(data)!r}" in message
        assert "hydra.run.dir=" in message and "\n" not in message
    (tmp_path / "link_to_art").symlink_to(data)  # the same folder under another name
    with pytest.raises(ConfigError):
        check_run_dir_outside(tmp_path / "link_to_art", data / "run2")
    check_run_dir_outside(data, tmp_path / "outputs" / "run1")  # beside it: fine
    check_run_dir_outside(data, tmp_path / "art2" / "run1")  # same prefix, other folder: fine
    check_run_dir_outside(None, data / "run1")  # procedural data


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their permissions")
def test_unreadable_folder_is_named_and_used_once_readable(tmp_path, caplog):
    _img(tmp_path / "open" / "a.png")
    _img(tmp_path / "closed" / "b.png")
    (tmp_path / "closed").chmod(0)
    try:
        with caplog.at_level(logging.WARNING):
            names, _ = _find_within(tmp_path)
    finally:
        (tmp_path / "closed").chmod(0o755)
    assert names == ["open/a.png"]
    (warning,) = _warnings(caplog)
    assert "could not read 1 of its folders or files" in warning and "closed (Permission denied)" in warning
    assert _find_within(tmp_path)[0] == ["closed/b.png", "open/a.png"]
