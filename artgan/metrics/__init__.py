"""Evaluation metrics: colour-histogram KL / JS, and FID / KID in two feature spaces.

See docs/metrics.md for the exact definitions and the protocol.
"""

from artgan.metrics.features import (
    FeatureExtractorUnavailable,
    build_feature_extractor,
)
from artgan.metrics.fid import (
    FeatureDistances,
    extract_features,
    load_or_compute_real_features,
    real_features_cache_path,
    try_build_feature_distances,
)
from artgan.metrics.kl import ColorKL, color_histogram, color_histogram_counts, histogram_divergences

__all__ = [
    "ColorKL",
    "FeatureDistances",
    "FeatureExtractorUnavailable",
    "build_feature_extractor",
    "color_histogram",
    "color_histogram_counts",
    "extract_features",
    "histogram_divergences",
    "load_or_compute_real_features",
    "real_features_cache_path",
    "try_build_feature_distances",
]
