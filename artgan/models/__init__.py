"""Generators and discriminators: the contracts (``base``), the registry that rebuilds them, the zoo."""

from artgan.models.base import Discriminator, Generator
from artgan.models.dcgan import DCGANDiscriminator, DCGANGenerator
from artgan.models.registry import build

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "Discriminator", "Generator", "build"]
