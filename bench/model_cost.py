"""What the FastGAN generator and the Projected GAN discriminator cost on this machine: images/s at one batch size.

A Projected FastGAN training step is: the D step (G forward without grad, D on a real and a fake batch,
backward into D's trainable parameters only: the backbone sees inputs that need no gradient, so it runs
forward only) and the G step (G forward, D on the fakes with D's parameters frozen as Lightning's
``toggle_optimizer`` does, backward through the frozen backbone into the image and G). Measured per network:

* D ``forward``: no grad at all (the lower bound of D on one batch);
* D ``train D``: forward + backward into D's trainable parameters (one half of the D step);
* D ``to image``: forward + backward to the input image, D's parameters frozen (the G step's D part);
* G ``fwd+bwd``: forward + backward into G's parameters from a fixed random upstream gradient.

Each cell is the median over timed iterations (at least 3 and ``--min-time`` seconds) after ``--warmup``
untimed ones, in fp32 and under ``torch.autocast("cpu", dtype=torch.bfloat16)``, with torch's default number
of threads and with 1. Models are in training mode (BatchNorm batch statistics, spectral-norm power iteration).
The machine may be shared: an iteration during which other processes kept more than 10% of the cores busy
(from /proc/stat) is not counted; a cell that found fewer than 3 quiet iterations in ``--max-time`` seconds
gives the median of all its iterations and is marked ``*``.

    python bench/model_cost.py                                  # the full table (about 30 minutes on 2 cores)
    python bench/model_cost.py --parts D --dtypes fp32 --threads 2
    python bench/model_cost.py --quick                          # smoke run: batch 4, one iteration per cell
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from machine import cpu_model, usable_cores  # noqa: E402

from artgan.models.fastgan import FastGANGenerator  # noqa: E402
from artgan.models.projected import ProjectedDiscriminator  # noqa: E402

# (resolution, backbone_size, max_channels): projected-gan's widths (512), and narrower heads at native size
D_CONFIGS = [(64, None, 512), (64, 128, 512), (64, 224, 512), (128, None, 512), (128, 224, 512),
             (64, None, 128), (128, None, 128)]
D_MODES = ["forward", "train D", "to image"]
# (resolution, ngf, lite); ngf 64 (FastGAN's default) only at 64 px, where it already takes seconds per batch
G_CONFIGS = [(res, ngf, lite) for res, widths in ((64, (16, 32, 64)), (128, (16, 32))) for ngf in widths
             for lite in (True, False)]
DTYPES = {"fp32": None, "bf16": torch.bfloat16}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FOREIGN_LIMIT = 0.1  # share of all cores other processes may use during an iteration that counts as quiet


def cpu_ticks() -> tuple[int, int]:
    """CPU time so far, in clock ticks: busy on the whole machine (steal included), and of this process."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return user + nice + system + irq + softirq + steal, int(own[11]) + int(own[12])  # utime + stime


def images_per_second(step: Callable[[], None], batch: int, args: argparse.Namespace) -> str:
    """Median images/s over quiet iterations (other processes used under ``FOREIGN_LIMIT`` of the cores), or
    over all of them, marked ``*``, when fewer than 3 were quiet within ``--max-time`` seconds."""
    for _ in range(args.warmup):
        step()
    quiet: list[float] = []
    every: list[float] = []
    cell_start = time.perf_counter()
    while len(quiet) < 3 or sum(quiet) < args.min_time:
        (busy0, own0), start = cpu_ticks(), time.perf_counter()
        step()
        seconds = time.perf_counter() - start
        busy1, own1 = cpu_ticks()
        foreign = ((busy1 - busy0) - (own1 - own0)) / (seconds * os.cpu_count() * CLOCK_TICKS)
        every.append(seconds)
        if foreign < FOREIGN_LIMIT:
            quiet.append(seconds)
        if len(every) >= 3 and time.perf_counter() - cell_start > args.max_time:
            break
    print(f"      {len(quiet)} of {len(every)} iterations quiet", file=sys.stderr, flush=True)
    if len(quiet) >= 3:
        return f"{batch / statistics.median(quiet):.1f}"
    return f"{batch / statistics.median(every):.1f}*"


def discriminator_step(d: ProjectedDiscriminator, mode: str, images: torch.Tensor,
                       dtype: torch.dtype | None) -> Callable[[], None]:
    trainable = d.trainable_parameters()

    def step() -> None:
        d.zero_grad(set_to_none=True)
        for p in trainable:
            p.requires_grad_(mode != "to image")
        x = images.detach().requires_grad_(mode == "to image")
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            if mode == "forward":
                with torch.no_grad():
                    d(x)
                return
            loss = d(x).float().mean()
        loss.backward()

    return step


def generator_step(g: FastGANGenerator, batch: int, dtype: torch.dtype | None) -> Callable[[], None]:
    z = g.sample_latents(batch, generator=torch.Generator().manual_seed(0))
    upstream = torch.randn(batch, 3, g.resolution, g.resolution, generator=torch.Generator().manual_seed(1))

    def step() -> None:
        g.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            images = g(z)
        images.backward(upstream.to(images.dtype))

    return step


def measure(make_step: Callable[[torch.dtype | None], Callable[[], None]], args: argparse.Namespace) -> list[str]:
    cells = []
    for dtype_name in args.dtypes:
        for threads in args.threads:
            torch.set_num_threads(threads)
            cells.append(images_per_second(make_step(DTYPES[dtype_name]), args.batch, args))
            print(f"    {dtype_name} {threads} thr: {cells[-1]} img/s", file=sys.stderr, flush=True)
    torch.set_num_threads(args.threads[0])
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", default=f"{torch.get_num_threads()},1",
                        help="comma-separated thread counts (default: torch's default, then 1)")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma-separated subset of fp32,bf16")
    parser.add_argument("--parts", default="D,G", help="comma-separated subset of D,G")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--min-time", type=float, default=3.0, help="quiet timed seconds per cell, at least")
    parser.add_argument("--max-time", type=float, default=45.0,
                        help="seconds after which a cell stops waiting for quiet iterations")
    parser.add_argument("--quick", action="store_true", help="batch 4, no warmup, a few seconds per cell")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    args.dtypes = args.dtypes.split(",")
    parts = args.parts.split(",")
    if args.quick:
        args.batch, args.warmup, args.min_time, args.max_time = 4, 0, 0.0, 2.0

    load_before = os.getloadavg()
    columns = [f"{dt} {t} thr" for dt in args.dtypes for t in args.threads]
    rows = []
    if "D" in parts:
        torch.manual_seed(0)
        for resolution, backbone_size, max_channels in D_CONFIGS:
            d = ProjectedDiscriminator(resolution, backbone_size=backbone_size, max_channels=max_channels).train()
            images = torch.rand(args.batch, 3, resolution, resolution) * 2 - 1
            millions = sum(p.numel() for p in d.trainable_parameters()) / 1e6
            for mode in D_MODES:
                name = (f"D {resolution} px, backbone_size {backbone_size}, max_channels {max_channels} "
                        f"({millions:.1f}M trained)")
                print(f"{name}, {mode}", file=sys.stderr, flush=True)
                cells = measure(lambda dtype, d=d, mode=mode, x=images: discriminator_step(d, mode, x, dtype), args)
                rows.append([name, mode, *cells])
    if "G" in parts:
        torch.manual_seed(0)
        for resolution, ngf, lite in G_CONFIGS:
            g = FastGANGenerator(resolution, ngf=ngf, lite=lite).train()
            millions = sum(p.numel() for p in g.parameters()) / 1e6
            name = f"G {resolution} px, ngf {ngf}, {'lite' if lite else 'full'} ({millions:.1f}M)"
            print(name, file=sys.stderr, flush=True)
            cells = measure(lambda dtype, g=g: generator_step(g, args.batch, dtype), args)
            rows.append([name, "fwd+bwd", *cells])
    load_after = os.getloadavg()

    lines = [
        f"Machine: CPU {cpu_model()}, {usable_cores()} cores usable (torch default threads "
        f"{args.threads[0]}); torch {torch.__version__}, Python {platform.python_version()}. Batch {args.batch}; "
        f"images/s. Load average (1/5/15 min) before {', '.join(f'{x:.2f}' for x in load_before)}, after "
        f"{', '.join(f'{x:.2f}' for x in load_after)}.",
        "Each cell: median over iterations during which other processes used under 10% of the cores; "
        "* = fewer than 3 such iterations, median of all.",
        "",
        "| network | measured | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
