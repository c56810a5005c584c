"""model.init_from: a new run starts from another run's networks; mismatches are one clear paragraph (exit 2).

The train.py run that fine-tunes from a checkpoint is shared with tests/test_loggers.py (one subprocess).
"""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import FAST_TRAIN, REPO
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from test_loggers import logged_run

from artgan.cli import find_user_error, user_errors_exit
from artgan.errors import ConfigError
from artgan.train import train

TINY = [*FAST_TRAIN, "model.ema_decay=0.9"]


def config(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[*TINY, *overrides])


def build(*overrides):
    return instantiate(config(*overrides).model)


def build_error(*overrides) -> ConfigError:
    """The user-facing error that building the model raises (Hydra's instantiate wraps it)."""
    with pytest.raises(Exception) as err:
        build(*overrides)
    user_error = find_user_error(err.value)
    assert isinstance(user_error, ConfigError), err.value
    return user_error


def save(module, path) -> None:
    """A checkpoint as Lightning writes it (the state dict plus the module's on_save_checkpoint section)."""
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)


@pytest.fixture
def source(tmp_path):
    torch.manual_seed(1)
    module = build("model.fixed_noise_seed=99")
    with torch.no_grad():  # an EMA unlike the generator, and non-default BatchNorm statistics
        for p in module.generator_ema.module.parameters():
            p.add_(0.1)
        for name, buf in module.generator.named_buffers():
            if name.endswith("running_mean"):
                buf.add_(0.3)
    path = tmp_path / "source.ckpt"
    save(module, path)
    return module, path


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_init_from_loads_generator_ema_discriminator_and_fixed_noise(source):
    src, path = source
    torch.manual_seed(2)
    module = build(f"model.init_from={path}")
    assert same(module.generator, src.generator)
    assert same(module.generator_ema.module, src.generator_ema.module)
    assert same(module.discriminator, src.discriminator)
    assert torch.equal(module.fixed_noise, src.fixed_noise)  # the seed differs: the noise came from the file
    assert int(module.generator_ema.n_averaged) == 0 and module.images_seen == 0 and module.d_steps == 0
    assert module.hparams.init_from == str(path)


def test_ema_starts_as_the_generator_when_the_source_has_none(tmp_path):
    plain = build("model.ema_decay=null")
    save(plain, tmp_path / "plain.ckpt")
    module = build(f"model.init_from={tmp_path / 'plain.ckpt'}")
    assert same(module.generator, plain.generator) and same(module.generator_ema.module, plain.generator)


def test_other_discriminator_starts_from_scratch_with_a_warning(source, caplog):
    src, path = source
    with caplog.at_level(logging.WARNING, logger="artgan.finetune"):
        module = build(f"model.init_from={path}", "model.discriminator.ndf=16")
    assert same(module.generator, src.generator)
    assert "discriminator starts from scratch" in caplog.text and "in the checkpoint vs" in caplog.text


def test_other_generator_stops_with_the_tensors_that_differ(source, capsys):
    _, path = source
    message = str(build_error(f"model.init_from={path}", "model.generator.ngf=16"))
    assert "net.0.weight (128, 64, 4, 4) in the checkpoint vs (128, 128, 4, 4) here" in message, message
    assert "model.generator.ngf=8" in message and "leave model.init_from unset" in message
    # What train.py prints: one paragraph, exit code 2, no traceback.
    cfg = config(f"model.init_from={path}", "model.generator.ngf=16", "paths.output_dir=" + str(path.parent / "r"))
    with pytest.raises(SystemExit) as exc:
        user_errors_exit(train)(cfg)
    err_text = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err_text.startswith("Error: model.init_from=") and "\n" not in err_text


def test_missing_file_names_the_setting(tmp_path):
    message = str(build_error(f"model.init_from={tmp_path / 'nothing.ckpt'}"))
    assert message.startswith("model.init_from=") and "nothing.ckpt' does not exist" in message


@pytest.mark.slow
def test_train_py_fine_tunes_from_another_run(tmp_path_factory):
    run = logged_run(tmp_path_factory)
    assert "Initialized from" in run["output"] and "generator, EMA generator, discriminator, fixed noise" in run["output"]
    ckpt = torch.load(run["run_dir"] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    source = torch.load(run["source"], map_location="cpu", weights_only=True)
    assert torch.equal(ckpt["state_dict"]["fixed_noise"], source["state_dict"]["fixed_noise"])
    assert ckpt["hyper_parameters"]["init_from"] == str(run["source"])
    assert ckpt["artgan"]["images_seen"] == 32  # counted from zero: 2 batches of 16
