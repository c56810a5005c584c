"""Per-epoch history of losses, D's scores and the evaluation metrics, drawn as PNGs at the end of training.

At every epoch end the callback records the epoch means the module logs (``train/*_epoch``: d_loss,
g_loss, d_real, d_fake, d_acc_real, d_acc_fake) from ``trainer.callback_metrics``. Evaluation metrics
(``metrics/*``) come from the MetricsCallback's own history, which knows exactly when it evaluated
(callback_metrics keeps a metric's last value in the epochs between evaluations). The history is in the
callback's ``state_dict``, so a resumed run plots all its epochs.

At the end of training (global rank 0 only) it writes, with matplotlib's Agg canvas (no pyplot, no
global backend switch), ``<run dir>/plots/``:

* ``losses.png``: D and G loss per epoch;
* ``scores.png``: D's mean score on real and on generated images per epoch (for bce: D(x) and D(G(z))
  as probabilities; the loss's ``score`` otherwise) and D's accuracy on each;
* ``metrics.png``: FID, KID (+- its std over subsets) and the colour-histogram KL / JS over epochs.

Each PNG is also attached to the loggers that keep files (an MLflow artifact under ``plots/``, a W&B image).

The x axis is Lightning's 0-based epoch index, the number in ``checkpoints/epoch_XXXX.ckpt`` and
``samples/epoch_XXXX.png``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from artgan.callbacks.log_media import log_file
from artgan.callbacks.samples import run_dir
from artgan.gan_module import LOGGED_STATS

log = logging.getLogger(__name__)

TRAIN_KEYS = LOGGED_STATS
COLORS = {"d": "tab:blue", "g": "tab:orange", "real": "tab:green", "fake": "tab:red"}


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def _style(ax, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.ticklabel_format(axis="y", useOffset=False)


def _line(ax, xs, ys, label, color=None, **kw) -> bool:
    if not xs:
        return False
    ax.plot(xs, ys, marker="o" if len(xs) <= 40 else None, markersize=3.5, linewidth=1.6, label=label,
            color=color, **kw)
    return True


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=fig.dpi)
    tmp.replace(path)


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _panel(ax, rows: list[dict], series: list[tuple[str, str, str]], title: str, ylabel: str,
           empty_text: str | None = "no epoch finished") -> None:
    """One axes with a line per (key, label, colour) of the per-epoch rows, a legend, or a note if empty."""
    drawn = False
    for key, label, color in series:
        drawn |= _line(ax, *_series(rows, key), label, color)
    _style(ax, title, ylabel)
    if drawn:
        ax.legend(frameon=False)
    elif empty_text:
        _empty(ax, empty_text)


def plot_losses(rows: list[dict], path: Path, dpi: int = 110) -> None:
    fig = Figure(figsize=(7, 4), dpi=dpi)
    _panel(fig.add_subplot(), rows, [("d_loss", "discriminator (D) loss", COLORS["d"]),
                                     ("g_loss", "generator (G) loss", COLORS["g"])],
           "Losses per epoch (epoch means)", "loss")
    _save(fig, path)


def plot_scores(rows: list[dict], path: Path, dpi: int = 110) -> None:
    fig = Figure(figsize=(11, 4), dpi=dpi)
    ax1, ax2 = fig.subplots(1, 2)
    _panel(ax1, rows, [("d_real", "real images: D(x)", COLORS["real"]),
                       ("d_fake", "generated images: D(G(z))", COLORS["fake"])],
           "Discriminator's mean score per epoch", "mean score")
    ax2.axhline(0.5, color="0.5", linestyle=":", linewidth=1)
    ax2.set_ylim(-0.03, 1.03)
    _panel(ax2, rows, [("d_acc_real", "real called real", COLORS["real"]),
                       ("d_acc_fake", "generated called fake", COLORS["fake"])],
           "Discriminator's accuracy per epoch", "accuracy", empty_text=None)
    _save(fig, path)


def plot_metrics(rows: list[dict], path: Path, dpi: int = 110) -> None:
    keys = sorted({k for r in rows for k in r if k.startswith("metrics/")})
    fids = [k for k in keys if k.startswith("metrics/fid_")]
    kids = [k for k in keys if k.startswith("metrics/kid_") and not k.endswith("_std")]
    kls = [k for k in ("metrics/kl_real_fake", "metrics/kl_fake_real", "metrics/js") if k in keys]
    fig = Figure(figsize=(14, 4), dpi=dpi)
    ax_fid, ax_kid, ax_kl = fig.subplots(1, 3)
    for k in fids:
        _line(ax_fid, *_series(rows, k), k.split("_", 1)[1])
    _style(ax_fid, "FID (lower is better)", "FID")
    for k in kids:
        xs, ys = _series(rows, k)
        if _line(ax_kid, xs, ys, k.split("_", 1)[1]):
            std = dict(zip(*_series(rows, k + "_std"), strict=True))
            if std:
                lo = [y - std.get(x, 0.0) for x, y in zip(xs, ys, strict=True)]
                hi = [y + std.get(x, 0.0) for x, y in zip(xs, ys, strict=True)]
                ax_kid.fill_between(xs, lo, hi, alpha=0.2, color=ax_kid.lines[-1].get_color())
    _style(ax_kid, "KID (± std over subsets)", "KID")
    labels = {"metrics/kl_real_fake": "KL(real || fake)", "metrics/kl_fake_real": "KL(fake || real)",
              "metrics/js": "JS(real, fake)"}
    for k in kls:
        _line(ax_kl, *_series(rows, k), labels[k])
    _style(ax_kl, "Colour-histogram divergences", "nats")
    for ax, ks, what in ((ax_fid, fids, "FID"), (ax_kid, kids, "KID"), (ax_kl, kls, "KL")):
        if ks:
            ax.legend(frameon=False, title="features" if what != "KL" else None)
        else:
            _empty(ax, f"no {what} recorded")
    _save(fig, path)


class PlotsCallback(Callback):
    """Records per-epoch losses / scores (and metrics) and writes ``plots/*.png`` at the end of training.

    Args:
        output_dir: the run dir (``${paths.output_dir}``); the trainer's ``default_root_dir`` when null.
        dpi: resolution of the PNGs.
    """

    def __init__(self, output_dir: str | None = None, dpi: int = 110):
        super().__init__()
        self.output_dir, self.dpi = output_dir, int(dpi)
        self.history: list[dict[str, Any]] = []  # one row per epoch: {"epoch", "step", "d_loss", ...}

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(r) for r in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(r) for r in state_dict.get("history", [])]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        row: dict[str, Any] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for key in TRAIN_KEYS:
            value = _scalar(metrics.get(f"train/{key}_epoch"))
            if value is not None:
                row[key] = value
        # A resumed run may repeat an epoch that the checkpoint's history already holds.
        self.history = [r for r in self.history if r["epoch"] < row["epoch"]] + [row]

    def metric_rows(self, trainer: L.Trainer) -> list[dict[str, Any]]:
        """The evaluations of the trainer's MetricsCallback(s), one row per evaluation."""
        rows: list[dict[str, Any]] = []
        for cb in trainer.callbacks:
            rows.extend(getattr(cb, "metric_history", None) or [])
        return rows

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        folder = run_dir(trainer, self.output_dir) / "plots"
        plots = {"losses.png": (plot_losses, self.history), "scores.png": (plot_scores, self.history),
                 "metrics.png": (plot_metrics, self.metric_rows(trainer))}
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name, (plot, rows) in plots.items():
                plot(rows, folder / name, self.dpi)
        except OSError as e:  # a full disk must not turn a finished run into a crash
            log.warning("Could not write the plots in %s: %s", folder, e)
            return
        for name in plots:
            log_file(trainer, folder / name, "plots")
        log.info("Plots: %s", folder)
