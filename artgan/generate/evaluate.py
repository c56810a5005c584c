"""mode=evaluate: the run's metrics for a checkpoint, with the protocol and keys of the training metrics
callback (the ``evaluator`` config, artgan/metrics/evaluator.py): same settings, same numbers as the run's final
``metrics/*`` values. Writes ``metrics.json`` with the values and the protocol they were measured under."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from artgan.errors import ArtGANError

from .checkpoint import LoadedGenerator
from .images import labelled_rows
from .sample import generate_images, latents

log = logging.getLogger(__name__)


def run_evaluate(loaded: LoadedGenerator, datamodule, data_desc: str, out_dir: Path, evaluator_cfg: DictConfig,
                 truncation: float | list[float] | None = None) -> dict:
    """The metrics of the checkpoint; with a list of ``truncation`` values, once per psi (same latents' seed) plus a
    table and ``truncation.png``: how fidelity (precision, density) and variety (recall, coverage, diversity)
    trade against each other."""
    evaluator = instantiate(evaluator_cfg)
    start = time.perf_counter()
    if not evaluator.prepare(datamodule, loaded.device):
        raise ArtGANError("Nothing to evaluate: every metric under evaluator.* is disabled or cannot be built here. "
                          + " ".join(evaluator.skipped.values()))
    out_dir.mkdir(parents=True, exist_ok=True)
    psis = truncation if isinstance(truncation, list) else [truncation]
    sweep = []
    for psi in psis:
        if len(psis) > 1:
            log.info("Evaluating with truncation=%s", psi)
        values = evaluator.evaluate(loaded.generator, loaded.device, progress=evaluator.num_samples >= 256,
                                    truncation=psi)
        sweep.append({"truncation": psi, "metrics": {k: (None if not math.isfinite(v) else v)
                                                     for k, v in values.items()}})
    result = {
        "mode": "evaluate",
        "checkpoint": str(loaded.path),
        "used_ema": loaded.used_ema,
        "real_images": data_desc,
        "resolution": loaded.resolution,
        "protocol": evaluator.describe(),
        "truncation": truncation,
        "metrics": sweep[0]["metrics"],
        "skipped": dict(evaluator.skipped),
    }
    if isinstance(truncation, list):
        result["sweep"] = sweep
        result["plot"] = str(plot_truncation(sweep, out_dir / "truncation.png"))
        result["samples"] = str(truncation_samples(loaded, psis, evaluator.seed, out_dir / "truncation_samples.png"))
    result["seconds"] = round(time.perf_counter() - start, 2)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=1))
    return result


def truncation_samples(loaded: LoadedGenerator, psis: list[float], seed: int, path: Path, count: int = 8) -> Path:
    """The same ``count`` latents at every psi, one row each: what the sweep's numbers look like."""
    rows = []
    for psi in psis:
        with loaded.generator.truncation(psi):
            rows.append(generate_images(loaded, latents(loaded, count, seed, psi), batch_size=count))
    labelled_rows(rows, [f"psi {1.0 if psi is None else psi}" for psi in psis]).save(path)
    return path


def plot_truncation(sweep: list[dict], path: Path) -> Path:
    """Fidelity and variety against psi, per feature space found in the metrics."""
    from matplotlib.figure import Figure

    psi = [1.0 if row["truncation"] is None else row["truncation"] for row in sweep]
    names = sorted({k.split("_", 1)[1] for k in sweep[0]["metrics"] if k.startswith("precision_")
                    and not k.endswith("_heldout")})
    fig = Figure(figsize=(10, 3.6), dpi=100)
    ax_pr, ax_kid = fig.subplots(1, 2)

    def series(key: str) -> list[float]:
        return [float("nan") if row["metrics"].get(key) is None else row["metrics"][key] for row in sweep]

    for name in names:
        for metric, style in (("precision", "o-"), ("recall", "s-"), ("density", "^--"), ("coverage", "v--"),
                              ("diversity", "d:")):
            ax_pr.plot(psi, series(f"{metric}_{name}"), style, label=f"{metric} ({name})")
        ax_kid.plot(psi, series(f"kid_{name}"), "o-", label=f"KID ({name})")
        if any(f"kid_{name}_heldout" in row["metrics"] for row in sweep):
            ax_kid.plot(psi, series(f"kid_{name}_heldout"), "s--", label=f"KID, held-out ({name})")
    ax_pr.set_title("Fidelity (precision, density) vs variety (recall, coverage, diversity)", fontsize=9)
    ax_kid.set_title("KID against the paintings (lower is better)", fontsize=9)
    for ax in (ax_pr, ax_kid):
        ax.set_xlabel("truncation psi (1 = no truncation)")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    return path


def print_metrics(result: dict) -> None:
    if result.get("sweep"):
        _print_sweep(result)
        return
    rows = []
    for key, value in result["metrics"].items():
        if key.endswith("_std"):
            continue
        std = result["metrics"].get(f"{key}_std")
        shown = "n/a" if value is None else f"{value:.5g}"
        if std is not None and value is not None:
            shown += f" ± {std:.2g}"
        rows.append((key, shown))
    width = max([6] + [len(k) for k, _ in rows])
    print(f"\nEvaluate {result['checkpoint']}\n  {result['resolution']} px, {'EMA' if result['used_ema'] else 'plain'} "
          f"generator, {result['protocol']['num_samples']} generated vs {result['protocol']['num_real']} real images "
          f"({result['real_images']})")
    print(f"  {'metric':<{width}}  value")
    print(f"  {'-' * width}  {'-' * 18}")
    for key, shown in rows:
        print(f"  {key:<{width}}  {shown}")
    print()


def _print_sweep(result: dict) -> None:
    sweep = result["sweep"]
    keys = [k for k in sweep[0]["metrics"] if not k.endswith("_std")]
    width = max(6, *(len(k) for k in keys))
    print(f"\nEvaluate {result['checkpoint']} at truncation {', '.join(str(r['truncation']) for r in sweep)}\n  "
          f"{result['protocol']['num_samples']} generated vs {result['protocol']['num_real']} real images "
          f"({result['real_images']})")
    print(f"  {'psi':<{width}}" + "".join(f"  {str(r['truncation']):>10}" for r in sweep))
    print(f"  {'-' * width}" + "  ----------" * len(sweep))
    for key in keys:
        cells = ["n/a" if r["metrics"].get(key) is None else f"{r['metrics'][key]:.4g}" for r in sweep]
        print(f"  {key:<{width}}" + "".join(f"  {c:>10}" for c in cells))
    print()
