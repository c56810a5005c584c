"""Projected GAN discriminator (Sauer et al., NeurIPS 2021, "Projected GANs Converge Faster").

The discriminator judges images in the feature space of a frozen ImageNet network instead of learning its own
features from a few hundred paintings: pretrained features give it a rich, stable view from the first step,
so G and D converge in far fewer images.

1. **Backbone**: EfficientNet-Lite0 (projected-gan's default feature network), the offline weights of
   :func:`artgan.models.backbones.efficientnet_lite0`, cut into four stages as projected-gan's
   ``_make_efficientnet`` (stem + blocks 0-1, block 2, blocks 3-4, blocks 5-6): strides 4, 8, 16, 32 and
   24, 40, 112, 320 channels. It sees the image at its own resolution (``backbone_size=None``) or resized
   bilinearly to ``backbone_size`` (projected-gan always uses 224).
   ``stages`` keeps only the first 1-4 of them (the finest: fewer is cheaper and further from ImageNet's classes).
   ``crop_size`` makes it a magnifying glass: it sees one random ``crop_size`` window of each image (the centre
   one in eval mode) enlarged to the backbone's input size, so a painted pixel spans several backbone pixels.
2. **Random projections**: cross-channel mixing (CCM, a 1x1 conv per scale to ``proj_channels`` x 1, 2, 4, 8
   channels) then cross-scale mixing (CSM, a top-down path as projected-gan's ``FeatureFusionBlock``: add the
   coarser result, upsample x2, 1x1 conv, halving the channels). Random and frozen, as in the paper, whose
   finding is that a discriminator on the raw features cannot fully exploit the deeper backbone layers:
   fixed random mixing spreads every feature over more channels and scales for all four heads to use.
3. **One mini-discriminator per scale**: stride-2 4x4 spectral-norm conv + BatchNorm (``norm``) + LeakyReLU(0.2) blocks
   until the map is at most 8 x 8, then a 4x4 conv to one channel. Their logits are concatenated to (B, K).

The down blocks follow from the feature-map sizes measured at construction for the actual backbone input, not
from projected-gan's fixed 256 px table (which at a native 64 px input would put a 4x4 conv on a 2 x 2 map).
Widths follow projected-gan's table by map size (512 at 8 px, 256 at 16, 128 at 32, 64 at 64 and 128),
capped by ``max_channels``.

Frozen parts: the backbone and the projections never train (``requires_grad=False``, eval mode whatever
``train()`` is asked, not in ``trainable_parameters()``), yet gradients flow through them to the input image
for G's step. The backbone is not saved in ``state_dict()`` (it is rebuilt from the package); loading fills it
back in, so ``load_state_dict(strict=True)`` of such a dict works. The projections ARE saved (about 0.4M
numbers): a checkpoint then fixes exactly the feature space its D was trained in, which a seed would not
across torch versions or changes of the init code.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from artgan.models.backbones import efficientnet_lite0
from artgan.models.base import Discriminator

#: mini-discriminator width by feature-map size (projected-gan's ``SingleDisc.channel_dict``)
HEAD_WIDTHS = {4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 64, 256: 32}
#: a mini-discriminator halves its map until it is at most this size, then ends with a 4x4 conv
HEAD_END_SIZE = 8
MIN_BACKBONE_SIZE = 64  # the coarsest projected map is then at least 4 x 4, what the final 4x4 conv needs


class EfficientNetLite0Stages(nn.Module):
    """EfficientNet-Lite0 cut into four stages (up to its last stride-32 block); keeps the first ``stages`` and
    returns each one's output."""

    def __init__(self, weights_path: str | None = None, stages: int = 4) -> None:
        super().__init__()
        net = efficientnet_lite0(weights_path)
        self.stages = nn.ModuleList([
            nn.Sequential(net.conv_stem, net.bn1, *net.blocks[0:2]),  # stride 4, 24 channels
            nn.Sequential(*net.blocks[2:3]),  # stride 8, 40
            nn.Sequential(*net.blocks[3:5]),  # stride 16, 112
            nn.Sequential(*net.blocks[5:7]),  # stride 32, 320
        ][:stages])

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class RandomProjection(nn.Module):
    """Cross-channel then cross-scale mixing of four feature maps with 1x1 convs (linear, no activations).

    Returns maps of ``c, c, 2c, 4c`` channels (``c = proj_channels``) at twice each input's size.
    """

    def __init__(self, in_channels: list[int], proj_channels: int) -> None:
        super().__init__()
        mixed = [proj_channels * 2**i for i in range(len(in_channels))]
        self.out_channels = [mixed[0]] + [c // 2 for c in mixed[1:]]
        self.mix_channels = nn.ModuleList(nn.Conv2d(c_in, c, 1) for c_in, c in zip(in_channels, mixed))
        self.mix_scales = nn.ModuleList(nn.Conv2d(c, c_out, 1) for c, c_out in zip(mixed, self.out_channels))

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        out: list[Tensor] = []
        coarser = None
        for i in reversed(range(len(features))):
            x = self.mix_channels[i](features[i])
            if coarser is not None:
                if coarser.shape[-2:] != x.shape[-2:]:  # backbone sizes that are not multiples of 32
                    coarser = F.interpolate(coarser, size=x.shape[-2:], mode="bilinear", align_corners=True)
                x = x + coarser
            # projected-gan upsamples then applies the 1x1 conv; both are linear and bilinear weights sum to
            # one, so convolving first is the same map at a quarter of the cost.
            coarser = F.interpolate(self.mix_scales[i](x), scale_factor=2, mode="bilinear", align_corners=True)
            out.insert(0, coarser)
        return out


def head_width(size: int, max_channels: int) -> int:
    """Width of a mini-discriminator layer whose output map is ``size`` px (nearest entry of the table)."""
    nearest = min(HEAD_WIDTHS, key=lambda s: abs(math.log2(s) - math.log2(size)))
    return min(HEAD_WIDTHS[nearest], max_channels)


def mini_discriminator(c_in: int, size: int, max_channels: int, norm: str = "batch") -> nn.Sequential:
    """Down blocks from a ``size`` px map until it is at most ``HEAD_END_SIZE``, then a 4x4 conv to 1 channel.
    ``norm``: "batch" (projected-gan) or "none" (the conv then has a bias)."""
    layers: list[nn.Module] = []
    batch_norm = norm == "batch"
    while size > HEAD_END_SIZE:
        size //= 2  # a 4x4 stride-2 conv with padding 1 floors odd sizes
        c_out = head_width(size, max_channels)
        layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not batch_norm)),
                   nn.BatchNorm2d(c_out) if batch_norm else nn.Identity(), nn.LeakyReLU(0.2, inplace=True)]
        c_in = c_out
    layers.append(spectral_norm(nn.Conv2d(c_in, 1, 4, 1, 0, bias=False)))
    return nn.Sequential(*layers)


def pixel_discriminator(resolution: int, channels: int, max_channels: int) -> nn.Sequential:
    """A small patch discriminator on the image itself (spectral-norm stride-2 convs + LeakyReLU down to 8 x 8,
    then a 4x4 conv: 5 x 5 logits). It sees what the ImageNet features are blind to at these sizes: the palette
    (its own colour statistics, which the backbone was trained to ignore) and pixel-level texture."""
    layers: list[nn.Module] = []
    c_in, size = 3, resolution
    while size > HEAD_END_SIZE:
        size //= 2
        layers += [spectral_norm(nn.Conv2d(c_in, channels, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
        c_in, channels = channels, min(channels * 2, max_channels)
    layers.append(spectral_norm(nn.Conv2d(c_in, 1, 4, 1, 0)))
    return nn.Sequential(*layers)


def _drop_backbone_keys(module: ProjectedDiscriminator, state_dict: dict[str, Any], prefix: str,
                        local_metadata: dict) -> None:
    """state_dict post-hook: the pretrained backbone comes from the package, not from checkpoints."""
    for key in [k for k in state_dict if k.startswith(prefix + "backbone.")]:
        del state_dict[key]


def _fill_backbone_keys(module: ProjectedDiscriminator, state_dict: dict[str, Any], prefix: str,
                        local_metadata: dict, strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                        error_msgs: list[str]) -> None:
    """load_state_dict pre-hook: backbone entries a saved dict lacks are the module's own (a no-op copy)."""
    for name, value in module.backbone.state_dict().items():
        state_dict.setdefault(prefix + "backbone." + name, value)


class ProjectedDiscriminator(Discriminator):
    """Multi-scale discriminator on frozen EfficientNet-Lite0 features with random projections -> (B, K) logits.

    ``backbone_size``: the backbone's input size (None: the image's own resolution; projected-gan: 224).
    ``proj_channels``: CCM width at the finest scale (projected-gan: 64). ``max_channels``: cap on the
    mini-discriminators' widths (512 is projected-gan's table uncapped; lower it to save compute).
    ``pixel_channels``: width of an extra patch discriminator on the image itself (None: none), which keeps
    the palette and pixel texture honest. ``weights_path``: an ``efficientnet-lite0-57934424.pth`` (None: the
    packaged copy). ``norm``: the heads' normalization, "batch" (projected-gan) or "none": D sees the real and the
    fake batch in separate passes, so BatchNorm removes whatever every fake shares (a palette, a tint).
    ``stages``: how many backbone stages (1-4, from the finest) D looks through; the first two hold edges, colour
    and texture, the last two the ImageNet-class features Kynkaanniemi et al. show FID/KID can be gamed through.
    ``crop_size``: judge a random window of this many px of each image, enlarged (None: the whole image). At
    64 px the finest backbone stage has stride 4, so one- and two-pixel structure (a thin line against a smear)
    is below what it resolves; a 32 px window at the same backbone input sees it twice as large, at equal cost.
    """

    def __init__(self, resolution: int = 64, backbone_size: int | None = None, proj_channels: int = 64,
                 max_channels: int = 512, pixel_channels: int | None = None, weights_path: str | None = None,
                 norm: str = "batch", stages: int = 4, crop_size: int | None = None):
        super().__init__(resolution, backbone_size=backbone_size, proj_channels=proj_channels,
                         max_channels=max_channels, pixel_channels=pixel_channels, weights_path=weights_path,
                         norm=norm, stages=stages, crop_size=crop_size)
        if norm not in ("batch", "none"):
            raise ValueError(f"norm is the mini-discriminators' normalization, 'batch' or 'none'; got {norm!r}.")
        if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= 4:
            raise ValueError(f"stages is how many of the backbone's four stages D looks through, 1 to 4 "
                             f"(fewer: cheaper, and further from ImageNet's classes); got {stages!r}.")
        if backbone_size is not None and (isinstance(backbone_size, bool) or not isinstance(backbone_size, int)
                                          or backbone_size < MIN_BACKBONE_SIZE):
            raise ValueError(f"backbone_size must be None or an integer >= {MIN_BACKBONE_SIZE}, "
                             f"got {backbone_size!r}")
        if crop_size is not None and (isinstance(crop_size, bool) or not isinstance(crop_size, int)
                                      or not 8 <= crop_size < resolution):
            raise ValueError(f"crop_size is the side of the random window D judges, from 8 px to below the "
                             f"resolution ({resolution}), or null for the whole image; got {crop_size!r}.")
        for name, value in (("proj_channels", proj_channels), ("max_channels", max_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.backbone_size = backbone_size
        self.crop_size = crop_size
        self.backbone = EfficientNetLite0Stages(weights_path, stages)
        with torch.no_grad():
            probe = self.backbone(torch.zeros(1, 3, self.input_size, self.input_size))
        self.projection = RandomProjection([f.shape[1] for f in probe], proj_channels).requires_grad_(False)
        with torch.no_grad():
            projected = self.projection(probe)
        self.mini_discriminators = nn.ModuleList(
            mini_discriminator(f.shape[1], f.shape[-1], max_channels, norm) for f in projected
        )
        if pixel_channels is not None:  # a pixel-space head beside the projected ones (Vision-aided GAN's idea)
            self.mini_discriminators.append(pixel_discriminator(self.resolution, pixel_channels, max_channels))
        # channels_last: the backbone's depthwise convs are much faster in that layout on CPU; the whole D's
        # forward+backward measured 1.1-1.25x faster than with contiguous weights (bench/model_cost.py era).
        self.to(memory_format=torch.channels_last)
        self.register_state_dict_post_hook(_drop_backbone_keys)
        self.register_load_state_dict_pre_hook(_fill_backbone_keys)
        self.train()

    @property
    def input_size(self) -> int:
        """The size the backbone sees."""
        return self.backbone_size or self.resolution

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The mini-discriminators' parameters, listed by module rather than by ``requires_grad``, so the answer
        stays the same while a training loop has them frozen for G's step (Lightning's ``toggle_optimizer``)."""
        return list(self.mini_discriminators.parameters())

    def train(self, mode: bool = True) -> ProjectedDiscriminator:
        """Only the mini-discriminators switch modes; the backbone's BatchNorm statistics stay ImageNet's."""
        super().train(mode)
        self.backbone.eval()
        self.projection.eval()
        return self

    def windows(self, images: Tensor) -> Tensor:
        """One ``crop_size`` window of each image (random in training, the centre in eval), resized bilinearly to
        the backbone's input size in the same sampling step."""
        n = images.shape[0]
        scale = self.crop_size / images.shape[-1]
        if self.training:
            shift = (torch.rand(n, 2, device=images.device) * 2 - 1) * (1 - scale)
        else:
            shift = torch.zeros(n, 2, device=images.device)
        theta = torch.zeros(n, 2, 3, device=images.device)
        theta[:, 0, 0] = theta[:, 1, 1] = scale
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, [n, 3, self.input_size, self.input_size], align_corners=False)
        return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border",
                             align_corners=False)

    def forward(self, images: Tensor) -> Tensor:
        x = images.contiguous(memory_format=torch.channels_last)
        if self.crop_size is not None:
            x = self.windows(x).contiguous(memory_format=torch.channels_last)
        elif x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=False)
        features = self.projection(self.backbone(x))
        if len(self.mini_discriminators) > len(features):
            features.append(images)  # the pixel head sees the image at its own size
        return torch.cat([d(f).flatten(1) for d, f in zip(self.mini_discriminators, features)], dim=1)
