"""Sample quality at equal budget: the seed recipe (experiment=seed_dcgan) against ours (experiment=best_64).

Both recipes train at 64 px on the 557-painting sample (../shared/data/abstract-art-gallery-sample) for the
same number of real images seen and under the same wall-clock cap, over several seeds, each as its own
``train.py`` subprocess (run dirs ``bench/results/runs/<recipe>_s<seed>``) with everything that is not
training switched off (no metrics, samples, plots, logger, progress bar or divergence guard; only the final
``last.ckpt``). Then every final checkpoint is evaluated with one fixed protocol:

* the EMA generator when the checkpoint has one (``artgan.generate.checkpoint.load_generator``), eval mode;
* ``--num-fake`` (1000) images from latents seeded with ``EVAL_SEED`` (the same latents for every run);
* the real side: all 557 paintings through the data pipeline of ``data=abstract_art`` at 64 px (unflipped,
  centre-cropped), their features cached like the training metrics';
* FID and KID (cubic-kernel MMD, subsets of min(1000, n_real, n_fake) images, 100 subsets, seeded) in the
  feature space of the offline ImageNet EfficientNet-Lite0 (``artgan.metrics``, 1280-d, 224 px);
* diversity ratio: mean pairwise cosine feature distance of generated images / that of the real images,
  on equal-size random subsets (``artgan.generate.compare.diversity``).

The images budget: ``--images N`` (default 70,400: the README's table, about 20-25 minutes per run on a 2-core
CPU), or ``auto``: a short calibration run of the slower recipe
(best_64: DiffAugment and R1 cost time) measures its images/s on this machine, and the budget is what it
trains in ``--budget-minutes`` (rounded down to whole batches of every recipe). Every run gets
``trainer.max_steps`` for that many images and the common cap ``trainer.max_time = --budget-minutes``; a run
that hits the cap first is flagged in the table. Wall time (training loop, from Lightning's Timer) and images
seen (from the checkpoint) are reported per run.

Writes ``bench/results/quality.md`` (table, means per recipe, the target check, the machine),
``bench/results/quality.json`` and ``bench/results/quality_samples.png`` (both recipes' sample grids side by
side, seed 0 runs, the first 64 evaluation images).

    .venv/bin/python bench/quality.py                       # the README's table: 70,400 images, 2 seeds (~50 min)
    .venv/bin/python bench/quality.py --quick               # smoke run: 1 minute per run, one seed
    .venv/bin/python bench/quality.py --images auto --budget-minutes 10 --seeds 0,1,2
    .venv/bin/python bench/quality.py --eval-only           # re-evaluate the existing runs

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
DEFAULT_DATA = REPO.parent / "shared" / "data" / "abstract-art-gallery-sample"
DEFAULT_OUT = REPO / "bench" / "results"
SEED_RECIPE, OUR_RECIPE = "seed_dcgan", "best_64"
EVAL_SEED = 2024          # latents of the evaluation images (the same for every run)
KID_SUBSET_SIZE = 1000    # shrinks to min(n_real, n_fake)
KID_SUBSETS = 100
TARGET_KID_RATIO = 0.5    # ours <= 0.5 x seed recipe
TARGET_DIVERSITY = 0.9    # ours >= 0.9 x real images'

# Everything that is not training is off, so the wall time is the training loop's.
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


# ------------------------------------------------------------------------------------------- machine
def machine() -> dict:
    import lightning as L
    import torch
    from machine import cpu_model, usable_cores  # bench/machine.py, beside this script

    cpu, cores = cpu_model(), usable_cores()
    return {"cpu": cpu, "cores": cores, "torch": torch.__version__, "lightning": L.__version__,
            "python": platform.python_version(), "gpu": "none (CPU run)"}


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


# -------------------------------------------------------------------------------------------- recipes
@dataclass
class Recipe:
    label: str                      # row name in the table
    experiment: str                 # experiment=<...>
    overrides: list[str] = field(default_factory=list)
    batch_size: int = 0             # filled from the composed config
    n_critic: int = 1
    ema_decay: float | None = None
    summary: str = ""


def parse_variant(text: str) -> Recipe:
    """``label=experiment;key=value;key=value`` (tuning runs); ``label`` alone means experiment=label."""
    head, *rest = [p.strip() for p in text.split(";") if p.strip()]
    label, _, experiment = head.partition("=")
    return Recipe(label=label, experiment=experiment or label, overrides=rest)


def compose(recipe: Recipe, data_root: Path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    overrides = [f"experiment={recipe.experiment}", "data=abstract_art", f"data.root={data_root}",
                 *recipe.overrides]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        return hydra_compose(config_name="train", overrides=overrides)


def describe(cfg) -> str:
    m = cfg.model
    parts = [f"{m.loss}", f"Adam lr G {m.lr_g:g} / D {m.lr_d:g} betas {tuple(m.betas_g)}",
             f"batch {cfg.data.batch_size}"]
    if m.augment_policy:
        parts.append(f"DiffAugment {m.augment_policy}" + (" + ADA" if m.ada else ""))
    if m.spectral_norm:
        parts.append("SN-D")
    parts.append(f"D norm {m.d_norm}")
    if m.ema_decay:
        parts.append(f"EMA G {m.ema_decay:g}")
    if m.r1_gamma:
        parts.append(f"R1 {m.r1_gamma:g}/{m.r1_every}")
    if m.label_smoothing:
        parts.append(f"label smoothing {m.label_smoothing:g}")
    if m.n_critic != 1:
        parts.append(f"n_critic {m.n_critic}")
    return ", ".join(parts)


def fill_recipe(recipe: Recipe, data_root: Path) -> Recipe:
    cfg = compose(recipe, data_root)
    recipe.batch_size = int(cfg.data.batch_size)
    recipe.n_critic = int(cfg.model.n_critic)
    recipe.ema_decay = cfg.model.ema_decay
    recipe.summary = describe(cfg)
    return recipe


# ------------------------------------------------------------------------------------------- training
def fmt_time(seconds: float) -> str:
    s = max(1, int(round(seconds)))
    return f"00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def train_run(recipe: Recipe, seed: int, run_dir: Path, data_root: Path, *, images: int | None,
              max_seconds: float, threads: int | None) -> subprocess.Popen:
    """Start one train.py subprocess (stdout/stderr to <run dir>/train.log); returns the process."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    steps = -1 if images is None else (images // recipe.batch_size) * (recipe.n_critic + 1)
    cmd = [sys.executable, str(REPO / "train.py"), f"experiment={recipe.experiment}", "data=abstract_art",
           f"data.root={data_root}", f"seed={seed}", f"hydra.run.dir={run_dir}", *BENCH_OVERRIDES,
           f"trainer.max_steps={steps}", f"trainer.max_time={fmt_time(max_seconds)}", *recipe.overrides]
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    (run_dir / "command.txt").write_text(" ".join(cmd) + "\n")
    log = open(run_dir / "train.log", "w")  # noqa: SIM115 - closed by the caller through proc.log
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.log = log  # type: ignore[attr-defined]
    proc.started = time.perf_counter()  # type: ignore[attr-defined]
    return proc


def wait_run(proc: subprocess.Popen, run_dir: Path) -> float:
    rc = proc.wait()
    proc.log.close()  # type: ignore[attr-defined]
    wall = time.perf_counter() - proc.started  # type: ignore[attr-defined]
    if rc != 0:
        tail = (run_dir / "train.log").read_text(errors="replace").splitlines()[-25:]
        raise SystemExit(f"training run {run_dir} failed (exit {rc}); last lines of its train.log:\n"
                         + "\n".join(tail))
    return wall


def read_run(run_dir: Path) -> dict:
    """Images seen, generator steps and training-loop seconds from the run's last.ckpt."""
    import torch

    ckpt_path = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt_path.is_file():
        raise SystemExit(f"{run_dir} has no checkpoints/last.ckpt; see {run_dir / 'train.log'}")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    meta = ckpt.get("artgan", {})
    timer = next((v for k, v in ckpt.get("callbacks", {}).items() if k.startswith("Timer")), {})
    train_s = float(timer.get("time_elapsed", {}).get("train", float("nan")))
    return {"ckpt": str(ckpt_path), "images_seen": int(meta.get("images_seen", 0)),
            "global_step": int(ckpt.get("global_step", 0)), "train_seconds": train_s,
            "has_ema": bool(meta.get("has_ema"))}


def calibrate(recipe: Recipe, data_root: Path, out: Path, budget_s: float, probe_s: float, threads: int | None,
              step: int) -> tuple[int, dict]:
    """Images the (slower) recipe trains in budget_s here, from a probe_s training run."""
    run_dir = out / "runs" / f"_calibration_{recipe.label}"
    print(f"[calibrate] {recipe.label}: {probe_s:.0f} s probe run to measure images/s ...", flush=True)
    proc = train_run(recipe, 0, run_dir, data_root, images=None, max_seconds=probe_s, threads=threads)
    wait_run(proc, run_dir)
    info = read_run(run_dir)
    rate = info["images_seen"] / info["train_seconds"]
    images = int(rate * budget_s * 0.95) // step * step
    print(f"[calibrate] {info['images_seen']} images in {info['train_seconds']:.1f} s = {rate:.1f} img/s -> "
          f"budget {images} images per run", flush=True)
    return max(images, step), {"probe_seconds": info["train_seconds"], "probe_images": info["images_seen"],
                               "images_per_second": rate}


# ------------------------------------------------------------------------------------------ evaluation
class Evaluator:
    def __init__(self, data_root: Path, num_fake: int, batch_size: int = 100):
        import torch
        from hydra.utils import instantiate

        from artgan.metrics.features import build_feature_extractor
        from artgan.metrics.fid import load_or_compute_real_features

        cfg = compose(Recipe(SEED_RECIPE, SEED_RECIPE), data_root)  # the data pipeline of data=abstract_art
        cache_dir = Path(cfg.paths.cache_dir) if os.path.isabs(cfg.paths.cache_dir) else REPO / cfg.paths.cache_dir
        datamodule = instantiate(cfg.data, cache_dir=str(cache_dir))
        self.resolution = int(cfg.model.resolution)
        self.real_uint8 = datamodule.real_images()
        self.num_real = int(self.real_uint8.shape[0])
        self.extractor = build_feature_extractor("effnet_lite0")
        self.batch_size = batch_size
        self.num_fake = num_fake
        torch.set_grad_enabled(False)
        self.real_features = load_or_compute_real_features(
            self.extractor, self.real_uint8, cache_dir=cache_dir, fingerprint=datamodule.fingerprint,
            resolution=self.resolution, num_images=None, batch_size=batch_size)

    def __call__(self, ckpt: str) -> dict:
        from artgan.generate.checkpoint import load_generator
        from artgan.generate.compare import diversity
        from artgan.generate.sample import generate_images, latents
        from artgan.metrics.fid import FeatureDistances, extract_features

        loaded = load_generator(ckpt, use_ema=True, device="cpu")
        if loaded.resolution != self.resolution:
            raise SystemExit(f"{ckpt}: generator makes {loaded.resolution} px images, the bench is at "
                             f"{self.resolution} px")
        fake = generate_images(loaded, latents(self.num_fake, loaded.latent_dim, EVAL_SEED), self.batch_size)
        feats = extract_features(self.extractor, fake, batch_size=self.batch_size)
        fd = FeatureDistances(self.extractor, self.real_features, kid_subset_size=KID_SUBSET_SIZE,
                              kid_subsets=KID_SUBSETS, seed=0, batch_size=self.batch_size)
        fd.update(features=feats)
        values = fd.compute()
        div = diversity(feats, self.real_features, seed=0)
        return {"fid": values["fid_effnet"], "kid": values["kid_effnet"], "kid_std": values["kid_effnet_std"],
                "diversity": div["diversity_ratio"], "used_ema": loaded.used_ema, "samples": fake[:64]}


# --------------------------------------------------------------------------------------------- outputs
def side_by_side(grids: list[tuple[str, torch.Tensor]], path: Path, title: str) -> None:  # noqa: F821
    from PIL import Image, ImageDraw

    from artgan.generate.images import make_grid, to_pil

    pictures = []
    for label, images in grids:
        grid = to_pil(make_grid(images, nrow=8))
        pictures.append((label, grid.resize((grid.width * 2, grid.height * 2), Image.Resampling.NEAREST)))
    gap, top, pad = 24, 44, 12
    width = pad * 2 + sum(p.width for _, p in pictures) + gap * (len(pictures) - 1)
    height = top + max(p.height for _, p in pictures) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 6), title, fill=(0, 0, 0))
    x = pad
    for label, picture in pictures:
        draw.text((x, 26), label, fill=(0, 0, 0))
        canvas.paste(picture, (x, top))
        x += picture.width + gap
    canvas.save(path)


def mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def write_report(rows: list[dict], recipes: list[Recipe], meta: dict, out: Path, picture: Path | None) -> str:
    lines = ["# Sample quality at equal budget: seed recipe vs ours (64 px, 557 paintings)", ""]
    lines += [f"Command: `{meta['command']}`", "",
              f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, no GPU; "
              f"torch {meta['machine']['torch']}, lightning {meta['machine']['lightning']}, "
              f"Python {meta['machine']['python']}. Load average at start {meta['load_start']:.2f}, "
              f"at end {meta['load_end']:.2f}.", ""]
    lines += [f"Budget per run: {meta['images']:,} real images seen (`trainer.max_steps` from each recipe's "
              f"batch size) under a common cap `trainer.max_time` = {meta['budget_minutes']:g} min"
              + (f"; the images budget is what {meta['calibration']['recipe']} trained in that time in a "
                 f"{meta['calibration']['probe_seconds']:.0f} s calibration run "
                 f"({meta['calibration']['images_per_second']:.1f} img/s, x 0.95)" if meta.get("calibration")
                 else "") + ".", ""]
    lines += [f"Protocol: final `last.ckpt` of each run, the EMA generator when present, eval mode; "
              f"{meta['num_fake']} images from seeded latents (seed {EVAL_SEED}) vs all {meta['num_real']} real "
              f"paintings at 64 px (data=abstract_art pipeline, centre crop); FID and KID (cubic kernel, "
              f"subsets of {min(KID_SUBSET_SIZE, meta['num_real'], meta['num_fake'])}, {KID_SUBSETS} subsets) "
              "on offline ImageNet EfficientNet-Lite0 features (1280-d, 224 px); diversity = mean pairwise "
              "cosine feature distance of generated / real images (equal-size subsets). Lower FID/KID is better.",
              ""]
    lines += ["Recipes:", ""]
    for r in recipes:
        lines.append(f"* `{r.label}` (`experiment={r.experiment}"
                     + (" " + " ".join(r.overrides) if r.overrides else "") + f"`): {r.summary}")
    lines += ["", "| recipe | seed | images seen | G steps | wall time (train loop) | FID | KID | diversity ratio |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        capped = " (time cap)" if row["time_capped"] else ""
        lines.append(f"| {row['recipe']} | {row['seed']} | {row['images_seen']:,}{capped} | {row['g_steps']:,} | "
                     f"{row['train_seconds'] / 60:.2f} min | {row['fid']:.2f} | {row['kid']:.4f} ± "
                     f"{row['kid_std']:.4f} | {row['diversity']:.3f} |")
    lines += ["", "Mean ± std over seeds:", "",
              "| recipe | runs | images seen | wall time | FID | KID | diversity ratio |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    means = {}
    for r in recipes:
        rr = [row for row in rows if row["recipe"] == r.label]
        if not rr:
            continue
        means[r.label] = {k: statistics.mean([row[k] for row in rr]) for k in ("fid", "kid", "diversity")}
        lines.append(f"| {r.label} | {len(rr)} | {statistics.mean([x['images_seen'] for x in rr]):,.0f} | "
                     f"{statistics.mean([x['train_seconds'] for x in rr]) / 60:.2f} min | "
                     f"{mean_std([x['fid'] for x in rr])} | {mean_std([x['kid'] for x in rr])} | "
                     f"{mean_std([x['diversity'] for x in rr])} |")
    if SEED_RECIPE in means and OUR_RECIPE in means:
        s, b = means[SEED_RECIPE], means[OUR_RECIPE]
        ratio = b["kid"] / s["kid"] if s["kid"] > 0 else float("nan")
        kid_ok, div_ok = ratio <= TARGET_KID_RATIO, b["diversity"] >= TARGET_DIVERSITY
        lines += ["", "Target check (means over seeds):", "",
                  f"* KID: {OUR_RECIPE} {b['kid']:.4f} vs {SEED_RECIPE} {s['kid']:.4f}: ratio {ratio:.3f} "
                  f"(target <= {TARGET_KID_RATIO}) -> **{'met' if kid_ok else 'NOT met'}**",
                  f"* diversity ratio of {OUR_RECIPE}: {b['diversity']:.3f} (target >= {TARGET_DIVERSITY}) -> "
                  f"**{'met' if div_ok else 'NOT met'}**",
                  f"* FID: {OUR_RECIPE} {b['fid']:.2f} vs {SEED_RECIPE} {s['fid']:.2f} "
                  f"(ratio {b['fid'] / s['fid']:.3f})"]
        meta["target"] = {"kid_ratio": ratio, "kid_met": kid_ok, "diversity": b["diversity"], "diversity_met": div_ok}
    if picture is not None:
        lines += ["", f"Samples (seed-0 runs, the first 64 evaluation images, EMA generator where the recipe has one): "
                  f"![{picture.name}]({picture.name})"]
    text = "\n".join(lines) + "\n"
    return text


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-minutes", type=float, default=36.0, help="wall-clock cap per run (default 36)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds (default 0,1)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of paintings")
    parser.add_argument("--images", default="70400",
                        help="real images seen per run (default 70400), or 'auto' (what best_64 trains in the budget "
                             "here)")
    parser.add_argument("--num-fake", type=int, default=1000, help="generated images per evaluation (1000)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 minute per run, seed 0, 200 images")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder (bench/results)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: all cores)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="runs trained at once, one seed's recipes side by side so they share the machine "
                             "equally (default 2)")
    parser.add_argument("--variant", action="append", default=None, metavar="LABEL=EXPERIMENT;KEY=VALUE;...",
                        help="train these recipes instead of seed_dcgan and best_64 (tuning)")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the existing runs, train nothing")
    parser.add_argument("--name", default="quality", help="output file stem (quality -> quality.md/.json/_samples.png)")
    args = parser.parse_args(argv)

    data_root = args.data.expanduser().resolve()
    if not data_root.is_dir():
        print(f"SKIPPED: the shared paintings are not at {data_root} (a user's clone has no ../shared); pass "
              "--data /path/to/abstract-art-gallery to run the quality benchmark on your copy.")
        return 0
    if args.quick:
        args.budget_minutes, args.seeds, args.num_fake = 1.0, "0", min(args.num_fake, 200)
        args.images = "auto"  # with --quick: 4 batches
        if args.name == "quality":
            args.name = "quality_quick"
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    recipes = [parse_variant(v) for v in args.variant] if args.variant else \
        [Recipe(SEED_RECIPE, SEED_RECIPE), Recipe(OUR_RECIPE, OUR_RECIPE)]
    recipes = [fill_recipe(r, data_root) for r in recipes]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    budget_s = args.budget_minutes * 60.0
    step = math.lcm(*[r.batch_size for r in recipes])
    load_start = load_average()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load_start > cores + 1:
        print(f"WARNING: load average {load_start:.1f} on {cores} cores: the machine is busy, wall times and the "
              "auto images budget will be smaller than on a quiet machine.", flush=True)
    meta: dict = {"command": " ".join(["python bench/quality.py", *(argv if argv is not None else sys.argv[1:])]),
                  "machine": machine(), "budget_minutes": args.budget_minutes, "seeds": seeds,
                  "num_fake": args.num_fake, "load_start": load_start,
                  "recipes": [asdict(r) for r in recipes]}
    threads = args.threads or (max(1, cores // args.jobs) if args.jobs > 1 else None)
    runs_file = out / f"{args.name}_runs.json"

    if args.eval_only:
        runs = json.loads(runs_file.read_text())
        meta.update(runs["meta"])
        results = runs["runs"]
    else:
        if str(args.images) == "auto":
            if args.quick:
                images, calibration = 4 * step, None
            else:
                slow = next((r for r in recipes if r.label == OUR_RECIPE), recipes[-1])
                images, calibration = calibrate(slow, data_root, out, budget_s, min(90.0, budget_s / 3), threads,
                                                step)
                calibration["recipe"] = slow.label
        else:
            images, calibration = int(args.images) // step * step, None
        meta["images"], meta["calibration"] = images, calibration
        jobs = [(r, s) for s in seeds for r in recipes]
        results, running = [], []
        t_all = time.perf_counter()
        for i, (recipe, seed) in enumerate(jobs):
            run_dir = out / "runs" / f"{recipe.label}_s{seed}"
            print(f"[train {i + 1}/{len(jobs)}] {recipe.label} seed {seed}: {images} images "
                  f"({images // recipe.batch_size} batches of {recipe.batch_size}), cap {args.budget_minutes:g} min "
                  f"-> {run_dir.relative_to(REPO) if run_dir.is_relative_to(REPO) else run_dir}", flush=True)
            running.append((recipe, seed, run_dir,
                            train_run(recipe, seed, run_dir, data_root, images=images, max_seconds=budget_s,
                                      threads=threads)))
            while len(running) >= args.jobs or (i == len(jobs) - 1 and running):
                recipe_done, seed_done, dir_done, proc = running.pop(0)
                wall = wait_run(proc, dir_done)
                info = read_run(dir_done)
                info.update(recipe=recipe_done.label, seed=seed_done, process_seconds=wall,
                            g_steps=info["global_step"] // (recipe_done.n_critic + 1),
                            time_capped=info["images_seen"] < images)
                print(f"    done {recipe_done.label} s{seed_done}: {info['images_seen']} images in "
                      f"{info['train_seconds'] / 60:.2f} min (process {wall / 60:.2f} min)"
                      + (" -- TIME CAP HIT" if info["time_capped"] else ""), flush=True)
                results.append(info)
        meta["train_total_minutes"] = (time.perf_counter() - t_all) / 60
        runs_file.write_text(json.dumps({"meta": {k: meta[k] for k in ("images", "calibration",
                                                                       "train_total_minutes")},
                                         "runs": results}, indent=1))

    print(f"[evaluate] {len(results)} checkpoints, {args.num_fake} generated vs all real images ...", flush=True)
    evaluator = Evaluator(data_root, args.num_fake)
    meta["num_real"] = evaluator.num_real
    rows, grids = [], {}
    for info in results:
        t0 = time.perf_counter()
        ev = evaluator(info["ckpt"])
        samples = ev.pop("samples")
        if info["seed"] == seeds[0] and info["recipe"] not in grids:
            grids[info["recipe"]] = samples
        row = {**info, **ev}
        rows.append(row)
        print(f"    {row['recipe']} s{row['seed']}: FID {row['fid']:.2f}  KID {row['kid']:.4f}  "
              f"diversity {row['diversity']:.3f}  ({'EMA' if row['used_ema'] else 'plain'} G, "
              f"{time.perf_counter() - t0:.0f} s)", flush=True)
    order = {r.label: i for i, r in enumerate(recipes)}
    rows.sort(key=lambda row: (order.get(row["recipe"], 99), row["seed"]))
    meta["load_end"] = load_average()

    picture = None
    if grids:
        picture = out / f"{args.name}_samples.png"
        side_by_side([(f"{label}  ({'EMA G' if any(r['used_ema'] for r in rows if r['recipe'] == label) else 'G'}, "
                       f"seed {seeds[0]}, {meta['images']:,} images seen)", grids[label])
                      for label in sorted(grids, key=lambda k: order.get(k, 99))],
                     picture, f"64 px, equal budget ({meta['budget_minutes']:g} min cap), 557 paintings")
    text = write_report(rows, recipes, meta, out, picture)
    (out / f"{args.name}.md").write_text(text)
    (out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    print("\n" + text)
    print(f"Wrote {out / (args.name + '.md')}" + (f" and {picture}" if picture else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
