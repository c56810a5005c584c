"""Image discovery: any folder layout, deterministic order, clear errors."""

from pathlib import Path

import pytest
from PIL import Image

from artgan.data.discovery import find_images
from artgan.errors import ArtGANError


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
