"""No host sync per training step beyond what is logged.

On a GPU a host sync (``.item()``, ``float(t)``, ``if t:`` ...) stalls the CPU until the device catches up, so
a step that reads a tensor back each time loses the overlap of Python and kernels. On the CPU we cannot see
a stall, so we count the Python calls that read a tensor's value back: between logging steps there must be
none, in the module, Lightning's loop, the callbacks (progress bar) or the logger.
"""

from __future__ import annotations

import sys

import lightning as L
import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from artgan.train import build_trainer, instantiate_group

READBACKS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")


class SyncCounter(L.Callback):
    """Counts value read-backs of tensors per batch window (end of batch k-1 to end of batch k)."""

    def __init__(self, monkeypatch):
        self.active = False
        self.counts: list[int] = []
        self.where: list[list[str]] = []
        for name in READBACKS:
            original = getattr(torch.Tensor, name)

            def counted(t, *args, _original=original, _name=name, **kwargs):
                if self.active:
                    caller = sys._getframe(1)
                    # torch.optim reads its step counters, which are host tensors on a GPU too (not a sync).
                    if "torch/optim/" not in caller.f_code.co_filename.replace("\\", "/"):
                        self.counts[-1] += 1
                        self.where[-1].append(f"{_name} at {caller.f_code.co_filename}:{caller.f_lineno}")
                return _original(t, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.active = False
        self.counts.append(0)
        self.where.append([])
        self.active = True

    def on_train_end(self, trainer, pl_module):
        self.active = False


def fit_counting(tmp_path, monkeypatch, log_every_n_steps: int, batches: int = 4):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["model.generator.ngf=8", "model.discriminator.ndf=8",
                                          f"paths.output_dir={tmp_path}",
                                          "trainer.accelerator=cpu", "callbacks.model_checkpoint=null"])
    module = instantiate(cfg.model)
    counter = SyncCounter(monkeypatch)
    # The production progress bar and TensorBoard logger: they must not read values back per step either.
    trainer = build_trainer(cfg.trainer, [*instantiate_group(cfg.callbacks), counter], instantiate_group(cfg.logger),
                            max_epochs=1, log_every_n_steps=log_every_n_steps, enable_model_summary=False)
    images = torch.randint(0, 256, (16 * batches, 3, 64, 64), dtype=torch.uint8)
    trainer.fit(module, DataLoader(images, batch_size=16))
    # counts[k]: from the end of batch k to the end of batch k + 1 (the last window holds the epoch end).
    return counter.counts[:batches - 1], counter.where[:batches - 1]


def test_no_readback_between_logging_steps(tmp_path, monkeypatch):
    counts, where = fit_counting(tmp_path, monkeypatch, log_every_n_steps=1000)
    assert counts == [0] * len(counts), where


@pytest.mark.parametrize("every", [1])
def test_counter_sees_the_logging_steps(tmp_path, monkeypatch, every):
    """The instrument works: when every step is logged, values are read back every step."""
    counts, _ = fit_counting(tmp_path, monkeypatch, log_every_n_steps=every)
    assert all(c > 0 for c in counts), counts
