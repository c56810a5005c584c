"""What ArtGAN adds to a Lightning checkpoint, and how checkpoints of older formats are brought up to date.

``checkpoint["artgan"]`` (format 2) holds ``version``, the ``generator`` and ``discriminator`` specs
(``{"class": path, "kwargs": {...}}``, enough to rebuild them without Hydra), the ``loss`` description,
``has_ema``, ``images_seen`` and ``d_steps``. Format 1 (before the model zoo) named the generator ``"dcgan"``,
kept ADA's state under ``ada.*`` and the fixed noise as ``(N, latent_dim, 1, 1)``; :func:`upgrade` rewrites
those in place, so ``generate.py`` and ``train.py ckpt_path=...`` read both.
"""

from __future__ import annotations

from artgan.errors import ArtGANError, ConfigError

FORMAT_VERSION = 2


def upgrade(checkpoint: dict, path: object = "the checkpoint") -> dict:
    """Bring ``checkpoint`` (a loaded dict) to :data:`FORMAT_VERSION` in place and return it."""
    meta = checkpoint.get("artgan")
    if not isinstance(meta, dict):
        return checkpoint
    version = int(meta.get("version", 1))
    if version > FORMAT_VERSION:
        raise ArtGANError(
            f"{path} was written by a newer ArtGAN (checkpoint format {version}; this version reads formats 1 to "
            f"{FORMAT_VERSION}). Update ArtGAN (git pull && pip install -e .) to use it."
        )
    if version == 1:
        _upgrade_from_1(checkpoint, meta)
    return checkpoint


def _upgrade_from_1(checkpoint: dict, meta: dict) -> None:
    spec = meta.get("generator")
    if isinstance(spec, dict) and "class" not in spec and "name" in spec:
        from artgan.models import registry

        # Format 1 knew one generator by a short name; the registry maps it to today's class.
        spec = {"class": registry.class_path(registry.resolve("generator", spec["name"])), "kwargs": spec["kwargs"]}
        meta["generator"] = spec
    state = checkpoint.get("state_dict")
    if isinstance(state, dict):
        for key in [k for k in state if k.startswith("ada.")]:
            state["augment." + key] = state.pop(key)  # ADA now belongs to the augmentation
        noise = state.get("fixed_noise")
        if noise is not None and noise.dim() == 4:
            state["fixed_noise"] = noise.flatten(1)  # DCGAN latents are vectors now
    meta["version"] = FORMAT_VERSION


def check_same_networks(checkpoint: dict, networks: dict, path: object = "ckpt_path") -> None:
    """Stop with one paragraph when a checkpoint holds other networks than this run builds (a resume with other
    model settings), naming the settings that differ."""
    meta = checkpoint.get("artgan") or {}
    differences = []
    for part, network in networks.items():
        saved, current = meta.get(part), network.spec()
        if not isinstance(saved, dict):
            continue
        if saved.get("class") != current["class"]:
            differences.append(f"model.{part} is {current['class']} here but {saved.get('class')} in the checkpoint")
            continue
        for key in sorted(set(saved.get("kwargs", {})) | set(current["kwargs"])):
            mine, theirs = current["kwargs"].get(key), saved.get("kwargs", {}).get(key)
            if mine != theirs:
                differences.append(f"model.{part}.{key}={mine} here but {theirs} in the checkpoint")
    if differences:
        fix = " ".join(f"model.{part}.{key}={value}" for part in networks
                       for key, value in ((meta.get(part) or {}).get("kwargs") or {}).items()
                       if key not in ("resolution", "latent_dim"))
        shared = (meta.get("generator") or {}).get("kwargs", {})
        raise ConfigError(
            f"{path} was trained with other model settings than this run: {'; '.join(differences)}. Resume with "
            f"the settings it was trained with (the same command as its run, e.g. model.resolution="
            f"{shared.get('resolution')} model.latent_dim={shared.get('latent_dim')} {fix}), or start a new run "
            "without ckpt_path."
        )
