"""logger=csv|mlflow|wandb and combinations: losses, metrics and sample images end up where a user looks.

One short train.py run with ``logger=[tensorboard,csv,mlflow,wandb]`` (W&B offline, no network), read back through
each tool's own API: the CSV file, MLflow's ``MlflowClient`` on the local store, the W&B offline run folder. The
run also fine-tunes from a checkpoint written here (``model.init_from``, checked in tests/test_finetune.py) and
its console output is checked for noise (item: what a newcomer sees at start).
"""

from __future__ import annotations

import csv
import math

import pytest
import torch
import yaml
from conftest import FAST_TRAIN, REPO, run_script
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

pytestmark = pytest.mark.slow

_RUN: dict = {}
LOGGERS = "logger=[tensorboard,csv,mlflow,wandb]"


def logged_run(tmp_path_factory) -> dict:
    """Run train.py once per session with every logger, fine-tuning from a checkpoint of the same model."""
    if "proc" not in _RUN:
        root = tmp_path_factory.mktemp("loggers")
        overrides = [*FAST_TRAIN, "model.ema_decay=0.9", "trainer.limit_train_batches=2", "evaluator.num_samples=16",
                     "evaluator.num_real=16", "callbacks.samples.num_images=16", "callbacks.samples.num_real_vs_fake=8"]
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            source = instantiate(compose("train", overrides=overrides).model)
        ckpt = {"state_dict": source.state_dict()}
        source.on_save_checkpoint(ckpt)
        torch.save(ckpt, root / "source.ckpt")
        run_dir = root / "runs" / "run0"
        proc = run_script("train.py", *overrides, LOGGERS, f"model.init_from={root / 'source.ckpt'}",
                          f"hydra.run.dir={run_dir}", cwd=root,
                          env={"ARTGAN_CACHE_DIR": str(root / "cache"), "WANDB_MODE": "offline"})
        _RUN.update(proc=proc, output=proc.stdout + proc.stderr, run_dir=run_dir, root=root, source=root / "source.ckpt")
    proc = _RUN["proc"]
    assert proc.returncode == 0, f"train.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return _RUN


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    return logged_run(tmp_path_factory)


def decode(path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.copy()


def test_csv_has_losses_metrics_and_hparams(run):
    folder = run["run_dir"] / "csv"
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    steps = [float(r["train/d_loss_step"]) for r in rows if r.get("train/d_loss_step")]
    assert len(steps) == 2 and all(math.isfinite(v) for v in steps)
    assert [float(r["metrics/kid_effnet"]) for r in rows if r.get("metrics/kid_effnet")], "no KID row"
    hparams = yaml.safe_load((folder / "hparams.yaml").read_text())
    assert hparams["model/loss"] == "BCELoss" or "model/loss" in hparams
    # CSV holds numbers; the samples a CSV user looks at are the PNGs beside it.
    assert decode(run["run_dir"] / "samples" / "epoch_0000.png").size[0] > 64


def test_mlflow_run_read_back_through_its_client(run, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run['root'] / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("train")
    (mlrun,) = client.search_runs([experiment.experiment_id])
    run_id = mlrun.info.run_id
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == "runs/run0"
    assert mlrun.data.tags["artgan.run_dir"] == str(run["run_dir"])
    assert len(client.get_metric_history(run_id, "train/d_loss_step")) == 2
    assert math.isfinite(mlrun.data.metrics["metrics/kid_effnet"])
    assert mlrun.data.params["model/optimizer_g/lr"] == "0.0002" and "model/init_from" in mlrun.data.params
    images = [a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png")]
    assert any("samples~fixed" in p for p in images) and any("samples~real_vs_fake" in p for p in images), images
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {"plots/losses.png", "plots/scores.png", "plots/metrics.png"} <= plots
    gif = client.download_artifacts(run_id, "samples/progress.gif", str(tmp_path))
    with Image.open(gif) as im:
        assert im.format == "GIF"
    fixed = client.download_artifacts(run_id, next(p for p in images if "samples~fixed" in p), str(tmp_path))
    assert decode(fixed).size == decode(run["run_dir"] / "samples" / "epoch_0000.png").size


def test_wandb_offline_run_keeps_the_media(run):
    (offline,) = (run["run_dir"] / "wandb").glob("offline-run-*")
    assert list(offline.glob("run-*.wandb")), "no W&B run file"
    media = list((offline / "files" / "media").rglob("*.png"))
    assert any("samples" in str(p) for p in media) and any("plots" in str(p) for p in media), media
    assert "wandb sync" in run["output"]  # how to upload it later


def test_startup_prints_no_advertisement_or_noise(run):
    output = run["output"]
    for noise in ("litlogger", "💡", "not supported by the model summary", "anonymous setting",
                  "Creating initial MLflow database tables", "not found. Creating it"):
        assert noise not in output, f"{noise!r} in the output:\n{output[-3000:]}"
