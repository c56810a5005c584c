"""Monitoring callbacks: sample grids + GIF, plots, KL / FID / KID, hparams; checked on one short train.py run.

One 2-epoch run on 64 tiny procedural images is shared by this file and tests/test_tensorboard.py
(``monitoring_run`` caches it per test session). The effnet FID of a real split vs noise is tested in
tests/test_metrics_fid.py and not repeated here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, run_script
from PIL import Image

IMAGE_TAGS = ("samples/fixed", "samples/real_vs_fake")
SCALAR_TAGS = (
    "train/d_loss_step", "train/g_loss_step", "train/d_real_step", "train/d_fake_step",
    "train/d_loss_epoch", "train/g_loss_epoch", "train/d_real_epoch", "train/d_fake_epoch",
    "train/d_acc_real_epoch", "train/d_acc_fake_epoch",
    "metrics/kl_real_fake", "metrics/kl_fake_real", "metrics/js",
    "metrics/fid_effnet", "metrics/kid_effnet", "metrics/kid_effnet_std",
)
EPOCHS = 2
INCEPTION_SKIPPED = "FID/KID with the 'inception' extractor are skipped"

_RUN: dict = {}


def monitoring_run(tmp_path_factory) -> dict:
    """Run train.py once per session: 2 epochs, metrics every epoch, effnet + (offline) inception."""
    if "proc" not in _RUN:
        root = tmp_path_factory.mktemp("monitoring")
        run_dir = root / "runs" / "run0"
        overrides = [o for o in FAST_TRAIN if not o.startswith("trainer.max_epochs=")] + [
            f"trainer.max_epochs={EPOCHS}",
            "callbacks.metrics.every_n_epochs=1",
            "evaluator.num_samples=16",
            "evaluator.num_real=32",
            "evaluator.fid.extractors=[effnet_lite0,inception]",
            "model.ema_decay=0.9",
            "callbacks.samples.num_images=16",
            "callbacks.samples.num_real_vs_fake=8",
            "optimized_metric=metrics/fid_effnet",
            f"hydra.run.dir={run_dir}",
        ]
        proc = run_script("train.py", *overrides, env={"ARTGAN_CACHE_DIR": str(root / "cache")}, timeout=600)
        _RUN.update(proc=proc, run_dir=run_dir, runs_root=root / "runs", cache=root / "cache")
    proc = _RUN["proc"]
    assert proc.returncode == 0, f"train.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return _RUN


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    return monitoring_run(tmp_path_factory)


def load_events(run_dir: Path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(run_dir / "tensorboard"),
                              size_guidance={ea.SCALARS: 0, ea.IMAGES: 0, ea.TENSORS: 0})
    acc.Reload()
    return acc


def decode(path: Path) -> Image.Image:
    assert path.is_file(), f"missing {path}"
    with Image.open(path) as im:
        im.load()
        return im.copy()


# ------------------------------------------------------------------------------------- the short run
@pytest.mark.slow
def test_sample_pngs_and_progress_gif(run):
    samples = run["run_dir"] / "samples"
    for epoch in range(EPOCHS):
        grid = decode(samples / f"epoch_{epoch:04d}.png")
        assert grid.mode == "RGB" and grid.width > 64 and grid.height > 64
        decode(samples / f"real_vs_fake_{epoch:04d}.png")
    with Image.open(samples / "progress.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == EPOCHS
        for i in range(gif.n_frames):
            gif.seek(i)
            gif.convert("RGB").load()
        assert gif.info.get("loop") == 0


@pytest.mark.slow
def test_plot_pngs(run):
    for name in ("losses", "scores", "metrics"):
        im = decode(run["run_dir"] / "plots" / f"{name}.png")
        assert im.width >= 400 and im.height >= 200


@pytest.mark.slow
def test_event_file_has_image_and_scalar_tags_with_finite_values(run):
    acc = load_events(run["run_dir"])
    tags = acc.Tags()
    assert set(IMAGE_TAGS) <= set(tags["images"]), tags["images"]
    for tag in IMAGE_TAGS:
        events = acc.Images(tag)
        assert len(events) == EPOCHS
        assert decode_bytes(events[-1].encoded_image_string).size == (events[-1].width, events[-1].height)
    missing = [t for t in SCALAR_TAGS if t not in tags["scalars"]]
    assert not missing, f"missing scalar tags {missing}; have {sorted(tags['scalars'])}"
    for tag in SCALAR_TAGS:
        values = [e.value for e in acc.Scalars(tag)]
        assert values and all(math.isfinite(v) for v in values), (tag, values)
    # Metrics after every epoch, at the same steps as the epoch means.
    metric_steps = [e.step for e in acc.Scalars("metrics/fid_effnet")]
    assert metric_steps == [e.step for e in acc.Scalars("train/d_loss_epoch")] and len(metric_steps) == EPOCHS
    assert all(e.value > 0 for e in acc.Scalars("metrics/fid_effnet"))
    assert all(0 <= e.value <= math.log(2) + 1e-9 for e in acc.Scalars("metrics/js"))


def decode_bytes(data: bytes) -> Image.Image:
    import io

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.copy()


@pytest.mark.slow
def test_inception_offline_is_one_warning_and_skipped(run):
    proc = run["proc"]
    log = proc.stdout + proc.stderr
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        assert log.count(INCEPTION_SKIPPED) == 1, log[-3000:]
        assert "metrics/fid_inception" not in load_events(run["run_dir"]).Tags()["scalars"]


@pytest.mark.slow
def test_hparams_logged_with_final_metrics(run):
    acc = load_events(run["run_dir"])
    content = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(content)
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metric_tags = {m.name.tag for m in data.experiment.metric_infos}
    assert {"final/fid_effnet", "final/kid_effnet", "final/js", "final/d_loss", "final/g_loss"} <= metric_tags
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert "model/loss" in start.session_start_info.hparams
    for tag in ("final/fid_effnet", "final/d_loss"):
        assert math.isfinite(acc.Scalars(tag)[-1].value)


@pytest.mark.slow
def test_generate_evaluate_reproduces_the_runs_final_metrics(run, tmp_path):
    """One evaluator for training and generate.py: the same settings on the run's last checkpoint give the
    numbers the callback logged at the end of training."""
    out = tmp_path / "eval"
    proc = run_script("generate.py", "mode=evaluate", f"ckpt_path={run['run_dir'] / 'checkpoints' / 'last.ckpt'}",
                      "evaluator.num_samples=16", "evaluator.num_real=32", "device=cpu", f"output_dir={out}",
                      f"hydra.run.dir={tmp_path / 'hydra'}", env={"ARTGAN_CACHE_DIR": str(run["cache"])})
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((out / "metrics.json").read_text())["metrics"]
    acc = load_events(run["run_dir"])
    for name in ("fid_effnet", "kid_effnet", "diversity_effnet", "kl_real_fake", "js"):
        logged = acc.Scalars(f"metrics/{name}")[-1].value
        assert evaluated[name] == pytest.approx(logged, rel=1e-4, abs=1e-6), name


@pytest.mark.slow
def test_real_features_cached_on_disk(run):
    assert list(Path(run["cache"]).glob("real_effnet_64px_n32_*.pt"))


@pytest.mark.slow
def test_checkpoint_holds_plot_and_metric_history(run):
    ckpt = torch.load(run["run_dir"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    states = ckpt["callbacks"]
    plots = next(v for k, v in states.items() if k.startswith("PlotsCallback"))
    metrics = next(v for k, v in states.items() if k.startswith("MetricsCallback"))
    assert [r["epoch"] for r in plots["history"]] == list(range(EPOCHS))
    assert [r["epoch"] for r in metrics["metric_history"]] == list(range(EPOCHS))
    assert all(math.isfinite(r["metrics/fid_effnet"]) for r in metrics["metric_history"])


@pytest.mark.slow
def test_two_process_ddp_evaluates_without_hanging(tmp_path):
    """2 gloo processes: each generates its share, states sync, and the progress bar's rank-0-only read of
    the epoch means does not cross the metric syncs (that used to hang)."""
    overrides = [o for o in FAST_TRAIN if not o.startswith("trainer.accelerator=")] + [
        "trainer=ddp_cpu",
        "callbacks.metrics.every_n_epochs=1",
        "evaluator.num_samples=9",
        "evaluator.num_real=16",
        "callbacks.samples.num_images=8",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    proc = run_script("train.py", *overrides, env={"ARTGAN_CACHE_DIR": str(tmp_path / "cache")}, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    acc = load_events(tmp_path / "run")
    fid = [e.value for e in acc.Scalars("metrics/fid_effnet")]
    assert len(fid) == 1 and math.isfinite(fid[0])
    assert (tmp_path / "run" / "samples" / "progress.gif").is_file()
    assert (tmp_path / "run" / "plots" / "metrics.png").is_file()


# ----------------------------------------------------------------------------------- unit tests
def test_progress_gif_orders_and_labels_frames(tmp_path):
    from artgan.callbacks.samples import write_progress_gif

    paths = []
    for epoch, color in ((10, "red"), (2, "green"), (0, "blue")):
        p = tmp_path / f"epoch_{epoch:04d}.png"
        Image.new("RGB", (64, 48), color).save(p)
        paths.append(p)
    out = write_progress_gif(paths, tmp_path / "progress.gif", duration_ms=100, last_frame_ms=900)
    with Image.open(out) as gif:
        assert gif.n_frames == 3
        colors = []
        for i in range(3):
            gif.seek(i)
            frame = gif.convert("RGB")
            assert frame.height > 48  # the label banner
            colors.append(frame.getpixel((32, frame.height - 5)))
            assert gif.info["duration"] == (900 if i == 2 else 100)
    assert colors[0][2] > 200 and colors[1][1] > 100 and colors[2][0] > 200  # blue (0), green (2), red (10)
    assert write_progress_gif([], tmp_path / "none.gif") is None


def test_plots_history_survives_state_dict_and_draws(tmp_path):
    from artgan.callbacks.plots import PlotsCallback, plot_losses, plot_metrics, plot_scores

    cb = PlotsCallback()
    cb.history = [{"epoch": e, "step": 10 * e, "d_loss": 1.0 / (e + 1), "g_loss": 2.0, "d_real": 0.7,
                   "d_fake": 0.3, "d_acc_real": 0.8, "d_acc_fake": 0.9} for e in range(4)]
    restored = PlotsCallback()
    restored.load_state_dict(cb.state_dict())
    assert restored.history == cb.history
    rows = [{"epoch": e, "step": e, "metrics/fid_effnet": 100.0 - e, "metrics/kid_effnet": 0.1,
             "metrics/kid_effnet_std": 0.01, "metrics/kl_real_fake": 1.0, "metrics/kl_fake_real": 2.0,
             "metrics/js": 0.3} for e in (0, 2)]
    plot_losses(restored.history, tmp_path / "l.png")
    plot_scores(restored.history, tmp_path / "s.png")
    plot_metrics(rows, tmp_path / "m.png")
    plot_metrics([], tmp_path / "empty.png")  # no metric yet: still a readable figure
    for name in ("l", "s", "m", "empty"):
        decode(tmp_path / f"{name}.png")


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_metric_samples_split_over_ranks(world):
    from artgan.metrics.evaluator import Evaluator

    evaluator = Evaluator(num_samples=512)
    counts = [evaluator.local_count(rank, world) for rank in range(world)]
    assert sum(counts) == 512 and max(counts) - min(counts) <= 1


def test_evaluator_config_rejects_unknown_keys():
    from artgan.errors import ConfigError
    from artgan.metrics.evaluator import Evaluator

    with pytest.raises(ConfigError, match="evaluator.fid"):
        Evaluator(fid={"extractor": ["effnet_lite0"]})
    with pytest.raises(ConfigError, match="Unknown metric"):
        Evaluator(fidd={})
    assert Evaluator(fid={"extractors": "inception"}).settings["fid"]["extractors"] == ["inception"]
