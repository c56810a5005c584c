"""New art from a checkpoint: `python generate.py ckpt_path=RUN/checkpoints/last.ckpt num_images=64`.

Modes (mode=...): sample (default), compare (nearest training images + diversity), interpolate (latent walk
GIF), evaluate (FID / KID). See docs/generate.md.
"""

import hydra
from omegaconf import DictConfig

from artgan.cli import run_hydra_main, user_errors_exit
from artgan.generate import run


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    run_hydra_main(main)
