"""Odd files made on the fly: every mode to RGB, EXIF, frames, bad files, tiny and huge images."""

import io
import logging

import numpy as np
import pytest
from PIL import Image

from artgan.data.cache import decode_folder
from artgan.data.preprocess import BadImageError, PreprocessSettings, preprocess_file

S = PreprocessSettings(size=16)


def _pixel(arr):
    """Mean colour of the (3, S, S) output's center."""
    return arr[:, 4:12, 4:12].reshape(3, -1).mean(axis=1)


def test_cmyk_jpeg(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(p)  # pure red in CMYK
    out, _ = preprocess_file(p, S)
    r, g, b = _pixel(out)
    assert out.shape == (3, 16, 16) and out.dtype == np.uint8
    assert r > 200 and g < 60 and b < 60


def test_rgba_png_composited_on_white(tmp_path):
    p = tmp_path / "rgba.png"
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(p)  # fully transparent black
    out, _ = preprocess_file(p, S)
    assert (out == 255).all()


def test_la_png_half_transparent(tmp_path):
    p = tmp_path / "la.png"
    Image.new("LA", (32, 32), (0, 128)).save(p)
    out, _ = preprocess_file(p, S)
    assert abs(float(out.mean()) - 127) < 3


def test_p_gif_with_transparency(tmp_path):
    p = tmp_path / "p.gif"
    img = Image.new("P", (32, 32), 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (0, 0, 32, 16))  # top half blue, bottom half index 0 = transparent
    img.save(p, transparency=0)
    out, _ = preprocess_file(p, S)
    assert tuple(out[:, 2, 8]) == (0, 0, 255)
    assert tuple(out[:, 13, 8]) == (255, 255, 255)


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    p = tmp_path / "sixteen.png"
    a = np.full((32, 32), 32768, dtype=np.uint16)  # mid grey in 16 bit
    Image.fromarray(a).save(p)
    assert Image.open(p).mode.startswith("I")
    out, _ = preprocess_file(p, S)
    assert abs(float(out.mean()) - 127.5) < 2


def test_greyscale_jpeg(tmp_path):
    p = tmp_path / "l.jpg"
    Image.new("L", (32, 32), 90).save(p)
    out, _ = preprocess_file(p, S)
    assert np.allclose(out, 90, atol=2)


def test_exif_rotated_jpeg(tmp_path):
    p = tmp_path / "rotated.jpg"
    img = Image.new("RGB", (60, 30), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 30, 30))  # left half blue, right half red (landscape)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": displayed as portrait, blue on top
    img.save(p, exif=exif, quality=95)
    out, _ = preprocess_file(p, PreprocessSettings(size=30))
    top, bottom = out[:, 2, 15], out[:, 27, 15]
    assert top[2] > 200 and top[0] < 60, top
    assert bottom[0] > 200 and bottom[2] < 60, bottom


def test_frame_is_trimmed(tmp_path):
    # A painting (noisy colour) inside a white wall margin and a flat dark-brown frame.
    rng = np.random.default_rng(0)
    a = np.full((200, 240, 3), 245, np.uint8)
    a[20:180, 30:210] = (70, 45, 25)
    blocks = rng.integers(0, 255, (6, 7, 3), dtype=np.uint8)  # a colourful "painting"
    a[34:166, 44:196] = np.asarray(Image.fromarray(blocks).resize((152, 132), Image.NEAREST))
    p = tmp_path / "framed.png"
    Image.fromarray(a).save(p)
    plain, _ = preprocess_file(p, PreprocessSettings(size=32))
    trimmed, _ = preprocess_file(p, PreprocessSettings(size=32, trim_borders=True))
    brown = np.all(np.abs(trimmed.transpose(1, 2, 0).astype(int) - (70, 45, 25)) < 20, axis=-1)
    assert brown.mean() < 0.02  # frame gone
    plain_brown = np.all(np.abs(plain.transpose(1, 2, 0).astype(int) - (70, 45, 25)) < 20, axis=-1)
    assert plain_brown.mean() > 0.04  # without trimming the frame is in the crop
    white = np.all(trimmed.transpose(1, 2, 0) > 235, axis=-1)
    assert white.mean() < 0.02 and trimmed.std() > 40  # the painting fills the image


def test_border_crop(tmp_path):
    a = np.zeros((100, 100, 3), np.uint8)
    a[10:90, 10:90] = 255
    p = tmp_path / "b.png"
    Image.fromarray(a).save(p)
    out, _ = preprocess_file(p, PreprocessSettings(size=20, border_crop=0.1))
    assert out.min() > 200


def test_tiny_image_is_upscaled_and_reported(tmp_path, caplog):
    Image.new("RGB", (1, 1), (10, 200, 10)).save(tmp_path / "one.png")
    Image.new("RGB", (64, 64), (10, 10, 200)).save(tmp_path / "big.png")
    out, upscaled = preprocess_file(tmp_path / "one.png", S)
    assert upscaled and np.allclose(_pixel(out), (10, 200, 10), atol=2)
    with caplog.at_level(logging.WARNING):
        images, info = decode_folder(sorted(tmp_path.iterdir()), tmp_path, S, progress=False)
    assert info["upscaled"] == 1
    assert sum("upscaled" in r.getMessage() for r in caplog.records) == 1


def test_bad_files_skipped_with_one_warning(tmp_path, caplog):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not a jpeg")
    for name in ("truncated.jpg", "zero.jpg", "text.jpg"):
        with pytest.raises((BadImageError, OSError)):
            preprocess_file(tmp_path / name, S)
    with caplog.at_level(logging.WARNING):
        images, info = decode_folder(sorted(tmp_path.iterdir()), tmp_path, S, progress=False)
    assert images.shape == (1, 3, 16, 16) and info["files"] == ["good.jpg"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Skipped 3 of 4" in warnings[0] and "truncated.jpg" in warnings[0] and "zero.jpg" in warnings[0]


def test_decompression_bomb_jpeg_is_decoded_in_draft_mode(tmp_path, monkeypatch):
    p = tmp_path / "huge.jpg"
    Image.new("RGB", (400, 300), (0, 120, 255)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 400x300 is now a "bomb"
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(p.read_bytes()))
    out, _ = preprocess_file(p, S)
    assert np.allclose(_pixel(out), (0, 120, 255), atol=4)
    png = tmp_path / "huge.png"
    Image.new("RGB", (400, 300)).save(png)
    with pytest.raises(BadImageError, match="decompression-bomb"):
        preprocess_file(png, S)
