"""generate.py mode=export: ONNX and TorchScript files of both zoo generators, run where ArtGAN is not imported.

The checkpoints are written here with an EMA generator that differs from the live one, so the test also shows
that the exported network is the one generate.py samples from. The files are run in a subprocess that imports
only onnxruntime / torch (the script below), on the same latents as PyTorch, at batch sizes other than the one
the export traced.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir

from artgan.generate import load_generator, run
from artgan.models.dcgan import DCGANGenerator
from artgan.models.fastgan import FastGANGenerator

GENERATORS = {"dcgan": lambda: DCGANGenerator(64, 32, ngf=8), "fastgan": lambda: FastGANGenerator(64, 32, ngf=8)}
FORMATS = {"onnx": "generator.onnx", "torchscript": "generator.pt"}

# Runs every exported file on latents.npy at the batch sizes given; writes out_<name>_<format>_<batch>.npy.
# Imports nothing of ArtGAN and fails if anything did.
RUNNER = r"""
import json, sys
from pathlib import Path
import numpy as np
root = Path(sys.argv[1])
z = np.load(root / "latents.npy")
for info_path in sorted(root.glob("*/*.json")):
    info = json.loads(info_path.read_text())
    path = info_path.parent / info["file"]
    assert info["input"]["shape"][1:] == list(z.shape[1:]), info["input"]
    for n in (1, len(z)):
        if info["format"] == "onnx":
            import onnxruntime
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            out = session.run([info["output"]["name"]], {info["input"]["name"]: z[:n]})[0]
        else:
            import torch
            out = torch.jit.load(str(path))(torch.from_numpy(z[:n])).numpy()
        np.save(root / f"out_{info_path.parent.name}_{info['format']}_{n}.npy", out)
assert not [m for m in sys.modules if m == "artgan" or m.startswith("artgan.")], "artgan was imported"
print("ran", len(list(root.glob("out_*.npy"))), "outputs")
"""


def write_checkpoint(path, generator: torch.nn.Module) -> None:
    """A minimal ArtGAN checkpoint: the generator, an EMA copy with other weights, and the artgan section."""
    ema = type(generator)(**generator.spec()["kwargs"])
    ema.load_state_dict(generator.state_dict())
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    state.update({f"generator_ema.module.{k}": v for k, v in ema.state_dict().items()})
    torch.save({"state_dict": state, "artgan": {"version": 2, "generator": generator.spec(), "has_ema": True}}, path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    ckpts = {}
    for name, build in GENERATORS.items():
        ckpts[name] = root / f"{name}.ckpt"
        write_checkpoint(ckpts[name], build())
        for i, fmt in enumerate(FORMATS):
            # the second format goes beside the first: a folder with files needs overwrite=true
            with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
                cfg = compose("generate", overrides=["device=cpu", "mode=export", f"format={fmt}", f"overwrite={i > 0}",
                                                     f"ckpt_path={ckpts[name]}", f"output_dir={root / 'files' / name}"])
            run(cfg)
    return root, ckpts


def test_json_says_how_to_use_the_file(exported):
    root, ckpts = exported
    for name in GENERATORS:
        for fmt, filename in FORMATS.items():
            info = json.loads((root / "files" / name / f"{filename}.json").read_text())
            assert (root / "files" / name / info["file"]).is_file()
            assert info["format"] == fmt and info["used_ema"] is True and info["checkpoint"] == str(ckpts[name])
            assert info["input"]["shape"] == ["batch", 32] and "normal" in info["input"]["distribution"]
            assert info["output"]["shape"] == ["batch", 3, 64, 64] and info["output"]["range"] == [-1.0, 1.0]
            assert "127" in info["to_pixels"] or "255" in info["to_pixels"]
            assert info["dynamic_batch"] is True and info["max_abs_diff"] < 1e-4
            assert isinstance(info["opset"], int) if fmt == "onnx" else info["opset"] is None


def test_exported_generators_match_pytorch_in_a_process_without_artgan(exported):
    root, ckpts = exported
    files = root / "files"
    z = torch.randn(5, 32, generator=torch.Generator().manual_seed(7))
    np.save(files / "latents.npy", z.numpy())
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(files)], cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in GENERATORS:
        ema = load_generator(ckpts[name]).generator  # what generate.py samples from
        plain = load_generator(ckpts[name], use_ema=False).generator
        with torch.no_grad():
            expected, not_ema = ema(z).numpy(), plain(z).numpy()
        for fmt in FORMATS:
            for n in (1, 5):
                out = np.load(files / f"out_{name}_{fmt}_{n}.npy")
                assert out.shape == (n, 3, 64, 64)
                diff = np.abs(out - expected[:n]).max()
                assert diff < 1e-4, f"{name} {fmt} batch {n}: max abs difference {diff}"
            assert np.abs(out - not_ema).max() > 1e-3, "the export is not the EMA generator"


def test_unknown_format_is_a_config_error(exported, tmp_path):
    from artgan.errors import ConfigError

    root, ckpts = exported
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("generate", overrides=["device=cpu", "mode=export", "format=tflite",
                                             f"ckpt_path={ckpts['dcgan']}", f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="onnx, torchscript"):
        run(cfg)
