"""The curator's panel: at each evaluation, is the generator copying paintings, and which does it never paint?

After every evaluation of the metrics callback, from what that evaluation already measured (the evaluator keeps
this rank's generated features and small copies of the images, ``Evaluator.last``: nothing is generated or
extracted again), every logger that shows images (TensorBoard, MLflow, W&B: artgan/callbacks/log_media.py) gets,
at the step of the metrics:

* ``curator/nearest_paintings``: the generated images closest to a training painting, each beside its nearest
  paintings with cosine distances (the ``generate.py mode=compare`` picture);
* ``curator/nn_histogram``: the distances of generated images to their nearest painting, against the distances
  of paintings to their nearest other painting (and of held-out paintings to the nearest training painting when
  ``data.holdout`` is set): generated images much closer than paintings are to each other are copies;
* ``curator/least_covered``: the paintings farthest from every generated image, each beside the generated images
  nearest it: what the generator does not paint;
* scalars ``curator/nn_median_ratio`` (median generated-to-painting distance over median painting-to-painting
  distance; well below 1: copying) and ``curator/copies`` (fraction of generated images closer to a painting than
  the closest 1% of painting pairs).

Only global rank 0 draws, from its own share of the generated images, and it calls no collective (the other ranks
do nothing here), so it cannot hang a DDP run. ``enabled: auto`` turns it on for folders of paintings and off for
the procedural data. Cost per evaluation: docs/monitoring.md.
"""

from __future__ import annotations

import io
import logging
import time

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from matplotlib.figure import Figure
from PIL import Image

from artgan import compat
from artgan.callbacks.log_media import flush, log_image
from artgan.callbacks.metrics import MetricsCallback
from artgan.data.transforms import downscale
from artgan.errors import ConfigError
from artgan.generate.images import neighbours_picture
from artgan.metrics.diversity import cosine_distances
from artgan.metrics.neighbours import memorization, nearest_neighbours, real_leave_one_out

log = logging.getLogger(__name__)


def histogram_picture(generated: torch.Tensor, real: torch.Tensor, heldout: torch.Tensor | None = None,
                      bins: int = 40, dpi: int = 100) -> Image.Image:
    """Overlaid densities of nearest-neighbour distances: generated -> nearest painting against painting -> nearest
    other painting (and held-out painting -> nearest training painting)."""
    series = [(generated, "generated → nearest painting", "#d62728"),
              (real, "painting → nearest other painting", "#1f77b4")]
    if heldout is not None and len(heldout):
        series.append((heldout, "held-out painting → nearest training painting", "#2ca02c"))
    top = max(float(s.max()) for s, _, _ in series)
    edges = np.linspace(0.0, max(top, 1e-6) * 1.05, bins + 1)
    fig = Figure(figsize=(6.4, 3.6), dpi=dpi)
    ax = fig.subplots()
    for values, label, color in series:
        v = values.double().numpy()
        ax.hist(v, bins=edges, density=True, alpha=0.45, color=color, label=f"{label} (median {np.median(v):.3f})")
        ax.axvline(float(np.median(v)), color=color, lw=1.2, ls="--")
    ax.set_xlabel("cosine distance to the nearest neighbour (EfficientNet-Lite0 features)")
    ax.set_ylabel("density")
    ax.set_title("Memorization check: generated images should not sit closer than paintings do", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    with Image.open(buffer) as im:
        return im.convert("RGB")


class CuratorCallback(Callback):
    """Args:
        enabled: true, false or "auto" (on for a folder of images, ``data=abstract_art``; off for procedural data).
        num_rows: generated images shown beside their nearest paintings.
        num_least_covered: paintings shown in the least-covered panel.
        k: neighbours per row.
        cell: picture cell in pixels (the evaluator keeps generated images at most this large).
        extractor: feature space of the distances (an extractor of ``evaluator.fid.extractors``).
    """

    def __init__(self, enabled: bool | str = "auto", num_rows: int = 8, num_least_covered: int = 8, k: int = 4,
                 cell: int = 64, extractor: str = "effnet", bins: int = 40):
        super().__init__()
        if enabled not in (True, False, "auto"):
            raise ConfigError(f"callbacks.curator.enabled={enabled!r}: use true, false or auto (on for folders of "
                              "paintings, off for the procedural data).")
        if min(num_rows, num_least_covered, k, cell, bins) < 1:
            raise ConfigError("callbacks.curator.num_rows, num_least_covered, k, cell and bins must all be >= 1.")
        self.enabled, self.num_rows, self.num_least_covered, self.k = enabled, num_rows, num_least_covered, k
        self.cell, self.extractor, self.bins = int(cell), str(extractor), int(bins)
        self.metrics: MetricsCallback | None = None
        self._shown = -1  # Evaluation.index of the last evaluation drawn
        self._real_nn: torch.Tensor | None = None  # paintings' leave-one-out distances: the real set is fixed
        self._paintings: torch.Tensor | None = None  # the evaluated training images at ``cell`` px, loaded once
        self.seconds: list[float] = []  # time per panel, for docs and tests

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        on = self.enabled
        if on == "auto":
            on = getattr(getattr(trainer, "datamodule", None), "source", None) == "folder"
        metrics = next((cb for cb in trainer.callbacks if isinstance(cb, MetricsCallback)), None)
        if self.enabled is True and metrics is None:  # "auto" stays quiet: benches turn the metrics off
            rank_zero_warn("The curator panel draws what the metrics callback measured, and callbacks.metrics is "
                           "off: no panel.")
        self.metrics = metrics if on else None
        if self.metrics is not None and trainer.is_global_zero:
            self.metrics.evaluator.keep_images = max(self.metrics.evaluator.keep_images, self.cell)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning writes this epoch's metrics/* one step back (fit_loop decrements the step around its epoch-end
        # logging): the panel goes to the same x value, so a slider position shows one evaluation.
        self._show(trainer, compat.logger_step(trainer) - 1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The metrics callback's evaluation of a run that stopped mid-epoch, logged at the current step.
        self._show(trainer, compat.logger_step(trainer))

    def _show(self, trainer: L.Trainer, step: int) -> None:
        if self.metrics is None or not trainer.is_global_zero:
            return
        evaluator = self.metrics.evaluator
        last = evaluator.last
        if last is None or last.index == self._shown:
            return
        self._shown = last.index
        if self.extractor not in last.features or last.images is None:
            rank_zero_warn(f"The curator panel needs {self.extractor} features from the evaluator (evaluator.fid "
                           f"with the {self.extractor} extractor); no panel.")
            self.metrics = None
            return
        start = time.perf_counter()
        if self._paintings is None or len(self._paintings) != evaluator.real_count:
            # The rows the real features were computed from, kept small: the panel shows a few dozen of them.
            self._paintings = torch.cat([downscale(chunk, self.cell) for chunk in
                                         trainer.datamodule.real_images(evaluator.real_count).split(256)])
        pictures, scalars = self.panel(last, self._paintings)
        for tag, picture in pictures.items():
            log_image(trainer, f"curator/{tag}", picture, step)
        for lg in trainer.loggers:
            lg.log_metrics({f"curator/{k}": v for k, v in scalars.items()}, step=step)
        flush(trainer)  # visible in TensorBoard while the next epoch trains
        self.seconds.append(time.perf_counter() - start)
        log.info("Curator panel in %.2fs: nearest-painting median ratio %.3f, copies %.1f%%", self.seconds[-1],
                 scalars["nn_median_ratio"], 100 * scalars["copies"])

    def panel(self, last, real_images: torch.Tensor) -> tuple[dict[str, Image.Image], dict[str, float]]:
        """The pictures and scalars of one evaluation (``last``: an ``Evaluation``), on the CPU."""
        fake, real, images = last.features[self.extractor], last.real_features[self.extractor], last.images
        distances = cosine_distances(fake, real).float()  # (N_fake, N_real), both panels read it
        nn_dist, nn_idx = distances.topk(min(self.k, len(real)), dim=1, largest=False)
        if self._real_nn is None or len(self._real_nn) != len(real):
            self._real_nn = real_leave_one_out(real)
        real_nn = self._real_nn
        closest = nn_dist[:, 0].argsort()[: self.num_rows]
        pictures = {"nearest_paintings": neighbours_picture(
            images[closest], real_images, nn_idx[closest], nn_dist[closest], cell=self.cell,
            left="generated", right="{k} nearest training paintings")}
        to_fake = distances.T  # (N_real, N_fake)
        farthest = to_fake.min(dim=1).values.argsort(descending=True)[: self.num_least_covered]
        cover_dist, cover_idx = to_fake[farthest].topk(min(self.k, len(fake)), dim=1, largest=False)
        pictures["least_covered"] = neighbours_picture(
            real_images[farthest], images, cover_idx, cover_dist, cell=self.cell, left="least covered",
            right="{k} nearest generated images")
        heldout = last.heldout_features.get(self.extractor)
        heldout_nn = nearest_neighbours(heldout, real, 1)[0][:, 0] if heldout is not None else None
        pictures["nn_histogram"] = histogram_picture(nn_dist[:, 0], real_nn, heldout_nn, self.bins)
        check = memorization(nn_dist[:, 0], real_nn)
        return pictures, {"nn_median_ratio": check["median_ratio"], "copies": check["fraction_closer_than_real_p1"]}
