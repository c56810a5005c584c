"""The contracts every generator and discriminator meets, so the rest of ArtGAN never looks inside one.

A **generator** knows its ``latent_dim`` and ``resolution``, draws its own latents (``sample_latents``: nothing
outside it knows their shape), maps them to images ``(B, 3, R, R)`` in about ``[-1, 1]`` and describes itself
with ``spec()`` so ``generate.py`` can rebuild it from a checkpoint without Hydra. A **discriminator** knows its
``resolution``, maps images ``(B, 3, R, R)`` to logits ``(B,)`` or ``(B, K)`` (several logits per image, e.g.
one per scale or patch; losses average over all of them) and lists the parameters its optimizer trains.

Subclassing registers the class (``artgan.models.registry``), so a new architecture is one module plus one
YAML: no list to edit. Each subclass passes every constructor argument it needs to be rebuilt to
``super().__init__``; they are what ``spec()`` returns.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from artgan.models import registry

RESOLUTIONS = (64, 128, 256, 512)


def check_resolution(cls: type, resolution: Any) -> int:
    """``resolution`` as an int if ``cls`` supports it, else a ValueError naming what it does support."""
    supported = tuple(cls.supported_resolutions)
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution not in supported:
        raise ValueError(f"{cls.__name__} supports resolutions {', '.join(map(str, supported))}; got {resolution!r}")
    return int(resolution)


def num_doublings(resolution: int, start: int = 4) -> int:
    """Stride-2 steps between ``start`` x ``start`` and ``resolution`` (64 px from 4 px: 4)."""
    return int(math.log2(resolution // start))


#: |z| above which a component of a truncated latent is drawn again (BigGAN's truncated normal)
TRUNCATION_RADIUS = 2.0


def check_truncation(psi: Any) -> float:
    """``psi`` as a float in (0, 1], else a ValueError saying what truncation means."""
    if isinstance(psi, bool) or not isinstance(psi, (int, float)) or not 0.0 < float(psi) <= 1.0:
        raise ValueError(f"truncation={psi!r} must be a number in (0, 1]: 1 (or null) draws the usual latents, "
                         "smaller values draw them closer to the mean (e.g. 0.7).")
    return float(psi)


def truncated_normal(shape: tuple[int, ...], psi: float, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> Tensor:
    """Standard normal numbers with every component beyond ``TRUNCATION_RADIUS`` redrawn, times ``psi``. Drawn on
    the CPU from ``generator`` when one is given (same numbers on any device)."""
    where = "cpu" if generator is not None else device
    z = torch.randn(shape, generator=generator, device=where)
    outside = z.abs() > TRUNCATION_RADIUS
    while bool(outside.any()):
        z[outside] = torch.randn(int(outside.sum()), generator=generator, device=where)
        outside = z.abs() > TRUNCATION_RADIUS
    return (z * psi).to(device or "cpu") if generator is not None else z * psi


def spec_of(network: Generator | Discriminator) -> dict:
    return {"class": registry.class_path(type(network)), "kwargs": dict(network.config)}


def _rebuild(kind: str, spec: dict, state: dict, training: bool) -> nn.Module:
    network = registry.build(kind, spec)
    tensors = [t for t in state.values() if isinstance(t, torch.Tensor)]
    if tensors:
        network.to(tensors[0].device)  # a deepcopy of a network on the GPU stays there
    network.load_state_dict(state)
    return network.train(training)


class _Rebuildable:
    """Pickling (and deepcopy) through ``spec()`` and the state dict: layers with parametrizations (spectral
    norm) refuse to pickle, and ``trainer.strategy=ddp_spawn`` pickles the whole module."""

    def __reduce__(self):
        return _rebuild, (self.kind, self.spec(), self.state_dict(), self.training)


class Generator(_Rebuildable, nn.Module):
    """Base class of every generator. Subclasses build their layers after ``super().__init__(...)``."""

    kind = "generator"
    supported_resolutions: tuple[int, ...] = RESOLUTIONS
    #: short name that checkpoints of format 1 used ("dcgan"); None for newer classes
    legacy_name: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        registry.register("generator", cls)

    def __init__(self, resolution: int, latent_dim: int, **config: Any) -> None:
        super().__init__()
        self.resolution = check_resolution(type(self), resolution)
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        self.latent_dim = int(latent_dim)
        self.config = {"resolution": self.resolution, "latent_dim": self.latent_dim, **config}

    def sample_latents(self, n: int, *, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None, truncation: float | None = None) -> Tensor:
        """``n`` latents as this generator expects them. Drawn on the CPU from ``generator`` when one is given
        (the same numbers on any device), else on ``device``.

        ``truncation`` (psi in (0, 1]) trades variety for fidelity with BigGAN's truncation trick (Brock et al.,
        ICLR 2019): components beyond ``TRUNCATION_RADIUS`` are redrawn, then the latent is scaled by psi, so
        images come from the dense middle of the latent distribution. None or 1: the usual latents, unchanged.
        """
        if truncation is None or float(truncation) == 1.0:
            if generator is not None:
                return torch.randn(n, self.latent_dim, generator=generator).to(device or "cpu")
            return torch.randn(n, self.latent_dim, device=device)
        return truncated_normal((n, self.latent_dim), check_truncation(truncation), generator, device)

    @contextmanager
    def truncation(self, psi: float | None) -> Iterator[None]:
        """Within the block ``forward()`` applies the part of the truncation trick that lives inside the network.
        Truncated images are ``with G.truncation(psi): G(G.sample_latents(n, truncation=psi))``. Here nothing: the
        latent is truncated by ``sample_latents``. A generator that rescales its latent overrides both."""
        yield

    def spec(self) -> dict:
        """What rebuilds this network: its registered class path and constructor arguments (plain types)."""
        return spec_of(self)


class Discriminator(_Rebuildable, nn.Module):
    """Base class of every discriminator."""

    kind = "discriminator"
    supported_resolutions: tuple[int, ...] = RESOLUTIONS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        registry.register("discriminator", cls)

    def __init__(self, resolution: int, **config: Any) -> None:
        super().__init__()
        self.resolution = check_resolution(type(self), resolution)
        self.config = {"resolution": self.resolution, **config}

    def spec(self) -> dict:
        return spec_of(self)

    def self_supervised_loss(self, real: Tensor) -> Tensor | None:
        """An extra loss D minimizes on the real images it sees (FastGAN's reconstruction); None: it has none."""
        return None

    def instance_features(self, images: Tensor) -> Tensor | None:
        """Per-image features ``(B, F)`` that D judges from, for fake-instance discrimination
        (artgan/instance_contrast.py); None: this D offers none."""
        return None

    def judge_with_features(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(self(images), self.instance_features(images))``; a subclass that can, computes both in one pass."""
        return self(images), self.instance_features(images)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer updates: everything that requires a gradient (a frozen backbone does not)."""
        return [p for p in self.parameters() if p.requires_grad]
