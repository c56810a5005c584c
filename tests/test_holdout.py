"""data.holdout: a seeded split by a hash of each image's name, stable when the folder grows, never trained on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_data_module import folder_dm, make_folder

from artgan.data.holdout import check_holdout, holdout_mask
from artgan.errors import ArtGANError, ConfigError


def test_fraction_keeps_earlier_assignments_when_files_are_added():
    names = [f"gallery/painting_{i}.jpg" for i in range(2000)]
    mask = holdout_mask(names, 0.1, seed=0)
    assert 0.08 < mask.mean() < 0.12  # about the fraction
    grown = holdout_mask(names + [f"new/extra_{i}.png" for i in range(500)], 0.1, seed=0)
    assert np.array_equal(grown[:2000], mask)  # no earlier painting changes side
    reordered = holdout_mask(names[::-1], 0.1, seed=0)
    assert np.array_equal(reordered[::-1], mask)  # the order of the list does not matter
    assert not np.array_equal(holdout_mask(names, 0.1, seed=1), mask)  # the seed picks another split


def test_count_is_exact_and_repeatable():
    names = [f"{i}" for i in range(100)]
    mask = holdout_mask(names, 7, seed=3)
    assert mask.sum() == 7 and np.array_equal(mask, holdout_mask(names, 7, seed=3))
    assert holdout_mask(names, None).sum() == 0


@pytest.mark.parametrize("bad", [-1, 1.0, 1.5, "ten", True, -0.1])
def test_bad_holdout_values_are_config_errors(bad):
    with pytest.raises(ConfigError, match="data.holdout"):
        check_holdout(bad)


def test_good_holdout_values():
    assert check_holdout(None) is None and check_holdout(0) is None and check_holdout(0.0) is None
    assert check_holdout(0.25) == 0.25 and check_holdout(50) == 50


def test_datamodule_serves_disjoint_training_and_heldout_images(tmp_path):
    root = make_folder(tmp_path / "imgs", n=12)
    full = folder_dm(root, tmp_path / "cache")
    held = folder_dm(root, tmp_path / "cache", holdout=4, batch_size=2)
    held.setup()
    assert (held.dataset_size, held.heldout_size) == (8, 4) and (full.dataset_size, full.heldout_size) == (12, 0)
    train, out = held.real_images(), held.heldout_images()
    assert train.shape == (8, 3, 16, 16) and out.shape == (4, 3, 16, 16)
    everything = {bytes(x.numpy()) for x in full.real_images()}
    train_set, out_set = {bytes(x.numpy()) for x in train}, {bytes(x.numpy()) for x in out}
    assert not train_set & out_set and train_set | out_set == everything  # a partition of the folder
    seen = {bytes(x.numpy()) for b in held.train_dataloader() for x in b}  # batches are flipped at random:
    seen |= {bytes(np.ascontiguousarray(x.numpy()[..., ::-1])) for b in held.train_dataloader() for x in b}  # unflip
    assert not seen & out_set  # training never sees a held-out image
    # Identities: the training set's fingerprint changes with the split, the held-out one differs from it.
    assert held.fingerprint != full.fingerprint and held.heldout_fingerprint not in ("", held.fingerprint)
    assert full.heldout_fingerprint == ""


def test_adding_files_keeps_the_heldout_paintings_out(tmp_path):
    root = make_folder(tmp_path / "imgs", n=12)
    before = folder_dm(root, tmp_path / "cache", holdout=0.3)
    before.setup()
    files = before.manifest["files"]
    out_before = {files[i] for i in before._heldout_index}
    assert out_before  # the 12 names hash to at least one held-out image
    rng = np.random.default_rng(1)
    for i in range(6):
        from PIL import Image

        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(root / f"added_{i}.png")
    after = folder_dm(root, tmp_path / "cache", holdout=0.3)
    after.setup()
    out_after = {after.manifest["files"][i] for i in after._heldout_index}
    assert out_after & set(files) == out_before


def test_a_holdout_that_leaves_nothing_is_one_paragraph(tmp_path):
    root = make_folder(tmp_path / "imgs", n=3)
    with pytest.raises(ArtGANError, match="data.holdout=2 leaves 1 training"):
        folder_dm(root, tmp_path / "cache", holdout=2).setup()
    with pytest.raises(ConfigError, match="data.holdout"):
        folder_dm(root, tmp_path / "cache", holdout=1.0).setup()


def test_no_holdout_keeps_the_old_fingerprint_and_images(tmp_path):
    from artgan.data.cache import cache_key

    dm = folder_dm(make_folder(tmp_path / "imgs", n=5), tmp_path / "cache")
    assert dm.fingerprint == cache_key(dm._identity()[0])  # real-feature caches of earlier runs stay valid
    dm.setup()
    assert torch.equal(dm.real_images(), torch.from_numpy(np.array(dm._images)))
