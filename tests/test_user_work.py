"""Never lose or overwrite the user's work (issue 18): re-runs into a run dir, one safe checkpoint loader, bad
checkpoints in train.py and generate.py, generate.py's output_dir, NaN weights, a full disk, unknown keys, and
no empty run folder after a bad setting.

Subprocess runs (train.py / generate.py as a user types them) only where the command line is the point; the
rest runs in-process. Checkpoints come from the format-1 fixture or one short training run shared by the file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, REPO, run_script
from hydra import compose, initialize_config_dir
from test_reliability import _fake_trainer, _module_after_a_step, _one_paragraph, _run

from artgan import checkpoints
from artgan.callbacks.checkpointing import AtomicCheckpointIO
from artgan.callbacks.divergence import DivergenceGuard, TrainingDiverged
from artgan.cli import user_errors_exit
from artgan.config_validation import check_known_keys, validate
from artgan.errors import ConfigError
from artgan.io import DiskFull, atomic_torch_save
from artgan.outputs import check_output_dir, prepare_run_dir

V1_CHECKPOINT = REPO / "tests" / "fixtures" / "checkpoint_v1_dcgan64.ckpt"  # 64 px, see tests/fixtures/README.md
V1_MODEL = ["model.generator.ngf=4", "model.discriminator.ndf=4", "model.latent_dim=32", "model.ema_decay=0.999",
            "model/loss=hinge", "model.discriminator.spectral_norm=true", "model.discriminator.norm=none"]
QUIET = ["callbacks.metrics=null", "callbacks.plots=null"]


# ------------------------------------------------------------------------------------------- helpers
def _compose(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def _exit_code_and_error(capsys, fn, *args) -> tuple[int, str]:
    """``fn(*args)`` wrapped like train.py / generate.py: (exit code, the one error line)."""
    with pytest.raises(SystemExit) as exc:
        user_errors_exit(fn)(*args)
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: ") and "\n" not in err and "Traceback" not in err, err
    return exc.value.code, err


def _tree(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class _Payload:
    """Unpickling this calls open(marker, "w"): the marker file proves the pickle ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_checkpoint(folder: Path) -> tuple[Path, Path]:
    marker, path = folder / "payload-ran", folder / "evil.ckpt"
    torch.save({"artgan": {"version": 2}, "state_dict": {"w": torch.zeros(1)}, "extra": _Payload(marker)}, path)
    return path, marker


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 1-epoch train.py run at 64 px with samples and TensorBoard: the run dir."""
    run_dir = tmp_path_factory.mktemp("user_work") / "run"
    proc = run_script("train.py", *FAST_TRAIN, *QUIET, f"hydra.run.dir={run_dir}",
                      env={"ARTGAN_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "artgan-cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and any((run_dir / "tensorboard").iterdir())
    return run_dir


# ------------------------------------------------------------------- 1. re-running into a run dir
@pytest.mark.slow
def test_rerun_into_a_run_dir_is_refused_resumed_or_moved_aside(trained, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    before = _tree(run_dir)

    # No ckpt_path, no overwrite: exit 2 before anything is touched, .hydra/ and train.log included.
    proc = run_script("train.py", *FAST_TRAIN, *QUIET, "model.latent_dim=64", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _one_paragraph(proc.stderr)
    assert f"The run dir {run_dir} already holds an earlier run's checkpoints (last.ckpt)" in line
    assert "ckpt_path=auto" in line and "overwrite=true" in line and "nothing is deleted" in line
    assert _tree(run_dir) == before

    # A resume with other model settings (model=dcgan128 on a 64 px run): named with the matching command,
    # nothing written, and the run's .hydra/ record of its settings is put back.
    proc = run_script("train.py", *FAST_TRAIN, *QUIET, "model=dcgan128", f"hydra.run.dir={run_dir}", "ckpt_path=auto")
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _one_paragraph(proc.stderr)
    assert "model.generator.resolution=128 here but 64 in the checkpoint" in line
    assert f"python train.py {' '.join(FAST_TRAIN)}" in line
    assert f"model=dcgan128 ckpt_path=auto model.resolution=64 hydra.run.dir={run_dir}" in line
    assert _tree(run_dir) == before

    # overwrite=true: a fresh run; the earlier one's files are all kept, moved to previous_<date>/.
    proc = run_script("train.py", *FAST_TRAIN, *QUIET, "overwrite=true", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    previous = [p for p in run_dir.iterdir() if p.name.startswith("previous_")]
    assert len(previous) == 1 and _tree(previous[0]) == before
    assert "overwrite=true: moved the earlier run's files" in proc.stdout + proc.stderr
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()


def test_prepare_run_dir_rules(tmp_path):
    ckpts = tmp_path / "checkpoints"
    prepare_run_dir(tmp_path, None, False)  # nothing there: fine
    ckpts.mkdir()
    (ckpts / "epoch_0004.ckpt").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("mine")
    prepare_run_dir(tmp_path, str(ckpts / "epoch_0004.ckpt"), False)  # a resume: fine
    # ckpt_path=auto with no last.ckpt would start afresh over epoch_0004.ckpt: refused, naming that file.
    with pytest.raises(ConfigError, match=r"add ckpt_path=.*epoch_0004\.ckpt; to start over"):
        prepare_run_dir(tmp_path, "auto", False)
    (ckpts / "last.ckpt").write_bytes(b"last")
    prepare_run_dir(tmp_path, "auto", False)
    # overwrite: everything but this run's own files moves aside, byte for byte; earlier previous_* stay put.
    (tmp_path / "previous_2020-01-01_00-00-00").mkdir()
    (tmp_path / ".hydra").mkdir()
    prepare_run_dir(tmp_path, None, True, keep={".hydra"})
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("previous_") and p.name != "previous_2020-01-01_00-00-00"]
    assert len(moved) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".hydra", "previous_2020-01-01_00-00-00", moved[0].name])
    assert (moved[0] / "notes.txt").read_text() == "mine" and (moved[0] / "checkpoints" / "last.ckpt").is_file()


# ------------------------------------------------------------------------- 2. one safe loader
@pytest.mark.filterwarnings("ignore:Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
def test_the_safe_loader_refuses_a_pickle_payload_even_with_torch_force_no_weights_only_load(tmp_path,
                                                                                              monkeypatch):
    import lightning as L

    path, marker = _evil_checkpoint(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    torch.load(path)  # the threat is real: with the variable set, torch's default load runs the payload
    assert marker.exists()
    marker.unlink()

    for load in (checkpoints.safe_load, checkpoints.read, AtomicCheckpointIO().load_checkpoint,
                 # Lightning's resume path: Trainer.fit(ckpt_path=...) reads through the strategy's CheckpointIO
                 L.Trainer(plugins=[AtomicCheckpointIO()], logger=False, accelerator="cpu").strategy.load_checkpoint):
        with pytest.raises(ConfigError, match="not an ArtGAN checkpoint: it holds Python objects"):
            load(path)
        assert not marker.exists(), load


@pytest.mark.slow
def test_pickle_payload_with_torch_force_no_weights_only_load_from_the_command_line(tmp_path, monkeypatch):
    path, marker = _evil_checkpoint(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # the subprocesses inherit it
    run_dir = tmp_path / "run"
    proc = _run(f"ckpt_path={path}", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "is not an ArtGAN checkpoint" in _one_paragraph(proc.stderr)
    assert not marker.exists()
    assert not run_dir.exists()  # item 9: a bad setting leaves no run folder behind

    gen_dir, out = tmp_path / "gen", tmp_path / "out"
    proc = run_script("generate.py", f"ckpt_path={path}", f"output_dir={out}", f"hydra.run.dir={gen_dir}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "is not an ArtGAN checkpoint" in _one_paragraph(proc.stderr)
    assert not marker.exists() and not out.exists() and not gen_dir.exists()


# ----------------------------------------------------------------- 6. bad checkpoints in train.py
def _nan_checkpoint(folder: Path) -> Path:
    ckpt = torch.load(V1_CHECKPOINT, map_location="cpu", weights_only=True)
    for key, value in ckpt["state_dict"].items():  # G and its EMA copy, as after a divergence
        if key.startswith("generator") and value.is_floating_point():
            ckpt["state_dict"][key] = torch.full_like(value, float("nan"))
    torch.save(ckpt, folder / "nan.ckpt")
    return folder / "nan.ckpt"


BAD_CHECKPOINTS = {
    "truncated": "is truncated or corrupt",
    "empty": "is truncated or corrupt",
    "text": "is truncated or corrupt",
    "foreign": "is not an ArtGAN checkpoint: it has no 'artgan' section",
    "directory": "is a directory, not a checkpoint file",
    "nan": "holds non-finite weights (NaN or inf in generator.",
}


def _bad_checkpoint(case: str, folder: Path) -> Path:
    path = folder / f"{case}.ckpt"
    if case == "truncated":
        path.write_bytes(V1_CHECKPOINT.read_bytes()[: V1_CHECKPOINT.stat().st_size // 2])
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("hello, I am a text file\n")
    elif case == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 3}, path)
    elif case == "directory":
        path.mkdir()
    else:
        path = _nan_checkpoint(folder)
    return path


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_a_bad_resume_checkpoint_exits_2_before_anything_is_written(case, tmp_path, capsys, monkeypatch):
    from artgan.train import train

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    run_dir = tmp_path / "run"
    cfg = _compose("train", *FAST_TRAIN, *V1_MODEL, *QUIET, f"paths.output_dir={run_dir}",
                   f"ckpt_path={_bad_checkpoint(case, tmp_path)}")
    code, err = _exit_code_and_error(capsys, train, cfg)
    assert code == 2 and BAD_CHECKPOINTS[case] in err
    assert not run_dir.exists()


def test_a_resume_with_another_resolution_names_the_checkpoints_settings(tmp_path, capsys):
    from artgan.train import train

    cfg = _compose("train", *FAST_TRAIN, *V1_MODEL, *QUIET, "model=dcgan128", f"paths.output_dir={tmp_path / 'run'}",
                   f"ckpt_path={V1_CHECKPOINT}")
    code, err = _exit_code_and_error(capsys, train, cfg)
    assert code == 2
    assert "model.generator.resolution=128 here but 64 in the checkpoint" in err and "model.resolution=64" in err
    assert not (tmp_path / "run").exists()


def test_an_unreadable_checkpoint_names_the_reason(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"x")

    def denied(*args, **kwargs):  # chmod 000 does not stop root, who runs the tests here
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(ConfigError, match=r"could not be read: Permission denied. Check that the file is readable"):
        checkpoints.read(path)


def test_a_resume_with_another_architecture_names_the_config_option():
    class Other:
        def spec(self):
            return {"class": "mypackage.OtherGenerator", "kwargs": {"resolution": 64, "latent_dim": 128}}

    saved = {"artgan": {"generator": {"class": "artgan.models.dcgan.DCGANGenerator",
                                      "kwargs": {"resolution": 64, "latent_dim": 128, "ngf": 8, "max_channels": 512}}}}
    with pytest.raises(ConfigError) as err:
        checkpoints.check_same_networks(saved, {"generator": Other()}, "ckpt_path=x.ckpt")
    assert ("model.generator is mypackage.OtherGenerator here but artgan.models.dcgan.DCGANGenerator in the "
            "checkpoint" in str(err.value))
    assert "model/generator=dcgan model.resolution=64 model.latent_dim=128 model.generator.ngf=8" in str(err.value)


# ------------------------------------------------------------- 4 + 7. generate.py: output_dir, NaN
def test_generate_refuses_a_nan_checkpoint_and_writes_nothing(tmp_path, capsys):
    from artgan.generate import run

    out = tmp_path / "out"
    code, err = _exit_code_and_error(capsys, run, _compose("generate", "device=cpu", f"output_dir={out}",
                                                           f"ckpt_path={_nan_checkpoint(tmp_path)}"))
    assert code == 2 and "holds non-finite weights" in err and "epoch_*.ckpt" in err
    assert not out.exists()


@pytest.mark.parametrize("case", ["truncated", "empty", "foreign"])
def test_generate_bad_checkpoints_exit_2(case, tmp_path, capsys):
    from artgan.generate import run

    cfg = _compose("generate", "device=cpu", f"output_dir={tmp_path / 'out'}",
                   f"ckpt_path={_bad_checkpoint(case, tmp_path)}")
    code, err = _exit_code_and_error(capsys, run, cfg)
    assert code == 2 and BAD_CHECKPOINTS[case] in err


def test_generate_output_dir_is_never_written_over_unasked(tmp_path, capsys):
    from artgan.generate import run

    def generate(*overrides):
        return run(_compose("generate", "device=cpu", f"ckpt_path={V1_CHECKPOINT}", "num_images=2", *overrides))

    a_file = tmp_path / "picture.png"
    a_file.write_bytes(b"the user's")
    code, err = _exit_code_and_error(capsys, generate, f"output_dir={a_file}")
    assert code == 2 and f"output_dir={str(a_file)!r} is a file, not a folder" in err

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "00000.png").write_bytes(b"the user's")
    (mine / "notes.txt").write_text("keep me")
    code, err = _exit_code_and_error(capsys, generate, f"output_dir={mine}")
    assert code == 2 and "is not empty (00000.png, notes.txt)" in err and "overwrite=true" in err
    assert (mine / "00000.png").read_bytes() == b"the user's" and sorted(os.listdir(mine)) == ["00000.png", "notes.txt"]

    generate(f"output_dir={mine}", "overwrite=true")  # asked: replaces the files it writes, deletes nothing
    assert (mine / "00000.png").read_bytes() != b"the user's" and (mine / "notes.txt").read_text() == "keep me"
    assert check_output_dir(tmp_path / "new", overwrite=False) == tmp_path / "new"


# ------------------------------------------------------------------- 7. NaN in the first epoch
NAN_FROM_BATCH_2 = """
import artgan.losses as L
_g_term, _calls = L.NonSaturatingLoss.g_term, [0]
def _nan_from_batch_2(self, fake, real):
    _calls[0] += 1
    loss = _g_term(self, fake, real)
    return loss * float("nan") if _calls[0] >= 2 else loss
L.NonSaturatingLoss.g_term = _nan_from_batch_2
"""


@pytest.mark.slow
def test_nan_in_the_first_epoch_stops_at_its_end_and_names_no_missing_checkpoint(tmp_path):
    # Checks every 10 batches, 4 batches per epoch: only the epoch-end check can see it before the save.
    callbacks = "callbacks=[model_checkpoint,last_checkpoint,divergence_guard,samples]"
    result = _run("trainer.max_epochs=3", "trainer.log_every_n_steps=10", callbacks, f"hydra.run.dir={tmp_path}",
                  prelude=NAN_FROM_BATCH_2)
    assert result.returncode == 1, result.stderr[-3000:]
    line = _one_paragraph(result.stderr)
    assert "Training diverged at epoch 0, step 4 " in line and "g_loss=nan" in line
    assert "No checkpoint was saved before that" in line and "last.ckpt" not in line
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert not (tmp_path / "samples" / "epoch_0000.png").exists()  # stopped before drawing NaN samples


def test_divergence_guard_checks_at_the_epoch_end_once_and_names_only_existing_checkpoints(tmp_path):
    guard, trainer = DivergenceGuard(), _fake_trainer()
    trainer.log_every_n_steps = 10
    nan = _module_after_a_step(d_loss=1.0, g_loss=float("nan"), d_acc_real=0.5, d_acc_fake=0.5)
    trainer.fit_loop.total_batch_idx = 9  # the batch that just ended was checked: no second check
    guard.on_train_epoch_end(trainer, nan)
    trainer.fit_loop.total_batch_idx = 3
    # last_model_path is set before a save is attempted: a save the guard cancelled leaves no file.
    trainer.checkpoint_callbacks = [type("Cb", (), {"last_model_path": str(tmp_path / "last.ckpt")})()]
    with pytest.raises(TrainingDiverged, match="non-finite g_loss=nan. No checkpoint was saved before that"):
        guard.on_train_epoch_end(trainer, nan)
    (tmp_path / "last.ckpt").write_bytes(b"x")
    with pytest.raises(TrainingDiverged, match="The last good checkpoint is kept: .*last.ckpt"):
        guard.on_train_epoch_end(trainer, nan)


# -------------------------------------------------------------------------------- disk full
class _FullDisk:
    """A file whose writes fail with ENOSPC, as on a full disk."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def test_a_full_disk_is_one_paragraph_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import builtins

    import artgan.io

    path = tmp_path / "checkpoints" / "last.ckpt"
    atomic_torch_save({"w": torch.ones(1000)}, path)
    monkeypatch.setattr(artgan.io, "open", lambda *a, **k: _FullDisk(builtins.open(*a, **k)), raising=False)
    with pytest.raises(DiskFull) as err:  # through torch.save, whose zip writer hides the errno
        atomic_torch_save({"w": torch.zeros(1000)}, path)
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC  # optional caches carry on
    message = str(err.value)
    assert message.startswith(f"No space left to write {path}: the disk (or your quota) is full")
    assert " free in " in message and f"needs about {path.stat().st_size / 1024:.1f} KB" in message
    assert "the previous last.ckpt is intact" in message and f"ckpt_path={path}" in message
    assert torch.load(path, weights_only=True)["w"].eq(1).all()
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no stray temporary file


DISK_FULL_AT_SECOND_LAST_CKPT = """
import builtins, errno, os
import artgan.io
_opened = [0]
class _Full:
    def __init__(self, f): self._f = f
    def write(self, data): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    def __getattr__(self, name): return getattr(self._f, name)
    def __enter__(self): return self
    def __exit__(self, *exc): self._f.close()
def _open(file, *args, **kwargs):
    f = builtins.open(file, *args, **kwargs)
    if "last.ckpt" in str(file):
        _opened[0] += 1
        if _opened[0] >= 2:
            return _Full(f)
    return f
artgan.io.open = _open
"""


@pytest.mark.slow
def test_a_full_disk_during_training(tmp_path):
    result = _run("trainer.max_epochs=2", f"hydra.run.dir={tmp_path}", prelude=DISK_FULL_AT_SECOND_LAST_CKPT)
    assert result.returncode == 1, result.stderr[-3000:]
    last = tmp_path / "checkpoints" / "last.ckpt"
    line = _one_paragraph(result.stderr)
    assert f"No space left to write {last}" in line and "free in" in line and "needs about" in line
    assert "the previous last.ckpt is intact" in line
    assert torch.load(last, weights_only=True)["epoch"] == 0  # the epoch-0 checkpoint, loadable
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]


# ------------------------------------------------------------------------------- 9. small ones
@pytest.mark.parametrize("override, expected", [
    ("+model.nope=1", "model.nope is not a setting of GANModule (artgan.gan_module.GANModule), so it would be "
                      "ignored or fail later. Known keys under model: generator, discriminator, loss"),
    ("+model.generator.nfg=32", "model.generator.nfg is not a setting of DCGANGenerator "
                                "(artgan.models.dcgan.DCGANGenerator), so it would be ignored or fail later. Did you "
                                "mean model.generator.ngf?"),
    ("+data.batch=8", "Did you mean data.batch_size?"),
])
def test_unknown_keys_exit_2(override, expected, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code, err = _exit_code_and_error(capsys, validate, _compose("train", "trainer.accelerator=cpu", override))
    assert code == 2 and expected in err


def test_every_shipped_config_has_only_known_keys():
    conf = REPO / "conf"
    choices = [f"experiment={p.stem}" for p in (conf / "experiment").glob("*.yaml")]
    choices += [f"model={p.stem}" for p in (conf / "model").glob("*.yaml")]
    choices += [f"model/{group}={p.stem}" for group in ("generator", "discriminator", "loss", "augment")
                for p in (conf / "model" / group).glob("*.yaml")]
    choices += [f"{group}={p.stem}" for group in ("data", "trainer", "logger", "callbacks", "debug")
                for p in (conf / group).glob("*.yaml")]
    for choice in choices:
        check_known_keys(_compose("train", "paths.output_dir=.", choice))
    check_known_keys(_compose("generate", "paths.output_dir=."))


def test_data_root_that_is_a_file_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    a_file = tmp_path / "paintings.zip"
    a_file.write_bytes(b"PK")
    code, err = _exit_code_and_error(capsys, validate, _compose("train", "trainer.accelerator=cpu", "data=abstract_art",
                                                                f"data.root={a_file}"))
    assert code == 2 and f"data.root={str(a_file)!r} is a file, not a folder of images" in err
