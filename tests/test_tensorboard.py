"""A real TensorBoard server reads the short run back: scalars, images and the HPARAMS session over HTTP.

Reuses the 2-epoch run of tests/test_callbacks.py (one train.py run per test session).
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from test_callbacks import monitoring_run

pytestmark = pytest.mark.slow

TENSORBOARD = Path(sys.executable).with_name("tensorboard")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(base: str, path: str, params: dict | None = None, data: bytes | None = None) -> bytes:
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read()


def get_json(base: str, path: str, params: dict | None = None, data: dict | None = None):
    return json.loads(get(base, path, params, json.dumps(data).encode() if data is not None else None))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run = monitoring_run(tmp_path_factory)
    exe = str(TENSORBOARD) if TENSORBOARD.is_file() else shutil.which("tensorboard")
    if exe is None:
        pytest.skip("the tensorboard command is not installed")
    port = free_port()
    log = open(run["runs_root"].parent / "tensorboard_server.log", "w+")
    proc = subprocess.Popen(
        [exe, "--logdir", str(run["runs_root"]), "--host", "127.0.0.1", "--port", str(port),
         "--load_fast", "false", "--reload_interval", "1"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        runs: list = []
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"tensorboard exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                tags = get_json(base, "/data/plugin/scalars/tags")
                runs = [r for r, t in tags.items() if "metrics/fid_effnet" in t]
                if runs:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.5)
        else:
            log.seek(0)
            pytest.fail(f"tensorboard did not serve the run within 90 s:\n{log.read()[-3000:]}")
        yield {"base": base, "run": runs[0]}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_scalars_over_http(server):
    base, run = server["base"], server["run"]
    assert run.replace("\\", "/").endswith("tensorboard")
    tags = get_json(base, "/data/plugin/scalars/tags")[run]
    for tag in ("train/d_loss_epoch", "train/g_loss_epoch", "train/d_real_epoch", "train/d_fake_epoch",
                "train/d_loss_step", "metrics/fid_effnet", "metrics/kid_effnet", "metrics/kl_real_fake",
                "metrics/js"):
        assert tag in tags, (tag, sorted(tags))
        points = get_json(base, "/data/plugin/scalars/scalars", {"run": run, "tag": tag})
        assert points, tag
        assert all(len(p) == 3 and math.isfinite(p[2]) for p in points), (tag, points)


def test_images_over_http(server):
    base, run = server["base"], server["run"]
    tags = get_json(base, "/data/plugin/images/tags")[run]
    assert {"samples/fixed", "samples/real_vs_fake"} <= set(tags), sorted(tags)
    for tag in ("samples/fixed", "samples/real_vs_fake"):
        entries = get_json(base, "/data/plugin/images/images", {"run": run, "tag": tag, "sample": 0})
        assert len(entries) == 2
        png = get(base, "/data/plugin/images/individualImage?" + entries[-1]["query"])
        with Image.open(io.BytesIO(png)) as im:
            im.load()
            assert im.width > 64 and im.height > 64


def test_hparams_tab_over_http(server):
    base = server["base"]
    experiment = get_json(base, "/data/plugin/hparams/experiment", data={"experimentName": ""})
    metric_tags = {m["name"]["tag"] for m in experiment.get("metricInfos", [])}
    assert "final/fid_effnet" in metric_tags, experiment
    hparam_names = {h["name"] for h in experiment.get("hparamInfos", [])}
    assert "model/loss" in hparam_names and "data/batch_size" in hparam_names
