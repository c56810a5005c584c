"""Data pipeline: discovery, preprocessing, procedural generator, decode-once cache, ArtDataModule.

Imports are lazy so that `import artgan.data.preprocess` (e.g. in a decode worker) stays light.
"""

__all__ = ["ArtDataModule", "denormalize", "to_model_range", "to_uint8"]


def __getattr__(name):
    if name == "ArtDataModule":
        from .datamodule import ArtDataModule

        return ArtDataModule
    if name in ("denormalize", "to_model_range", "to_uint8"):
        from . import transforms

        return getattr(transforms, name)
    raise AttributeError(name)
