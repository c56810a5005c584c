"""FastGAN generator (Liu et al., ICLR 2021, "Towards Faster and Stabilized GAN Training for High-fidelity
Few-shot Image Synthesis"), the generator Projected GAN pairs with its discriminator (Sauer et al., NeurIPS 2021).

Made for a few hundred to a few thousand images:

* **No transposed convolutions** after the first block: each doubling is a nearest-neighbour (or bilinear)
  upsample and 3x3 convolutions, so there is no checkerboard grid like DCGAN's. The latent reaches 4 x 4 through one 4 x 4
  transposed convolution of a 1 x 1 map (a linear layer in disguise, which cannot leave a grid).
* **GLU** after BatchNorm: each conv emits twice the channels, half of them gate the other half.
* **Lite or full blocks** (``lite``): one conv per doubling (projected-gan's "FastGAN-lite", half the cost) or
  two convs each preceded by noise injection (a learned per-layer scale of per-pixel Gaussian noise, zero at
  initialisation, as in StyleGAN).
* **Skip-layer excitation** (SLE): the 4, 8, 16, 32 px features are squeezed to per-channel gates in (0, 1)
  that multiply the 64, 128, 256, 512 px features: a cheap long skip path that lets the coarse layout steer
  the fine layers' channels. A 64 px generator has the 4 -> 64 connection on its last feature map.
* **Spectral norm** on every convolution, as FastGAN does (it stabilises G as well as D on little data), and
  the latent normalised to unit second moment (ProGAN's pixel norm applied to z, as projected-gan's FastGAN).
* **Tanh output.** projected-gan leaves the output unbounded: StyleGAN's training loop clamps images only when
  it saves them, and its D never sees the range. ArtGAN's pipeline (DiffAugment, FID/KID, the image writers,
  the ``Generator`` contract) takes images in [-1, 1], and an unbounded G would let the discriminator judge
  pixel values no real painting has, so the output goes through tanh as in the original FastGAN.

Widths follow FastGAN's table, channels = multiplier x ``ngf`` with multipliers 16, 8, 4, 2, 2, 1, 1/2, 1/4 at
4, 8, ..., 512 px. Parameters at the default ``ngf=64``, ``latent_dim=256`` (lite / full blocks): 64 px
23.2M / 29.7M, 128 px 23.9M / 30.4M, 256 px 24.0M / 30.6M, three quarters of them in the 4 and 8 px layers.
Compute grows with ngf squared: ``ngf=32`` has 7.9M / 9.5M at 64 px, ``ngf=16`` 3.0M / 3.4M.

With full blocks (or ``noise=True``) the noise comes from torch's global random generator, so the same latents
give slightly different images unless that generator is seeded too; lite blocks without it have none, so in eval
mode an image is a function of its latent alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from artgan.models.base import Generator, check_truncation
from artgan.models.dcgan import dcgan_init_

#: channels per feature-map size, as multiples of ``ngf`` (FastGAN's ``nfc`` table)
WIDTH_MULTIPLIERS = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25}
#: skip-layer excitation connections (source size, target size)
SLE_CONNECTIONS = ((4, 64), (8, 128), (16, 256), (32, 512))
#: latents averaged into the mean first feature map that truncation pulls towards
TRUNCATION_MEAN_LATENTS = 2048


def normalize_second_moment(z: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale each latent to unit mean square (ProGAN; projected-gan's FastGAN): puts every z on one sphere."""
    return z * (z.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class NoiseInjection(nn.Module):
    """Adds per-pixel Gaussian noise, shared across channels, scaled by a learned scalar (zero at start)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        return x + self.weight * noise


def conv_bn_glu(c_in: int, c_out: int, noise: bool) -> list[nn.Module]:
    """3x3 conv to ``2 * c_out`` channels, optional noise, BatchNorm, GLU down to ``c_out``."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, 2 * c_out, 3, 1, 1, bias=False)]
    if noise:
        layers.append(NoiseInjection())
    return layers + [nn.BatchNorm2d(2 * c_out), nn.GLU(dim=1)]


UPSAMPLE_MODES = ("nearest", "bilinear")


def up_block(c_in: int, c_out: int, lite: bool, upsample: str = "nearest", noise: bool = False) -> nn.Sequential:
    """Doubles the size: nearest (or bilinear) upsample, then one conv (lite; with noise if ``noise``) or two
    convs with noise (full)."""
    layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode=upsample)]
    if lite:
        layers += conv_bn_glu(c_in, c_out, noise=noise)
    else:
        layers += conv_bn_glu(c_in, c_out, noise=True) + conv_bn_glu(c_out, c_out, noise=True)
    return nn.Sequential(*layers)


class SkipLayerExcitation(nn.Module):
    """Channel gates from a low-resolution map multiply a high-resolution one (FastGAN's SLE module)."""

    def __init__(self, c_low: int, c_high: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            nn.Conv2d(c_low, c_high, 4, 1, 0, bias=False),
            nn.SiLU(),
            nn.Conv2d(c_high, c_high, 1, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        return high * self.gate(low)


class FastGANGenerator(Generator):
    """FastGAN: latent -> 4 x 4 -> upsample+conv blocks with skip-layer excitation -> tanh RGB (B, 3, R, R).

    ``ngf`` scales every width (FastGAN uses 64, projected-gan 128). ``lite`` (default) picks one conv per
    doubling instead of two: 1.5x to 3x faster on a 2-core CPU (bench/model_cost.py), and without noise
    injection, so sampling is deterministic. ``upsample="bilinear"`` interpolates instead of repeating pixels:
    nearest-neighbour copies leave 2 x 2 blocks that the following 3x3 conv must learn to smooth away.
    ``noise=True`` gives lite blocks full blocks' noise injection (StyleGAN's per-pixel source of stochastic
    detail, so fine texture need not be a function of the latent alone) at almost no cost. ``min_channels`` is a
    floor on every block's width: at a small ``ngf`` it widens only the narrow fine blocks. ``latent_skip`` feeds
    the latent to every block, not only the first (BigGAN's skip-z, Brock et al., ICLR 2019): a linear map of z
    gives each block's output a per-channel scale and shift, zero at initialisation, so the fine blocks can vary
    their strokes and texture with the latent directly instead of only through the coarse layout.
    """

    def __init__(self, resolution: int = 64, latent_dim: int = 256, ngf: int = 64, lite: bool = True,
                 upsample: str = "nearest", skip_rgb: bool = False, noise: bool = False, min_channels: int = 0,
                 latent_skip: bool = False):
        super().__init__(resolution, latent_dim, ngf=ngf, lite=lite, upsample=upsample, skip_rgb=skip_rgb,
                         noise=noise, min_channels=min_channels, latent_skip=latent_skip)
        if isinstance(ngf, bool) or not isinstance(ngf, int) or ngf < 1:
            raise ValueError(f"ngf must be a positive integer, got {ngf!r}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {', '.join(UPSAMPLE_MODES)}; got {upsample!r}.")
        if isinstance(min_channels, bool) or not isinstance(min_channels, int) or min_channels < 0:
            raise ValueError(f"min_channels is a floor on every block's width (0: none), got {min_channels!r}")
        sizes = [s for s in WIDTH_MULTIPLIERS if s <= self.resolution]
        widths = {s: max(int(WIDTH_MULTIPLIERS[s] * ngf), min_channels) for s in sizes}
        if widths[self.resolution] < 1:
            raise ValueError(f"ngf={ngf} leaves no channel at {self.resolution} px; use ngf >= "
                             f"{int(1 / WIDTH_MULTIPLIERS[self.resolution])}")
        self.initial = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 2 * widths[4], 4, 1, 0, bias=False),
            nn.BatchNorm2d(2 * widths[4]),
            nn.GLU(dim=1),
        )
        self.up = nn.ModuleDict({str(s): up_block(widths[s // 2], widths[s], lite, upsample, noise)
                                 for s in sizes[1:]})
        self.excite = nn.ModuleDict({
            str(high): SkipLayerExcitation(widths[low], widths[high])
            for low, high in SLE_CONNECTIONS if high <= self.resolution
        })
        self.to_rgb = nn.Conv2d(widths[self.resolution], 3, 3, 1, 1, bias=True)
        # StyleGAN2's skip output: every block adds an RGB residual to the upsampled lower-resolution image, so
        # the fine blocks start from a smooth picture and only paint the detail it lacks.
        self.skip_to_rgb = nn.ModuleDict({str(s): nn.Conv2d(widths[s], 3, 1, 1, 0, bias=True)
                                          for s in sizes[1:-1]}) if skip_rgb else None
        self.latent_skip = nn.ModuleDict({str(s): nn.Linear(latent_dim, 2 * widths[s]) for s in sizes[1:]}
                                         ) if latent_skip else None
        dcgan_init_(self)  # FastGAN's weights_init is the DCGAN one
        for m in self.latent_skip.values() if self.latent_skip is not None else ():
            nn.init.zeros_(m.weight)  # starts as the plain generator
            nn.init.zeros_(m.bias)
        self._truncation: tuple[float, Tensor] | None = None  # (psi, mean 4 x 4 map) inside truncation()
        for m in list(self.modules()):
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                spectral_norm(m)

    def _initial(self, z: Tensor) -> Tensor:
        return self.initial(normalize_second_moment(z).reshape(z.shape[0], self.latent_dim, 1, 1))

    def sample_latents(self, n: int, *, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None, truncation: float | None = None) -> Tensor:
        """The usual latents whatever ``truncation``: forward() puts every latent on one sphere, so scaling it
        would change nothing; psi acts on the first feature map instead (:meth:`truncation`)."""
        if truncation is not None:
            check_truncation(truncation)
        return super().sample_latents(n, generator=generator, device=device)

    @contextmanager
    def truncation(self, psi: float | None) -> Iterator[None]:
        """Truncation in feature space, as StyleGAN truncates w: within the block every 4 x 4 feature map is
        pulled towards the mean one, ``mean + psi * (x - mean)``, the mean taken over
        ``TRUNCATION_MEAN_LATENTS`` seeded latents with this generator's current weights."""
        if psi is None or float(psi) == 1.0:
            yield
            return
        previous, self._truncation = self._truncation, (check_truncation(psi), self.mean_initial_features())
        try:
            yield
        finally:
            self._truncation = previous

    @torch.no_grad()
    def mean_initial_features(self) -> Tensor:
        """The mean 4 x 4 feature map ``(1, C, 4, 4)`` over seeded latents, BatchNorm in eval mode."""
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            seeded = torch.Generator().manual_seed(0)
            total = 0.0
            for _ in range(TRUNCATION_MEAN_LATENTS // 256):
                z = torch.randn(256, self.latent_dim, generator=seeded).to(device)
                total = total + self._initial(z).float().sum(dim=0, keepdim=True)
            return total / (TRUNCATION_MEAN_LATENTS // 256 * 256)
        finally:
            self.train(was_training)

    def forward(self, z: Tensor) -> Tensor:
        x = self._initial(z)
        if self._truncation is not None:
            psi, mean = self._truncation
            x = torch.lerp(mean.to(x.dtype), x, psi)
        features = {4: x}
        rgb = None
        if self.latent_skip is not None:
            # Affine in z, so scaling z by psi pulls each block's scale and shift towards their mean as well.
            z_skip = normalize_second_moment(z) * (self._truncation[0] if self._truncation is not None else 1.0)
        for name, block in self.up.items():
            x = block(x)
            if name in self.excite:
                x = self.excite[name](features[int(name) // 16], x)
            if self.latent_skip is not None:
                scale, shift = self.latent_skip[name](z_skip).to(x.dtype)[:, :, None, None].chunk(2, dim=1)
                x = x * (1 + scale) + shift
            features[int(name)] = x
            if self.skip_to_rgb is not None:
                if rgb is not None:
                    rgb = nn.functional.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False)
                if name in self.skip_to_rgb:
                    rgb = self.skip_to_rgb[name](x) if rgb is None else rgb + self.skip_to_rgb[name](x)
        out = self.to_rgb(x)
        return torch.tanh(out if rgb is None else out + rgb)
