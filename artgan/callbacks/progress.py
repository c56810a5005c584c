"""A progress bar that shows d_loss and g_loss without a host sync per step."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar


class GANProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar plus the module's latest losses, which it refreshes only when it logs."""

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        items.update({k: f"{v:.3f}" for k, v in getattr(pl_module, "progress_values", {}).items()})
        return items
