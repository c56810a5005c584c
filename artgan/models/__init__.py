"""Generator and discriminator architectures."""

from artgan.models.dcgan import Discriminator, Generator, build_generator

__all__ = ["Discriminator", "Generator", "build_generator"]
