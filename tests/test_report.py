"""python -m artgan.report: a sweep's configurations ranked over seeds, on a sweep dir laid out as Hydra writes it.

The jobs' configs are composed from conf/ like train.py's; their values come from metrics.json (as the metrics
callback writes it) for some jobs and from real TensorBoard event files (SummaryWriter) for others.
"""

from __future__ import annotations

import json
import math
import statistics

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image
from scipy import stats
from torch.utils.tensorboard import SummaryWriter

from artgan.report import main, report

VALUES = {"1e-4": [0.10, 0.12, 0.11], "2e-4": [0.20, 0.26, 0.18]}


def write_job(job, overrides, value=None, events=False):
    """A job dir as Hydra and train.py leave it (call inside initialize_config_dir)."""
    (job / ".hydra").mkdir(parents=True)
    cfg = compose("train", overrides=overrides)
    OmegaConf.save(cfg, job / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    if value is None:
        return
    if events:  # as the TensorBoard logger writes it: an earlier evaluation, then the last one
        with SummaryWriter(str(job / "tensorboard")) as w:
            w.add_scalar("metrics/kid_effnet", value + 0.5, 5)
            w.add_scalar("metrics/kid_effnet", value, 10)
    else:
        (job / "metrics.json").write_text(json.dumps({"metrics": {"kid_effnet": value, "fid_effnet": 100.0}}))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("multirun") / "2026-01-31_12-00-00"
    num = 0
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for lr, values in VALUES.items():
            for seed, value in enumerate(values):
                write_job(root / str(num), [f"model.optimizer_g.lr={lr}", f"seed={seed}"], value, events=lr == "2e-4")
                num += 1
        # Scored on fewer samples: must not be ranked with the others, however good it looks.
        write_job(root / str(num), ["model.optimizer_g.lr=3e-4", "seed=0", "evaluator.num_samples=128"], 0.01)
        write_job(root / str(num + 1), ["model.optimizer_g.lr=3e-4", "seed=1"])  # crashed: no metric
    return root


def test_report_ranks_configurations_over_seeds(sweep, capsys):
    main([str(sweep)])  # python -m artgan.report <sweep>
    text = (sweep / "report.md").read_text()
    assert text in capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert "`model.optimizer_g.lr=1e-4`" in rows[0] and "`model.optimizer_g.lr=2e-4`" in rows[1], rows
    for row, values in zip(rows, VALUES.values()):
        mean = statistics.fmean(values)
        half = stats.t.ppf(0.975, 2) * statistics.stdev(values) / math.sqrt(3)
        cells = [c.strip() for c in row.split("|")]
        assert cells[3] == "3" and math.isclose(float(cells[4]), mean, rel_tol=1e-3)
        assert f"(± {half:.4g})" in cells[5], cells[5]
        assert "(seed 0)" in cells[6] and "(seed 2)" in cells[6]
    # Different evaluation settings: flagged and ranked apart, not above the 1e-4 recipe.
    assert "different evaluation settings (evaluator.num_samples)" in text
    assert text.count("| rank |") == 2 and "## Evaluated with evaluator.num_samples=128" in text
    assert "`7` (model.optimizer_g.lr=3e-4): no metrics.json and no TensorBoard events" in text
    with Image.open(sweep / "report.png") as im:
        assert im.format == "PNG" and im.size[1] > 200


def test_report_table_is_in_tensorboard_text_tab(sweep):
    from tensorboard.backend.event_processing import event_accumulator as ea

    out = report(sweep, metric="kid_effnet")
    report(sweep)  # a second report replaces the first event file
    assert len(list(out["tensorboard"].glob("events.out.tfevents.*"))) == 1
    acc = ea.EventAccumulator(str(out["tensorboard"]), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    (event,) = acc.Tensors("sweep_report")
    assert event.tensor_proto.string_val[0].decode() == out["markdown"].read_text()
    assert acc.SummaryMetadata("sweep_report").plugin_data.plugin_name == "text"
