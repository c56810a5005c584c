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
