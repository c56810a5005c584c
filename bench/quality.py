"""Sample quality at EQUAL TRAINING TIME: the seed recipe, the DCGAN best recipe and the FastGAN recipe
(experiment=best_64 / best_128) on the 557-painting sample (../shared/data/abstract-art-gallery-sample).

Why equal time and not equal images: the recipes cost different amounts per image (the projected discriminator
runs a pretrained network), so equal images would favour the expensive one. Every run gets the same number of
minutes on the same clock (bench/budget.py): the CPU time of its training batches, each run a ``train.py``
subprocess with one torch thread pinned to its own core (``--jobs`` runs side by side), so a run's minutes are
one core's minutes whatever else the machine does. Snapshots of the sampling generator (EMA when the recipe has
one) are written every ``--snapshot-minutes`` and scored after training, so scoring costs no training time and
every recipe is scored at the same points: the curves of quality against minutes and the time each recipe
needs to reach the seed recipe's final quality come from them.

Scoring (artgan.metrics.evaluator.Evaluator, the protocol of conf/evaluator/default.yaml): ``--num-samples``
(1,000) images from seeded latents (the same for every snapshot) against all real paintings at the bench's
resolution (data=abstract_art pipeline, centre crop):

* network-free: multi-scale sliced Wasserstein distance (SWD, x1e3), spectral high-frequency distance
  (up-sampling artefacts), colour-histogram KL;
* in ImageNet EfficientNet-Lite0 features: FID, KID and the diversity ratio. The projected discriminator trains
  against EfficientNet-Lite0 features, so for that recipe these are the discriminator's own feature space
  (marked in the report): read them next to SWD and the pictures (Kynkaanniemi et al., ICLR 2023);
* in ImageNet EfficientNet-Lite2 features (a wider, deeper sibling with its own weights, at 260 px): KID and the
  diversity ratio in a network no discriminator here looks through. Still an ImageNet classifier, so not the
  independent judge SWD is, but the Lite0 stages a projected D trains against are not in it.

The real-vs-real floor of every metric: the paintings split into two random halves, one scored against the
other (smaller sets than the runs', so FID is biased upwards there; KID is unbiased).

Writes ``bench/results/<name>.md`` (tables, target checks, time to quality, machine), ``<name>.json``,
``<name>_samples.jpg`` (paintings beside each recipe's final samples) and ``<name>_curves.png`` (SWD and KID
against minutes).

    .venv/bin/python bench/quality.py                                  # 64 px: 3 recipes x 2 seeds, 25 min each
    .venv/bin/python bench/quality.py --resolution 128 --minutes 50 --seeds 0 --name quality128
    .venv/bin/python bench/quality.py --quick                          # smoke run: 1 minute per run, one seed
    .venv/bin/python bench/quality.py --recipes "a=best_64;model.discriminator.backbone_size=128" --name tune
    .venv/bin/python bench/quality.py --eval-only --name quality64     # re-score the existing runs

Not part of the test suite. Skips with a message (exit 0) when the shared data folder is absent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "abstract-art-gallery-sample"
DEFAULT_OUT = BENCH / "results"
RECIPES = {64: ["seed_dcgan", "best_dcgan64", "best_64"], 128: ["seed_dcgan128", "best_dcgan128", "best_128"]}
EVAL_SEED = 2024  # latents of the scoring images (the same for every snapshot)
# Everything that is not training is off; the budget callback stops the run and writes the snapshots.
BENCH_OVERRIDES = [
    "trainer.accelerator=cpu",
    "logger=none",
    "callbacks.metrics=null",
    "callbacks.samples=null",
    "callbacks.plots=null",
    "callbacks.model_checkpoint=null",
    "callbacks.divergence_guard=null",
    "callbacks.progress_bar=null",
    "callbacks.tensorboard_resume=null",
    "callbacks.last_checkpoint.every_n_minutes=null",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
    "trainer.max_epochs=-1",
    "trainer.log_every_n_steps=50",
]
CURVE_METRICS = ("swd", "kid_effnet", "kid_effnet_lite2")
SHOWN = ("swd", "spectral_hf", "kl_real_fake", "kid_effnet", "fid_effnet", "diversity_effnet", "kid_effnet_lite2",
         "diversity_effnet_lite2")
#: metric networks: Lite0 (the projected D's backbone; the issue's KID) and Lite2 (no D looks through it)
EXTRACTORS = "[effnet_lite0,effnet_lite2]"


def machine() -> dict:
    import lightning as L
    import torch
    from machine import cpu_model, usable_cores  # bench/machine.py

    return {"cpu": cpu_model(), "cores": usable_cores(), "torch": torch.__version__, "lightning": L.__version__,
            "python": platform.python_version(), "gpu": "none (CPU run)"}


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


# -------------------------------------------------------------------------------------------- recipes
@dataclass
class Recipe:
    label: str
    experiment: str
    overrides: list[str] = field(default_factory=list)
    summary: str = ""
    precision: str = ""
    trains_in_effnet_space: bool = False  # its D looks through EfficientNet-Lite0
    trains_on_spectrum: bool = False  # its G trains against the spectrum spectral_hf compares


def parse_recipe(text: str) -> Recipe:
    """``experiment`` or ``label=experiment;key=value;...`` (overrides for tuning runs)."""
    head, *rest = [p.strip() for p in text.split(";") if p.strip()]
    label, _, experiment = head.partition("=")
    return Recipe(label=label, experiment=experiment or label, overrides=rest)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def describe(recipe: Recipe, data_root: Path) -> Recipe:
    from artgan.precision import resolve_precision

    cfg = compose([f"experiment={recipe.experiment}", "data=abstract_art", f"data.root={data_root}",
                   *recipe.overrides])
    m = cfg.model

    def name(node) -> str:
        return str(node._target_).rsplit(".", 1)[-1]

    parts = [f"{name(m.generator)} + {name(m.discriminator)}", name(m.loss),
             f"Adam G {m.optimizer_g.lr:g} / D {m.optimizer_d.lr:g} betas {tuple(m.optimizer_g.betas)}",
             f"batch {cfg.data.batch_size}"]
    if m.get("augment"):
        parts.append(f"DiffAugment {m.augment.policy}" + (" + ADA" if m.augment.get("ada") else ""))
    if m.get("ema_decay"):
        parts.append(f"EMA G {m.ema_decay:g}")
    if m.loss.get("r1_gamma"):
        parts.append(f"R1 {m.loss.r1_gamma:g}/{m.loss.r1_every}")
    if m.loss.get("spectrum_matching"):
        parts.append(f"spectral regularizer {m.loss.spectrum_matching:g}")
    recipe.precision = resolve_precision(cfg.trainer.precision, "cpu")[0]
    parts.append(recipe.precision)
    recipe.summary = ", ".join(parts)
    recipe.trains_in_effnet_space = any("projected" in t.lower() for t in targets_in(m.discriminator))
    recipe.trains_on_spectrum = bool(m.loss.get("spectrum_matching"))
    return recipe


def targets_in(node) -> list[str]:
    """Every ``_target_`` in a config subtree (an ensemble D's members included)."""
    from omegaconf import DictConfig, ListConfig

    if isinstance(node, DictConfig):
        own = [str(node._target_)] if "_target_" in node else []
        return own + [t for key in node if key != "_target_" for t in targets_in(node[key])]
    if isinstance(node, ListConfig):
        return [t for item in node for t in targets_in(item)]
    return []


# ------------------------------------------------------------------------------------------- training
def start_run(recipe: Recipe, seed: int, run_dir: Path, data_root: Path, args, core: int | None) -> subprocess.Popen:
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    budget = (f"+callbacks.budget={{_target_:budget.TrainingBudget,minutes:{args.minutes},"
              f"every_minutes:{args.snapshot_minutes},dirpath:{run_dir / 'snapshots'},clock:{args.clock}}}")
    cap = max(3 * args.minutes, args.minutes + 10)  # a safety stop on the wall clock only
    cmd = [sys.executable, str(REPO / "train.py"), f"experiment={recipe.experiment}", "data=abstract_art",
           f"data.root={data_root}", f"seed={seed}", f"hydra.run.dir={run_dir}", *BENCH_OVERRIDES, budget,
           f"trainer.max_time=00:{int(cap) // 60:02d}:{int(cap) % 60:02d}:00", *recipe.overrides]
    if core is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(core), *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONPATH": os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")])}
    (run_dir / "command.txt").write_text(" ".join(cmd) + "\n")
    log = open(run_dir / "train.log", "w")  # noqa: SIM115 - closed in finish_run
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.log, proc.started = log, time.perf_counter()  # type: ignore[attr-defined]
    return proc


def finish_run(proc: subprocess.Popen, run_dir: Path) -> float:
    rc = proc.wait()
    proc.log.close()  # type: ignore[attr-defined]
    if rc != 0:
        tail = (run_dir / "train.log").read_text(errors="replace").splitlines()[-25:]
        raise SystemExit(f"training run {run_dir} failed (exit {rc}); its train.log ends:\n" + "\n".join(tail))
    return time.perf_counter() - proc.started  # type: ignore[attr-defined]


def train_all(jobs: list[tuple[Recipe, int]], out: Path, data_root: Path, args) -> list[dict]:
    """Run ``args.jobs`` trainings at a time, each pinned to its own core."""
    pending, running, done = list(jobs), [], []
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [None] * args.jobs
    while pending or running:
        while pending and len(running) < args.jobs:
            recipe, seed = pending.pop(0)
            free = [c for c in cores if c not in {r[3] for r in running}]
            core = free[0] if free and args.jobs > 1 else None
            run_dir = out / "runs" / f"{args.name}_{recipe.label}_s{seed}"
            print(f"[train] {recipe.label} seed {seed}: {args.minutes:g} min on core {core} -> {run_dir}", flush=True)
            running.append((recipe, seed, run_dir, core, start_run(recipe, seed, run_dir, data_root, args, core)))
        time.sleep(5)
        for item in [r for r in running if r[4].poll() is not None]:
            running.remove(item)
            recipe, seed, run_dir, core, proc = item
            wall = finish_run(proc, run_dir)
            snaps = sorted((run_dir / "snapshots").glob("t*.pt"))
            print(f"    done {recipe.label} s{seed}: {len(snaps)} snapshots, process {wall / 60:.1f} min", flush=True)
            done.append({"recipe": recipe.label, "seed": seed, "run_dir": str(run_dir), "wall_minutes": wall / 60})
    return done


# ------------------------------------------------------------------------------------------------ scoring
class RealSubset:
    """The real-image side for the evaluator: some of the paintings (the floor splits them in two)."""

    def __init__(self, images, fingerprint: str, resolution: int):
        self.images, self.fingerprint, self.resolution = images, fingerprint, resolution

    @property
    def dataset_size(self) -> int:
        return int(self.images.shape[0])

    def real_images(self, n: int | None = None):
        return self.images[:n]


def load_snapshot(path: Path):
    """The sampling generator a snapshot holds (eval mode) and the snapshot (its time, images and steps)."""
    import torch

    from artgan.models import registry

    snap = torch.load(path, map_location="cpu", weights_only=True)
    generator = registry.build("generator", snap["generator"])
    generator.load_state_dict(snap["state_dict"])
    return generator.eval(), snap


class Scorer:
    def __init__(self, data_root: Path, resolution: int, num_samples: int):
        import torch
        from hydra.utils import instantiate

        torch.set_grad_enabled(False)
        cfg = compose([f"model.resolution={resolution}", "data=abstract_art", f"data.root={data_root}",
                       f"evaluator.num_samples={num_samples}", "evaluator.num_real=null", f"evaluator.seed={EVAL_SEED}",
                       "evaluator.strict=true", f"evaluator.fid.extractors={EXTRACTORS}",
                       f"paths.cache_dir={REPO / '.cache' / 'artgan'}"])
        self.cfg = cfg
        self.datamodule = instantiate(cfg.data)
        self.datamodule.setup("fit")
        self.real = self.datamodule.real_images()
        self.evaluator = instantiate(cfg.evaluator)
        self.evaluator.prepare(self.datamodule, "cpu")

    def protocol(self) -> dict:
        return self.evaluator.describe()

    def score_snapshot(self, path: Path) -> tuple[dict, object]:
        import torch

        generator, snap = load_snapshot(path)
        values = self.evaluator.evaluate(generator, "cpu")
        z = generator.sample_latents(64, generator=torch.Generator().manual_seed(EVAL_SEED))
        samples = generator(z)
        return {**values, "minutes": snap["seconds"] / 60, "images_seen": snap["images_seen"],
                "g_steps": snap["g_steps"]}, samples

    def floor(self, seed: int = 0) -> dict:
        """Every metric between two random halves of the paintings."""
        import torch
        from hydra.utils import instantiate

        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self.real), generator=g)
        half_a, half_b = self.real[order[: len(order) // 2]], self.real[order[len(order) // 2:]]
        evaluator = instantiate(self.cfg.evaluator, cache_dir=str(REPO / ".cache" / "artgan" / "floor"))
        evaluator.prepare(RealSubset(half_a, f"{self.datamodule.fingerprint}-half-a-{seed}",
                                     self.datamodule.resolution), "cpu")
        return evaluator.evaluate_images(half_b.split(evaluator.batch_size))


def score_runs(runs: list[dict], scorer: Scorer) -> dict:
    """Score every snapshot of every run (into run["snapshots"]); returns each recipe's final samples."""
    samples = {}
    for run in runs:
        rows = []
        for path in sorted(Path(run["run_dir"], "snapshots").glob("t*.pt")):
            t0 = time.perf_counter()
            row, images = scorer.score_snapshot(path)
            rows.append(row)
            print(f"    {run['recipe']} s{run['seed']} @ {row['minutes']:.1f} min: SWD {row['swd']:.1f}  KID "
                  f"{row['kid_effnet']:.4f}  KID Lite2 {row['kid_effnet_lite2']:.4f}  spectral_hf "
                  f"{row['spectral_hf']:.3f}  ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
        run["snapshots"] = rows
        samples.setdefault(run["recipe"], images)  # the first seed's final snapshot
    return samples


# ------------------------------------------------------------------------------------------------ report
def final(run: dict) -> dict:
    return run["snapshots"][-1]


def mean_std(values: list[float], digits: int = 4) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}g}"
    return f"{statistics.mean(values):.{digits}g} ± {statistics.stdev(values):.2g}"


def recipe_means(runs: list[dict], label: str) -> dict[str, float]:
    rows = [final(r) for r in runs if r["recipe"] == label]
    return {k: statistics.mean(row[k] for row in rows) for k in rows[0] if isinstance(rows[0][k], (int, float))}


def time_to_reach(runs: list[dict], label: str, metric: str, target: float) -> float | None:
    """Minutes until the recipe's curve (mean over seeds, at the shared snapshot times) is at or below target."""
    curves = [r["snapshots"] for r in runs if r["recipe"] == label]
    for points in zip(*curves, strict=False):
        if statistics.mean(p[metric] for p in points) <= target:
            return statistics.mean(p["minutes"] for p in points)
    return None


def plot_curves(runs: list[dict], recipes: list[Recipe], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = [m for m in CURVE_METRICS if all(m in p for r in runs for p in r["snapshots"])]
    fig = Figure(figsize=(5.5 * len(metrics), 4.2), dpi=110)
    FigureCanvasAgg(fig)
    colors = ["#7f7f7f", "#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    labels = {"swd": "SWD x1e3 (network-free)", "kid_effnet": "KID, EfficientNet-Lite0 features",
              "kid_effnet_lite2": "KID, EfficientNet-Lite2 features (no D sees them)"}
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for color, recipe in zip(colors, recipes):
            mine = [r for r in runs if r["recipe"] == recipe.label]
            for r in mine:
                ax.plot([p["minutes"] for p in r["snapshots"]], [p[metric] for p in r["snapshots"]], color=color,
                        alpha=0.3, lw=1)
            points = list(zip(*[r["snapshots"] for r in mine], strict=False))
            ax.plot([statistics.mean(p["minutes"] for p in pts) for pts in points],
                    [statistics.mean(p[metric] for p in pts) for pts in points], color=color, lw=2, marker="o",
                    ms=3, label=recipe.label + (" (D sees these features)" if metric == "kid_effnet"
                                                and recipe.trains_in_effnet_space else ""))
        ax.set_xlabel("training minutes (one CPU core)")
        ax.set_ylabel(labels[metric])
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def samples_picture(real, samples: dict, recipes: list[Recipe], path: Path, title: str) -> None:
    import torch
    from PIL import Image, ImageDraw

    from artgan.generate.images import make_grid, to_pil

    count = 24  # 6 x 4 per panel: enough to see variety, small enough to sit side by side
    panels = [("paintings (real)",
               real[torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:count]])]
    panels += [(r.label, samples[r.label][:count]) for r in recipes if r.label in samples]
    pictures = []
    for label, images in panels:
        grid = to_pil(make_grid(images, nrow=6))
        scale = max(1, 400 // grid.width)
        pictures.append((label, grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)))
    gap, top, pad = 20, 40, 10
    canvas = Image.new("RGB", (pad * 2 + sum(p.width for _, p in pictures) + gap * (len(pictures) - 1),
                               top + max(p.height for _, p in pictures) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 5), title, fill=(0, 0, 0))
    x = pad
    for label, picture in pictures:
        draw.text((x, 22), label, fill=(0, 0, 0))
        canvas.paste(picture, (x, top))
        x += picture.width + gap
    canvas.save(path, quality=88)  # JPEG: photographic panels stay well under 1 MB


def pinning(meta: dict) -> str:
    """How the runs shared the cores (train_all pins one run per core only while there are free cores)."""
    jobs, cores = meta["jobs"], meta["machine"]["cores"]
    if jobs == 1:
        return "one run at a time"
    if jobs <= cores:
        return f"pinned to its own core, {jobs} runs side by side"
    return f"{jobs} runs side by side on {cores} cores ({cores} pinned one per core, the rest unpinned)"


def report(runs: list[dict], recipes: list[Recipe], floor: dict, meta: dict, names: dict) -> str:
    res, minutes = meta["resolution"], meta["minutes"]
    lines = [f"# Sample quality at equal training time: {res} px, {minutes:g} minutes per run, "
             f"{meta['num_real']} paintings", "",
             f"Command: `{meta['command']}`", "",
             f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, no GPU; torch "
             f"{meta['machine']['torch']}, lightning {meta['machine']['lightning']}, Python {meta['machine']['python']}. "
             f"Each run: one torch thread, {pinning(meta)}; budget = "
             f"{minutes:g} minutes of {meta['clock']} time from the first training batch, data loading included "
             f"(bench/budget.py). Load average at "
             f"start {meta['load_start']:.2f}, end {meta['load_end']:.2f}.", "",
             f"Scoring: the sampling generator (EMA where the recipe has one) of every snapshot "
             f"(every {meta['snapshot_minutes']:g} min and the last), {meta['protocol']['num_samples']} images from "
             f"seeded latents (seed {EVAL_SEED}) against all {meta['num_real']} paintings (artgan Evaluator: "
             f"SWD x1e3 with {meta['protocol']['swd']['num_directions']}x{meta['protocol']['swd']['num_repeats']} "
             "directions, spectral distance above half Nyquist, colour KL, FID / KID / diversity in "
             "EfficientNet-Lite0 features, and KID / diversity in EfficientNet-Lite2 features (_lite2: a network no "
             "discriminator here looks through)). Marked *: the recipe's discriminator looks through EfficientNet-Lite0, "
             "so its FID/KID are measured in the space it trains against. Marked †: the recipe's generator "
             "trains against the power spectrum that spectral_hf compares (model.loss.spectrum_matching).",
             "", "Recipes:", ""]
    for r in recipes:
        lines.append(f"* `{r.label}` (`experiment={r.experiment}{' ' + ' '.join(r.overrides) if r.overrides else ''}`)"
                     f": {r.summary}")
    header = "| recipe | seed | images seen | G steps | " + " | ".join(SHOWN) + " |"
    lines += ["", "Final snapshot of every run:", "", header, "|" + "---|" * (4 + len(SHOWN))]
    for r in runs:
        f = final(r)
        star = "*" if names[r["recipe"]].trains_in_effnet_space else ""
        dagger = "†" if names[r["recipe"]].trains_on_spectrum else ""
        cells = [f"{f.get(k, math.nan):.4g}{star if k.endswith('_effnet') else dagger if k.startswith('spectral') else ''}"
                 for k in SHOWN]
        lines.append(f"| {r['recipe']} | {r['seed']} | {f['images_seen']:,} | {f['g_steps']:,} | " + " | ".join(cells)
                     + " |")
    lines += ["", "Mean ± std over seeds, and the real-vs-real floor (two halves of the paintings):", "",
              "| recipe | runs | " + " | ".join(SHOWN) + " |", "|" + "---|" * (2 + len(SHOWN))]
    for rec in recipes:
        mine = [final(r) for r in runs if r["recipe"] == rec.label]
        if mine:
            lines.append(f"| {rec.label} | {len(mine)} | "
                         + " | ".join(mean_std([m.get(k) for m in mine]) for k in SHOWN) + " |")
    lines.append("| paintings, half vs half | - | " + " | ".join(f"{floor.get(k, float('nan')):.4g}" for k in SHOWN)
                 + " |")
    seed_label = recipes[0].label
    if len(recipes) >= 2 and any(r["recipe"] == seed_label for r in runs):
        seed_final = recipe_means(runs, seed_label)
        # The yardstick is the first recipe: the seed recipe in the default comparison.
        metrics = [k for k in ("swd", "kid_effnet", "kid_effnet_lite2") if k in seed_final]
        lines += ["", f"Time to {seed_label}'s final quality (the first recipe's; minutes until the mean curve "
                  f"reaches its final mean; '-' not within {minutes:g} min):", "",
                  "| recipe | " + " | ".join(f"{k} <= {seed_final[k]:.4g}" for k in metrics) + " |",
                  "|---|" + "---:|" * len(metrics)]
        meta["time_to_quality"] = {}
        for rec in recipes:
            times = {k: time_to_reach(runs, rec.label, k, seed_final[k]) for k in metrics}
            meta["time_to_quality"][rec.label] = times
            lines.append(f"| {rec.label} | " + " | ".join("-" if t is None else f"{t:.1f}" for t in times.values())
                         + " |")
    lines += ["", f"![samples]({Path(meta['samples_picture']).name})", "",
              f"![quality against minutes]({Path(meta['curves_picture']).name})", ""]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=64, choices=sorted(RECIPES))
    parser.add_argument("--minutes", type=float, default=25.0, help="training minutes per run (default 25)")
    parser.add_argument("--snapshot-minutes", type=float, default=None,
                        help="snapshot (and score) every N training minutes (default: minutes / 5)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds (default 0,1)")
    parser.add_argument("--recipes", action="append", default=None, metavar="LABEL=EXPERIMENT;KEY=VALUE;...",
                        help="recipes to train (default: the seed, DCGAN best and new recipes at --resolution)")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one core each (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--clock", default="process", choices=("process", "wall"))
    parser.add_argument("--num-samples", type=int, default=1000, help="generated images per score (1000)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of paintings")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder (bench/results)")
    parser.add_argument("--name", default=None, help="output file stem (default quality<resolution>)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 minute per run, seed 0, 200 samples")
    parser.add_argument("--eval-only", action="store_true", help="score the existing runs, train nothing")
    args = parser.parse_args(argv)

    data_root = args.data.expanduser().resolve()
    if not data_root.is_dir():
        print(f"SKIPPED: the shared paintings are not at {data_root} (a user's clone has no ../shared); pass "
              "--data /path/to/abstract-art-gallery to run the quality benchmark on your copy.")
        return 0
    if args.quick:
        args.minutes, args.seeds, args.num_samples = 1.0, "0", min(args.num_samples, 200)
    args.name = args.name or (f"quality{args.resolution}" + ("_quick" if args.quick else ""))
    args.snapshot_minutes = args.snapshot_minutes or args.minutes / 5
    sys.path.insert(0, str(BENCH))
    recipes = [describe(parse_recipe(t), data_root) for t in (args.recipes or RECIPES[args.resolution])]
    names = {r.label: r for r in recipes}
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    runs_file = out / f"{args.name}_runs.json"
    meta = {"command": "python bench/quality.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": machine(), "resolution": args.resolution, "minutes": args.minutes,
            "snapshot_minutes": args.snapshot_minutes, "seeds": seeds, "jobs": args.jobs, "clock": args.clock,
            "load_start": load_average(), "recipes": [asdict(r) for r in recipes]}

    if args.eval_only:
        runs = json.loads(runs_file.read_text())["runs"]
    else:
        runs = train_all([(r, s) for s in seeds for r in recipes], out, data_root, args)
        runs_file.write_text(json.dumps({"runs": runs}, indent=1))
    order = {r.label: i for i, r in enumerate(recipes)}
    runs.sort(key=lambda r: (order.get(r["recipe"], 99), r["seed"]))

    print(f"[score] {sum(len(list(Path(r['run_dir'], 'snapshots').glob('t*.pt'))) for r in runs)} snapshots ...",
          flush=True)
    scorer = Scorer(data_root, args.resolution, args.num_samples)
    samples = score_runs(runs, scorer)
    floor = scorer.floor()
    meta.update(protocol=scorer.protocol(), num_real=int(scorer.real.shape[0]), floor=floor, load_end=load_average(),
                samples_picture=str(out / f"{args.name}_samples.jpg"), curves_picture=str(out / f"{args.name}_curves.png"))
    title = f"{args.resolution} px, {args.minutes:g} training minutes per run (one CPU core), {meta['num_real']} paintings"
    samples_picture(scorer.real, samples, recipes, Path(meta["samples_picture"]), title)
    plot_curves(runs, recipes, Path(meta["curves_picture"]), title)
    text = report(runs, recipes, floor, meta, names)
    (out / f"{args.name}.md").write_text(text)
    (out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1, default=str))
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
