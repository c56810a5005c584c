"""Stop a run that has diverged, keep its last good checkpoint, and exit non-zero with one clear paragraph.

Diverged means: a non-finite ``d_loss`` or ``g_loss`` (at once), or D winning completely, i.e. it classifies
nearly every real and fake correctly (``d_acc_real`` and ``d_acc_fake`` >= ``d_acc_threshold``) while
``g_loss`` >= ``g_loss_threshold``, for ``patience`` consecutive checks. The check runs every
``check_every_n_steps`` batches (default: ``trainer.log_every_n_steps``) and at each epoch end (before that
epoch's samples and checkpoints, so a NaN in a short first epoch stops there), costing one host sync each; the
per-step values are read from the module's ``step_stats`` (this step's losses, kept on the device).

The "keep the last good checkpoint" part: before any checkpoint is written (``on_save_checkpoint``, which runs
before the file is touched) the latest losses and every parameter of G, D and the EMA generator are checked;
non-finite ones abort the save, so last.ckpt is never overwritten with NaN weights, and training stops.
Under DDP every rank checks the same step and the decision is reduced, so all ranks stop together.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from artgan import compat
from artgan.errors import ArtGANError

log = logging.getLogger(__name__)

STATS = ("d_loss", "g_loss", "d_acc_real", "d_acc_fake")  # a subset of artgan.gan_module.LOGGED_STATS


class TrainingDiverged(ArtGANError):
    """Training stopped by the divergence guard. Exit code 1."""

    exit_code = 1


class DivergenceGuard(Callback):
    def __init__(self, check_every_n_steps: int | None = None, patience: int = 20, d_acc_threshold: float = 0.99,
                 g_loss_threshold: float | None = None, check_on_save: bool = True):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.check_every_n_steps = check_every_n_steps
        self.patience = int(patience)
        self.d_acc_threshold = float(d_acc_threshold)
        self.g_loss_threshold = g_loss_threshold
        self.check_on_save = check_on_save
        self.bad_checks = 0

    def state_dict(self) -> dict:
        return {"bad_checks": self.bad_checks}

    def load_state_dict(self, state_dict: dict) -> None:
        self.bad_checks = int(state_dict.get("bad_checks", 0))

    # ---- the periodic check
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._checked_this_batch(trainer):
            return
        self._check(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Also at every epoch end (one sync per epoch), before that epoch's sample grids and checkpoints: an epoch
        # shorter than check_every_n_steps (a NaN in the first epoch) stops here, not at a skipped save.
        if not self._checked_this_batch(trainer):
            self._check(trainer, pl_module)

    def _checked_this_batch(self, trainer) -> bool:
        every = self.check_every_n_steps or max(1, trainer.log_every_n_steps)
        return (trainer.fit_loop.total_batch_idx + 1) % every == 0

    def _check(self, trainer, pl_module) -> None:
        values = self._latest(pl_module)
        if values is None:
            return
        reason = self._judge(values, pl_module)
        if trainer.world_size > 1:
            anyone = trainer.strategy.reduce_boolean_decision(reason is not None, all=False)
            if anyone and reason is None:
                reason = "another device diverged"
        if reason is not None:
            self._stop(trainer, reason)

    def _latest(self, pl_module) -> dict[str, float] | None:
        stats = getattr(pl_module, "step_stats", {})
        tensors = [stats.get(k) for k in STATS]
        if any(t is None for t in tensors):
            return None
        values = torch.stack([t.detach().float().reshape(()) for t in tensors]).cpu().tolist()  # one sync
        return dict(zip(STATS, values))

    def _judge(self, v: dict[str, float], pl_module) -> str | None:
        bad = [k for k in ("d_loss", "g_loss") if not math.isfinite(v[k])]
        if bad:
            return "non-finite " + " and ".join(f"{k}={v[k]}" for k in bad)
        threshold = self.g_loss_threshold
        if threshold is None:  # the loss knows which generator loss means D wins (None: the rule is off)
            threshold = getattr(getattr(pl_module, "loss", None), "d_wins_g_loss", None)
        d_wins = (threshold is not None and v["d_acc_real"] >= self.d_acc_threshold
                  and v["d_acc_fake"] >= self.d_acc_threshold and v["g_loss"] >= threshold)
        self.bad_checks = self.bad_checks + 1 if d_wins else 0
        if self.bad_checks >= self.patience:
            return (f"D wins completely: d_acc_real={v['d_acc_real']:.3f} and d_acc_fake={v['d_acc_fake']:.3f} "
                    f"(>= {self.d_acc_threshold}) with g_loss={v['g_loss']:.3f} (>= {threshold}) for "
                    f"{self.bad_checks} consecutive checks")
        return None

    # ---- never write NaN weights
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if not self.check_on_save or trainer.state.fn != "fit":
            return
        finite = [torch.stack([p.detach().isfinite().all() for p in pl_module.parameters()]).all()]
        finite += [t.detach().isfinite().all() for t in pl_module.buffers() if t.is_floating_point()]
        stats = getattr(pl_module, "step_stats", {})
        finite += [stats[k].isfinite().all() for k in ("d_loss", "g_loss") if k in stats]
        if not bool(torch.stack([f.to(finite[0].device) for f in finite]).all()):
            self._stop(trainer, "non-finite weights or losses found while saving a checkpoint (the save was "
                                "skipped)")

    def _stop(self, trainer, reason: str) -> None:
        step = compat.logger_step(trainer)
        # last_model_path is set before a save is attempted: name a checkpoint only if the file is there.
        last = next((cb.last_model_path for cb in trainer.checkpoint_callbacks
                     if getattr(cb, "last_model_path", "") and Path(cb.last_model_path).is_file()), None)
        kept = (f"The last good checkpoint is kept: {last}; resume from it with ckpt_path={last} and a gentler "
                "setting" if last else "No checkpoint was saved before that; restart with a gentler setting")
        raise TrainingDiverged(
            f"Training diverged at epoch {trainer.current_epoch}, step {step} (trainer.global_step="
            f"{trainer.global_step}): {reason}. {kept} (e.g. lower model.optimizer_d.lr / model.optimizer_g.lr, "
            "model/loss=hinge, model.discriminator.spectral_norm=true, model.loss.r1_gamma=1 or, with the BCE loss, "
            "model.loss.label_smoothing=0.1). To train on regardless, "
            "set callbacks.divergence_guard=null."
        )
