"""Fake-instance discrimination (InsGen, Yang et al., NeurIPS 2021; FakeCLR, Li et al., ECCV 2022): a contrastive
task on generated images that D and G share.

Each generated image ``G(z)`` and its neighbour ``G(z + noise)`` are two views of one instance; D's features,
through a small projection head, must tell every image from the others (InfoNCE against a queue of earlier
images' embeddings). D learns features that separate one painting from another, not only painted from real, and
G, trained on the same objective, is rewarded for images D can tell apart: a push towards variety from D's point
of view, which the adversarial loss alone does not give. Keys (the neighbours' embeddings) carry no gradient,
as in MoCo; they are computed once per step, before D's update, and join the queue after G's.

The module calls :meth:`keys` on the neighbours, :meth:`loss` with the embeddings of the images themselves in
both the D and the G step, and :meth:`enqueue` at the end of the step. The head's parameters train with D's
optimizer; the queue is a buffer, so checkpoints and exact resume keep it. Under DDP, whose buffer broadcast
(on by default) hands every rank rank 0's buffers each step, all ranks use rank 0's queue; no collective of its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FakeInstanceContrast(nn.Module):
    """Args:
        weight: the loss weight in both D's and G's objective (> 0).
        temperature: InfoNCE temperature (InsGen's 0.2).
        queue_size: how many earlier keys serve as negatives.
        latent_noise: standard deviation of the latent perturbation that makes an image's second view.
        embed_dim, hidden: the projection head, D features -> hidden -> embed_dim (unit length).
    """

    def __init__(self, weight: float = 1.0, temperature: float = 0.2, queue_size: int = 4096,
                 latent_noise: float = 0.2, embed_dim: int = 128, hidden: int = 256):
        super().__init__()
        for name, value in (("weight", weight), ("temperature", temperature), ("latent_noise", latent_noise)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"model.instance_contrast.{name} must be a number > 0, got {value!r}.")
        for name, value in (("queue_size", queue_size), ("embed_dim", embed_dim), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model.instance_contrast.{name} must be a positive integer, got {value!r}.")
        self.weight, self.temperature, self.latent_noise = float(weight), float(temperature), float(latent_noise)
        self.embed_dim, self.hidden = int(embed_dim), int(hidden)
        self.head: nn.Module | None = None
        # Random unit vectors until real keys replace them (MoCo's start).
        self.register_buffer("queue", F.normalize(torch.randn(int(queue_size), self.embed_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def attach(self, feature_dim: int) -> None:
        """Build the projection head for D features of ``feature_dim`` values (the module calls it once)."""
        self.head = nn.Sequential(nn.Linear(feature_dim, self.hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(self.hidden, self.embed_dim))

    def perturb(self, latents: Tensor) -> Tensor:
        """The latents of each image's second view."""
        return latents + self.latent_noise * torch.randn_like(latents)

    def embed(self, features: Tensor) -> Tensor:
        if self.head is None:
            raise RuntimeError("FakeInstanceContrast.attach(feature_dim) must be called before use.")
        return F.normalize(self.head(features.float().flatten(1)), dim=1)

    @torch.no_grad()
    def keys(self, features: Tensor) -> Tensor:
        return self.embed(features)

    def loss(self, queries: Tensor, keys: Tensor) -> Tensor:
        """InfoNCE: each query's own key against the queue, weighted by ``weight``."""
        positive = (queries * keys).sum(1, keepdim=True)
        negative = queries @ self.queue.T
        logits = torch.cat([positive, negative], dim=1) / self.temperature
        target = torch.zeros(len(queries), dtype=torch.long, device=queries.device)
        return self.weight * F.cross_entropy(logits, target)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        n, size = len(keys), len(self.queue)
        index = (self.queue_ptr + torch.arange(n, device=keys.device)) % size  # no host sync on a GPU
        self.queue[index] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + n) % size)
