"""A training budget on a clock, with generator snapshots along the way (for bench/quality.py).

``TrainingBudget`` counts the time from the first training batch's start to each batch's end, so loading and
augmenting data is a recipe's cost like its steps (what the snapshots themselves cost is not counted), stops
training when ``minutes`` are spent and writes the sampling generator (the EMA copy when there is one) to
``<dirpath>/t<seconds>.pt`` every ``every_minutes`` and at the end. The snapshots are evaluated after training,
so the evaluation costs no training time and every recipe is scored at the same budget points.

The clock is the process's CPU time by default: on a dedicated core with one torch thread it equals the wall
time, and it does not count time the process spends waiting while other programs use the core, so recipes
trained side by side on a shared machine still get equal budgets. ``clock=wall`` counts wall time instead.

Used from the command line (bench/ on PYTHONPATH):
    python train.py ... '+callbacks.budget={_target_:budget.TrainingBudget,minutes:25,every_minutes:2.5,dirpath:RUN/snapshots}'
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from artgan.io import atomic_torch_save

CLOCKS = {"process": time.process_time, "wall": time.perf_counter}


class TrainingBudget(Callback):
    def __init__(self, minutes: float, dirpath: str, every_minutes: float | None = None, clock: str = "process"):
        if minutes <= 0 or (every_minutes is not None and every_minutes <= 0) or clock not in CLOCKS:
            raise ValueError(f"bad budget: minutes={minutes}, every_minutes={every_minutes}, clock={clock!r} "
                             f"(one of {', '.join(CLOCKS)})")
        self.budget = 60.0 * minutes
        self.every = 60.0 * every_minutes if every_minutes else None
        self.dirpath = Path(dirpath)
        self.clock = CLOCKS[clock]
        self.used = 0.0
        self.next_snapshot = self.every if self.every else float("inf")
        self._start: float | None = None
        self._snapshot_steps = -1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._start is None:  # the first batch: the clock starts here and then runs from batch end to batch end
            self._start = self.clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._start is None:
            return
        self.used += self.clock() - self._start
        done = self.used >= self.budget
        if self.used >= self.next_snapshot or done:
            self.snapshot(pl_module)
            while self.next_snapshot <= self.used:
                self.next_snapshot += self.every or float("inf")
        if done:
            trainer.should_stop = True
        self._start = self.clock()  # snapshots are not training time

    def on_train_end(self, trainer, pl_module) -> None:
        # Runs that stop before the budget (trainer.max_steps: comparisons at equal images) end with a snapshot too.
        if self._start is not None and pl_module.g_steps != self._snapshot_steps:
            self.snapshot(pl_module)

    @torch.no_grad()
    def snapshot(self, pl_module) -> Path:
        net = pl_module.sampling_generator()
        path = self.dirpath / f"t{int(round(self.used)):05d}.pt"
        atomic_torch_save({"generator": net.spec(), "state_dict": net.state_dict(), "seconds": self.used,
                           "images_seen": pl_module.images_seen, "g_steps": pl_module.g_steps}, path)
        self._snapshot_steps = pl_module.g_steps
        return path
