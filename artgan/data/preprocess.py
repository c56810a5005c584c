"""Open any image file as RGB and turn it into a square uint8 array at the cache size.

Order: decode (JPEG draft mode: DCT-domain downscale, so a 4000 px photo decodes at ~1/8 the cost)
-> EXIF orientation -> RGB (ICC profile to sRGB, alpha on white, 16 bit scaled) -> border crop
-> trim of near-uniform frames / wall margins -> square center box resized with antialiasing.
"""

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, JpegImagePlugin

# Truncated files raise instead of being silently padded with grey: a half-decoded painting is
# worse training data than no painting, so the cache skips them (see docs/data.md).
ImageFile.LOAD_TRUNCATED_IMAGES = False

_SRGB = ImageCms.createProfile("sRGB")


class BadImageError(Exception):
    """This file cannot be used as a training image (unreadable, truncated, empty, too large)."""


@dataclass(frozen=True)
class PreprocessSettings:
    size: int  # side of the square output (the cache size)
    border_crop: float = 0.0  # fraction removed from each side before anything else
    trim_borders: bool = False  # peel near-uniform rows/columns (frames, mats, wall margins)
    trim_tolerance: float = 0.1  # max channel deviation (fraction of 255) still counted as uniform
    max_trim: float = 0.3  # never trim more than this fraction of a side (protects flat paintings)


def open_image(path, draft_side: int) -> Image.Image:
    """Decode `path` (first frame), at reduced size for JPEGs, with EXIF orientation applied."""
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise BadImageError("empty file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        # Over Pillow's pixel limit. A JPEG is still safe to decode with draft mode (1/8 scale);
        # other formats would need the full pixel buffer in memory, so they are skipped.
        if data[:2] != b"\xff\xd8":
            raise BadImageError(f"too large for Pillow's decompression-bomb limit ({e})") from e
        img = JpegImagePlugin.JpegImageFile(io.BytesIO(data))  # constructor skips the bomb check
    except Exception as e:  # UnidentifiedImageError, SyntaxError from broken headers, ...
        raise BadImageError(f"not a readable image ({type(e).__name__}: {e})") from e
    try:
        if img.format == "JPEG":
            img.draft("RGB", (draft_side, draft_side))  # keeps both sides >= draft_side
        img.load()
        img = ImageOps.exif_transpose(img)
    except Exception as e:
        raise BadImageError(f"cannot decode ({type(e).__name__}: {e})") from e
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: colour-managed to sRGB, transparency composited on white, 16 bit scaled."""
    icc = img.info.get("icc_profile")
    if icc and img.mode in ("RGB", "CMYK"):
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(img, src, _SRGB, outputMode="RGB")
        except Exception:
            pass  # broken profile: fall back to Pillow's plain conversion
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16-bit / 32-bit grey: scale the value range to 8 bit (convert("L") would clip at 255).
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            peak = 1.0 if a.max(initial=0) <= 1.0 else 255.0
        else:
            peak = 65535.0 if (img.mode.startswith("I;16") or a.max(initial=0) > 255) else 255.0
        a = np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(a, "L")
    if img.mode == "P" and "transparency" in img.info or img.mode in ("PA", "LA", "RGBa", "La"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img).convert("RGB")
    return img.convert("RGB")


def _peel_uniform_borders(a: np.ndarray, tolerance: float, max_trim: float) -> tuple[int, int, int, int]:
    """Box (top, bottom, left, right) after peeling near-uniform outer rows/columns of `a` (H, W, 3).

    A line is uniform when 95% of its pixels are within `tolerance` of the line's median colour.
    Sides are peeled in turn one line at a time, so nested frames (wall, frame, mat) come off too.
    """
    h, w = a.shape[:2]
    tol = tolerance * 255.0
    top, bottom, left, right = 0, h, 0, w
    lim_y, lim_x = int(h * max_trim), int(w * max_trim)

    def uniform(line: np.ndarray) -> bool:
        med = np.median(line, axis=0)
        return np.mean(np.abs(line - med).max(axis=1) <= tol) >= 0.95

    changed = True
    while changed:
        changed = False
        if top < lim_y and uniform(a[top, left:right]):
            top, changed = top + 1, True
        if h - bottom < lim_y and uniform(a[bottom - 1, left:right]):
            bottom, changed = bottom - 1, True
        if left < lim_x and uniform(a[top:bottom, left]):
            left, changed = left + 1, True
        if w - right < lim_x and uniform(a[top:bottom, right - 1]):
            right, changed = right - 1, True
    return top, bottom, left, right


def content_box(img: Image.Image, s: PreprocessSettings) -> tuple[float, float, float, float]:
    """The (left, upper, right, lower) region of `img` that holds the painting."""
    w, h = img.size
    bx, by = w * s.border_crop, h * s.border_crop
    box = (bx, by, w - bx, h - by)
    if s.trim_borders:
        # Detect on a small, slightly blurred copy: fast, and JPEG noise / canvas grain is averaged out.
        scale = min(1.0, 160 / max(box[2] - box[0], box[3] - box[1]))
        small_size = (max(1, round((box[2] - box[0]) * scale)), max(1, round((box[3] - box[1]) * scale)))
        small = img.resize(small_size, Image.BILINEAR, box=box, reducing_gap=2.0)
        a = np.asarray(small, dtype=np.float32)
        top, bottom, left, right = _peel_uniform_borders(a, s.trim_tolerance, s.max_trim)
        sx, sy = (box[2] - box[0]) / small_size[0], (box[3] - box[1]) / small_size[1]
        box = (box[0] + left * sx, box[1] + top * sy, box[0] + right * sx, box[1] + bottom * sy)
    return (max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3]))


def square_resize(img: Image.Image, box, size: int) -> Image.Image:
    """Center square of `box`, resized to size x size with Lanczos (antialiased down and up)."""
    left, top, right, bottom = box
    side = min(right - left, bottom - top)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    square = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    return img.resize((size, size), Image.LANCZOS, box=square, reducing_gap=3.0)


def preprocess_file(path, s: PreprocessSettings) -> tuple[np.ndarray, bool]:
    """Decode and preprocess one file -> (uint8 array (3, size, size), was_upscaled).

    Raises BadImageError for files that cannot be used.
    """
    # Ask the JPEG decoder for enough pixels to survive the border crop and a trim.
    keep = (1 - 2 * s.border_crop) * ((1 - 2 * s.max_trim) if s.trim_borders else 1)
    draft_side = math.ceil(s.size / max(keep, 0.05))
    img = to_rgb(open_image(path, draft_side))
    box = content_box(img, s)
    side = min(box[2] - box[0], box[3] - box[1])
    if side < 1:
        raise BadImageError(f"nothing left after border_crop={s.border_crop}")
    out = square_resize(img, box, s.size)
    # Draft mode never decodes below draft_side, so a short side here means a small original.
    upscaled = side < s.size
    return np.asarray(out, dtype=np.uint8).transpose(2, 0, 1).copy(), upscaled
