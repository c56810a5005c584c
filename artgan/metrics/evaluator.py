"""One evaluation protocol for training (the metrics callback), ``generate.py mode=evaluate`` and the benches.

An :class:`Evaluator` (built from conf/evaluator/, so the keys are the same everywhere) holds the metrics named
in :data:`METRICS`. ``prepare(datamodule, device)`` fixes the real side once: the first ``num_real`` training
images as the model sees them (``ArtDataModule.real_images``: cached, centre-cropped, unflipped), their
network features cached on disk per (dataset fingerprint, resolution, extractor, count). ``evaluate(generator,
device)`` draws ``num_samples`` latents from a seeded generator (the same every time, so the curves show the
model changing, not the noise), generates in eval mode and returns every metric as a float, named without the
``metrics/`` prefix that the callback adds.

When the datamodule holds images out of training (``data.holdout``), they are a second real set: every
feature-space number (FID, KID, precision, recall, density, coverage) is also computed against them
(``<name>_heldout``) from the same generated features, and ``kid_<extractor>_gap`` = held-out KID - training KID
(docs/metrics.md: a gap that grows during training is memorization).

Under DDP each rank generates its share (``num_samples / world_size``, the first ranks one more) from
``seed + rank`` and the torchmetrics states are synced in ``compute``: every rank gets the same numbers, equal
to one process fed all the samples. Call ``prepare`` and ``evaluate`` on every rank.

After an evaluation, :attr:`Evaluator.last` keeps what it measured on this rank (the generated features per
extractor, and small copies of the images when ``keep_images`` is set) so that a callback can show it without
generating or extracting anything again (artgan/callbacks/curator.py).

A new metric is a class with ``prepare_real(real_images, context)``, ``update(images)``, ``compute() -> dict``
and ``reset()`` plus an entry in :data:`METRICS`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor
from tqdm.auto import tqdm

from artgan.data.transforms import downscale
from artgan.errors import ArtGANError, ConfigError
from artgan.metrics.features import (
    EXTRACTORS,
    FeatureExtractorUnavailable,
    build_feature_extractor,
    feature_precision,
)
from artgan.metrics.fid import FeatureDistances, extract_features
from artgan.metrics.kl import ColorKL
from artgan.metrics.spectral import SpectralDistance
from artgan.metrics.swd import SlicedWasserstein

log = logging.getLogger(__name__)


@dataclass
class RealSet:
    """What the metrics need to know about the real images."""

    images: Callable[[], Tensor]  # uint8 (N, 3, R, R), loaded only when a metric needs the pixels
    count: int
    fingerprint: str
    resolution: int
    cache_dir: str
    batch_size: int


class PairedImageMetric:
    """A torchmetrics metric fed ``update(images, real=bool)`` (ColorKL and the like): real images once, then
    generated images per evaluation; its ``reset`` clears the generated side only."""

    def __init__(self, metric):
        self.metric = metric

    def prepare_real(self, real: RealSet, device: torch.device) -> None:
        self.metric.to(device)
        for chunk in real.images().split(real.batch_size * 4):
            self.metric.update(chunk.to(device), real=True)

    def update(self, images: Tensor) -> None:
        self.metric.update(images, real=False)

    def compute(self) -> dict[str, float]:
        return self.metric.compute()

    def reset(self) -> None:
        self.metric.reset()


@dataclass
class Evaluation:
    """What the last evaluation measured on this rank (its share of the generated images)."""

    index: int  # counts evaluations: a new value means new contents
    features: dict[str, Tensor] = field(default_factory=dict)  # extractor name -> generated features (N, D), CPU
    real_features: dict[str, Tensor] = field(default_factory=dict)  # extractor name -> training-set features
    heldout_features: dict[str, Tensor] = field(default_factory=dict)  # extractor name -> held-out features
    images: Tensor | None = None  # uint8 (N, 3, r, r), r <= keep_images; None unless keep_images


class FeatureMetric:
    """FID / KID / diversity / precision-recall in one extractor's feature space, real features cached on disk.

    With a held-out set, a second :class:`FeatureDistances` measures the same generated features against it:
    features are extracted once per image."""

    def __init__(self, metric: FeatureDistances, heldout: FeatureDistances | None = None):
        self.metric, self.heldout = metric, heldout
        self.features: list[Tensor] = []  # this rank's generated features of the current evaluation

    def prepare_real(self, real: RealSet, device: torch.device, heldout: RealSet | None = None) -> None:
        for metric, images in ((self.metric, real), (self.heldout, heldout)):
            if metric is None or images is None:
                continue
            start = time.perf_counter()
            metric.to(device)
            metric.prepare_real(images.images, cache_dir=images.cache_dir, fingerprint=images.fingerprint,
                                resolution=images.resolution, num_images=images.count)
            log.info("Metrics: %d %s %s features (%s) ready in %.1fs (cache dir %s)", metric.num_real,
                     "training" if metric is self.metric else "held-out", metric.name,
                     "bf16" if getattr(metric.extractor, "precision", "32") == "bf16" else "float32",
                     time.perf_counter() - start, images.cache_dir)

    @property
    def name(self) -> str:
        return self.metric.name

    def update(self, images: Tensor) -> None:
        feats = extract_features(self.metric.extractor, images, batch_size=self.metric.batch_size)
        self.features.append(feats)
        for metric in (self.metric, self.heldout):
            if metric is not None:
                metric.update(features=feats)

    def compute(self) -> dict[str, float]:
        out = self.metric.compute()
        if self.heldout is not None:
            held = self.heldout.compute()
            out.update({_heldout_name(k): v for k, v in held.items() if not k.startswith("diversity_")})
            out[f"kid_{self.name}_gap"] = held[f"kid_{self.name}"] - out[f"kid_{self.name}"]
        return out

    def reset(self) -> None:
        self.features = []
        for metric in (self.metric, self.heldout):
            if metric is not None:
                metric.reset()


def _heldout_name(name: str) -> str:
    """``kid_effnet`` -> ``kid_effnet_heldout``, ``kid_effnet_std`` -> ``kid_effnet_heldout_std``."""
    return f"{name[:-4]}_heldout_std" if name.endswith("_std") else f"{name}_heldout"


def _kl(settings: dict, evaluator: Evaluator, real: RealSet) -> list:
    return [PairedImageMetric(ColorKL(bins=settings["bins"], smoothing=settings["smoothing"]))]


def _swd(settings: dict, evaluator: Evaluator, real: RealSet) -> list:
    return [PairedImageMetric(SlicedWasserstein(**_without_enabled(settings)))]


def _spectral(settings: dict, evaluator: Evaluator, real: RealSet) -> list:
    return [PairedImageMetric(SpectralDistance(real.resolution, **_without_enabled(settings)))]


def _without_enabled(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k != "enabled"}


def _fid(settings: dict, evaluator: Evaluator, real: RealSet) -> list:
    def distances(extractor) -> FeatureDistances:
        return FeatureDistances(extractor, kid_subset_size=settings["kid_subset_size"],
                                kid_subsets=settings["kid_subsets"], batch_size=evaluator.batch_size,
                                seed=evaluator.seed, prdc_k=settings["prdc_k"])

    metrics = []
    for name in settings["extractors"]:
        # an unknown name reaches build_feature_extractor, which says what the choices are
        extractor_class = EXTRACTORS.get(str(name).lower())
        weights = settings[extractor_class.weights_setting] if extractor_class else None
        try:
            extractor = build_feature_extractor(name, weights,
                                                precision=feature_precision(settings["precision"], evaluator.device))
        except FeatureExtractorUnavailable as e:
            if evaluator.strict:
                raise
            log.warning("FID/KID with the '%s' extractor are skipped: %s", name, e)
            evaluator.skipped[str(name)] = str(e)
            continue
        metrics.append(FeatureMetric(distances(extractor),
                                     distances(extractor) if evaluator.heldout_count else None))
    return metrics


# name -> (default settings, builder). Every key of a metric's settings is listed in its defaults; "enabled"
# turns it off. The network-free metrics (kl, swd, spectral) come first: they judge what no discriminator sees.
METRICS: dict[str, tuple[dict, Callable[[dict, Evaluator, RealSet], list]]] = {
    "kl": ({"enabled": True, "bins": 16, "smoothing": 1e-3}, _kl),
    "swd": ({"enabled": True, "patches_per_image": 64, "num_directions": 128, "num_repeats": 4,
             "min_resolution": 16, "seed": 0}, _swd),
    "spectral": ({"enabled": True, "high_freq_start": 0.5}, _spectral),
    "fid": ({"enabled": True, "extractors": ["effnet_lite0"], "effnet_weights_path": None,
             "effnet_lite2_weights_path": None, "inception_weights_path": None, "kid_subset_size": 1000,
             "kid_subsets": 100, "prdc_k": 3, "precision": "auto"}, _fid),
}


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


class Evaluator:
    """Args:
        num_samples: generated images per evaluation, over all devices.
        num_real: real reference images (the first ones of the dataset); None for all.
        batch_size: generation and feature-extraction batch size.
        seed: seed of the evaluation latents (rank r draws from ``seed + r``).
        cache_dir: where real-image features are cached.
        strict: an extractor that cannot be built here is an error (True) or one warning and skipped (False).
        keep_images: keep the last evaluation's generated images (this rank's), downscaled to at most this many
            pixels a side, in :attr:`last` (0: keep only features). Set by callbacks that show them.
        **metrics: per metric in :data:`METRICS`, its settings (e.g. ``kl={"bins": 16}``, ``fid={...}``).
    """

    def __init__(self, num_samples: int = 512, num_real: int | None = 2000, batch_size: int = 64, seed: int = 0,
                 cache_dir: str = ".cache/artgan", strict: bool = False, keep_images: int = 0, **metrics: Any):
        if num_samples < 2 or batch_size < 1:
            raise ConfigError(f"evaluator.num_samples={num_samples} must be >= 2 and evaluator.batch_size="
                              f"{batch_size} >= 1.")
        if num_real is not None and num_real < 2:
            raise ConfigError(f"evaluator.num_real={num_real} must be >= 2 (or null for all images).")
        unknown = sorted(set(metrics) - set(METRICS))
        if unknown:
            raise ConfigError(f"Unknown metric(s) {unknown} under evaluator; known: {', '.join(METRICS)}.")
        self.num_samples, self.num_real = int(num_samples), None if num_real is None else int(num_real)
        self.batch_size, self.seed, self.cache_dir, self.strict = int(batch_size), int(seed), str(cache_dir), strict
        self.settings = {name: self._settings(name, metrics.get(name)) for name in METRICS}
        self.skipped: dict[str, str] = {}
        self.device = torch.device("cpu")  # set by prepare(); decides the feature precision under "auto"
        feature_precision(self.settings["fid"]["precision"])  # a bad value fails now, not at the first evaluation
        self._metrics: list | None = None
        self.real_count = self.heldout_count = 0  # set by prepare; heldout_count > 0: held-out numbers too
        self.keep_images = int(keep_images or 0)
        self.last: Evaluation | None = None

    @staticmethod
    def _settings(name: str, given: Any) -> dict:
        defaults = METRICS[name][0]
        given = dict(_plain(given) or {})
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise ConfigError(f"Unknown key(s) {unknown} in evaluator.{name}; known keys: {sorted(defaults)}.")
        merged = {**defaults, **given}
        if name == "fid" and isinstance(merged["extractors"], str):
            merged["extractors"] = [merged["extractors"]]
        return merged

    def describe(self) -> dict:
        """The protocol, for result files: results are comparable only under the same description."""
        heldout = {"num_heldout": self.heldout_count} if self.heldout_count else {}
        return {"num_samples": self.num_samples, "num_real": self.real_count, **heldout, "seed": self.seed,
                "batch_size": self.batch_size, **{k: v for k, v in self.settings.items() if v["enabled"]}}

    # ----------------------------------------------------------------------------------------- real side
    def prepare(self, datamodule, device: torch.device | str) -> bool:
        """Build the metrics and their real side once (later calls return at once). False: nothing to compute."""
        if self._metrics is not None:
            return bool(self._metrics)
        device = self.device = torch.device(device)
        size = int(datamodule.dataset_size)
        self.real_count = size if self.num_real is None else min(self.num_real, size)
        if self.real_count < 2:
            raise ArtGANError(f"The evaluation needs at least 2 real images; the data holds {size}.")
        # Local: the decoded images are dropped once the metrics hold their real side (features, histograms).
        real = self._real_set(datamodule.real_images, self.real_count, datamodule.fingerprint, datamodule)
        held = int(getattr(datamodule, "heldout_size", 0) or 0)
        heldout = None
        if held:
            self.heldout_count = held if self.num_real is None else min(self.num_real, held)
            heldout = self._real_set(datamodule.heldout_images, self.heldout_count, datamodule.heldout_fingerprint,
                                     datamodule)
        self._metrics = []
        for name, (_, build) in METRICS.items():
            if self.settings[name]["enabled"]:
                for metric in build(self.settings[name], self, real):
                    if isinstance(metric, FeatureMetric):
                        metric.prepare_real(real, device, heldout)
                    else:
                        metric.prepare_real(real, device)
                    self._metrics.append(metric)
        return bool(self._metrics)

    def _real_set(self, images: Callable[[int], Tensor], count: int, fingerprint: str, datamodule) -> RealSet:
        cached: list[Tensor] = []

        def load() -> Tensor:  # decoded once, shared by every metric that needs the pixels
            if not cached:
                cached.append(images(count))
            return cached[0]

        return RealSet(load, count, fingerprint, int(datamodule.resolution), self.cache_dir, self.batch_size)

    # ------------------------------------------------------------------------------------------ evaluate
    def local_count(self, rank: int, world_size: int) -> int:
        world = max(1, world_size)
        return max(1, self.num_samples // world + (1 if rank < self.num_samples % world else 0))

    @torch.no_grad()
    def evaluate(self, generator, device: torch.device | str, rank: int = 0, world_size: int = 1,
                 progress: bool = False, truncation: float | None = None) -> dict[str, float]:
        """Generate this rank's share with ``generator`` (eval mode is the caller's business), update, sync and
        compute. Returns ``{metric: value}``; NaN where a metric could not be computed. ``truncation``: latents
        drawn and applied with the truncation trick (``Generator.truncation``); None or 1: the usual latents."""
        count = self.local_count(rank, world_size)
        latents = torch.Generator().manual_seed(self.seed + rank)
        # Only passed when used: a generator of an older signature keeps working without truncation.
        truncated = truncation is not None and float(truncation) != 1.0
        extra = {"truncation": float(truncation)} if truncated else {}

        def batches():
            remaining = count
            while remaining > 0:
                n = min(self.batch_size, remaining)
                yield generator(generator.sample_latents(n, generator=latents, device=device, **extra))
                remaining -= n

        with generator.truncation(float(truncation)) if truncated else nullcontext():
            return self.evaluate_images(batches(), total=count, progress=progress)

    @torch.no_grad()
    def evaluate_images(self, batches: Iterable[Tensor], total: int | None = None,
                        progress: bool = False) -> dict[str, float]:
        """The metrics of a stream of image batches (float in [-1, 1] or uint8) against the prepared real set."""
        if not self._metrics:
            return {}
        for metric in self._metrics:
            metric.reset()  # the generated side only
        kept: list[Tensor] = []
        bar = tqdm(total=total, desc="Evaluating", unit="img", disable=not progress, dynamic_ncols=True)
        for images in batches:
            for metric in self._metrics:
                metric.update(images)
            if self.keep_images:
                kept.append(downscale(images, self.keep_images))
            bar.update(len(images))
        bar.close()
        results: dict[str, float] = {}
        for metric in self._metrics:
            results.update({k: float(v) for k, v in metric.compute().items()})
        features = [m for m in self._metrics if isinstance(m, FeatureMetric)]
        self.last = Evaluation(
            index=(self.last.index + 1) if self.last else 0,
            features={m.name: torch.cat(m.features) for m in features if m.features},
            real_features={m.name: m.metric.real_features.cpu() for m in features},
            heldout_features={m.name: m.heldout.real_features.cpu() for m in features if m.heldout is not None},
            images=torch.cat(kept) if kept else None)
        bad = sorted(k for k, v in results.items() if not math.isfinite(v))
        if bad:
            log.warning("Non-finite metric values %s; raise evaluator.num_samples.", bad)
        return results
