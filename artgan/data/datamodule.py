"""ArtDataModule: the decode-once cache served as uint8 batches (B, 3, R, R)."""

import logging

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from artgan.errors import ArtGANError
from artgan.paths import absolute_path

from . import procedural
from .batching import check_batch_fits
from .cache import MAX_LISTED, cache_key, decode_folder, file_identity, load_or_build
from .discovery import KAGGLE_HINT, find_images, plural
from .holdout import check_holdout, holdout_mask
from .preprocess import PreprocessSettings

log = logging.getLogger(__name__)

# Random crops need spare pixels: the cache then stores images at 1.125x the resolution.
RANDOM_CROP_MARGIN = 1.125


class CachedImages(Dataset):
    """Indexes the cached uint8 array; random crop and horizontal flip are done per batch."""

    def __init__(self, images: np.ndarray, resolution: int, hflip: bool, random_crop: bool,
                 index: np.ndarray | None = None):
        self.images, self.resolution, self.hflip, self.random_crop = images, resolution, hflip, random_crop
        self.index = np.arange(len(images)) if index is None else index  # the training images' rows

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        # One fancy-indexing read for the whole batch: far cheaper than B single reads + collate.
        # Crops and flips are done in NumPy: torch.flip on uint8 is ~50x slower on CPU.
        batch = self.images[self.index[np.asarray(indices)]]
        r, size = self.resolution, batch.shape[-1]
        if size > r:
            if self.random_crop:
                ys = torch.randint(0, size - r + 1, (len(batch),)).tolist()
                xs = torch.randint(0, size - r + 1, (len(batch),)).tolist()
                batch = np.stack(
                    [img[:, y : y + r, x : x + r] for img, y, x in zip(batch, ys, xs, strict=True)]
                )
            else:
                o = (size - r) // 2
                batch = batch[:, :, o : o + r, o : o + r]
        if self.hflip:
            flip = (torch.rand(len(batch)) < 0.5).numpy()  # torch RNG: seeded per worker by the DataLoader
            batch[flip] = batch[flip][..., ::-1]
        return torch.from_numpy(np.ascontiguousarray(batch))


def collate_batch(batch):
    """The dataset already returns a stacked batch (via __getitems__)."""
    return batch if isinstance(batch, torch.Tensor) else torch.stack(batch)


class ArtDataModule(L.LightningDataModule):
    """Images for GAN training, from the procedural generator or a folder of images.

    `batch_size` is per device: with trainer.devices=2 each step sees 2 x batch_size images, and
    Lightning's DistributedSampler gives each rank its own shard of the data.

    `holdout` (a fraction or a count, artgan/data/holdout.py) keeps images out of training: the dataloader,
    `real_images` and `dataset_size` see the training images only, `heldout_images` and `heldout_size` the rest.
    """

    def __init__(
        self,
        source: str = "procedural",
        root: str | None = None,
        resolution: int = 64,
        batch_size: int = 64,
        num_workers: int = 0,
        subset: int | None = None,
        cache_dir: str = ".cache/artgan",
        hflip: bool = True,
        crop: str = "center",
        border_crop: float = 0.0,
        trim_borders: bool = False,
        trim_tolerance: float = 0.1,
        num_images: int = 2800,
        seed: int = 0,
        pin_memory: bool = False,
        decode_workers: int | None = None,
        progress: bool = True,
        holdout: float | int | None = None,
        holdout_seed: int = 0,
    ):
        super().__init__()
        self.source, self.root, self.resolution = source, root, int(resolution)
        self.batch_size, self.num_workers, self.pin_memory = int(batch_size), int(num_workers), pin_memory
        self.subset, self.cache_dir, self.hflip, self.crop = subset, cache_dir, hflip, crop
        self.num_images, self.seed = int(num_images), int(seed)
        self.decode_workers, self.progress = decode_workers, progress
        self.holdout, self.holdout_seed = holdout, int(holdout_seed)
        cache_size = round(self.resolution * RANDOM_CROP_MARGIN) if crop == "random" else self.resolution
        self.settings = PreprocessSettings(
            size=cache_size,
            border_crop=float(border_crop),
            trim_borders=bool(trim_borders),
            trim_tolerance=float(trim_tolerance),
        )
        self._images: np.ndarray | None = None
        self._train_index = self._heldout_index = np.zeros(0, dtype=np.int64)
        self.manifest: dict | None = None
        self._plan = None

    def validate(self) -> None:
        """Raise ArtGANError for bad settings (cheap; called before any cache work)."""
        # Not in __init__: Hydra's instantiate wraps constructor errors in InstantiationException,
        # which would hide the one-paragraph message behind a traceback.
        if self.source not in ("procedural", "folder"):
            raise ArtGANError(f"data.source={self.source!r} is not supported; use 'procedural' or 'folder'.")
        if self.source == "folder" and not self.root:
            raise ArtGANError(
                "data.root is not set: point it at a folder of images, e.g. data=abstract_art "
                "data.root=/path/to/Abstract_gallery. " + KAGGLE_HINT
            )
        if self.crop not in ("center", "random"):
            raise ArtGANError(f"data.crop={self.crop!r} is not supported; use 'center' or 'random'.")
        if not 0.0 <= self.settings.border_crop < 0.5:
            raise ArtGANError(
                f"data.border_crop={self.settings.border_crop} must be in [0, 0.5): it is the fraction removed from each side."
            )
        if self.resolution < 4 or self.batch_size < 1:
            raise ArtGANError(
                f"Bad data settings: resolution={self.resolution}, batch_size={self.batch_size}; both must be positive."
            )
        if self.subset is not None and self.subset < 1:
            raise ArtGANError(
                f"data.subset={self.subset} must be a positive number of images, or null for all."
            )
        self.holdout = check_holdout(self.holdout)

    # ---- cache identity -------------------------------------------------------------------------
    def _identity(self):
        """(identity dict, build function); the file scan is done once per process."""
        if self._plan is None:
            self.validate()
            if self.source == "procedural":
                n = self.num_images if self.subset is None else min(self.subset, self.num_images)
                identity = {
                    "source": "procedural",
                    "num_images": n,
                    "seed": self.seed,
                    "size": self.settings.size,
                    "generator": procedural.GENERATOR_VERSION,
                }

                def build():
                    images = procedural.render_images(
                        n, self.seed, self.settings.size, workers=self.decode_workers, progress=self.progress
                    )
                    return images, {}
            else:
                root = absolute_path(self.root)
                files = find_images(root)
                identity = {
                    "source": "folder",
                    "files": file_identity(files, root),
                    "subset": self.subset,
                    "settings": self.settings.__dict__,
                }

                def build():
                    return decode_folder(
                        files,
                        root,
                        self.settings,
                        limit=self.subset,
                        workers=self.decode_workers,
                        progress=self.progress,
                    )

            self._plan = (identity, build)
        return self._plan

    @property
    def fingerprint(self) -> str:
        """The training images' identity: changes whenever they would (files, sizes, mtimes, ctimes, settings, code
        version, holdout). Keys the cached real features."""
        return self._part_key("train")

    @property
    def heldout_fingerprint(self) -> str:
        """The held-out images' identity (keys their cached features)."""
        return self._part_key("heldout")

    def _part_key(self, part: str) -> str:
        identity = self._identity()[0]
        if self.holdout is None:
            return cache_key(identity) if part == "train" else ""
        return cache_key({**identity, "holdout": self.holdout, "holdout_seed": self.holdout_seed, "part": part})

    # ---- Lightning hooks ------------------------------------------------------------------------
    def prepare_data(self) -> None:
        # Lightning calls this on local rank 0 only; the others wait, then load in setup().
        self._load()

    def setup(self, stage: str | None = None) -> None:
        self._load()

    def _load(self) -> None:
        if self._images is not None:
            return
        identity, build = self._identity()
        self._images, self.manifest = load_or_build(
            absolute_path(self.cache_dir), identity, build, on_hit=self._warn_still_skipped
        )
        self._split()
        log.info(
            "Data: %s at %d px (cache %s)",
            plural(len(self._images), f"{self.source} image"),
            self.resolution,
            self.manifest["key"],
        )

    def _split(self) -> None:
        """Training and held-out rows of the cache, by a hash of each image's name (artgan/data/holdout.py)."""
        n = len(self._images)
        files = (self.manifest or {}).get("files")
        names = list(files) if files and len(files) == n else [str(i) for i in range(n)]
        held = holdout_mask(names, self.holdout, self.holdout_seed)
        self._train_index, self._heldout_index = np.flatnonzero(~held), np.flatnonzero(held)
        if self.holdout is None:
            return
        if len(self._train_index) < 2 or len(self._heldout_index) < 1:
            raise ArtGANError(
                f"data.holdout={self.holdout} leaves {len(self._train_index)} training and "
                f"{len(self._heldout_index)} held-out images of the {n} in {self.describe()}: each side needs some. "
                "Use a smaller fraction or count (or null to train on every image)."
            )
        log.info("Data: %s held out of training (data.holdout=%s, holdout_seed=%d); %s left to train on",
                 plural(len(self._heldout_index), "image"), self.holdout, self.holdout_seed,
                 plural(len(self._train_index), "image"))

    def _warn_still_skipped(self, manifest: dict) -> None:
        """On a cache hit, repeat that some files are left out: the build's warning was in an earlier run."""
        skipped = manifest.get("skipped") or []
        if not skipped or getattr(self.trainer, "global_rank", 0) != 0:  # once, not once per DDP rank
            return
        log.warning(
            "data.root=%s: the cached images leave out %s that could not be used when the cache was built "
            "(%s%s; all are listed in %s). Fix or delete them: a file whose content or permissions change "
            "is picked up by the next run.",
            self.root,
            plural(len(skipped), "file"),
            "; ".join(f"{p}: {why}" for p, why in skipped[:MAX_LISTED]),
            "; ..." if len(skipped) > MAX_LISTED else "",
            absolute_path(self.cache_dir) / manifest["key"] / "manifest.json",
        )

    def train_dataloader(self) -> DataLoader:
        self._load()
        world = self.trainer.world_size if self.trainer is not None else 1
        check_batch_fits(self.batch_size, self.dataset_size, world, self.describe(),
                         "data.num_images" if self.source == "procedural" else "data.subset=null")
        dataset = CachedImages(self._images, self.resolution, self.hflip, random_crop=self.crop == "random",
                               index=self._train_index)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_batch,
        )

    def describe(self) -> str:
        """The images in user terms, for messages."""
        return "the procedural data set" if self.source == "procedural" else f"data.root={str(self.root)!r}"

    # ---- for metrics and validation -------------------------------------------------------------
    @property
    def dataset_size(self) -> int:
        """Training images (held-out ones excluded)."""
        self._load()
        return len(self._train_index)

    @property
    def heldout_size(self) -> int:
        """Images kept out of training by ``holdout`` (0 without)."""
        self._load()
        return len(self._heldout_index)

    def real_images(self, n: int | None = None) -> torch.Tensor:
        """The first n training images, unflipped and center-cropped: uint8 (N, 3, R, R)."""
        self._load()
        return self._rows(self._train_index[:n])

    def heldout_images(self, n: int | None = None) -> torch.Tensor:
        """The first n held-out images, prepared like ``real_images``: uint8 (N, 3, R, R)."""
        self._load()
        return self._rows(self._heldout_index[:n])

    def _rows(self, index: np.ndarray) -> torch.Tensor:
        if len(index) == len(self._images):  # no holdout: a slice reads the memmap sequentially
            images = self._images[:]
        else:
            images = self._images[index]
        o = (images.shape[-1] - self.resolution) // 2
        images = images[:, :, o : o + self.resolution, o : o + self.resolution]
        return torch.from_numpy(np.array(images))  # a copy: the cache is read-only
