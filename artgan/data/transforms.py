"""Pixel range conversions shared by the data pipeline, the GAN module and the callbacks.

Batches stay uint8 on the host (4x smaller copies); the model sees float in [-1, 1].
"""

import torch


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape) -> float32 in [-1, 1]."""
    return x.float() / 127.5 - 1.0


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] -> float in [0, 1], clamped (generators overshoot)."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] -> uint8 in [0, 255], rounded."""
    return (denormalize(x) * 255.0).round().to(torch.uint8)


def downscale(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images (uint8, or float in [-1, 1]) -> uint8 on the CPU, at most ``size`` pixels a side (antialiased).
    For pictures that show many images small (the curator panel) without keeping full-size copies."""
    x = to_model_range(images) if images.dtype == torch.uint8 else images.float()
    if x.shape[-1] > size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                            align_corners=False)
    return to_uint8(x).cpu()
