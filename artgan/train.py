"""Build everything a training run needs from the Hydra config, train, and return the sweep objective."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

from artgan import checkpoints
from artgan.callbacks.preemption import stop_reasons
from artgan.config_validation import validate
from artgan.distributed import check_launch, resolve_strategy
from artgan.errors import ConfigError
from artgan.loggers import finish as finish_loggers
from artgan.outputs import hydra_files, prepare_run_dir
from artgan.precision import resolve_precision

log = logging.getLogger(__name__)

# The module converts uint8 batches on the device on purpose; Lightning warns that a datamodule is also set.
warnings.filterwarnings("ignore", message=r".*overridden `on_after_batch_transfer` in `LightningModule`.*")
# FID/KID/KL are synced inside their metric objects before they are logged, identical on every rank.
warnings.filterwarnings("ignore", message=r".*recommended to use `self.log\('metrics/.*sync_dist=True.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)`? is deprecated.*")
# The model summary cannot size bf16 weights and says so on every bf16 run; its parameter counts are right.
warnings.filterwarnings("ignore", message=r"Precision .* is not supported by the model summary")
# Frozen parts stay in eval mode on purpose (the projected discriminator's pretrained backbone); the useful half
# of Lightning's check, trainable modules in eval mode, is warn_trainable_in_eval_mode below.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


class _NoAdvertisements(logging.Filter):
    """Lightning advertises its cloud products on every run ("💡 Tip: ... litlogger"), with no setting to turn it
    off; a filter on its logger is the logging API's way to drop those lines and keep the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdvertisements())


def instantiate_group(group: DictConfig | None) -> list:
    """Instantiate every entry of a config group such as ``callbacks`` or ``logger``; null entries are off."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry]


def build_model(model_cfg: DictConfig) -> L.LightningModule:
    """The GANModule the model config describes. A part that rejects its settings (a ValueError or TypeError in
    its constructor) becomes a one-paragraph ConfigError naming the part's config key."""
    try:
        return instantiate(model_cfg)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ConfigError) or not isinstance(cause, (ValueError, TypeError)):
            raise
        key = re.search(r"full_key: (\S+)", str(err))
        where = key.group(1) if key else "model"
        raise ConfigError(f"{where}: {cause} Check the settings under {where} (python train.py --cfg job "
                          "prints them).") from err


def build_trainer(trainer_cfg: DictConfig, callbacks: list, loggers: list, **overrides) -> L.Trainer:
    """The Trainer, with the strategy and precision that "auto" means on this machine (logged once)."""
    precision, why = resolve_precision(trainer_cfg.get("precision", "auto"), trainer_cfg.get("accelerator", "auto"))
    rank_zero_info(f"Precision: {precision} ({why})")
    return instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False,
                       strategy=resolve_strategy(trainer_cfg), precision=precision, **overrides)


def warn_trainable_in_eval_mode(model: L.LightningModule) -> None:
    """Modules in eval mode whose own parameters train (BatchNorm or dropout of a trained part frozen by mistake)."""
    names = [name for name, m in model.named_modules()
             if not m.training and any(p.requires_grad for p in m.parameters(recurse=False))]
    if names:
        log.warning("%d trainable module(s) are in eval mode at the start of training, so their BatchNorm / dropout "
                    "act as at inference: %s. Call .train() on them, or freeze them (requires_grad_(False)).",
                    len(names), ", ".join(names[:5]) + (", ..." if len(names) > 5 else ""))


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path=auto`` resumes from this run dir's last.ckpt when there is one (a re-queued job)."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "auto":
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    return ckpt_path


def flat_hparams(cfg: DictConfig) -> dict:
    """The run's settings as flat scalars, for TensorBoard's HPARAMS tab."""
    container = OmegaConf.to_container(cfg, resolve=True)
    out: dict = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            if "_target_" in node and prefix:  # a part: its class, e.g. model/loss = HingeLoss
                out[prefix.rstrip("/")] = str(node["_target_"]).rsplit(".", 1)[-1]
            for key, value in node.items():
                if key not in ("_target_", "_partial_", "hydra", "paths"):
                    walk(f"{prefix}{key}/" if prefix or key else key, value)
        elif isinstance(node, (int, float, str, bool)) or node is None:
            out[prefix.rstrip("/")] = "null" if node is None else node
        else:
            out[prefix.rstrip("/")] = str(node)

    walk("", {k: container[k] for k in ("model", "data", "trainer", "seed") if k in container})
    return out


def train(cfg: DictConfig) -> dict[str, float]:
    """Train one run; returns the final callback metrics as floats."""
    validate(cfg)  # bad settings: one paragraph and exit code 2, before any heavy work
    check_launch(cfg)  # multirun + script-relaunching DDP: stop now with the fix, not deadlock later
    # An earlier run's checkpoints here: resume, move them aside (overwrite=true) or stop. Single runs were
    # checked before Hydra wrote anything (artgan.outputs.RunDirGuard); multirun jobs are checked here.
    prepare_run_dir(cfg.paths.output_dir, cfg.get("ckpt_path"), bool(cfg.get("overwrite", False)),
                    keep=hydra_files(cfg.paths.output_dir))
    ckpt_path = resolve_ckpt_path(cfg)
    # Unreadable, foreign or non-finite: exit 2 now, before anything is built or written.
    resume = checkpoints.read(ckpt_path) if checkpoints.is_local_file(ckpt_path) else None
    if resume is not None:
        checkpoints.check_finite(resume["state_dict"], ckpt_path)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    model = build_model(cfg.model)
    if resume is not None:  # other networks (e.g. model=dcgan128 on a 64 px run): exit 2 before the trainer starts
        checkpoints.check_same_networks(resume, {"generator": model.generator, "discriminator": model.discriminator},
                                        f"ckpt_path={ckpt_path}")
        del resume
    trainer = build_trainer(cfg.trainer, instantiate_group(cfg.get("callbacks")), instantiate_group(cfg.get("logger")))
    hparams = {**flat_hparams(cfg), "trainer/precision": trainer.precision}
    for logger in trainer.loggers:
        logger.log_hyperparams(hparams)

    log.info("Run directory: %s", cfg.paths.output_dir)
    warn_trainable_in_eval_mode(model)
    try:
        with stop_reasons(trainer):  # SIGTERM/SIGINT: checkpoint saved, one paragraph, exit 143/130
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
    finally:
        finish_loggers(trainer.loggers)  # a W&B run ends with its job (multirun jobs share a process)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def objective(metrics: dict[str, float], name: str | None) -> float | None:
    """The value a sweeper optimizes; a missing metric is an error, not a silent None."""
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} was not logged; logged metrics: {sorted(metrics)}")
    return metrics[name]
