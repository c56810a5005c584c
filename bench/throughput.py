"""Training throughput: our Lightning loop (GANModule + production config) against a plain PyTorch loop.

For each model config and option variant, both loops train the same models (built from the same Hydra
config) on the same in-memory uint8 batches, interleaved in one process: round r runs A then B, round r+1 B
then A (so slow drift of a shared machine hits both), after one untimed round of each loop; each round
runs ``warmup`` untimed steps then ``steps`` timed steps. Reported: median images/s of each loop, the ratio
of the medians (ours / plain), the median and range of the per-round ratios (each round's two loops ran
back to back, so a paired ratio cancels the drift of a shared machine that a ratio of medians keeps), and peak
memory (CUDA max_memory_allocated; on CPU the process's peak RSS in the round, VmHWM reset per round through
/proc/self/clear_refs, so it includes both loops' resident weights).

"ours" is a real ``lightning.Trainer(...).fit(GANModule, dataloader)`` with the trainer, callbacks (progress
bar, checkpointing) and logger (TensorBoard to a temp dir) of conf/train.yaml; "ours, bare" (base variant
only) drops the logger and callbacks (logger=none callbacks=none).

    python bench/throughput.py                   # CPU: dcgan64/128/256; GPU: + dcgan512 and AMP variants
    python bench/throughput.py --quick           # smoke run: dcgan64, 2 rounds of 2 steps
    python bench/throughput.py --models dcgan64 --variants base,channels_last --out bench/results/throughput.md
    python bench/throughput.py --models best_64 --variants fp32,bf16   # an experiment: its model and settings
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from plain_loop import PlainGANLoop  # noqa: E402

from artgan.precision import resolve_precision  # noqa: E402
from artgan.train import build_trainer, instantiate_group  # noqa: E402

# name -> (model/trainer overrides). Each variant applies to both loops. "base" is the config as shipped
# (trainer.precision=auto: bf16 on CPUs with AVX-512 BF16 / AMX and on GPUs with bf16, float32 elsewhere).
FP32, BF16 = "trainer.precision=32-true", "trainer.precision=bf16-mixed"
CL, COMPILE = "model.channels_last=true", "model.compile=true"
FUSED = ["model.optimizer_g.fused=true", "model.optimizer_d.fused=true"]
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "fp32": [FP32],
    "fp32+cl": [FP32, CL],
    "fp32+compile": [FP32, COMPILE],
    "fp32+fused_adam": [FP32, *FUSED],
    "bf16": [BF16],
    "bf16+cl": [BF16, CL],
    "bf16+compile": [BF16, COMPILE],
    "bf16+cl+compile": [BF16, CL, COMPILE],
    "fp16": ["trainer.precision=16-mixed"],
    "bf16+cl+fused": [BF16, CL, *FUSED],
    "bf16+cl+fused+compile": [BF16, CL, *FUSED, COMPILE],
}
CPU_VARIANTS = ["fp32", "bf16", "fp32+cl", "bf16+cl", "bf16+compile"]
GPU_VARIANTS = ["fp32", "fp32+cl", "fp32+fused_adam", "bf16", "fp16", "bf16+cl+fused", "bf16+cl+fused+compile"]


def selection(name: str) -> str:
    """A model config (dcgan64) or, where no model config has the name, an experiment (best_64)."""
    return f"model={name}" if (REPO / "conf" / "model" / f"{name}.yaml").is_file() else f"experiment={name}"


# Timed steps per round (CPU, GPU): a round should take a few seconds.
STEPS = {"dcgan64": (20, 50), "dcgan128": (6, 30), "dcgan256": (2, 20), "dcgan512": (1, 10),
         "fastgan64": (8, 50), "best_64": (6, 50), "pixel_64": (10, 50), "fastgan128": (3, 30), "fastgan256": (1, 20)}


# ------------------------------------------------------------------------------------------- machine
def machine() -> str:
    from machine import cpu_model, usable_cores  # bench/machine.py, beside this script

    cpu, cores = cpu_model(), usable_cores()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"CPU {cpu}, {cores} cores usable (torch threads {torch.get_num_threads()}); GPU {gpu}; "
            f"torch {torch.__version__}, lightning {L.__version__}, Python {platform.python_version()}")


# -------------------------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory over a block: CUDA max_memory_allocated, else the process's peak RSS (VmHWM, reset first)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            except OSError:
                pass
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated()
        else:
            self.bytes = 0
            try:
                for line in Path("/proc/self/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.bytes = int(line.split()[1]) * 1024
            except OSError:
                import resource  # no /proc: lifetime peak only

                self.bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return False


# -------------------------------------------------------------------------------------------- timing
class StepTimer(L.Callback):
    """Seconds from the end of batch ``warmup - 1`` to the end of batch ``warmup + steps - 1``: exactly ``steps``
    full loop iterations (data fetch, hooks, training_step, logging, progress bar)."""

    def __init__(self, warmup: int, steps: int):
        self.first, self.last = warmup - 1, warmup + steps - 1
        self.start = self.end = None

    def _now(self, pl_module) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.first:
            self.start = self._now(pl_module)
        elif batch_idx == self.last:
            self.end = self._now(pl_module)


@dataclass
class Result:
    seconds: list[float] = field(default_factory=list)
    peak: list[int] = field(default_factory=list)


class Case:
    """One model config + variant: a Lightning module and a plain loop built from the same composed config."""

    def __init__(self, model: str, variant: str, batch_size: int, device: torch.device, tmp: str):
        self.model, self.variant, self.batch_size, self.device, self.tmp = model, variant, batch_size, device, tmp
        self.overrides = [selection(model), f"data.batch_size={batch_size}", f"paths.output_dir={tmp}",
                          f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}", *VARIANTS[variant]]
        self.cfg = self._compose()
        self.cfg_bare = self._compose("logger=none", "callbacks=none")
        self.module = instantiate(self.cfg.model)
        m = self.cfg.model
        g, d = instantiate(m.generator), instantiate(m.discriminator)
        g.load_state_dict(self.module.generator.state_dict())
        d.load_state_dict(self.module.discriminator.state_dict())
        cl = bool(self.cfg.model.channels_last)
        if cl:
            g, d = g.to(memory_format=torch.channels_last), d.to(memory_format=torch.channels_last)
        g, d = g.to(device), d.to(device)
        if self.cfg.model.compile:
            g.compile()
            d.compile()
        self.plain = PlainGANLoop(g, d, instantiate(m.optimizer_g)(g.parameters()),
                                  instantiate(m.optimizer_d)(d.trainable_parameters()), device=device,
                                  n_critic=int(self.cfg.model.n_critic), channels_last=cl,
                                  precision=resolve_precision(self.cfg.trainer.precision, device.type)[0],
                                  hinge="Hinge" in str(m.loss._target_),
                                  augment=instantiate(m.augment) if m.get("augment") else None,
                                  spectrum_matching=float(m.loss.get("spectrum_matching") or 0.0),
                                  ema_decay=m.get("ema_decay"))

    def _compose(self, *extra: str):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return compose("train", overrides=[*self.overrides, *extra])

    def loader(self, n_batches: int) -> DataLoader:
        res = int(self.cfg.model.resolution)
        images = torch.randint(0, 256, (n_batches * self.batch_size, 3, res, res), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(0))
        return DataLoader(images, batch_size=self.batch_size, shuffle=False, drop_last=True,
                          pin_memory=self.device.type == "cuda")

    def run_lightning(self, warmup: int, steps: int, bare: bool = False) -> tuple[float, int]:
        cfg = self.cfg_bare if bare else self.cfg
        timer = StepTimer(warmup, steps)
        callbacks = [*instantiate_group(cfg.get("callbacks")), timer]
        loggers = instantiate_group(cfg.get("logger"))
        trainer = build_trainer(cfg.trainer, callbacks, loggers, max_epochs=1, max_steps=-1,
                                enable_model_summary=False, default_root_dir=self.tmp)
        loader = self.loader(warmup + steps)
        with PeakMemory(self.device) as mem:
            trainer.fit(self.module, loader)
        assert timer.start is not None and timer.end is not None, "the timer did not see every batch"
        return timer.end - timer.start, mem.bytes

    def run_plain(self, warmup: int, steps: int) -> tuple[float, int]:
        loader = self.loader(warmup + steps)
        with PeakMemory(self.device) as mem:
            seconds = self.plain.run(loader, warmup, steps)
        return seconds, mem.bytes


def measure(case: Case, rounds: int, warmup: int, steps: int, bare: bool, log) -> dict[str, Result]:
    kinds = ["ours", "plain"] + (["ours, bare"] if bare else [])
    results = {k: Result() for k in kinds}
    # One untimed round first: the process's first big allocations (heap growth, page faults, cuDNN/compile
    # caches) would otherwise land on whichever loop runs first.
    for kind in kinds:
        case.run_plain(warmup, 1) if kind == "plain" else case.run_lightning(warmup, 1, bare=kind != "ours")
    for r in range(rounds):
        order = kinds if r % 2 == 0 else kinds[::-1]
        for kind in order:
            if kind == "plain":
                s, mem = case.run_plain(warmup, steps)
            else:
                s, mem = case.run_lightning(warmup, steps, bare=kind != "ours")
            results[kind].seconds.append(s)
            results[kind].peak.append(mem)
            log(f"  round {r + 1}/{rounds} {kind:10s} {steps * case.batch_size / s:8.1f} img/s")
    return results


def fmt_mem(b: int) -> str:
    return f"{b / 2**20:,.0f} MiB"


def row(case: Case, results: dict[str, Result], steps: int) -> str:
    n = steps * case.batch_size
    ips = {k: [n / s for s in r.seconds] for k, r in results.items()}
    med = {k: statistics.median(v) for k, v in ips.items()}
    per_round = [a / b for a, b in zip(ips["ours"], ips["plain"], strict=True)]
    bare = (f"{med['ours, bare']:.1f} ({med['ours, bare'] / med['plain']:.3f})" if "ours, bare" in med else "")
    return (f"| {case.model} | {case.batch_size} | {case.variant} | {med['ours']:.1f} | {med['plain']:.1f} | "
            f"**{med['ours'] / med['plain']:.3f}** | {statistics.median(per_round):.3f} | "
            f"{min(per_round):.3f}-{max(per_round):.3f} | {bare} | "
            f"{fmt_mem(max(results['ours'].peak))} | {fmt_mem(max(results['plain'].peak))} |")


HEADER = ("| model | batch | variant | ours img/s | plain img/s | ratio ours/plain | median per-round ratio | "
          "per-round ratios | ours bare img/s (ratio) | ours peak mem | plain peak mem |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=None, help="comma-separated model configs (default: dcgan64,128,256"
                                                  " [+512 on GPU])")
    p.add_argument("--variants", default=None, help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per round (>= 1; compile gets 2 more)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default: per model)")
    p.add_argument("--no-bare", action="store_true", help="skip 'ours, bare' (no logger, no callbacks)")
    p.add_argument("--quick", action="store_true", help="smoke run: dcgan64 base, 2 rounds of 2 steps")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = p.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    models = (args.models.split(",") if args.models else
              ["dcgan64", "dcgan128", "dcgan256"] + (["dcgan512"] if cuda else []))
    variants = args.variants.split(",") if args.variants else (GPU_VARIANTS if cuda else CPU_VARIANTS)
    if args.quick:
        models, variants, args.rounds, args.steps, args.warmup = models[:1] if args.models else ["dcgan64"], \
            variants if args.variants else ["fp32"], 2, args.steps or 2, 1
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    if not cuda and any("bf16" in v or "fp16" in v for v in variants):
        print("note: AMP variants on CPU measure CPU autocast, not the GPU path", file=sys.stderr)
    warmup = max(1, args.warmup)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*Consider setting `persistent_workers.*")
    header = machine()
    log(header)
    rows = []
    with tempfile.TemporaryDirectory(prefix="artgan-bench-") as tmp:
        for model in models:
            steps = args.steps or STEPS.get(model, (2, 20))[1 if cuda else 0]
            for variant in variants:
                log(f"{model} batch {args.batch_size} {variant}: {args.rounds} rounds x {steps} steps")
                t0 = time.perf_counter()
                case = Case(model, variant, args.batch_size, device, tmp)
                w = warmup + (2 if "compile" in variant else 0)
                results = measure(case, args.rounds, w, steps, bare=variant == variants[0] and not args.no_bare,
                                  log=log)
                rows.append(row(case, results, steps))
                log(rows[-1] + f"  ({time.perf_counter() - t0:.0f} s)")
                del case
                if cuda:
                    torch.cuda.empty_cache()
    table = (f"Machine: {header}\n\nrounds={args.rounds}, warmup={warmup} untimed steps per round (+2 with compile),"
             f" timed steps per round: " + ", ".join(
                 f"{m} {args.steps or STEPS.get(m, (2, 20))[1 if cuda else 0]}" for m in models)
             + "\n\n" + HEADER + "\n" + "\n".join(rows) + "\n")
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
