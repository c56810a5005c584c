"""DCGAN generator and discriminator (Radford et al. 2015) for 64 to 512 px.

The number of blocks follows from the resolution: the generator upsamples a latent_dim x 1 x 1 tensor to 4 x 4
and doubles the size per transposed convolution; the discriminator halves it per block back down to 4 x 4.
Widths double per block away from the image, capped by ``max_channels`` so 256 and 512 px stay trainable.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from artgan.models.base import Discriminator, Generator, num_doublings
from artgan.models.reconstruction import ReconstructionHead

D_NORMS = ("batch", "instance", "none")


def dcgan_init_(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02), norm weights N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(Generator):
    """ConvTranspose2d + BatchNorm + ReLU blocks from a latent vector to Tanh images (B, 3, R, R)."""

    legacy_name = "dcgan"

    def __init__(self, resolution: int = 64, latent_dim: int = 128, ngf: int = 64, max_channels: int = 512,
                 channels: int = 3):
        super().__init__(resolution, latent_dim, ngf=ngf, max_channels=max_channels, channels=channels)
        n_up = num_doublings(self.resolution)
        widths = [min(ngf * 2 ** (n_up - 1 - i), max_channels) for i in range(n_up)]  # 4x4 ... R/2
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init_(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":  # WGAN-GP's penalty is per sample, which batch statistics would break
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"discriminator norm must be one of {', '.join(D_NORMS)}; got {kind!r}")


class MinibatchStd(nn.Module):
    """Appends one channel: the standard deviation of the features across a group of images, averaged to one
    number per group (Karras et al., ProGAN 2018). A generator that paints the same picture again gets a
    group std near zero, which D can see and real batches never show: a direct penalty on lost variety.
    Groups are the largest divisor of the batch up to ``group_size``, so any batch size works."""

    def __init__(self, group_size: int):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = max(d for d in range(1, min(self.group_size, b) + 1) if b % d == 0)
        if g == 1:  # a single image has no spread to measure
            return torch.cat([x, x.new_zeros(b, 1, h, w)], dim=1)
        groups = x.float().reshape(g, b // g, c, h, w)
        std = (groups.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (b // g,)
        std = std.to(x.dtype).reshape(1, b // g, 1, 1, 1).expand(g, -1, 1, h, w).reshape(b, 1, h, w)
        return torch.cat([x, std], dim=1)


class HighPassBranch(nn.Module):
    """Appends ``gain x (x - blur(x))``, the image's finest detail, as extra input channels. Spectral norm bounds
    D's first layer, and the fine texture a generator gets wrong is low in amplitude, so D barely sees it; the
    amplified residual (3x3 binomial blur, reflect padding) lets it judge that texture at the same strength."""

    def __init__(self, gain: float):
        super().__init__()
        self.gain = float(gain)
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16).expand(1, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        blur = nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"),
                                    self.kernel.to(x.dtype).expand(c, 1, 3, 3), groups=c)
        return torch.cat([x, self.gain * (x - blur)], dim=1)


class DCGANDiscriminator(Discriminator):
    """Stride-2 Conv + LeakyReLU(0.2) blocks from (B, 3, R, R) down to 4 x 4, then one logit per image.

    ``minibatch_std`` > 0 adds ProGAN's minibatch standard deviation channel at 4 x 4, over groups of that many
    images (0: off, the DCGAN paper's D).

    ``patch_logits`` > 0 adds a PatchGAN head (Isola et al. 2017): a 3x3 conv on the ``patch_logits`` px feature
    map gives every location its own logit, judging local texture (at 16 px on a 64 px image, patches of 18 px)
    where the global logit judges the whole picture. The output is then ``(B, 2 P)`` for ``P`` locations: the
    global logit repeated ``P`` times beside the patch logits, so the two heads weigh the same in every loss,
    which averages its logits.

    ``highpass_gain`` > 0 gives D the image's high-pass residual times that gain beside the image
    (:class:`HighPassBranch`; 0: off). ``full_res_channels`` > 0 puts a stride-1 3x3 conv of that width at the
    image's own size first: the first stride-2 conv alone sees a thin line and a smear of it much alike.
    ``pack`` > 1 judges that many images together, stacked as channels (PacGAN, Lin et al., NeurIPS 2018): a pack
    of generated images that repeat one another looks unlike a pack of paintings, which penalises lost variety
    far more strongly than a one-image D can; each image gets its pack's logits.
    ``reconstruction`` > 0 adds FastGAN's self-supervision with that weight:
    decoders rebuild each real image from the 8 px features and a random quarter of it from the 16 px ones
    (:class:`~artgan.models.reconstruction.ReconstructionHead`; 0: off)."""

    def __init__(self, resolution: int = 64, ndf: int = 64, max_channels: int = 512, norm: str = "batch",
                 spectral_norm: bool = False, channels: int = 3, minibatch_std: int = 0, patch_logits: int = 0,
                 highpass_gain: float = 0.0, reconstruction: float = 0.0, full_res_channels: int = 0,
                 pack: int = 1):
        if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
            raise ValueError(f"pack is how many images D judges together, stacked as channels (PacGAN; 1 = off, "
                             f"2 is the paper's); got {pack!r}.")
        if pack > 1 and reconstruction:
            raise ValueError("model.discriminator.pack > 1 and model.discriminator.reconstruction > 0 do not go "
                             "together: the decoders rebuild one image, a pack holds several. Set one of them off.")
        if isinstance(full_res_channels, bool) or not isinstance(full_res_channels, int) or full_res_channels < 0:
            raise ValueError(f"full_res_channels is the width of a stride-1 conv at the image's own size before the "
                             f"first stride-2 one (0 = off, e.g. 32); got {full_res_channels!r}.")
        if isinstance(minibatch_std, bool) or not isinstance(minibatch_std, int) or minibatch_std < 0:
            raise ValueError(f"minibatch_std is a group size (0 = off, 4 is usual), got {minibatch_std!r}.")
        if isinstance(highpass_gain, bool) or not isinstance(highpass_gain, (int, float)) or highpass_gain < 0:
            raise ValueError(f"highpass_gain scales the high-pass residual D sees (0 = off, e.g. 4); "
                             f"got {highpass_gain!r}.")
        if isinstance(reconstruction, bool) or not isinstance(reconstruction, (int, float)) or reconstruction < 0:
            raise ValueError(f"reconstruction is the weight of D's self-supervised loss (0 = off, e.g. 1); "
                             f"got {reconstruction!r}.")
        super().__init__(resolution, ndf=ndf, max_channels=max_channels, norm=norm, spectral_norm=spectral_norm,
                         channels=channels, minibatch_std=minibatch_std, patch_logits=patch_logits,
                         highpass_gain=highpass_gain, reconstruction=reconstruction,
                         full_res_channels=full_res_channels, pack=pack)
        self.pack = pack
        n_down = num_doublings(self.resolution)
        widths = [min(ndf * 2**i, max_channels) for i in range(n_down)]  # R/2 ... 4x4
        sizes = [self.resolution // 2 ** (i + 1) for i in range(n_down)]
        if isinstance(patch_logits, bool) or patch_logits not in [0, *sizes]:
            raise ValueError(f"patch_logits is the side of the feature map whose locations get their own logits: "
                             f"0 (off) or one of {', '.join(map(str, sizes))} at {self.resolution} px; "
                             f"got {patch_logits!r}.")
        layers: list[nn.Module] = [HighPassBranch(highpass_gain)] if highpass_gain else []
        c_in = channels * pack * (2 if highpass_gain else 1)
        if full_res_channels:  # judges structure one or two pixels wide before the first stride-2 conv skips it
            layers += [nn.Conv2d(c_in, full_res_channels, 3, 1, 1, bias=False), nn.LeakyReLU(0.2, True)]
            c_in = full_res_channels
        layers += [nn.Conv2d(c_in, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        taps = [len(layers) - 1]  # index of each block's output activation, one per size in ``sizes``
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            # Without a norm layer the conv needs its own bias.
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm == "none"), _norm(norm, c_out),
                       nn.LeakyReLU(0.2, True)]
            taps.append(len(layers) - 1)
        self._features_tap = taps[-1]  # the 4 x 4 features, before the batch-wide minibatch-std channel
        if minibatch_std:
            layers += [MinibatchStd(minibatch_std)]
        layers += [nn.Conv2d(widths[-1] + (1 if minibatch_std else 0), 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)
        self.patch_head: nn.Conv2d | None = None
        self._patch_tap = -1  # index in self.net of the activation the patch head reads
        if patch_logits:
            block = sizes.index(patch_logits)
            self._patch_tap = taps[block]
            self.patch_head = nn.Conv2d(widths[block], 1, 3, 1, 1)
        self.reconstruction_weight = float(reconstruction)
        self.reconstruction: ReconstructionHead | None = None
        if reconstruction:
            self._reconstruction_taps = (taps[sizes.index(16)], taps[sizes.index(8)])
            self.reconstruction = ReconstructionHead(widths[sizes.index(8)], widths[sizes.index(16)])
        dcgan_init_(self)
        if spectral_norm:  # the judging layers; the decoders only serve D's self-supervision
            for m in [*self.net.modules(), *(self.patch_head.modules() if self.patch_head is not None else [])]:
                if isinstance(m, nn.Conv2d):
                    _spectral_norm(m)

    def self_supervised_loss(self, real: torch.Tensor) -> torch.Tensor | None:
        if self.reconstruction is None:
            return None
        fine_tap, coarse_tap = self._reconstruction_taps
        x = real
        for i, layer in enumerate(self.net[:coarse_tap + 1]):
            x = layer(x)
            if i == fine_tap:
                fine = x
        return self.reconstruction_weight * self.reconstruction.loss(real, fine, x)

    def instance_features(self, images: torch.Tensor) -> torch.Tensor | None:
        if self.pack > 1:  # a pack's features describe several images
            return None
        return self.net[:self._features_tap + 1](images).flatten(1)

    def judge_with_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.pack > 1:
            return self(images), None
        return self._judge(images, keep_features=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pack == 1:
            return self._judge(x)[0]
        n = x.shape[0]
        packs = -(-n // self.pack)
        if n % self.pack:  # a last, short pack is filled with the batch's first images
            x = torch.cat([x, x[:packs * self.pack - n]])
        packed = x.reshape(packs, self.pack * x.shape[1], *x.shape[2:])
        return self._judge(packed)[0].repeat_interleave(self.pack, dim=0)[:n]  # each image gets its pack's logits

    def _judge(self, x: torch.Tensor, keep_features: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits, and the 4 x 4 features (flattened) when ``keep_features``."""
        if self.patch_head is None and not keep_features:
            return self.net(x).flatten(), None
        patches = features = None
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i == self._patch_tap:
                patches = self.patch_head(x).flatten(1)
            if keep_features and i == self._features_tap:
                features = x.flatten(1)
        if patches is None:
            return x.flatten(), features
        return torch.cat([x.flatten(1).expand(-1, patches.shape[1]), patches], dim=1), features
