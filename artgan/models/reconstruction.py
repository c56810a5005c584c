"""FastGAN's self-supervised discriminator (Liu et al., ICLR 2021, section 3.2): small decoders rebuild the real
image from D's coarse feature map, and one random quarter of it, at full detail, from D's finer feature map.

A discriminator trained on a few hundred images can tell them from fakes with a handful of features and stop
looking; having to reconstruct what it sees keeps its features describing the whole picture and its fine
texture, which is what the generator learns from. Only real images are reconstructed. FastGAN measures the
error with LPIPS, whose VGG weights cannot ship offline; this uses the L1 distance, which asks for the same
content and is blurrier about the details.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _decoder(c_in: int, doublings: int, width: int) -> nn.Sequential:
    """``doublings`` x (nearest upsample, 3x3 conv, BatchNorm, GLU) at ``width`` channels, then RGB."""
    layers: list[nn.Module] = []
    c = c_in
    for _ in range(doublings):
        c_out = width
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, 2 * c_out, 3, 1, 1, bias=False),
                   nn.BatchNorm2d(2 * c_out), nn.GLU(dim=1)]
        c = c_out
    return nn.Sequential(*layers, nn.Conv2d(c, 3, 3, 1, 1), nn.Tanh())


class ReconstructionHead(nn.Module):
    """Decoders on two of D's feature maps: the coarse one (``coarse_size`` px) rebuilds the whole image at
    ``4 x coarse_size`` px; a random quarter of the fine one (``2 x coarse_size`` px) rebuilds that quarter of
    the image at ``4 x coarse_size`` px as well (the image's full resolution when it is 8 x the coarse map)."""

    def __init__(self, coarse_channels: int, fine_channels: int, width: int = 16):
        super().__init__()
        self.whole = _decoder(coarse_channels, 2, width)
        self.part = _decoder(fine_channels, 2, width)

    def loss(self, image: Tensor, fine: Tensor, coarse: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Mean L1 error of both reconstructions against the image (B, 3, R, R) D saw."""
        whole = self.whole(coarse)
        target = F.interpolate(image, size=whole.shape[-2:], mode="area")
        half = fine.shape[-1] // 2
        qy, qx = torch.randint(0, 2, (2,), generator=generator).tolist()
        part = self.part(fine[..., qy * half:(qy + 1) * half, qx * half:(qx + 1) * half])
        side = image.shape[-1] // 2
        quarter = image[..., qy * side:(qy + 1) * side, qx * side:(qx + 1) * side]
        quarter = F.interpolate(quarter, size=part.shape[-2:], mode="area")
        return F.l1_loss(whole.float(), target.float()) + F.l1_loss(part.float(), quarter.float())
