"""Seeded generator of abstract compositions: the default training data when no dataset is given.

Each image picks a harmonious palette (curated art palettes or colour-wheel schemes) and one of
several styles seen in abstract-art galleries: colour fields, hard-edge geometry, gestural brush
strokes, organic blobs, patchworks, drip painting, dabs and ink calligraphy. It is drawn at 2x the
training resolution (up to 512 px), given a canvas texture and downsampled with Lanczos (antialiasing).
Image i depends only on (seed, i), so results do not depend on num_images or on the worker count.

Preview: python -m artgan.data.procedural --grid docs/img/procedural_grid.png
"""

import argparse
import colorsys
import math
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Bump when the generator's output changes (it keys the cache).
GENERATOR_VERSION = 1

_CURATED = [
    ["#f4f1e8", "#d62828", "#1d3557", "#f1c40f", "#111111"],  # primaries on white
    ["#e9dcc3", "#8c5a3c", "#c08552", "#3d2b1f", "#d9a441", "#6b705c"],  # earth
    ["#5a0f0f", "#c0392b", "#e67e22", "#2c0a0a", "#f3b34c"],  # rothko reds
    ["#0b2545", "#13315c", "#8da9c4", "#eef4ed", "#e07a5f"],  # blues + coral
    ["#f8edeb", "#fec5bb", "#a8dadc", "#ffd6a5", "#cdb4db", "#457b9d"],  # pastel
    ["#efe6d2", "#1a1a1a", "#3a3a3a", "#b22222", "#8a7f6a"],  # ink on paper
    ["#fbfbf8", "#e63946", "#ffbe0b", "#3a86ff", "#06d6a0", "#111111"],  # joyful splash
    ["#2d3a1f", "#6a994e", "#a7c957", "#f2e8cf", "#bc4749"],  # olive
    ["#0d0d0d", "#1f2a44", "#e0e1dd", "#c9a227", "#7a1f1f"],  # night
    ["#f6f0e4", "#0047ab", "#ff6f3c", "#ffc93c", "#2e8b57", "#e4572e"],  # cut-outs
    ["#e8e2d0", "#264653", "#2a9d8f", "#e9c46a", "#f4a261", "#e76f51"],  # desert
    ["#101820", "#f2aa4c", "#8b1e3f", "#3c153b", "#d4c5a9"],  # dusk
    ["#dfe7ea", "#5c6f7b", "#9fb1bc", "#23303a", "#c7a27c"],  # grey-blue
    ["#f3e9dc", "#c08497", "#6d597a", "#355070", "#eaac8b"],  # mauve
]


def _hex(c: str) -> tuple[int, int, int]:
    return tuple(int(c[i : i + 2], 16) for i in (1, 3, 5))


def _palette(rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """A harmonious palette, light/dark colours first/last is NOT guaranteed: styles pick by luminance."""
    if rng.random() < 0.55:
        cols = [_hex(c) for c in _CURATED[rng.integers(len(_CURATED))]]
    else:
        base = rng.random()
        offsets = {
            "analogous": [0, 0.06, -0.06, 0.12],
            "complementary": [0, 0.5, 0.04, 0.54],
            "triadic": [0, 1 / 3, 2 / 3],
            "split": [0, 0.42, 0.58],
        }[["analogous", "complementary", "triadic", "split"][rng.integers(4)]]
        cols = []
        for off in offsets:
            s, v = rng.uniform(0.35, 0.95), rng.uniform(0.35, 0.95)
            cols.append(tuple(int(255 * c) for c in colorsys.hsv_to_rgb((base + off) % 1, s, v)))
        cols.append(
            tuple(
                int(255 * c) for c in colorsys.hsv_to_rgb(base, rng.uniform(0, 0.15), rng.uniform(0.85, 0.97))
            )
        )
        cols.append(
            tuple(
                int(255 * c) for c in colorsys.hsv_to_rgb(base, rng.uniform(0.2, 0.6), rng.uniform(0.05, 0.2))
            )
        )
    # Small per-image shift so curated palettes do not repeat exactly.
    shift = rng.normal(0, 10, 3)
    return [
        tuple(int(np.clip(c + shift[i] + rng.normal(0, 6), 0, 255)) for i, c in enumerate(col))
        for col in cols
    ]


def _lum(c) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _jitter(rng, c, amount=18, alpha=None):
    out = tuple(int(np.clip(v + rng.normal(0, amount), 0, 255)) for v in c)
    return out if alpha is None else (*out, int(alpha))


def _noise(rng, size: int, cells: int) -> np.ndarray:
    """Smooth value noise in [0, 1], (size, size): random grid upsampled bicubically."""
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    return (
        np.asarray(Image.fromarray(grid, "L").resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    )


def _smooth_path(rng, s: int, n: int = 24, step: float = 0.06, start=None) -> list[tuple[float, float]]:
    """A random walk with momentum: looks like a hand-drawn gesture."""
    x, y = start if start is not None else rng.uniform(0.05, 0.95, 2) * s
    angle, turn = rng.uniform(0, 2 * math.pi), rng.normal(0, 0.25)
    pts = []
    for _ in range(n):
        pts.append((x, y))
        turn = 0.8 * turn + rng.normal(0, 0.12)
        angle += turn
        x += math.cos(angle) * step * s
        y += math.sin(angle) * step * s
    return pts


def _brush(draw, rng, pts, color, width: float, bristles: int = 4, alpha: int = 235):
    """A brush stroke: a few parallel polylines of jittered colour and width (bristle texture)."""
    for _ in range(bristles):
        off = rng.normal(0, width * 0.25, 2)
        line = [(x + off[0], y + off[1]) for x, y in pts]
        draw.line(
            line,
            fill=_jitter(rng, color, 14, alpha),
            width=max(1, int(width * rng.uniform(0.5, 1.0))),
            joint="curve",
        )


def _blob(rng, cx, cy, r, n=40):
    """An organic closed shape: a circle with low-frequency radial wobble."""
    phases, amps = rng.uniform(0, 2 * math.pi, 3), rng.uniform(0, 0.25, 3)
    pts = []
    for i in range(n):
        t = 2 * math.pi * i / n
        k = 1 + sum(a * math.sin((j + 2) * t + p) for j, (a, p) in enumerate(zip(amps, phases, strict=True)))
        pts.append((cx + r * k * math.cos(t), cy + r * k * 1.0 * math.sin(t)))
    return pts


def _splatter(draw, rng, s, color, count):
    cx, cy = rng.uniform(0, s, 2)
    for _ in range(count):
        x, y = cx + rng.normal(0, s * 0.15), cy + rng.normal(0, s * 0.15)
        r = abs(rng.normal(0, s * 0.008)) + 0.5
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_jitter(rng, color, 10, 255))


def _by_lum(pal):
    return sorted(pal, key=_lum)


# ---- styles: each draws on a fresh canvas of side s and returns an RGB image ---------------------
def _color_field(rng, s, pal):
    p = _by_lum(pal)
    bg = p[rng.integers(0, max(1, len(p) // 2))] if rng.random() < 0.6 else p[-1]
    img = Image.new("RGB", (s, s), bg)
    n = rng.integers(2, 4)
    margin = rng.uniform(0.05, 0.12) * s
    gaps = rng.dirichlet(np.ones(n) * 3) * (s - margin * (n + 1))
    y = margin
    for i in range(n):
        mask = Image.new("L", (s, s), 0)
        ImageDraw.Draw(mask).rectangle(
            [margin + rng.normal(0, 2), y, s - margin + rng.normal(0, 2), y + gaps[i]], fill=255
        )
        mask = mask.filter(ImageFilter.GaussianBlur(s * rng.uniform(0.004, 0.015)))
        color = pal[rng.integers(len(pal))]
        layer = Image.new("RGB", (s, s), color)
        tex = (_noise(rng, s, 6) * 60 - 30)[..., None]
        layer = Image.fromarray(np.clip(np.asarray(layer, np.float32) + tex, 0, 255).astype(np.uint8))
        img.paste(layer, (0, 0), mask)
        y += gaps[i] + margin
    return img


def _geometric(rng, s, pal):
    p = _by_lum(pal)
    img = Image.new("RGB", (s, s), p[-1] if rng.random() < 0.7 else p[0])
    d = ImageDraw.Draw(img, "RGBA")
    for _ in range(rng.integers(5, 14)):
        c = _jitter(rng, pal[rng.integers(len(pal))], 8, rng.uniform(170, 255))
        kind = rng.integers(6)
        x, y = rng.uniform(0, s, 2)
        r = s * rng.uniform(0.05, 0.3)
        if kind == 0:
            d.ellipse([x - r, y - r, x + r, y + r], fill=c)
        elif kind == 1:
            d.ellipse([x - r, y - r, x + r, y + r], outline=c, width=max(1, int(s * rng.uniform(0.01, 0.04))))
        elif kind == 2:
            a = rng.uniform(0, math.pi)
            pts = [
                (
                    x + r * math.cos(a + k * math.pi / 2) * (1.4 if k % 2 else 1),
                    y + r * math.sin(a + k * math.pi / 2),
                )
                for k in range(4)
            ]
            d.polygon(pts, fill=c)
        elif kind == 3:
            d.polygon([tuple(rng.uniform(-0.1, 1.1, 2) * s) for _ in range(3)], fill=c)
        elif kind == 4:
            d.line(
                [tuple(rng.uniform(0, s, 2)), tuple(rng.uniform(0, s, 2))],
                fill=c,
                width=max(1, int(s * rng.uniform(0.005, 0.03))),
            )
        else:
            start = rng.uniform(0, 360)
            d.pieslice([x - r, y - r, x + r, y + r], start, start + 180, fill=c)
    for _ in range(rng.integers(0, 4)):  # thin dark lines tie the composition together
        d.line(
            [tuple(rng.uniform(0, s, 2)), tuple(rng.uniform(0, s, 2))],
            fill=(*p[0], 255),
            width=max(1, s // 100),
        )
    return img


def _gestural(rng, s, pal):
    img = Image.new("RGB", (s, s), pal[rng.integers(len(pal))])
    d = ImageDraw.Draw(img, "RGBA")
    for _ in range(rng.integers(3, 7)):  # broad underpainting
        _brush(
            d,
            rng,
            _smooth_path(rng, s, 12, 0.1),
            pal[rng.integers(len(pal))],
            s * rng.uniform(0.1, 0.22),
            5,
            200,
        )
    for _ in range(rng.integers(8, 20)):
        _brush(
            d,
            rng,
            _smooth_path(rng, s, int(rng.integers(6, 20)), 0.05),
            pal[rng.integers(len(pal))],
            s * rng.uniform(0.02, 0.07),
            4,
        )
    if rng.random() < 0.5:
        _splatter(d, rng, s, _by_lum(pal)[0], int(rng.integers(20, 80)))
    return img


def _organic(rng, s, pal):
    p = _by_lum(pal)
    top, bottom = np.array(p[-1], np.float32), np.array(pal[rng.integers(len(pal))], np.float32)
    t = np.linspace(0, 1, s, dtype=np.float32)[:, None, None] ** rng.uniform(0.7, 2.5)
    grad = (top * (1 - t) + bottom * t) * np.ones((1, s, 1), np.float32)
    img = Image.fromarray(grad.astype(np.uint8))
    d = ImageDraw.Draw(img, "RGBA")
    for _ in range(rng.integers(3, 8)):
        c = _jitter(rng, pal[rng.integers(len(pal))], 10, rng.uniform(200, 255))
        d.polygon(_blob(rng, *rng.uniform(0.1, 0.9, 2) * s, s * rng.uniform(0.06, 0.2)), fill=c)
    for _ in range(rng.integers(1, 4)):
        d.line(_smooth_path(rng, s, 30, 0.04), fill=(*p[0], 255), width=max(1, s // 80), joint="curve")
    for _ in range(rng.integers(0, 6)):
        x, y, r = *rng.uniform(0.05, 0.95, 2) * s, s * rng.uniform(0.01, 0.03)
        d.ellipse([x - r, y - r, x + r, y + r], fill=(*pal[rng.integers(len(pal))], 255))
    return img


def _patchwork(rng, s, pal):
    img = Image.new("RGB", (s, s), _by_lum(pal)[0])
    d = ImageDraw.Draw(img)
    rects = [(0.0, 0.0, float(s), float(s))]
    for _ in range(rng.integers(5, 16)):  # recursive splits, Mondrian / Klee style
        i = int(np.argmax([(r[2] - r[0]) * (r[3] - r[1]) * rng.uniform(0.5, 1.5) for r in rects]))
        x0, y0, x1, y1 = rects.pop(i)
        if (x1 - x0) > (y1 - y0) * rng.uniform(0.6, 1.6):
            m = x0 + (x1 - x0) * rng.uniform(0.3, 0.7)
            rects += [(x0, y0, m, y1), (m, y0, x1, y1)]
        else:
            m = y0 + (y1 - y0) * rng.uniform(0.3, 0.7)
            rects += [(x0, y0, x1, m), (x0, m, x1, y1)]
    gap = s * (rng.uniform(0.01, 0.025) if rng.random() < 0.5 else 0.0)
    light = _by_lum(pal)[-1]
    for x0, y0, x1, y1 in rects:
        c = pal[rng.integers(len(pal))] if rng.random() < 0.6 else light
        d.rectangle([x0 + gap, y0 + gap, x1 - gap, y1 - gap], fill=_jitter(rng, c, 12))
    return img


def _drip(rng, s, pal):
    img = Image.new("RGB", (s, s), pal[rng.integers(len(pal))])
    d = ImageDraw.Draw(img, "RGBA")
    colors = [pal[i] for i in rng.choice(len(pal), size=min(len(pal), 4), replace=False)]
    for _ in range(rng.integers(25, 60)):
        pts = _smooth_path(rng, s, int(rng.integers(10, 40)), rng.uniform(0.02, 0.06))
        d.line(
            pts,
            fill=_jitter(rng, colors[rng.integers(len(colors))], 10, 230),
            width=max(1, int(s * rng.uniform(0.003, 0.012))),
            joint="curve",
        )
    for c in colors[:2]:
        _splatter(d, rng, s, c, int(rng.integers(20, 60)))
    return img


def _dabs(rng, s, pal):
    img = Image.new("RGB", (s, s), pal[rng.integers(len(pal))])
    d = ImageDraw.Draw(img, "RGBA")
    r0 = s * rng.uniform(0.03, 0.07)
    for _ in range(rng.integers(120, 240)):  # short curved strokes with bristles: impasto dabs
        start = rng.uniform(-0.05, 1.05, 2) * s
        pts = _smooth_path(rng, s, int(rng.integers(2, 5)), r0 / s * rng.uniform(0.6, 1.4), start=start)
        _brush(d, rng, pts, pal[rng.integers(len(pal))], r0 * rng.uniform(0.8, 1.5), 2, 230)
    return img


def _ink(rng, s, pal):
    paper = _by_lum(pal)[-1]
    paper = tuple(int(0.5 * v + 0.5 * w) for v, w in zip(paper, (238, 230, 212), strict=True))
    img = Image.new("RGB", (s, s), paper)
    d = ImageDraw.Draw(img, "RGBA")
    if rng.random() < 0.6:  # one colour accent
        c = _jitter(rng, pal[rng.integers(len(pal))], 10, 220)
        d.polygon(_blob(rng, *rng.uniform(0.25, 0.75, 2) * s, s * rng.uniform(0.1, 0.25)), fill=c)
    ink = (20, 18, 16)
    for _ in range(rng.integers(4, 10)):
        _brush(
            d,
            rng,
            _smooth_path(rng, s, int(rng.integers(8, 25)), 0.05),
            ink,
            s * rng.uniform(0.02, 0.07),
            3,
            240,
        )
    return img


STYLES = [_color_field, _geometric, _gestural, _organic, _patchwork, _drip, _dabs, _ink]


def render_image(seed: int, index: int, size: int) -> np.ndarray:
    """Image `index` of the set drawn with `seed`: uint8 (3, size, size)."""
    rng = np.random.default_rng([seed, index, GENERATOR_VERSION])
    s = min(2 * size, max(size, 512))
    pal = _palette(rng)
    img = STYLES[rng.integers(len(STYLES))](rng, s, pal)
    # Paint wash: a second palette colour blended in through smooth noise, so flat areas vary.
    a = np.asarray(img, np.float32)
    wash = _noise(rng, s, 4)[..., None] * rng.uniform(0.0, 0.25)
    a = a * (1 - wash) + np.array(pal[rng.integers(len(pal))], np.float32) * wash
    # Canvas texture: low-frequency light variation plus fine grain, then a touch of softening.
    light = 1 + (_noise(rng, s, 5) - 0.5) * rng.uniform(0.05, 0.2)
    grain = (rng.random((s, s), dtype=np.float32) - 0.5) * rng.uniform(2, 8)
    a = np.clip(a * light[..., None] + grain[..., None], 0, 255).astype(np.uint8)
    img = Image.fromarray(a).filter(ImageFilter.GaussianBlur(s / 400))
    if s != size:
        img = img.resize((size, size), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()


def _render_range(args) -> np.ndarray:
    seed, start, stop, size = args
    return np.stack([render_image(seed, i, size) for i in range(start, stop)])


def render_images(
    num_images: int, seed: int, size: int, workers: int | None = None, progress: bool = True
) -> np.ndarray:
    """Images 0..num_images-1 as uint8 (N, 3, size, size), rendered in parallel processes."""
    from tqdm.auto import tqdm

    workers = workers or max(1, min(8, os.cpu_count() or 1))
    chunk = 50
    jobs = [(seed, i, min(i + chunk, num_images), size) for i in range(0, num_images, chunk)]
    out = np.empty((num_images, 3, size, size), np.uint8)
    bar = tqdm(
        total=num_images, desc=f"Rendering procedural art at {size} px", unit="img", disable=not progress
    )
    if workers == 1 or len(jobs) == 1:
        results = map(_render_range, jobs)
        pool = None
    else:
        import multiprocessing as mp

        # fork is fast and safe here (NumPy + Pillow only); fall back to the default elsewhere.
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        pool = ProcessPoolExecutor(workers, mp_context=ctx)
        results = pool.map(_render_range, jobs)
    try:
        for (_, start, stop, _), images in zip(jobs, results, strict=True):
            out[start:stop] = images
            bar.update(stop - start)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    return out


def save_grid(images: np.ndarray, path: str, columns: int = 8, pad: int = 2) -> None:
    """(N, 3, S, S) uint8 -> one PNG grid with white padding."""
    n, _, s, _ = images.shape
    rows = math.ceil(n / columns)
    grid = Image.new("RGB", (columns * (s + pad) + pad, rows * (s + pad) + pad), "white")
    for i, im in enumerate(images):
        grid.paste(
            Image.fromarray(im.transpose(1, 2, 0)),
            (pad + (i % columns) * (s + pad), pad + (i // columns) * (s + pad)),
        )
    grid.save(path, optimize=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Preview the procedural abstract-art generator.")
    parser.add_argument("--grid", default="docs/img/procedural_grid.png")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=64)
    a = parser.parse_args()
    save_grid(render_images(a.count, a.seed, a.size, progress=False), a.grid)
    print(f"wrote {a.grid}")
