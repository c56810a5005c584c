"""FID and KID with real-image features cached on disk, correct under DDP.

Design
------
* The **real** side is a fixed reference set: its features are computed once per (dataset
  fingerprint, resolution, extractor, number of real images), saved atomically to
  ``<cache_dir>/real_<name>_<R>px_n<N>_<hash>.pt`` and loaded on every later run
  (:func:`load_or_compute_real_features`). They are plain (non-synced) buffers of
  :class:`FeatureDistances`: every rank holds the same copy, so nothing is double counted.
* The **fake** side is torchmetrics state: the feature sum, the sum of outer products and the count
  (``dist_reduce_fx="sum"``), and the features themselves for KID (``dist_reduce_fx="cat"``). Each
  DDP rank updates with its share of generated images; ``compute()`` (called on every rank) syncs
  them, so all ranks return the same numbers, equal to a single process fed all the images.
* FID is the Frechet distance of torchmetrics' ``FrechetInceptionDistance`` (same mean / covariance
  estimators from the synced sums), but its matrix-square-root trace ``Tr sqrt(S_r S_f)`` is computed
  as ``sum sqrt(eigvalsh(R S_f R))`` with ``R = sqrt(S_r)`` precomputed once for the real set: the
  same value (``R S_f R`` is similar to ``S_r S_f``; the test checks it against torchmetrics'
  ``_compute_fid``), symmetric hence numerically stable, and ~10x faster than the general ``eigvals``
  torchmetrics uses (2.4 s -> 0.2 s for 1280-d on 2 CPU cores). KID is ``torchmetrics.image.kid.poly_mmd`` (cubic polynomial
  kernel, unbiased MMD^2) averaged over random subsets like ``KernelInceptionDistance.compute``, but
  with a seeded generator (reproducible, identical on all ranks) and a subset size that shrinks to
  the number of available samples.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.image.kid import maximum_mean_discrepancy, poly_kernel, poly_mmd
from torchmetrics.utilities.data import dim_zero_cat

from artgan.errors import ArtGANError
from artgan.io import atomic_torch_save
from artgan.metrics.diversity import diversity
from artgan.metrics.prdc import nearest_neighbour_distances, prdc

log = logging.getLogger(__name__)

#: sets larger than this (real or generated) get KID's kernels per subset instead of whole (memory: N^2 doubles)
KID_FULL_KERNEL_MAX = 4096

__all__ = [
    "CACHE_FORMAT_VERSION",
    "FeatureDistances",
    "extract_features",
    "frechet_distance",
    "load_or_compute_real_features",
    "real_features_cache_path",
    "try_build_feature_distances",
]

CACHE_FORMAT_VERSION = 1

ImagesOrFactory = Tensor | Callable[[], Tensor]


def _to_model_range(batch: Tensor) -> Tensor:
    """uint8 [0, 255] -> float [-1, 1]; float input is assumed to be in [-1, 1] already."""
    if batch.dtype == torch.uint8:
        return batch.float().div_(127.5).sub_(1.0)
    return batch.float()


def _device_of(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def extract_features(extractor: nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    """Features ``(N, D)`` float32 on the CPU of uint8 or [-1, 1] images, in batches on the extractor's device."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    device = _device_of(extractor)
    out = []
    for start in range(0, images.shape[0], batch_size):
        batch = _to_model_range(images[start : start + batch_size].to(device, non_blocking=True))
        out.append(extractor(batch).float().cpu())
    if not out:
        return torch.zeros(0, int(extractor.num_features))
    return torch.cat(out)


def _sqrtm_psd(mat: Tensor) -> Tensor:
    """Symmetric PSD square root (negative eigenvalues from round-off are clamped to 0)."""
    sym = 0.5 * (mat + mat.T)
    w, v = torch.linalg.eigh(sym)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def _trace_sqrt_product(sqrt_cov1: Tensor, cov2: Tensor) -> Tensor:
    """``Tr sqrt(cov1 @ cov2)`` given ``sqrt(cov1)``."""
    m = sqrt_cov1 @ cov2 @ sqrt_cov1
    m = 0.5 * (m + m.T)
    return torch.linalg.eigvalsh(m).clamp_min(0).sqrt().sum()


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor, sqrt_cov1: Tensor | None = None) -> float:
    """``||mu1 - mu2||^2 + Tr(cov1 + cov2 - 2 sqrt(cov1 cov2))`` in float64."""
    mu1, cov1, mu2, cov2 = (t.double() for t in (mu1, cov1, mu2, cov2))
    r = _sqrtm_psd(cov1) if sqrt_cov1 is None else sqrt_cov1.double()
    c = _trace_sqrt_product(r, cov2)
    return float((mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2.0 * c)


# ---------------------------------------------------------------------------------------------
# Real-feature cache
# ---------------------------------------------------------------------------------------------


def _cache_meta(extractor: nn.Module, fingerprint: str, resolution: int, num_images: int | None) -> dict:
    return {
        "format": CACHE_FORMAT_VERSION,
        "fingerprint": str(fingerprint),
        "resolution": int(resolution),
        "extractor": str(extractor.name),
        "extractor_key": str(getattr(extractor, "cache_key", extractor.name)),
        "num_features": int(extractor.num_features),
        "num_images": "all" if num_images is None else int(num_images),
    }


def real_features_cache_path(
    cache_dir: str | os.PathLike, extractor: nn.Module, *, fingerprint: str, resolution: int, num_images: int | None
) -> Path:
    """Where the real features for this (dataset, resolution, extractor, count) live."""
    meta = _cache_meta(extractor, fingerprint, resolution, num_images)
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    n = meta["num_images"]
    return Path(cache_dir) / f"real_{extractor.name}_{int(resolution)}px_n{n}_{digest}.pt"


def _try_load(path: Path, meta: dict) -> Tensor | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        stored = blob["meta"]
        feats = blob["features"]
    except Exception as e:  # noqa: BLE001 - a corrupt cache is recomputed, never fatal
        log.warning("Ignoring unreadable real-feature cache %s (%s); recomputing it.", path, e)
        return None
    stored_key = {k: stored.get(k) for k in meta}
    if stored_key != meta or feats.dim() != 2 or feats.shape[1] != meta["num_features"]:
        log.warning("Real-feature cache %s does not match the current settings; recomputing it.", path)
        return None
    return feats.float()


def _compute_and_save(extractor: nn.Module, images: ImagesOrFactory, path: Path, meta: dict, batch_size: int) -> Tensor:
    imgs = images() if callable(images) else images
    if imgs.shape[0] < 2:
        raise ArtGANError(
            f"FID/KID need at least 2 real images, got {imgs.shape[0]}. Add images to the dataset or raise "
            "callbacks.metrics.fid.num_real."
        )
    log.info("Computing %s features of %d real images (cached in %s)", extractor.name, imgs.shape[0], path)
    feats = extract_features(extractor, imgs, batch_size=batch_size)
    stored = dict(meta, num_images_actual=int(feats.shape[0]), torch=str(torch.__version__))
    try:
        atomic_torch_save({"meta": stored, "features": feats}, path)
    except OSError as e:
        log.warning("Could not write the real-feature cache %s (%s); continuing without it.", path, e)
    return feats


def load_or_compute_real_features(
    extractor: nn.Module,
    images: ImagesOrFactory,
    *,
    cache_dir: str | os.PathLike,
    fingerprint: str,
    resolution: int,
    num_images: int | None = None,
    batch_size: int = 64,
) -> Tensor:
    """Real-image features ``(N, D)`` float32 (CPU), from the disk cache or computed once and cached.

    ``images`` is a uint8 ``(N, 3, R, R)`` tensor (or float in [-1, 1]) or a zero-argument callable
    returning one (e.g. ``lambda: datamodule.real_images(n)``); the callable is only called on a cache
    miss. ``num_images`` is the requested count (``None`` = all) and is part of the cache key together
    with ``fingerprint`` (the dataset), ``resolution`` and the extractor's ``cache_key``.

    Under ``torch.distributed``, all ranks must call this: rank 0 loads or computes and writes the file,
    the others wait at a barrier and then load it (if they cannot see it, e.g. a node-local cache
    directory, they compute it themselves). The write is atomic (temporary file + ``os.replace``).
    """
    meta = _cache_meta(extractor, fingerprint, resolution, num_images)
    path = real_features_cache_path(
        cache_dir, extractor, fingerprint=fingerprint, resolution=resolution, num_images=num_images
    )
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if distributed and dist.get_rank() != 0:
        dist.barrier()  # wait for rank 0 to write the cache
        feats = _try_load(path, meta)
        if feats is None:
            feats = _compute_and_save(extractor, images, path, meta, batch_size)
        return feats
    feats = _try_load(path, meta)
    if feats is None:
        feats = _compute_and_save(extractor, images, path, meta, batch_size)
    else:
        log.info("Loaded %d cached %s real features from %s", feats.shape[0], extractor.name, path)
    if distributed:
        dist.barrier()
    return feats


# ---------------------------------------------------------------------------------------------
# The metric
# ---------------------------------------------------------------------------------------------


class FeatureDistances(Metric):
    """FID and KID between a fixed (cached) real feature set and accumulated generated images.

    ``update(images)`` / ``update_fake(images)`` takes generated images in [-1, 1] (or uint8);
    ``compute()`` returns ``{"fid_<name>", "kid_<name>", "kid_<name>_std"}`` as Python floats, where
    ``<name>`` is the extractor's ``name`` (``effnet``, ``inception``), plus, from the same features,
    ``diversity_<name>`` and ``precision_<name>``, ``recall_<name>``, ``density_<name>``, ``coverage_<name>``
    (k-NN manifolds with ``prdc_k`` neighbours, artgan/metrics/prdc.py; ``prdc_k=0`` leaves them out).
    ``reset()`` clears the fake side only. Call :meth:`set_real_features` (or pass ``real_features``) before
    ``compute()``.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(
        self,
        extractor: nn.Module,
        real_features: Tensor | None = None,
        *,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
        kid_degree: int = 3,
        kid_gamma: float | None = None,
        kid_coef: float = 1.0,
        seed: int = 0,
        batch_size: int = 64,
        compute_kid: bool = True,
        prdc_k: int = 3,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if int(kid_subset_size) < 2:
            raise ValueError(f"kid_subset_size must be >= 2, got {kid_subset_size}")
        if int(kid_subsets) < 1:
            raise ValueError(f"kid_subsets must be >= 1, got {kid_subsets}")
        self.extractor = extractor
        self.name = str(extractor.name)
        d = int(extractor.num_features)
        self.num_features = d
        self.kid_subset_size = int(kid_subset_size)
        self.kid_subsets = int(kid_subsets)
        self.kid_degree = int(kid_degree)
        self.kid_gamma = kid_gamma
        self.kid_coef = float(kid_coef)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.compute_kid = bool(compute_kid)
        self.prdc_k = int(prdc_k or 0)
        self._real_radii: Tensor | None = None  # k-NN radii of the real features, computed at the first compute()
        self._real_kernel: Tensor | None = None  # KID's real-real kernel, computed at the first KID

        self.add_state("fake_sum", torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("fake_cov_sum", torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("fake_n", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        if self.compute_kid:
            self.add_state("fake_features", [], dist_reduce_fx="cat")

        # Real side: plain buffers (moved by .to(), not synced, not saved in state_dict).
        self.register_buffer("real_features", torch.zeros(0, d), persistent=False)
        self.register_buffer("real_mean", torch.zeros(d, dtype=torch.float64), persistent=False)
        self.register_buffer("real_cov", torch.zeros(d, d, dtype=torch.float64), persistent=False)
        self.register_buffer("real_cov_sqrt", torch.zeros(d, d, dtype=torch.float64), persistent=False)
        if real_features is not None:
            self.set_real_features(real_features)

    # -- real side -----------------------------------------------------------------------------

    def set_real_features(self, features: Tensor) -> None:
        """Use these ``(N, D)`` real features (identical on every rank) as the reference set."""
        if features.dim() != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"expected real features of shape (N, {self.num_features}), got {tuple(features.shape)}")
        if features.shape[0] < 2:
            raise ValueError(f"need at least 2 real features, got {features.shape[0]}")
        device = self.real_mean.device
        f64 = features.to(device=device, dtype=torch.float64)
        n = f64.shape[0]
        mean = f64.mean(0)
        # Same estimator as torchmetrics' FrechetInceptionDistance (sum of outer products, n - 1).
        cov = (f64.t() @ f64 - n * torch.outer(mean, mean)) / (n - 1)
        self.real_features = features.to(device=device, dtype=torch.float32) if self.compute_kid else features[:0]
        self.real_mean = mean
        self.real_cov = cov
        self.real_cov_sqrt = _sqrtm_psd(cov)
        self._num_real = n
        self._real_radii = None
        self._real_kernel = None  # KID's kernel of the real set with itself, computed at the first KID

    @property
    def num_real(self) -> int:
        return int(getattr(self, "_num_real", 0))

    def prepare_real(
        self,
        images: ImagesOrFactory,
        *,
        cache_dir: str | os.PathLike,
        fingerprint: str,
        resolution: int,
        num_images: int | None = None,
    ) -> None:
        """Load (or compute once and cache) the real features, then :meth:`set_real_features`."""
        feats = load_or_compute_real_features(
            self.extractor,
            images,
            cache_dir=cache_dir,
            fingerprint=fingerprint,
            resolution=resolution,
            num_images=num_images,
            batch_size=self.batch_size,
        )
        self.set_real_features(feats)

    # -- fake side -----------------------------------------------------------------------------

    def update(self, images: Tensor | None = None, features: Tensor | None = None) -> None:  # type: ignore[override]
        """Add generated images (float in [-1, 1] or uint8, (B, 3, H, W)), or their precomputed
        ``(B, D)`` features from the same extractor, to the fake side."""
        if (images is None) == (features is None):
            raise ValueError("pass exactly one of images= or features=")
        if features is None:
            features = extract_features(self.extractor, images, batch_size=self.batch_size)
        self._add_fake_features(features)

    def update_fake(self, images: Tensor) -> None:
        self.update(images=images)

    def update_fake_features(self, features: Tensor) -> None:
        self.update(features=features)

    def _add_fake_features(self, feats: Tensor) -> None:
        if feats.dim() != 2 or feats.shape[1] != self.num_features:
            raise ValueError(f"expected fake features of shape (B, {self.num_features}), got {tuple(feats.shape)}")
        f64 = feats.to(device=self.fake_sum.device, dtype=torch.float64)
        self.fake_sum += f64.sum(0)
        self.fake_cov_sum += f64.t() @ f64
        self.fake_n += f64.shape[0]
        if self.compute_kid:
            self.fake_features.append(feats.to(device=self.fake_sum.device, dtype=torch.float32))

    # -- results -------------------------------------------------------------------------------

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        if self.num_real < 2:
            raise RuntimeError("FeatureDistances has no real features: call prepare_real() or set_real_features()")
        keys = (f"fid_{self.name}", f"kid_{self.name}", f"kid_{self.name}_std")  # + diversity_<name> with KID
        n_fake = int(self.fake_n)
        if n_fake < 2:
            warnings.warn(
                f"FID/KID ({self.name}) need at least 2 generated images, got {n_fake}; returning NaN.", stacklevel=2
            )
            return dict.fromkeys(keys, math.nan)

        mean_fake = self.fake_sum / n_fake
        cov_fake = (self.fake_cov_sum - n_fake * torch.outer(mean_fake, mean_fake)) / (n_fake - 1)
        fid = frechet_distance(self.real_mean, self.real_cov, mean_fake, cov_fake, sqrt_cov1=self.real_cov_sqrt)

        kid_mean = kid_std = math.nan
        out = {keys[0]: fid}
        if self.compute_kid:
            fake = dim_zero_cat(self.fake_features)
            kid_mean, kid_std = self._kid(fake)
            out[f"diversity_{self.name}"] = diversity(fake.cpu(), self.real_features.cpu(), self.seed)["diversity_ratio"]
            out.update(self._prdc(fake))
        return {**out, keys[1]: kid_mean, keys[2]: kid_std}

    def _prdc(self, fake: Tensor) -> dict[str, float]:
        """Precision, recall, density and coverage of ``fake`` against the real features (NaN with <= k of either)."""
        if not self.prdc_k:
            return {}
        names = [f"{m}_{self.name}" for m in ("precision", "recall", "density", "coverage")]
        fake = fake.reshape(-1, self.num_features)
        if min(fake.shape[0], self.num_real) <= self.prdc_k:
            return dict.fromkeys(names, math.nan)
        if self._real_radii is None:
            self._real_radii = nearest_neighbour_distances(self.real_features, self.prdc_k)
        values = prdc(self.real_features, fake, self.prdc_k, real_radii=self._real_radii)
        return {name: values[m] for name, m in zip(names, ("precision", "recall", "density", "coverage"),
                                                   strict=True)}

    def kid_subset_size_for(self, n_real: int, n_fake: int) -> int:
        """The subset size actually used: ``min(kid_subset_size, n_real, n_fake)``."""
        return min(self.kid_subset_size, n_real, n_fake)

    def _kid(self, fake: Tensor) -> tuple[float, float]:
        real = self.real_features.double()
        fake = fake.double().reshape(-1, self.num_features)
        n_real, n_fake = real.shape[0], fake.shape[0]
        m = self.kid_subset_size_for(n_real, n_fake)
        if m < 2:
            return math.nan, math.nan
        if m < self.kid_subset_size and not getattr(self, "_warned_kid_subset", False):
            self._warned_kid_subset = True
            log.info(
                "KID (%s): %d real / %d generated samples, fewer than kid_subset_size=%d; using subsets of %d.",
                self.name, n_real, n_fake, self.kid_subset_size, m,
            )
        # Every subset would be identical when it is the whole of both sets: compute it once.
        subsets = 1 if (m == n_real and m == n_fake) else self.kid_subsets
        g = torch.Generator().manual_seed(self.seed)
        score = self._subset_mmd(real, fake) if max(n_real, n_fake) <= KID_FULL_KERNEL_MAX else (
            lambda ir, if_: poly_mmd(real[ir], fake[if_], self.kid_degree, self.kid_gamma, self.kid_coef))
        scores = []
        for _ in range(subsets):
            ir = torch.randperm(n_real, generator=g)[:m].to(real.device)
            if_ = torch.randperm(n_fake, generator=g)[:m].to(fake.device)
            scores.append(score(ir, if_))
        s = torch.stack(scores)
        return float(s.mean()), float(s.std(unbiased=False))

    def _subset_mmd(self, real: Tensor, fake: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
        """``poly_mmd`` of subsets read from the kernels of the whole sets: each kernel entry is computed once
        instead of once per subset (the real-real kernel once per real set): ~5x faster for 100 subsets of 512 from
        2,000 real and 512 generated features on a 2-core CPU (0.6 s against 3 s)."""
        def kernel(a: Tensor, b: Tensor) -> Tensor:
            return poly_kernel(a, b, self.kid_degree, self.kid_gamma, self.kid_coef)

        if self._real_kernel is None:
            self._real_kernel = kernel(real, real)
        k_rr, k_ff, k_rf = self._real_kernel, kernel(fake, fake), kernel(real, fake)
        return lambda ir, if_: maximum_mean_discrepancy(k_rr[ir][:, ir], k_rf[ir][:, if_], k_ff[if_][:, if_])


def try_build_feature_distances(
    extractor_name: str, weights_path: str | None = None, *, device: torch.device | str | None = None, **kwargs
) -> FeatureDistances | None:
    """Build ``FeatureDistances`` for a configured extractor, or log ONE warning and return ``None``
    when the extractor is unavailable here (e.g. ``inception`` offline without its weights file).

    ``kwargs`` go to :class:`FeatureDistances` (``kid_subset_size``, ``kid_subsets``, ``seed``, ...).
    Unknown extractor names still raise :class:`~artgan.errors.ArtGANError` (a config mistake).
    """
    from artgan.metrics.features import FeatureExtractorUnavailable, build_feature_extractor

    try:
        extractor = build_feature_extractor(extractor_name, weights_path)
    except FeatureExtractorUnavailable as e:
        log.warning("Skipping FID/KID with the %r extractor: %s", extractor_name, e)
        return None
    metric = FeatureDistances(extractor, **kwargs)
    return metric.to(device) if device is not None else metric
