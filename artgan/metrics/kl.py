"""Colour-histogram divergences between real and generated images.

Definition (also in docs/metrics.md):

* Every pixel is quantised exactly like the uint8 image it came from: ``v = round((x + 1) * 127.5)``
  clamped to ``[0, 255]`` per channel, then ``bin = floor(v * bins / 256)``; the joint RGB bin is
  ``(r * bins + g) * bins + b``, giving a 3-D histogram with ``K = bins**3`` cells.
* The counts ``c`` of a set of images are normalised, ``h = c / sum(c)``, and smoothed by mixing in a
  fraction ``smoothing`` (``lambda``) of the uniform distribution: ``p = (1 - lambda) * h + lambda / K``.
  This is additive (epsilon / Laplace) smoothing with ``epsilon = lambda / (K * (1 - lambda))`` per cell
  followed by renormalisation; it makes every cell positive so both KL directions are finite
  (at most ``ln(K / lambda)``), independent of the number of pixels.
* With ``P`` the smoothed histogram of the real images and ``Q`` that of the generated ones, in nats:
  ``kl_real_fake = KL(P || Q) = sum_i P_i ln(P_i / Q_i)``, ``kl_fake_real = KL(Q || P)`` and
  ``js = JS(P, Q) = KL(P || M) / 2 + KL(Q || M) / 2`` with ``M = (P + Q) / 2`` (``0 <= js <= ln 2``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["ColorKL", "color_histogram", "color_histogram_counts", "histogram_divergences", "smooth_histogram"]


def _check_images(images: Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")


def color_histogram_counts(images: Tensor, bins: int = 16) -> Tensor:
    """Joint RGB histogram counts ``(bins**3,)`` int64 of images in ``[-1, 1]`` (or uint8), on their device."""
    _check_images(images)
    if bins < 1 or bins > 256:
        raise ValueError(f"bins must be in [1, 256], got {bins}")
    if images.dtype == torch.uint8:
        v = images.long()
    else:
        v = ((images.detach().float() + 1.0) * 127.5).round().clamp_(0, 255).long()
    q = (v * bins) // 256  # (B, 3, H, W) in [0, bins)
    idx = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
    return torch.bincount(idx.reshape(-1), minlength=bins**3)


def smooth_histogram(counts: Tensor, smoothing: float = 1e-3) -> Tensor:
    """Normalise counts and mix in a fraction ``smoothing`` of the uniform distribution (float64)."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    c = counts.double()
    total = c.sum()
    k = c.numel()
    if total <= 0:
        return torch.full_like(c, 1.0 / k)
    return (1.0 - smoothing) * (c / total) + smoothing / k


def color_histogram(images: Tensor, bins: int = 16, smoothing: float = 1e-3) -> Tensor:
    """Smoothed, normalised joint RGB histogram ``(bins**3,)`` float64 of images in ``[-1, 1]``."""
    return smooth_histogram(color_histogram_counts(images, bins), smoothing)


def _kl(p: Tensor, q: Tensor) -> Tensor:
    # xlogy(0, .) == 0, so empty cells of p contribute nothing; p > 0 where q == 0 gives +inf.
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum()


def histogram_divergences(p: Tensor, q: Tensor) -> dict[str, float]:
    """KL(P||Q), KL(Q||P) and JS(P, Q) in nats for two normalised histograms (P = real, Q = fake)."""
    p = p.double().flatten()
    q = q.double().flatten()
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in size: {p.numel()} vs {q.numel()}")
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)
    js = 0.5 * _kl(p, m) + 0.5 * _kl(q, m)
    return {
        "kl_real_fake": float(_kl(p, q).clamp_min(0.0)),
        "kl_fake_real": float(_kl(q, p).clamp_min(0.0)),
        "js": float(js.clamp(0.0, math.log(2.0))),
    }


class ColorKL(Metric):
    """Accumulates real and fake colour-histogram counts; ``compute()`` returns the divergences.

    States are int64 counts with ``dist_reduce_fx="sum"``, so torchmetrics all-reduces them under
    DDP (every rank must call ``compute()``). Because the histograms are normalised, a real set that
    every rank adds in full gives the same ``P`` as one split across ranks.

    ``reset()`` clears the fake counts only, unless ``reset_real=True``; the real histogram is
    usually built once (``update(real_images, real=True)``) and reused every evaluation.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, bins: int = 16, smoothing: float = 1e-3, reset_real: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 1 <= int(bins) <= 256:
            raise ValueError(f"bins must be in [1, 256], got {bins}")
        if not 0.0 <= float(smoothing) < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.bins = int(bins)
        self.smoothing = float(smoothing)
        self.reset_real = bool(reset_real)
        k = self.bins**3
        self.add_state("real_counts", torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("fake_counts", torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, images: Tensor, real: bool) -> None:  # type: ignore[override]
        counts = color_histogram_counts(images.to(self.real_counts.device), self.bins)
        if real:
            self.real_counts += counts
        else:
            self.fake_counts += counts

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        if int(self.real_counts.sum()) == 0 or int(self.fake_counts.sum()) == 0:
            raise RuntimeError("ColorKL.compute() needs both real and fake images; call update(images, real=...) first")
        p = smooth_histogram(self.real_counts, self.smoothing)
        q = smooth_histogram(self.fake_counts, self.smoothing)
        return histogram_divergences(p, q)

    def reset(self) -> None:
        if self.reset_real:
            super().reset()
            return
        real = self.real_counts.clone()
        super().reset()
        self.real_counts = real

    @property
    def has_real(self) -> bool:
        return bool(self.real_counts.sum() > 0)
