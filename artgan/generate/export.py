"""mode=export: the generator as a file other tools run without ArtGAN (ONNX or TorchScript) + a JSON of its use.

The exported network is the generator ``generate.py`` samples from (the EMA copy when the checkpoint has one), in
eval mode, on the CPU, with its parametrizations folded into plain weights (FastGAN's spectral norm: in eval mode
the normalised weight is a constant, so the file holds that constant and no power iteration). Input ``z``
``(batch, *latent_shape)`` float32, output ``image`` ``(batch, 3, R, R)`` float32 in [-1, 1]; the batch size is
dynamic. ``<file>.json`` beside it says how to draw latents and turn outputs into pixels, and where the weights
came from. The export is checked before it is reported: the file is run on seeded latents and compared with
PyTorch (``max_abs_diff`` in the JSON).

* ``format=onnx``: ``generator.onnx`` through ``torch.onnx.export(dynamo=True)`` (needs ``pip install -e
  '.[export]'``: onnx, onnxscript, and onnxruntime for the check); ``opset`` null is torch's recommended opset.
* ``format=torchscript``: ``generator.pt`` through ``torch.jit.trace``; ``torch.jit.load("generator.pt")`` runs it
  with PyTorch alone (C++ too, via libtorch). TorchScript is deprecated in favour of torch.export, but it is what
  most tools still load; its deprecation warnings are not repeated here.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from artgan.errors import ArtGANError, ConfigError
from artgan.models.base import Generator

from .checkpoint import LoadedGenerator

log = logging.getLogger(__name__)

FORMATS = {"onnx": "generator.onnx", "torchscript": "generator.pt"}
CHECK_SEED, CHECK_BATCH = 0, 3
TO_PIXELS = ("uint8 = round(clip((image + 1) / 2, 0, 1) * 255); the output is NCHW RGB, most image libraries want "
             "NHWC: transpose (0, 2, 3, 1)")


def plain_copy(generator: nn.Module) -> nn.Module:
    """A CPU copy in eval mode with every parametrization replaced by the weight it computes (exporters trace
    the weights as constants; a spectral norm's power iteration does not run in eval mode anyway)."""
    net = copy.deepcopy(generator).cpu().eval().requires_grad_(False)
    for module in list(net.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return net


def latent_description(generator: Generator) -> dict:
    """Shape and distribution of the latents, as ``sample_latents`` draws them."""
    shape = list(generator.sample_latents(1).shape[1:])
    standard = type(generator).sample_latents is Generator.sample_latents
    return {"name": "z", "shape": ["batch", *shape], "dtype": "float32",
            "distribution": "standard normal N(0, 1), independent entries" if standard else
            f"as {type(generator).__qualname__}.sample_latents draws them (not the default normal)"}


def _export_onnx(net: nn.Module, z: torch.Tensor, path: Path, opset: int | None) -> int:
    try:
        import onnx
        import onnxscript  # noqa: F401 - torch.onnx.export(dynamo=True) needs it
    except ImportError as e:
        raise ArtGANError(f"format=onnx needs the onnx and onnxscript packages ({e.name} is missing). Install them "
                          "with pip install -e '.[export]', or use format=torchscript (PyTorch alone).") from None
    for name in ("onnxscript", "onnx_ir"):  # one INFO line per optimizer pass otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(net, (z,), str(path), input_names=["z"], output_names=["image"], opset_version=opset,
                      dynamo=True, dynamic_shapes={"z": {0: batch}}, external_data=False, verbose=False)
    return int(next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")))


def _export_torchscript(net: nn.Module, z: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated.*")
        torch.jit.trace(net, (z,), check_trace=False).save(str(path))


def _run_exported(fmt: str, path: Path, z: torch.Tensor) -> torch.Tensor | None:
    """The exported file's output for ``z`` (None when onnxruntime is missing: the check is skipped)."""
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            return None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(["image"], {"z": z.numpy()})[0])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated.*")
        return torch.jit.load(str(path))(z)


def run_export(loaded: LoadedGenerator, out_dir: Path, fmt: str, opset: int | None = None) -> dict:
    """Write ``<out_dir>/generator.<onnx|pt>`` and its JSON; checked against the loaded generator itself (not the
    folded copy), so the number in the JSON covers the folding too."""
    fmt = str(fmt).lower()
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not an export format; choose one of: {', '.join(FORMATS)}.")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FORMATS[fmt]
    net = plain_copy(loaded.generator)
    z = net.sample_latents(CHECK_BATCH, generator=torch.Generator().manual_seed(CHECK_SEED))
    opset_used = _export_onnx(net, z, path, opset) if fmt == "onnx" else None
    if fmt == "torchscript":
        _export_torchscript(net, z, path)
    # A batch size other than the traced one proves the dynamic batch axis.
    check_z = torch.cat([z, net.sample_latents(2, generator=torch.Generator().manual_seed(CHECK_SEED + 1))])
    with torch.no_grad():
        got, expected = _run_exported(fmt, path, check_z), loaded.generator(check_z.to(loaded.device)).cpu()
    max_diff = None if got is None else float((got - expected).abs().max())
    if max_diff is not None and not max_diff < 1e-4:
        raise ArtGANError(f"The exported {path.name} differs from PyTorch by up to {max_diff:.3g} on the same "
                          "latents (tolerance 1e-4); the file was kept for inspection but should not be used.")
    info = {
        "format": fmt, "file": path.name, "checkpoint": str(loaded.path.resolve()), "used_ema": loaded.used_ema,
        "generator": loaded.spec, "resolution": loaded.resolution, "latent_dim": loaded.latent_dim,
        "input": latent_description(net),
        "output": {"name": "image", "shape": ["batch", int(expected.shape[1]), loaded.resolution, loaded.resolution],
                   "dtype": "float32", "layout": "NCHW, RGB", "range": [-1.0, 1.0]},
        "to_pixels": TO_PIXELS, "opset": opset_used, "dynamic_batch": True, "torch": torch.__version__,
        "max_abs_diff": max_diff, "checked_batch_size": int(check_z.shape[0]),
    }
    (out_dir / f"{path.name}.json").write_text(json.dumps(info, indent=1))
    log.info("Exported %s (%s) to %s; max |exported - PyTorch| = %s", loaded.path, fmt, path,
             "not checked (onnxruntime missing)" if max_diff is None else f"{max_diff:.2e}")
    return {"mode": "export", **info, "path": str(path)}
