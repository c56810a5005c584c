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

log = logging.getLogger(__name__)


def run_evaluate(loaded: LoadedGenerator, datamodule, data_desc: str, out_dir: Path, evaluator_cfg: DictConfig
                 ) -> dict:
    evaluator = instantiate(evaluator_cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if not evaluator.prepare(datamodule, loaded.device):
        raise ArtGANError("Nothing to evaluate: every metric under evaluator.* is disabled or cannot be built here. "
                          + " ".join(evaluator.skipped.values()))
    values = evaluator.evaluate(loaded.generator, loaded.device, progress=evaluator.num_samples >= 256)
    result = {
        "mode": "evaluate",
        "checkpoint": str(loaded.path),
        "used_ema": loaded.used_ema,
        "real_images": data_desc,
        "resolution": loaded.resolution,
        "protocol": evaluator.describe(),
        "metrics": {k: (None if not math.isfinite(v) else v) for k, v in values.items()},
        "skipped": dict(evaluator.skipped),
        "seconds": round(time.perf_counter() - start, 2),
    }
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=1))
    return result


def print_metrics(result: dict) -> None:
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
