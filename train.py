"""Train a GAN: `python train.py model=dcgan128 trainer.devices=2`, or a sweep with `python train.py -m ...`."""

import sys

import hydra
from omegaconf import DictConfig

from artgan.cli import require_plugins, run_hydra_main, user_errors_exit
from artgan.train import objective, train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@user_errors_exit
def main(cfg: DictConfig) -> float | None:
    return objective(train(cfg), cfg.get("optimized_metric"))


if __name__ == "__main__":
    require_plugins(sys.argv[1:])  # an optional sweeper / launcher: the pip command, not Hydra's lookup error
    run_hydra_main(main)
