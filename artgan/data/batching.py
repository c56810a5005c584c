"""The one rule about batches and dataset size, used by config validation (before anything is decoded) and by
the datamodule (with the real image count)."""

from __future__ import annotations

from artgan.errors import ConfigError


def check_batch_fits(batch_size: int, num_images: int, world_size: int, data_name: str, more_images: str) -> None:
    """Every device needs at least one full batch per epoch (batches are dropped when incomplete).

    ``data_name`` names the images in the message (e.g. "data.root='/data/art'") and ``more_images`` the
    setting that would add images (e.g. "data.subset=null").
    """
    per_device = num_images // max(1, world_size)
    if batch_size <= per_device:
        return
    where = (f"each of the {world_size} devices gets {per_device} of the {num_images} images" if world_size > 1
             else f"has {num_images} image{'s' if num_images != 1 else ''}")
    raise ConfigError(
        f"data.batch_size={batch_size} is larger than the dataset: {data_name} {where}, so an epoch would have no "
        f"full batch. Use data.batch_size <= {max(per_device, 1)}, or more images ({more_images})."
    )
