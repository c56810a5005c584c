"""Spectral distance: a check for the up-sampling artefacts of generators.

Durall, Keuper and Keuper, "Watch your Up-Convolution: CNN Based Generative Deep Neural Networks are
Failing to Reproduce Spectral Distributions", CVPR 2020, show that transposed convolutions and other
up-samplers leave periodic (checkerboard) patterns, visible as excess or missing power at high
frequencies of the azimuthally averaged power spectrum. Per image (:func:`radial_power_spectrum`):

* grey level = BT.601 luminance ``0.299 R + 0.587 G + 0.114 B`` (one spectrum per image: the
  up-sampling artefacts are in all channels, and luminance is where the eye sees them), minus its mean;
* times a 2-D Hann window: the FFT treats the image as periodic, and the jump between opposite borders
  of a painting would otherwise spread power along both frequency axes up to the highest frequencies
  (spectral leakage, decaying only like ``1/f^2``), hiding the artefacts under border content. The
  mean is removed first so that brightness does not leak into the lowest rings through the window;
* power ``|FFT|^2`` without the DC term, divided by its total (the image's windowed variance): the
  spectrum becomes a distribution over frequencies, so brightness and contrast do not dominate
  (normalising by the DC term instead would be ill-posed for ``[-1, 1]`` images, whose mean is often
  near 0, and would tie the result to brightness);
* mean power in rings of integer radius ``r = round(|f|)`` (cycles per image), ``r = 1 .. round(R / sqrt 2)``,
  so the corner frequencies up to ``sqrt 2 x`` Nyquist are kept (a one-pixel checkerboard lives in the
  corner); then the natural log.

A set's spectrum is the mean of its images' log-spectra. ``spectral_hf`` is the mean absolute difference
of the real and fake mean log-spectra over the rings at or above ``high_freq_start x`` Nyquist (default
half of Nyquist, up to the corner), ``spectral_all`` the same over all rings. A value of 0.1 means the
two spectra differ by about 10 % of power on average over the band.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torchmetrics import Metric

from artgan.data.transforms import to_model_range

__all__ = [
    "SpectralDistance",
    "frequency_band",
    "radial_frequencies",
    "log_radial_spectrum",
    "radial_power_spectrum",
    "spectral_distance",
]

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# Floor of the normalised ring power: only reached by flat (constant) images, which have no spectrum.
_MIN_POWER = 1e-30


@functools.lru_cache(maxsize=8)
def _ring_index(size: int) -> tuple[Tensor, Tensor]:
    """Integer radius of every frequency of a ``size x size`` FFT (flattened) and the count per radius."""
    f = torch.fft.fftfreq(size, d=1.0 / size)  # integer frequencies, cycles per image
    radius = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).round().long().flatten()
    return radius, torch.bincount(radius)


def radial_frequencies(size: int) -> Tensor:
    """Frequency of each ring of :func:`radial_power_spectrum` for ``size`` px images, as a fraction of
    Nyquist: ``r / (size / 2)`` for ``r = 1 .. round(size / sqrt 2)`` (float64)."""
    num_rings = _ring_index(size)[1].numel() - 1
    return torch.arange(1, num_rings + 1, dtype=torch.float64) / (size / 2)


def frequency_band(size: int, start: float = 0.5) -> Tensor:
    """Boolean mask of the rings at or above ``start x`` Nyquist (up to the corner frequencies)."""
    return radial_frequencies(size) >= start - 1e-9  # a ring exactly at ``start`` belongs to the band


def radial_power_spectrum(images: Tensor) -> Tensor:
    """Normalised log power spectrum per ring ``(B, K)`` float64 of square images ``(B, 3, R, R)``.

    Images are float in ``[-1, 1]`` or uint8. See the module docstring for the steps; ring ``i`` has
    radius ``i + 1`` cycles per image (:func:`radial_frequencies` gives it relative to Nyquist).
    """
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"expected square images of shape (B, 3, R, R), got {tuple(images.shape)}")
    x = to_model_range(images) if images.dtype == torch.uint8 else images.detach().float()
    return log_radial_spectrum(x)


def log_radial_spectrum(x: Tensor) -> Tensor:
    """:func:`radial_power_spectrum` of float images ``(B, 3, R, R)`` in ``[-1, 1]``, differentiable (the
    spectral regularizer in :mod:`artgan.losses` backpropagates through it)."""
    size = x.shape[-1]
    gray = torch.einsum("bchw,c->bhw", x, x.new_tensor(LUMA_WEIGHTS))
    gray = gray - gray.mean(dim=(1, 2), keepdim=True)
    # The periodic Hann window's DFT has three taps, so a pure frequency spreads to its neighbours only.
    hann = torch.hann_window(size, periodic=True, dtype=gray.dtype, device=gray.device)
    power = torch.fft.fft2(gray * torch.outer(hann, hann)).abs().square().flatten(1).double()
    power[:, 0] = 0.0  # DC: the (windowed) mean, not structure
    radius, counts = (t.to(power.device) for t in _ring_index(size))
    rings = power.new_zeros(power.shape[0], counts.numel()).index_add_(1, radius, power) / counts
    total = power.sum(dim=1, keepdim=True).clamp_min(_MIN_POWER)
    return (rings[:, 1:] / total).clamp_min(_MIN_POWER).log()


def spectral_distance(mean_spectrum_a: Tensor, mean_spectrum_b: Tensor, band: Tensor | None = None) -> float:
    """Mean absolute difference of two (log) spectra over the rings where ``band`` is True (all if None)."""
    if mean_spectrum_a.shape != mean_spectrum_b.shape:
        raise ValueError(f"spectra differ in size: {tuple(mean_spectrum_a.shape)} vs {tuple(mean_spectrum_b.shape)}")
    diff = (mean_spectrum_a.double() - mean_spectrum_b.double()).abs()
    if band is not None:
        diff = diff[band.to(diff.device)]
    return float(diff.mean())


class SpectralDistance(Metric):
    """Distance between the mean log power spectra of real and generated ``resolution`` px images.

    ``update(images, real=...)`` adds images (float in ``[-1, 1]`` or uint8); ``compute()`` returns
    ``{"spectral_hf", "spectral_all"}`` as Python floats (lower is better, identical sets give 0);
    :meth:`mean_spectra` returns the two curves for a plot. States are the sums of the per-image
    log-spectra and the image counts with ``dist_reduce_fx="sum"``: exact under DDP, and a real set
    that every rank adds in full gives the same mean. ``reset()`` clears the fake side only, unless
    ``reset_real=True``.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, resolution: int, high_freq_start: float = 0.5, reset_real: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if int(resolution) < 2:
            raise ValueError(f"resolution must be >= 2, got {resolution}")
        if not 0.0 <= float(high_freq_start) <= 1.0:
            raise ValueError(f"high_freq_start is a fraction of Nyquist in [0, 1], got {high_freq_start}")
        self.resolution = int(resolution)
        self.high_freq_start = float(high_freq_start)
        self.reset_real = bool(reset_real)
        num_rings = radial_frequencies(self.resolution).numel()
        self.add_state("real_spectrum_sum", torch.zeros(num_rings, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("fake_spectrum_sum", torch.zeros(num_rings, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("real_count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("fake_count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, images: Tensor, real: bool) -> None:  # type: ignore[override]
        if images.dim() != 4 or images.shape[-1] != self.resolution:
            raise ValueError(f"expected images of {self.resolution} px, got shape {tuple(images.shape)}")
        spectra = radial_power_spectrum(images).to(self.real_spectrum_sum.device)
        if real:
            self.real_spectrum_sum += spectra.sum(0)
            self.real_count += spectra.shape[0]
        else:
            self.fake_spectrum_sum += spectra.sum(0)
            self.fake_count += spectra.shape[0]

    def _means(self) -> tuple[Tensor, Tensor]:
        if int(self.real_count) == 0 or int(self.fake_count) == 0:
            raise RuntimeError("SpectralDistance needs real and fake images; call update(images, real=...) first")
        return self.real_spectrum_sum / self.real_count, self.fake_spectrum_sum / self.fake_count

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        real, fake = self._means()
        band = frequency_band(self.resolution, self.high_freq_start)
        return {"spectral_hf": spectral_distance(real, fake, band), "spectral_all": spectral_distance(real, fake)}

    def mean_spectra(self) -> dict[str, Tensor]:
        """``{"frequency", "real", "fake"}``: ring frequencies (fraction of Nyquist) and the two mean
        log-spectra, float64 on the CPU, synced across DDP ranks like ``compute()`` (call on every rank)."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync,
                               should_unsync=self._should_unsync):
            real, fake = self._means()
            return {"frequency": radial_frequencies(self.resolution), "real": real.cpu(), "fake": fake.cpu()}

    def reset(self) -> None:
        if self.reset_real:
            super().reset()
            return
        real_sum, real_count = self.real_spectrum_sum.clone(), self.real_count.clone()
        super().reset()
        self.real_spectrum_sum, self.real_count = real_sum, real_count

    @property
    def has_real(self) -> bool:
        return int(self.real_count) > 0
