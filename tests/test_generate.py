"""generate.py: every mode on a checkpoint that train.py writes inside the test, and every bad input."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from conftest import FAST_TRAIN, REPO, run_script
from hydra import compose, initialize_config_dir
from PIL import Image

from artgan.cli import user_errors_exit
from artgan.errors import ArtGANError
from artgan.generate import load_generator, run
from artgan.generate.compare import diversity, nearest_neighbours
from artgan.generate.data import data_settings
from artgan.generate.interpolate import slerp


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint written by train.py (a few steps, with an EMA generator), and its run directory."""
    tmp = tmp_path_factory.mktemp("gen_train")
    # Only the checkpointing callbacks: samples / metrics / plots would cost more than the training.
    proc = run_script("train.py", *FAST_TRAIN, "logger=none", "model.ema_decay=0.9", "callbacks.samples=null",
                      "callbacks.metrics=null", "callbacks.plots=null", f"hydra.run.dir={tmp / 'run'}",
                      env={"ARTGAN_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "artgan-cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt


@pytest.fixture(scope="module")
def art_folder(tmp_path_factory):
    """A small folder of random PNGs of assorted sizes, standing in for a training set."""
    root = tmp_path_factory.mktemp("art")
    rng = np.random.default_rng(0)
    for i in range(10):
        h, w = rng.integers(64, 96, size=2)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"img_{i}.png")
    return root


def cfg_for(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("generate", overrides=["device=cpu", *overrides])


def run_cli(capsys, *overrides) -> tuple[int, str]:
    """generate.py's task in-process, wrapped like the script: (exit code, stderr)."""
    with pytest.raises(SystemExit) as exc:
        user_errors_exit(run)(cfg_for(*overrides))
    return exc.value.code, capsys.readouterr().err


def assert_one_paragraph(err: str, *needles: str) -> None:
    assert "Traceback" not in err
    message = err.strip()
    assert message.startswith("Error: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, message


# ------------------------------------------------------------------------------------------- modes
def test_sample_cli_writes_pngs_and_grid_reproducibly(trained, tmp_path):
    out = tmp_path / "a"
    proc = run_script("generate.py", f"ckpt_path={trained}", "num_images=5", "batch_size=2", "seed=3",
                      f"output_dir={out}", f"hydra.run.dir={tmp_path / 'hydra'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    pngs = sorted(out.glob("0*.png"))
    assert len(pngs) == 5 and (out / "grid.png").is_file()
    assert Image.open(pngs[0]).size == (64, 64)  # the checkpoint's resolution, no model=... needed
    # Same seed, other batch size, in-process: the same pixels.
    run(cfg_for(f"ckpt_path={trained}", "num_images=5", "batch_size=5", "seed=3", f"output_dir={tmp_path / 'b'}"))
    for p in pngs:
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(tmp_path / "b" / p.name)))
    info = json.loads((out / "sample.json").read_text())
    assert info["used_ema"] is True and info["num_images"] == 5


def test_ema_generator_is_used_when_present(trained):
    ema, plain = load_generator(trained, use_ema=True), load_generator(trained, use_ema=False)
    assert ema.used_ema and not plain.used_ema
    ckpt = torch.load(trained, weights_only=True)
    sd = ckpt["state_dict"]
    w = "net.0.weight"
    assert torch.equal(ema.generator.state_dict()[w], sd[f"generator_ema.module.{w}"])
    assert torch.equal(plain.generator.state_dict()[w], sd[f"generator.{w}"])
    assert not torch.equal(sd[f"generator_ema.module.{w}"], sd[f"generator.{w}"])


def test_interpolate_grid_and_gif(trained, tmp_path):
    result = run(cfg_for("mode=interpolate", f"ckpt_path={trained}", "interpolate.num_points=3",
                         "interpolate.steps=2", "interpolate.closed=false", f"output_dir={tmp_path}"))
    grid = Image.open(tmp_path / "interpolation.png")
    assert grid.size == (4 * 66 + 2, 2 * 66 + 2)  # 2 segments x (2 ends + 2 steps), 64 px + 2 px padding
    gif = Image.open(tmp_path / "interpolation.gif")
    assert gif.n_frames == result["frames"] == 2 * 3 + 1


def test_slerp_keeps_ends_and_norm():
    a, b = torch.randn(128), torch.randn(128)
    b = b / b.norm() * a.norm()
    path = slerp(a, b, torch.linspace(0, 1, 7))
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    assert torch.allclose(path.norm(dim=1), a.norm().expand(7), rtol=1e-4)  # stays on the sphere
    assert torch.allclose(slerp(a, a, torch.tensor([0.5]))[0], a, atol=1e-5)  # parallel: no NaN


def test_compare_picture_and_diversity(trained, art_folder, tmp_path):
    result = run(cfg_for("mode=compare", f"ckpt_path={trained}", f"data.root={art_folder}", "compare.k=3",
                         "compare.num_rows=2", "compare.num_generated=6", f"output_dir={tmp_path}"))
    picture = Image.open(tmp_path / "compare.png")
    assert picture.width > 4 * 64 and picture.height > 2 * 64
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["num_real"] == 10 and len(saved["rows"]) == 2 and len(saved["rows"][0]["neighbours"]) == 3
    assert saved["rows"][0]["neighbours"][0]["file"].startswith("img_")
    assert 0 < result["diversity"]["diversity_ratio"] < 10


def test_nearest_neighbours_find_a_copy_and_diversity_ratio():
    real = torch.randn(20, 32)
    fake = torch.cat([real[7:8] * 3.0, torch.randn(3, 32)])  # a scaled copy: cosine distance 0
    dist, idx = nearest_neighbours(fake, real, k=2)
    assert idx[0, 0] == 7 and dist[0, 0] < 1e-6 and (dist[:, 0] <= dist[:, 1]).all()
    assert diversity(real, real)["diversity_ratio"] == pytest.approx(1.0)
    collapsed = diversity(real[:1].repeat(20, 1) + 1e-3 * torch.randn(20, 32), real)
    assert collapsed["diversity_ratio"] < 0.01


def test_evaluate_writes_fid_kid(trained, art_folder, tmp_path, capsys):
    """In both offline feature spaces: Lite0 and Lite2 (the one no discriminator looks through)."""
    run(cfg_for("mode=evaluate", f"ckpt_path={trained}", f"data.root={art_folder}", "evaluator.num_samples=8",
                "evaluator.fid.kid_subset_size=4", "evaluator.fid.kid_subsets=5", f"output_dir={tmp_path}",
                "evaluator.fid.extractors=[effnet_lite0,effnet_lite2]"))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["metrics"]["fid_effnet"] > 0 and saved["metrics"]["kid_effnet"] is not None
    metrics = saved["metrics"]
    assert metrics["fid_effnet_lite2"] > 0 and metrics["fid_effnet_lite2"] != metrics["fid_effnet"]
    assert 0 < metrics["diversity_effnet_lite2"] < 10 and metrics["kid_effnet_lite2"] is not None
    assert saved["protocol"]["num_real"] == 10 and saved["protocol"]["num_samples"] == 8
    assert saved["metrics"]["js"] >= 0
    assert "fid_effnet" in capsys.readouterr().out


def test_real_images_default_to_the_training_data(trained, art_folder):
    run_dir = trained.parent.parent
    settings, _ = data_settings({}, run_dir)
    assert settings["source"] == "procedural" and settings["num_images"] == 64
    settings, _ = data_settings({"root": str(art_folder), "border_crop": 0.1}, run_dir)
    assert settings["source"] == "folder" and settings["border_crop"] == 0.1 and "num_images" not in settings


# -------------------------------------------------------------------------------------- bad inputs
def test_missing_checkpoint_cli(tmp_path):
    proc = run_script("generate.py", f"ckpt_path={tmp_path / 'nope.ckpt'}", f"output_dir={tmp_path}",
                      f"hydra.run.dir={tmp_path / 'hydra'}")
    assert proc.returncode != 0
    assert_one_paragraph(proc.stderr.strip().split("\n\n")[-1], "no such file")
    assert "Traceback" not in proc.stderr


class _Evil:
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused_without_running_it(tmp_path, capsys):
    _Evil.marker = str(tmp_path / "pwned")
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"artgan": {}, "state_dict": _Evil()}, f)
    torch.save({"artgan": {}, "state_dict": _Evil()}, tmp_path / "evil_zip.ckpt")
    for p in (path, tmp_path / "evil_zip.ckpt"):
        code, err = run_cli(capsys, f"ckpt_path={p}", f"output_dir={tmp_path}")
        assert code != 0
        assert_one_paragraph(err, "not an ArtGAN checkpoint")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("case", ["directory", "truncated", "foreign", "empty", "not_torch"])
def test_bad_checkpoint_files(case, trained, tmp_path, capsys):
    path = tmp_path / "x.ckpt"
    if case == "directory":
        path = trained.parent
        needle = "is a directory"
    elif case == "truncated":
        path.write_bytes(trained.read_bytes()[: trained.stat().st_size // 2])
        needle = "truncated or corrupt"
    elif case == "foreign":
        torch.save({"state_dict": {}}, path)
        needle = "no 'artgan' section"
    elif case == "empty":
        path.write_bytes(b"")
        needle = "truncated or corrupt"
    else:
        path.write_text("hello, I am a text file\n")
        needle = "truncated or corrupt"
    code, err = run_cli(capsys, f"ckpt_path={path}", f"output_dir={tmp_path / 'out'}")
    assert code != 0
    assert_one_paragraph(err, needle)
    if case == "directory":
        assert "last.ckpt" in err  # points at the file to use


def test_unknown_mode_and_missing_ckpt_path(trained, tmp_path, capsys):
    code, err = run_cli(capsys, "mode=paint", f"ckpt_path={trained}", f"output_dir={tmp_path}")
    assert code == 2
    assert_one_paragraph(err, "sample, compare, interpolate, evaluate")
    code, err = run_cli(capsys, f"output_dir={tmp_path}")
    assert code != 0
    assert_one_paragraph(err, "ckpt_path is not set")


def test_load_generator_raises_artgan_error(tmp_path):
    with pytest.raises(ArtGANError, match="no such file"):
        load_generator(tmp_path / "missing.ckpt")


# -------------------------------------------------------------------------------------- truncation
def test_truncated_latents_are_nearer_the_mean_and_reproducible(trained):
    from artgan.models.base import TRUNCATION_RADIUS

    g = load_generator(trained).generator
    seeded = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    plain = g.sample_latents(2000, generator=seeded())
    assert torch.equal(g.sample_latents(2000, generator=seeded(), truncation=1.0), plain)  # psi 1: untouched
    z = g.sample_latents(2000, generator=seeded(), truncation=0.5)
    assert torch.equal(z, g.sample_latents(2000, generator=seeded(), truncation=0.5))  # same seed, same latents
    assert float(z.abs().max()) <= 0.5 * TRUNCATION_RADIUS  # resampled beyond the radius, then scaled
    assert z.std() == pytest.approx(0.5 * 0.88, rel=0.05)  # a standard normal cut at 2 has std 0.88
    assert z.norm(dim=1).mean() < 0.5 * plain.norm(dim=1).mean()


def test_sample_and_interpolate_with_truncation(trained, tmp_path):
    run(cfg_for(f"ckpt_path={trained}", "num_images=3", "truncation=0.5", f"output_dir={tmp_path / 't'}"))
    run(cfg_for(f"ckpt_path={trained}", "num_images=3", f"output_dir={tmp_path / 'u'}"))
    assert json.loads((tmp_path / "t" / "sample.json").read_text())["truncation"] == 0.5
    truncated, usual = (np.asarray(Image.open(tmp_path / d / "00000.png")) for d in ("t", "u"))
    assert not np.array_equal(truncated, usual)
    result = run(cfg_for("mode=interpolate", f"ckpt_path={trained}", "truncation=0.7", "interpolate.num_points=2",
                         "interpolate.steps=1", f"output_dir={tmp_path / 'i'}"))
    assert result["truncation"] == 0.7 and Image.open(result["gif"]).n_frames == result["frames"]


def test_truncation_sweep_in_evaluate_writes_a_table_and_a_plot(trained, art_folder, tmp_path, capsys):
    result = run(cfg_for("mode=evaluate", f"ckpt_path={trained}", f"data.root={art_folder}", "truncation=[1.0,0.5]",
                         "evaluator.num_samples=8", "evaluator.fid.kid_subset_size=4", "evaluator.fid.kid_subsets=5",
                         "evaluator.swd.enabled=false", "evaluator.kl.enabled=false", "evaluator.spectral.enabled=false",
                         f"output_dir={tmp_path}"))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert [row["truncation"] for row in saved["sweep"]] == [1.0, 0.5] == saved["truncation"]
    for row in saved["sweep"]:
        assert {"precision_effnet", "recall_effnet", "density_effnet", "coverage_effnet", "kid_effnet"} \
            <= set(row["metrics"])
    assert saved["sweep"][0]["metrics"]["kid_effnet"] != saved["sweep"][1]["metrics"]["kid_effnet"]
    with Image.open(result["plot"]) as plot:
        assert plot.size == (1000, 360)
    with Image.open(result["samples"]) as samples:  # the same 8 latents at each psi, one row per psi
        assert samples.height == 2 * (64 + 4) and samples.width > 8 * 64
        rows = np.asarray(samples.convert("RGB"))
        assert not np.array_equal(rows[:68, 64:], rows[68:, 64:])
    out = capsys.readouterr().out
    assert "psi" in out and "precision_effnet" in out and "truncation.png" in out and "truncation_samples.png" in out


def test_fastgan_truncation_reaches_its_first_feature_map_in_every_mode(art_folder, tmp_path):
    """FastGAN rescales its latent, so truncation must act inside the network: sample gives images nearer to one
    another than without, and the evaluate sweep measures less variety at psi 0.3."""
    from test_export import write_checkpoint

    from artgan.models.fastgan import FastGANGenerator

    torch.manual_seed(0)
    ckpt = tmp_path / "fastgan.ckpt"
    write_checkpoint(ckpt, FastGANGenerator(64, 32, ngf=8))

    def spread(folder) -> float:
        images = np.stack([np.asarray(Image.open(folder / f"{i:05d}.png"), dtype=np.float64) for i in range(8)])
        return float(np.abs(images - images.mean(0)).mean())

    for name, extra in (("plain", []), ("truncated", ["truncation=0.3"])):
        run(cfg_for(f"ckpt_path={ckpt}", "num_images=8", f"output_dir={tmp_path / name}", *extra))
    assert spread(tmp_path / "truncated") < 0.6 * spread(tmp_path / "plain")
    result = run(cfg_for("mode=evaluate", f"ckpt_path={ckpt}", f"data.root={art_folder}", "truncation=[1.0,0.01]",
                         "evaluator.num_samples=16", "evaluator.fid.kid_subset_size=8", "evaluator.fid.kid_subsets=5",
                         "evaluator.swd.enabled=false", "evaluator.kl.enabled=false", "evaluator.spectral.enabled=false",
                         f"output_dir={tmp_path / 'eval'}"))
    full, truncated = (row["metrics"]["diversity_effnet"] for row in result["sweep"])
    assert truncated < 0.1 * full, (truncated, full)


@pytest.mark.parametrize(("overrides", "needle"), [
    (["truncation=1.5"], "must be a number in (0, 1]"),
    (["truncation=0"], "must be a number in (0, 1]"),
    (["truncation=[1.0,0.5]"], "only mode=evaluate"),
    (["mode=evaluate", "truncation=[]"], "is empty"),
])
def test_bad_truncation_is_one_paragraph(overrides, needle, trained, tmp_path, capsys):
    code, err = run_cli(capsys, f"ckpt_path={trained}", *overrides, f"output_dir={tmp_path / 'out'}")
    assert code == 2
    assert_one_paragraph(err, needle)
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------------------------------- projection
def test_project_two_paintings_then_walk_between_them(trained, art_folder, tmp_path):
    paintings = tmp_path / "paintings"
    paintings.mkdir()
    for i in (0, 1):
        (paintings / f"img_{i}.png").write_bytes((art_folder / f"img_{i}.png").read_bytes())
    out = tmp_path / "projected"
    result = run(cfg_for("mode=project", f"ckpt_path={trained}", f"image={paintings}", "project.steps=2",
                         "project.starts=1", "project.frames=2", "project.search=4", f"output_dir={out}"))
    assert [row["name"] for row in result["paintings"]] == ["img_0", "img_1"]
    assert json.loads((out / "project.json").read_text())["paintings"] == result["paintings"]
    dim = load_generator(trained).generator.latent_dim
    for row in result["paintings"]:
        assert row["loss"] < row["loss_at_start"]  # Adam made progress on the painting
        assert 0 <= row["feature_distance"] <= 2 and 0 <= row["best_random_feature_distance"] <= 2
        name = row["name"]
        assert Image.open(out / f"{name}_target.png").size == Image.open(out / f"{name}_projection.png").size \
            == (64, 64)
        with Image.open(out / f"{name}_projection.gif") as gif:
            assert gif.n_frames == 2 and gif.size == (2 * 66 + 2, 66 + 2)  # painting | projection, per frame
        saved = torch.load(out / f"{name}_latent.pt", weights_only=True)
        assert saved["latent"].shape == (dim,) and saved["feature_distance"] == row["feature_distance"]
    # A walk from one projected painting to the other starts at the first projection.
    walk = run(cfg_for("mode=interpolate", f"ckpt_path={trained}", "interpolate.steps=2", "interpolate.closed=false",
                       f"interpolate.latents=[{out / 'img_0_latent.pt'},{out / 'img_1_latent.pt'}]",
                       f"output_dir={tmp_path / 'walk'}"))
    assert walk["num_points"] == 2 and walk["frames"] == 4
    first = np.asarray(Image.open(walk["grid"]).convert("RGB"))[2:66, 2:66].astype(int)
    assert np.abs(first - np.asarray(Image.open(out / "img_0_projection.png")).astype(int)).max() <= 2


@pytest.mark.parametrize("case", ["unset", "missing", "not_an_image", "too_small", "empty_folder"])
def test_bad_project_input_is_one_paragraph(case, trained, tmp_path, capsys):
    target = tmp_path / "in"
    needle = {"unset": "needs image=PATH", "missing": "does not exist", "not_an_image": "not an image Pillow can read",
              "too_small": "too small for a 64 px generator", "empty_folder": "folder without image files"}[case]
    if case == "not_an_image":
        target = tmp_path / "painting.png"
        target.write_text("not a painting\n")
    elif case == "too_small":
        target = tmp_path / "tiny.png"
        Image.new("RGB", (8, 8), (200, 10, 10)).save(target)
    elif case == "empty_folder":
        target.mkdir()
    image = [] if case == "unset" else [f"image={target}"]
    code, err = run_cli(capsys, "mode=project", f"ckpt_path={trained}", *image, f"output_dir={tmp_path / 'out'}")
    assert code == 2
    assert_one_paragraph(err, needle)
    assert not (tmp_path / "out").exists()  # every input checked before a file is written


@pytest.mark.parametrize("case", ["missing", "text", "wrong_shape", "one"])
def test_bad_latent_files_for_interpolate(case, trained, tmp_path, capsys):
    good = tmp_path / "good.pt"
    torch.save({"latent": torch.zeros(load_generator(trained).generator.latent_dim)}, good)
    bad = tmp_path / "bad.pt"
    if case == "text":
        bad.write_text("hello\n")
    elif case == "wrong_shape":
        torch.save({"latent": torch.zeros(3)}, bad)
    files = {"missing": [good, tmp_path / "nope.pt"], "text": [good, bad], "wrong_shape": [bad, good],
             "one": [good]}[case]
    needle = {"missing": "is not a file", "text": "not a latent file", "wrong_shape": "shape",
              "one": "at least 2"}[case]
    code, err = run_cli(capsys, "mode=interpolate", f"ckpt_path={trained}",
                        f"interpolate.latents=[{','.join(str(f) for f in files)}]", f"output_dir={tmp_path / 'out'}")
    assert code == 2
    assert_one_paragraph(err, needle)
