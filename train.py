"""Train a GAN: `python train.py model=dcgan128 trainer.devices=2`, or a sweep with `python train.py -m ...`."""

import hydra
from omegaconf import DictConfig

from artgan.cli import user_errors_exit
from artgan.train import objective, train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@user_errors_exit
def main(cfg: DictConfig) -> float | None:
    return objective(train(cfg), cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
