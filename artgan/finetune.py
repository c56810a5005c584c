"""``model.init_from=PATH``: start a new run from another run's weights, as StyleGAN2-ADA's ``--resume`` does.

Unlike ``ckpt_path`` (which resumes the same run: optimizers, counters, RNG states, logs), this starts a new run
whose networks begin where the other run's ended, for example a model pretrained on the procedural paintings
fine-tuned on the Kaggle paintings. What is taken from the checkpoint (read with the safe loader of
``artgan.generate.checkpoint``: ``weights_only=True``):

* the **generator**: required; a generator of other shapes stops the run with one paragraph naming the tensors
  that differ (``ConfigError``, exit code 2);
* the **EMA generator** when both runs have one (else this run's EMA starts as a copy of the loaded generator);
  its averaging counter restarts, so the EMA warms up on the new data;
* the **discriminator** when it has the same class and shapes; otherwise it starts from scratch, with a warning
  that says why (a new discriminator for new data is a legitimate choice);
* the **fixed noise**, so the new run's sample grids continue the old run's.

Optimizers, step and image counters, ADA's probability and the logs start fresh.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from artgan.errors import ArtGANError, ConfigError
from artgan.generate.checkpoint import _sub_state, load_checkpoint_dict

log = logging.getLogger(__name__)

SHARED_SETTINGS = ("resolution", "latent_dim")  # set as model.<key>, not model.generator.<key>


def tensor_differences(saved: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> list[str]:
    """Human-readable differences between two state dicts: missing, unexpected and reshaped tensors."""
    diffs = []
    for key in [*current, *(k for k in saved if k not in current)]:  # in the network's own order
        if key not in saved:
            diffs.append(f"{key} (not in the checkpoint)")
        elif key not in current:
            diffs.append(f"{key} (only in the checkpoint)")
        elif tuple(saved[key].shape) != tuple(current[key].shape):
            diffs.append(f"{key} {tuple(saved[key].shape)} in the checkpoint vs {tuple(current[key].shape)} here")
    return diffs


def _settings_hint(saved_spec: dict | None, network) -> str:
    """The constructor settings of the checkpoint's network that differ from this run's, as overrides."""
    if not isinstance(saved_spec, dict):
        return ""
    current = network.spec()
    if saved_spec.get("class") != current["class"]:
        return f" The checkpoint's generator is {saved_spec.get('class')}, this run's is {current['class']}."
    saved, mine = saved_spec.get("kwargs", {}), current["kwargs"]
    differing = [f"model.{k if k in SHARED_SETTINGS else 'generator.' + k}={saved[k]}"
                 for k in sorted(saved) if k in mine and saved[k] != mine[k]]
    return f" It was trained with {' '.join(differing)}." if differing else ""


def init_from(module, path: str | Path) -> list[str]:
    """Load the checkpoint's networks into the GANModule ``module``; returns what was loaded, for the log."""
    try:
        path, ckpt = load_checkpoint_dict(path)
    except ArtGANError as e:  # the loader names its own key; here the setting is model.init_from
        raise ConfigError(str(e).replace("ckpt_path", "model.init_from", 1)) from None
    state, meta = ckpt["state_dict"], ckpt.get("artgan") or {}
    where = f"model.init_from={str(path)!r}"

    generator = _sub_state(state, "generator.")
    diffs = tensor_differences(generator, module.generator.state_dict())
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise ConfigError(
            f"{where}: the checkpoint's generator does not fit the one this run builds ({len(diffs)} tensors differ: "
            f"{shown}).{_settings_hint(meta.get('generator'), module.generator)} Fine-tune with the generator "
            "settings the checkpoint was trained with, or leave model.init_from unset to train from scratch."
        )
    module.generator.load_state_dict(generator)
    loaded = ["generator"]

    if module.generator_ema is not None:
        ema = _sub_state(state, "generator_ema.module.")
        source = ema if ema and not tensor_differences(ema, module.generator.state_dict()) else generator
        module.generator_ema.module.load_state_dict(source)
        module.generator_ema.n_averaged.zero_()
        loaded.append("EMA generator" if source is ema else "EMA generator (copied from the generator)")

    discriminator = _sub_state(state, "discriminator.")
    same_class = (meta.get("discriminator") or {}).get("class") == module.discriminator.spec()["class"]
    d_diffs = tensor_differences(discriminator, module.discriminator.state_dict()) if same_class else []
    if discriminator and same_class and not d_diffs:
        module.discriminator.load_state_dict(discriminator)
        loaded.append("discriminator")
    else:
        why = ("it is another class" if not same_class else "; ".join(d_diffs[:3]) or "the checkpoint has none")
        log.warning("%s: the discriminator starts from scratch (%s).", where, why)

    noise = state.get("fixed_noise")
    if isinstance(noise, torch.Tensor) and noise.shape == module.fixed_noise.shape:
        module.fixed_noise.copy_(noise)
        loaded.append("fixed noise")
    log.info("Initialized from %s: %s. Optimizers, counters and logs start fresh.", path, ", ".join(loaded))
    return loaded
