"""generate.py's modes: sample, compare, interpolate, evaluate, project, export. See docs/generate.md."""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext

import torch
from omegaconf import DictConfig, ListConfig

from artgan.errors import ConfigError
from artgan.models.base import check_truncation
from artgan.outputs import check_output_dir
from artgan.paths import absolute_path

from .checkpoint import LoadedGenerator, load_generator, resolve_device

log = logging.getLogger(__name__)

MODES = ("sample", "compare", "interpolate", "evaluate", "project", "export")

__all__ = ["MODES", "LoadedGenerator", "load_generator", "resolve_device", "run"]


def run(cfg: DictConfig) -> dict:
    """Run the mode ``cfg.mode`` and return its results (also written under ``cfg.output_dir``)."""
    with torch.no_grad():  # scoped: callers in the same process (tests, notebooks) keep autograd
        return _run(cfg)


def _run(cfg: DictConfig) -> dict:
    mode = str(cfg.get("mode", "sample")).lower()
    if mode not in MODES:
        raise ConfigError(f"mode={cfg.get('mode')!r} is not a generate.py mode; choose one of: "
                          f"{', '.join(MODES)} (sample is the default).")
    if not cfg.get("output_dir"):
        raise ConfigError("output_dir is not set; pass output_dir=DIR.")
    truncation = truncation_setting(cfg.get("truncation"), many=mode == "evaluate")
    device = resolve_device(cfg.get("device", "auto"))
    ckpt = cfg.get("ckpt_path")
    loaded = load_generator(absolute_path(ckpt) if ckpt else ckpt, use_ema=bool(cfg.get("use_ema", True)),
                            device=device)
    # After the checkpoint is known to be good, before any file is written: a file, or a folder with files in it
    # (unless overwrite=true), is refused.
    out_dir = check_output_dir(absolute_path(cfg.output_dir), bool(cfg.get("overwrite", False)))
    log.info("Loaded %s: %s %d px, %s generator, on %s", loaded.path, loaded.spec["class"].rsplit(".", 1)[-1], loaded.resolution,
             "EMA" if loaded.used_ema else "plain", device)

    # One psi for the images of sample, compare and interpolate; evaluate applies each psi of its sweep itself.
    with loaded.generator.truncation(truncation) if mode in ("sample", "compare", "interpolate") else nullcontext():
        result = _run_mode(mode, cfg, loaded, out_dir, truncation, device)
    if mode in ("sample", "interpolate"):  # compare.json and metrics.json are written by their modes
        (out_dir / f"{mode}.json").write_text(json.dumps(result, indent=1))
    return result


def _run_mode(mode: str, cfg: DictConfig, loaded: LoadedGenerator, out_dir, truncation, device) -> dict:
    seed, batch_size = int(cfg.seed), int(cfg.batch_size)
    if mode == "sample":
        from .sample import run_sample

        result = run_sample(loaded, out_dir, int(cfg.num_images), seed, batch_size, progress=cfg.get("progress", "auto"),
                            truncation=truncation)
        print(f"Wrote {result['num_images']} images ({loaded.resolution} px) and grid.png to {out_dir} "
              f"({result['images_per_second']:.1f} images/s on {device}).")
    elif mode == "interpolate":
        from .interpolate import run_interpolate

        c = cfg.interpolate
        result = run_interpolate(loaded, out_dir, int(c.num_points), int(c.steps), seed, batch_size,
                                 closed=bool(c.closed), frame_ms=int(c.frame_ms), truncation=truncation,
                                 latent_files=c.get("latents"))
        print(f"Wrote {result['grid']} and {result['gif']} ({result['frames']} frames).")
    elif mode == "project":
        from .data import preparation_datamodule
        from .project import print_project, run_project

        datamodule = preparation_datamodule(cfg.get("data"), loaded.run_dir, loaded.resolution)
        result = run_project(loaded, datamodule, out_dir, cfg.get("image"), cfg.project, seed, batch_size)
        print_project(result)
    elif mode == "export":
        from .export import run_export

        result = run_export(loaded, out_dir, cfg.get("format", "onnx"), cfg.get("opset"))
        diff = result["max_abs_diff"]
        print(f"Wrote {result['path']} and {result['file']}.json ({result['format']}, dynamic batch; max |exported - "
              f"PyTorch| = {'not checked' if diff is None else f'{diff:.1e}'}).")
    else:
        from .data import build_datamodule

        cache_dir = str(absolute_path(cfg.paths.cache_dir))
        datamodule, desc = build_datamodule(cfg.get("data"), loaded.run_dir, loaded.resolution, cache_dir)
        if mode == "compare":
            from .compare import print_compare, run_compare

            result = run_compare(loaded, datamodule, desc, out_dir, cfg.compare, seed, batch_size, cache_dir,
                                 device, truncation=truncation)
            print_compare(result)
        else:
            from .evaluate import print_metrics, run_evaluate

            result = run_evaluate(loaded, datamodule, desc, out_dir, cfg.evaluator, truncation)
            print_metrics(result)
            print(f"Wrote {out_dir / 'metrics.json'}" + (f", {result['plot']} and {result['samples']}"
                                                         if result.get("plot") else ""))
    return result


def truncation_setting(value, many: bool = False):
    """``truncation=`` as None, a psi in (0, 1] or (``many``: mode=evaluate) a list of them; else a ConfigError."""
    if value is None:
        return None
    if isinstance(value, (ListConfig, list, tuple)):
        if not many:
            raise ConfigError(f"truncation={list(value)}: a list of values is a sweep, which only mode=evaluate "
                              "does; give one value (e.g. truncation=0.7).")
        if not value:
            raise ConfigError("truncation=[] is empty: give values such as truncation=[1.0,0.8,0.6].")
        return [truncation_setting(v) for v in value]
    try:
        return check_truncation(value)
    except ValueError as e:
        raise ConfigError(str(e)) from None
