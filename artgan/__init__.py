"""ArtGAN: train, sweep, compare and sample GANs that paint abstract art."""

__version__ = "0.1.0"
