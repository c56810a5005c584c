"""Data pipeline benchmark (not a test): python bench/data.py [--root PATH] [--figures]

1. time to build the decode-once cache at 64, 128 and 256 px (and to render the procedural set);
2. images/s served by the cached dataset vs an ImageFolder-style dataset decoding JPEGs every epoch;
3. DCGAN64 training throughput fed by the real loader vs batches already in memory.
Prints a markdown table and writes bench/results/data.md. --figures also redraws
docs/img/preprocess_before_after.png and docs/img/procedural_grid.png.
"""

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from artgan.data.datamodule import ArtDataModule  # noqa: E402
from artgan.data.discovery import find_images  # noqa: E402
from artgan.data.preprocess import PreprocessSettings, content_box, open_image, square_resize, to_rgb  # noqa: E402
from artgan.data.procedural import render_images, save_grid  # noqa: E402
from artgan.data.transforms import to_model_range  # noqa: E402

SAMPLE = REPO.parent / "shared" / "data" / "abstract-art-gallery-sample"


def machine() -> str:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}; "
        f"load average at the end {load} (shared machine: wall-clock figures are pessimistic)"
    )


class DecodeEveryEpoch(Dataset):
    """The usual torchvision ImageFolder recipe: PIL decode + Resize(R) + CenterCrop(R) per item."""

    def __init__(self, files, resolution):
        from torchvision import transforms as T

        self.files = files
        self.tf = T.Compose([T.Resize(resolution), T.CenterCrop(resolution), T.PILToTensor()])

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as img:
            return self.tf(img.convert("RGB"))


def images_per_second(loader, min_seconds: float, max_epochs: int = 1000) -> float:
    n, start = 0, time.perf_counter()
    for _ in range(max_epochs):
        for batch in loader:
            n += len(batch)
        if time.perf_counter() - start >= min_seconds:
            break
    return n / (time.perf_counter() - start)


def tiny_dcgan64(width: int = 32):
    from artgan.models.dcgan import DCGANDiscriminator, DCGANGenerator

    return DCGANGenerator(resolution=64, latent_dim=128, ngf=width), DCGANDiscriminator(resolution=64, ndf=width)


def train_throughput(batches, steps: int, g, d, opt_g, opt_d) -> tuple[float, float, float]:
    """Full GAN steps (D on real + fake, then G) consuming `batches` (an iterator of uint8 batches).

    Returns (images per wall second, images per CPU second of this process, fraction of the wall time
    spent waiting for the next batch). CPU time is robust to other jobs sharing the machine.
    """
    bce = nn.BCEWithLogitsLoss()
    wall, cpu, wait, n = time.perf_counter(), time.process_time(), 0.0, 0
    for _ in range(steps):
        t = time.perf_counter()
        real = to_model_range(next(batches))
        wait += time.perf_counter() - t
        b = len(real)
        z = g.sample_latents(b)
        fake = g(z)
        d_loss = bce(d(real).flatten(), torch.ones(b)) + bce(d(fake.detach()).flatten(), torch.zeros(b))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = bce(d(fake).flatten(), torch.ones(b))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        n += b
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return n / wall, n / cpu, wait / wall


def forever(loader):
    while True:
        yield from loader


def figures(root: Path) -> None:
    """Before/after of preprocessing on paintings with frames or margins + the procedural grid."""
    side, out_side = 170, 112
    settings = PreprocessSettings(size=out_side, trim_borders=True)
    # Show the paintings where trimming matters: 12-45% of the area removed, spread over the folder.
    picked = []
    for f in find_images(root)[::3]:
        img = to_rgb(open_image(f, 2 * side))
        box = content_box(img, settings)
        removed = 1 - (box[2] - box[0]) * (box[3] - box[1]) / (img.width * img.height)
        if 0.12 < removed < 0.45:
            picked.append((img, box))
        if len(picked) == 7:
            break
    canvas = Image.new("RGB", (len(picked) * (side + 8) + 8, side + out_side + 48), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 4), "before: original, magenta = painting found by trim_borders", fill=(0, 0, 0))
    draw.text((8, side + 26), f"after: trimmed, Lanczos resize, center crop to {out_side} px", fill=(0, 0, 0))
    for i, (img, box) in enumerate(picked):
        thumb = img.copy()
        thumb.thumbnail((side, side))
        k = thumb.width / img.width
        rect = [box[0] * k, box[1] * k, box[2] * k - 1, box[3] * k - 1]
        ImageDraw.Draw(thumb).rectangle(rect, outline=(255, 0, 255), width=2)
        x = 8 + i * (side + 8)
        canvas.paste(thumb, (x + (side - thumb.width) // 2, 20 + (side - thumb.height) // 2))
        canvas.paste(square_resize(img, box, out_side), (x + (side - out_side) // 2, side + 42))
    canvas.save(REPO / "docs/img/preprocess_before_after.png", optimize=True)
    save_grid(render_images(64, 0, 64, progress=False), str(REPO / "docs/img/procedural_grid.png"))
    print("wrote docs/img/preprocess_before_after.png and docs/img/procedural_grid.png")


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=SAMPLE)
    parser.add_argument("--figures", action="store_true")
    parser.add_argument("--figures-only", action="store_true")
    parser.add_argument("--train-steps", type=int, default=6)
    args = parser.parse_args()
    if not args.root.is_dir():
        sys.exit(f"no images at {args.root}: pass --root (e.g. the Kaggle Abstract_gallery folder)")
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    if args.figures or args.figures_only:
        figures(args.root)
        if args.figures_only:
            return
    files = find_images(args.root)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="artgan-bench-"))

    # 1. cache build
    modules = {}
    for res in (64, 128, 256):
        dm = ArtDataModule(
            source="folder",
            root=str(args.root),
            resolution=res,
            cache_dir=str(tmp),
            trim_borders=True,
            progress=False,
        )
        start = time.perf_counter()
        dm.prepare_data()
        build = time.perf_counter() - start
        start = time.perf_counter()
        dm2 = ArtDataModule(
            source="folder", root=str(args.root), resolution=res, cache_dir=str(tmp), trim_borders=True
        )
        dm2.setup()
        reuse = time.perf_counter() - start
        modules[res] = dm2
        rows.append(
            (
                f"cache build, {len(files)} JPEGs at {res} px",
                f"{build:.1f} s ({len(files) / build:.0f} img/s)",
                f"reused by a later run in {reuse * 1000:.0f} ms",
            )
        )
    start = time.perf_counter()
    render_images(2800, 0, 64, progress=False)
    rows.append(
        (
            "procedural: render 2800 images at 64 px",
            f"{time.perf_counter() - start:.1f} s",
            "once, then cached",
        )
    )

    # 2. serving: cached vs decoding every epoch (same resolution, same batch size)
    dm = modules[64]
    dm.batch_size = 64
    cached = images_per_second(dm.train_dataloader(), min_seconds=3)
    workers = os.cpu_count() or 1
    decode_loader = DataLoader(
        DecodeEveryEpoch(files, 64),
        batch_size=64,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=True,
    )
    decoded = images_per_second(decode_loader, min_seconds=1, max_epochs=1)
    rows.append(
        (
            "serve 64 px: cached uint8 (num_workers=0)",
            f"{cached:,.0f} img/s",
            f"**{cached / decoded:.0f}x** the decode-every-epoch loader",
        )
    )
    rows.append(
        (
            f"serve 64 px: PIL decode + Resize + CenterCrop every epoch (num_workers={workers})",
            f"{decoded:,.0f} img/s",
            f"an epoch of {len(files)} images takes {len(files) / decoded:.1f} s",
        )
    )

    # 3. training throughput: real loader vs batches already in memory (interleaved to share machine noise)
    torch.manual_seed(0)
    g, d = tiny_dcgan64()
    opt_g = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    real_iter = forever(dm.train_dataloader())
    in_memory = dm.real_images()[:64].clone()
    mem_iter = iter(lambda: in_memory, None)
    train_throughput(real_iter, 2, g, d, opt_g, opt_d)  # warm-up
    loader_runs, memory_runs = [], []
    for _ in range(3):  # interleaved, so both see the same machine load
        loader_runs.append(train_throughput(real_iter, args.train_steps, g, d, opt_g, opt_d))
        memory_runs.append(train_throughput(mem_iter, args.train_steps, g, d, opt_g, opt_d))
    lw, lc, lwait = (float(np.median(v)) for v in zip(*loader_runs, strict=True))
    mw, mc, _ = (float(np.median(v)) for v in zip(*memory_runs, strict=True))
    name = "DCGAN64 step (ngf=ndf=32, batch 64)"
    rows.append(
        (
            f"{name} fed by the real loader",
            f"{lw:,.1f} img/s wall, {lc:,.1f} img/CPU-s",
            f"**{lc / mc:.3f}** of in-memory (CPU time; wall {lw / mw:.2f}); waiting for data: {100 * lwait:.2f}% of the time",
        )
    )
    rows.append(
        (f"{name} fed by a tensor in memory", f"{mw:,.1f} img/s wall, {mc:,.1f} img/CPU-s", "upper bound")
    )

    table = ["| measurement | result | note |", "|---|---|---|"] + [
        f"| {a} | {b} | {c} |" for a, b, c in rows
    ]
    text = (
        f"Data pipeline benchmark on {args.root.name} ({len(files)} JPEGs, "
        f"{sum(f.stat().st_size for f in files) / 1e6:.0f} MB), `python bench/data.py`\n\n"
        f"Machine: {machine()}\n\n" + "\n".join(table) + "\n"
    )
    print(text)
    (REPO / "bench/results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench/results/data.md").write_text(text)


if __name__ == "__main__":
    main()
