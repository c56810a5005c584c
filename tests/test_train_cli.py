"""train.py from the command line, as a user runs it."""

from __future__ import annotations

from pathlib import Path

from conftest import run_script


def test_fast_dev_run_every_model_config(tmp_path):
    """`debug=fdr` (Lightning's fast_dev_run) for dcgan64..512 in one Hydra multirun process."""
    sweep = tmp_path / "sweep"
    proc = run_script("train.py", "-m", "model=dcgan64,dcgan128,dcgan256,dcgan512", "debug=fdr",
                      "trainer.accelerator=cpu", "model.generator.ngf=4", "model.discriminator.ndf=4", "data.num_images=16",
                      "data.batch_size=8", f"hydra.sweep.dir={sweep}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, resolution in enumerate((64, 128, 256, 512)):
        grid = Path(sweep, str(job), "samples", "epoch_0000.png")
        assert grid.is_file(), f"model=dcgan{resolution}: no sample grid"
        from PIL import Image

        with Image.open(grid) as im:  # a 4x4 grid of resolution-sized tiles (plus padding)
            assert im.width >= 4 * resolution


def test_unknown_model_config_is_a_short_error():
    proc = run_script("train.py", "model=dcgan100")
    assert proc.returncode == 2  # bad input, as for every other bad setting
    assert "dcgan64" in proc.stderr and "Traceback" not in proc.stderr


def test_a_misspelt_setting_exits_2_naming_it_and_makes_no_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    for script in ("train.py", "generate.py"):
        proc = run_script(script, "model.discriminator.ndff=8", f"hydra.run.dir={run_dir}")
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "model.discriminator.ndff" in proc.stderr and "Traceback" not in proc.stderr
        assert not run_dir.exists()
