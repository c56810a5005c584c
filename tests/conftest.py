"""Shared fixtures: a small, fast config and paths to the shared sample data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = REPO.parent / "shared" / "data" / "abstract-art-gallery-sample"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own decode cache; tests never touch the user's .cache/."""
    cache = tmp_path_factory.getbasetemp() / "artgan-cache"
    monkeypatch.setenv("ARTGAN_CACHE_DIR", str(cache))


@pytest.fixture
def shared_sample() -> Path:
    if not SHARED_SAMPLE.is_dir():
        pytest.skip(f"shared sample data not found at {SHARED_SAMPLE} (only present on the dev/CI machines)")
    return SHARED_SAMPLE


# Overrides that make a train.py run take seconds on a CPU: tiny widths, few tiny procedural images.
FAST_TRAIN = [
    "trainer.accelerator=cpu",
    "model.generator.ngf=8",
    "model.discriminator.ndf=8",
    "data.num_images=64",
    "data.batch_size=16",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
]


def run_script(script: str, *overrides: str, cwd: Path = REPO, timeout: int = 300,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Run train.py or generate.py as a user would, in a subprocess; returns the completed process."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, str(REPO / script), *overrides], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
