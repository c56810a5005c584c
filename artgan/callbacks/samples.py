"""Fixed-noise sample grids every N epochs, a real-next-to-generated grid, and a progress GIF.

What it writes (only global rank 0 writes; every rank generates, so a sharded strategy whose forward
needs all ranks never hangs, and nothing here calls a collective):

* images ``samples/fixed`` (the module's ``fixed_noise`` through the EMA generator when there is one)
  and ``samples/real_vs_fake`` (real images on the left, generated on the right) in every logger that
  shows images (TensorBoard, MLflow, W&B; see ``log_media``), at the trainer's ``global_step``;
* ``<run dir>/samples/epoch_XXXX.png`` and ``<run dir>/samples/real_vs_fake_XXXX.png``; ``XXXX`` is
  Lightning's 0-based epoch index, the same number as in ``checkpoints/epoch_XXXX.ckpt``;
* at the end of training ``<run dir>/samples/progress.gif``: every ``epoch_*.png`` of the run dir
  (a resumed run's earlier epochs included), each frame labelled with its epoch; attached to the loggers
  that keep files (an MLflow artifact, a W&B video).

The fixed noise is a buffer of the module, stored in checkpoints, so a resumed run keeps drawing the
same latents and the grids stay comparable across epochs.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.utils import make_grid

from artgan.callbacks.log_media import flush, log_file, log_image
from artgan.data.transforms import denormalize, to_model_range

log = logging.getLogger(__name__)

EPOCH_PNG = re.compile(r"^epoch_(\d+)\.png$")


def run_dir(trainer: L.Trainer, output_dir: str | None) -> Path:
    """The run directory: the configured one, else the trainer's default_root_dir."""
    return Path(output_dir) if output_dir else Path(trainer.default_root_dir)


def is_last_epoch(trainer: L.Trainer) -> bool:
    """True in on_train_epoch_end of the epoch after which fit() stops (max_epochs, max_steps or a stop)."""
    max_epochs = trainer.max_epochs
    if max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs:
        return True
    max_steps = trainer.max_steps
    if max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps:
        return True
    return bool(trainer.should_stop)


def image_grid(images: Tensor, nrow: int, padding: int = 2) -> Tensor:
    """Images in [-1, 1] -> one float grid in [0, 1], (3, H, W), on the CPU."""
    return make_grid(denormalize(images.detach().float().cpu()), nrow=nrow, padding=padding, pad_value=1.0)


def grid_to_pil(grid: Tensor, max_size: int | None = None) -> Image.Image:
    """(3, H, W) float in [0, 1] -> RGB PIL image, downscaled so its longer side is at most max_size."""
    array = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    image = Image.fromarray(array, mode="RGB")
    if max_size and max(image.size) > max_size:
        scale = max_size / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    return image


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable built-in font
    except TypeError:  # pragma: no cover - old Pillow
        return ImageFont.load_default()


def labelled(image: Image.Image, text: str) -> Image.Image:
    """The image with a white banner on top holding ``text``."""
    banner = max(14, image.width // 24)
    out = Image.new("RGB", (image.width, image.height + banner), "white")
    out.paste(image, (0, banner))
    draw = ImageDraw.Draw(out)
    draw.text((banner // 3, banner // 2), text, fill="black", font=_font(int(banner * 0.75)), anchor="lm")
    return out


def write_progress_gif(png_paths: list[Path], path: Path, duration_ms: int = 400, last_frame_ms: int = 2000,
                       max_frames: int = 100, max_size: int = 768, label: bool = True) -> Path | None:
    """An animated GIF of the epoch grids (sorted by epoch), each frame labelled with its epoch."""
    frames_paths = sorted(png_paths, key=lambda p: int(EPOCH_PNG.match(p.name).group(1)))
    if not frames_paths:
        return None
    if max_frames and len(frames_paths) > max_frames:  # keep the first and last, evenly spaced in between
        idx = torch.linspace(0, len(frames_paths) - 1, max_frames).round().long().unique().tolist()
        frames_paths = [frames_paths[i] for i in idx]
    frames = []
    for p in frames_paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
            if max_size and max(im.size) > max_size:
                scale = max_size / max(im.size)
                im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
            if label:
                im = labelled(im, f"epoch {int(EPOCH_PNG.match(p.name).group(1))}")
            frames.append(im.quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
    durations = [duration_ms] * (len(frames) - 1) + [max(duration_ms, last_frame_ms)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                   optimize=False, disposal=1)
    tmp.replace(path)
    return path


class SampleGridCallback(Callback):
    """Fixed-noise grids every ``every_n_epochs`` epochs (and after the last one), plus a progress GIF.

    Args:
        every_n_epochs: write grids after epochs ``N-1, 2N-1, ...`` (0-based, like checkpoints) and the last.
        output_dir: the run dir (``${paths.output_dir}``); the trainer's ``default_root_dir`` when null.
        nrow: images per grid row.
        num_images: how many fixed-noise samples to show (at most the module's ``num_fixed_samples``).
        real_vs_fake: also log/write ``samples/real_vs_fake``.
        num_real_vs_fake: images per side of that grid.
        png: write the PNGs (the GIF is made from them).
        gif: write ``samples/progress.gif`` at the end of training.
        gif_duration_ms: time per GIF frame; the last frame stays ``gif_last_frame_ms``.
        gif_max_frames: at most this many frames, evenly spaced over the epochs.
        gif_max_size: longer side of a GIF frame in pixels.
        gif_label: draw "epoch N" above each frame.
        max_size: longer side of the PNGs / logged images in pixels (grids of 512 px images are big).
    """

    def __init__(self, every_n_epochs: int = 1, output_dir: str | None = None, nrow: int = 8,
                 num_images: int = 64, real_vs_fake: bool = True, num_real_vs_fake: int = 32, png: bool = True,
                 gif: bool = True, gif_duration_ms: int = 400, gif_last_frame_ms: int = 2000,
                 gif_max_frames: int = 100, gif_max_size: int = 768, gif_label: bool = True,
                 max_size: int = 2048):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = int(every_n_epochs)
        self.output_dir = output_dir
        self.nrow, self.num_images = int(nrow), int(num_images)
        self.real_vs_fake, self.num_real_vs_fake = bool(real_vs_fake), int(num_real_vs_fake)
        self.png, self.gif = bool(png), bool(gif)
        self.gif_duration_ms, self.gif_last_frame_ms = int(gif_duration_ms), int(gif_last_frame_ms)
        self.gif_max_frames, self.gif_max_size, self.gif_label = int(gif_max_frames), int(gif_max_size), gif_label
        self.max_size = int(max_size) if max_size else None
        self._last_written_step: int | None = None

    def samples_dir(self, trainer: L.Trainer) -> Path:
        return run_dir(trainer, self.output_dir) / "samples"

    # ----------------------------------------------------------------------------------------- hooks
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0 or is_last_epoch(trainer):
            self.write_grids(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not (self.gif and self.png):
            return
        folder = self.samples_dir(trainer)
        pngs = [p for p in folder.glob("epoch_*.png") if EPOCH_PNG.match(p.name)] if folder.is_dir() else []
        try:
            gif = write_progress_gif(pngs, folder / "progress.gif", self.gif_duration_ms, self.gif_last_frame_ms,
                                     self.gif_max_frames, self.gif_max_size, self.gif_label)
        except OSError as e:  # a full disk must not turn a finished run into a crash
            log.warning("Could not write the progress GIF in %s: %s", folder, e)
            return
        if gif is not None:
            log.info("Progress GIF (%d epochs): %s", len(pngs), gif)
            log_file(trainer, gif, "samples")

    # ---------------------------------------------------------------------------------------- writing
    def write_grids(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Generate on every rank (no collective involved); write on global rank 0 only."""
        if trainer.global_step == self._last_written_step:
            return
        self._last_written_step = trainer.global_step
        noise = pl_module.fixed_noise[: self.num_images]
        fake = pl_module.sample(z=noise).cpu()
        if not trainer.is_global_zero:
            return
        epoch, step = trainer.current_epoch, trainer.global_step
        folder = self.samples_dir(trainer)
        grids = {"fixed": (image_grid(fake, self.nrow), f"epoch_{epoch:04d}.png")}
        if self.real_vs_fake:
            both = self._real_vs_fake(trainer, fake)
            if both is not None:
                grids["real_vs_fake"] = (both, f"real_vs_fake_{epoch:04d}.png")
        for name, (grid, filename) in grids.items():
            image = grid_to_pil(grid, self.max_size)
            log_image(trainer, f"samples/{name}", image, step)
            if self.png:
                folder.mkdir(parents=True, exist_ok=True)
                image.save(folder / filename)
        flush(trainer)

    def _real_vs_fake(self, trainer: L.Trainer, fake: Tensor) -> Tensor | None:
        """Real images (left) next to as many generated ones (right), separated by a white gap."""
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "real_images"):
            return None
        n = min(self.num_real_vs_fake, fake.shape[0])
        real = datamodule.real_images(n)
        n = min(n, real.shape[0])
        if n == 0:
            return None
        real = to_model_range(real[:n])
        nrow = max(1, min(self.nrow // 2 if self.nrow > 1 else 1, n))
        left, right = image_grid(real, nrow), image_grid(fake[:n], nrow)
        gap = torch.ones(3, left.shape[1], max(8, left.shape[2] // 16))
        return torch.cat([left, gap, right], dim=2)
