"""Feature extractors: the offline EfficientNet-Lite0 is really ImageNet-pretrained; inception fails cleanly."""

from __future__ import annotations

import pytest
import torch

from artgan.errors import ArtGANError
from artgan.metrics.features import (
    EffNetLite0Features,
    FeatureExtractorUnavailable,
    build_feature_extractor,
    effnet_lite0_weights_path,
    remap_lukemelas_lite0,
)


@pytest.fixture(scope="module")
def effnet() -> EffNetLite0Features:
    return build_feature_extractor("effnet_lite0")


def test_lite0_cache_key_is_stable(effnet):
    """Real-image features cached on users' disks are keyed by it: a change would silently recompute them all."""
    assert effnet.cache_key == "effnet_lite0-57934424-224px-bilinear-noaa"


def test_remap_covers_every_key_both_ways():
    import timm

    raw = torch.load(effnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    mapped = remap_lukemelas_lite0(raw)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert len(raw) == len(mapped) == len(target) == 296
    assert set(mapped) == set(target)
    for k, v in mapped.items():
        assert v.shape == target[k].shape, k
    with pytest.raises(KeyError):
        remap_lukemelas_lite0({"_blocks.0._expand_conv.weight": torch.zeros(1)})  # block 0 has no expansion


def test_effnet_contract(effnet):
    assert effnet.name == "effnet" and effnet.num_features == 1280
    assert not effnet.training
    assert all(not p.requires_grad for p in effnet.parameters())
    effnet.train()  # cannot leave eval mode
    assert not effnet.training and not effnet.model.training
    torch.manual_seed(0)
    for h, w in ((32, 32), (64, 48)):
        x = torch.rand(2, 3, h, w) * 2 - 1
        f = effnet(x)
        assert f.shape == (2, 1280) and f.dtype == torch.float32 and torch.isfinite(f).all()
        assert not f.requires_grad
    # Batch composition does not change a sample's features.
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    assert torch.allclose(effnet(x)[:1], effnet(x[:1]), atol=1e-4)


def test_effnet_is_imagenet_pretrained(effnet):
    """scikit-image's bundled cat (Chelsea) must be an ImageNet cat class (281-285) in the top-1."""
    skdata = pytest.importorskip("skimage.data")
    cat = torch.from_numpy(skdata.chelsea()).permute(2, 0, 1).float().unsqueeze(0) / 127.5 - 1.0
    probs = effnet.classify(cat).softmax(-1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert top5[0] in range(281, 286), top5  # measured: 285 (Egyptian cat) with p ~= 0.79
    assert probs[281:286].sum() > 0.5
    # And a non-cat photo is not a cat: the coffee cup is an espresso / cup (967, 968, 504).
    coffee = torch.from_numpy(skdata.coffee()).permute(2, 0, 1).float().unsqueeze(0) / 127.5 - 1.0
    assert effnet.classify(coffee).argmax(-1).item() in (504, 967, 968)


def test_pooled_features_are_the_classifier_input(effnet):
    torch.manual_seed(1)
    x = torch.rand(2, 3, 40, 40) * 2 - 1
    logits = effnet.model.classifier(effnet(x))
    assert torch.allclose(logits, effnet.classify(x), atol=1e-4)


def test_unknown_extractor_is_a_user_error():
    with pytest.raises(ArtGANError, match="evaluator.fid.extractors"):
        build_feature_extractor("vgg")


def test_inception_offline_without_weights_raises_clear_error(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FeatureExtractorUnavailable) as info:
        build_feature_extractor("inception", weights_path=str(missing))
    msg = str(info.value)
    assert "pt_inception-2015-12-05" in msg and "inception_weights_path" in msg
    assert isinstance(info.value, ArtGANError)


def test_inception_with_torch_fidelity_if_weights_available():
    """Only where torch-fidelity and its weights are already present (never downloads)."""
    import os

    path = os.environ.get("ARTGAN_INCEPTION_WEIGHTS")
    if not path or not os.path.isfile(path):
        pytest.skip("set ARTGAN_INCEPTION_WEIGHTS=/path/to/pt_inception-2015-12-05-6726825d.pth to run")
    ex = build_feature_extractor("inception", weights_path=path)
    assert ex.name == "inception" and ex.num_features == 2048
    f = ex(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert f.shape == (2, 2048)


def test_bf16_features_stay_close_to_float32_and_are_cached_apart(effnet):
    """The evaluator's default (precision=auto) runs the network in bf16 on a CPU with AVX-512 BF16: each sample's
    features must stay close to float32's, and the cache key must tell the two apart."""
    from artgan.metrics.features import feature_precision

    bf16 = build_feature_extractor("effnet_lite0", precision="bf16")
    assert bf16.cache_key != effnet.cache_key and effnet.precision == "32"
    torch.manual_seed(0)
    x = torch.rand(8, 3, 64, 64) * 2 - 1
    a, b = effnet(x), bf16(x)
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=1)
    assert cosine.min() > 0.99, cosine
    assert feature_precision("32") == "32" and feature_precision("bf16-mixed") == "bf16"
    assert feature_precision("auto", "cpu") in ("32", "bf16")
    from artgan.errors import ConfigError
    from artgan.metrics.evaluator import Evaluator

    with pytest.raises(ConfigError, match="evaluator.fid.precision='fp8' is not a feature precision"):
        Evaluator(fid={"precision": "fp8"})  # when the evaluator is built, not at the first evaluation


def test_cpu_chunks_give_the_features_of_one_pass(effnet):
    """On a CPU a batch runs through the network in chunks (faster there): the features must be those of one
    pass, and ``embed`` must still pass gradients back to every image (``mode=project``)."""
    from artgan.metrics.features import CPU_CHUNK

    torch.manual_seed(2)
    x = torch.rand(2 * CPU_CHUNK + 3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        whole = effnet._embed(x)
    assert torch.allclose(effnet(x), whole, atol=1e-4)
    x.requires_grad_(True)
    effnet.embed(x).sum().backward()
    assert x.grad is not None and (x.grad.flatten(1).abs().sum(1) > 0).all()


def test_lite2_is_a_second_imagenet_network_with_its_own_weights(effnet):
    """EfficientNet-Lite2 (the metric network no discriminator here looks through): every key of its packaged
    weights maps, it is really ImageNet-pretrained, and its features and cache key are not Lite0's."""
    import timm

    from artgan.models.backbones import LITE_VARIANTS, effnet_lite_weights_path, remap_lukemelas_lite

    raw = torch.load(effnet_lite_weights_path(2), map_location="cpu", weights_only=True)
    mapped = remap_lukemelas_lite(raw, LITE_VARIANTS[2].stage_depths)
    target = timm.create_model("tf_efficientnet_lite2", pretrained=False).state_dict()
    assert set(mapped) == set(target) and all(v.shape == target[k].shape for k, v in mapped.items())

    lite2 = build_feature_extractor("effnet_lite2")
    assert lite2.name == "effnet_lite2" and lite2.num_features == 1280 and lite2.image_size == 260
    assert lite2.cache_key != effnet.cache_key and not lite2.training
    skdata = pytest.importorskip("skimage.data")
    cat = torch.from_numpy(skdata.chelsea()).permute(2, 0, 1).float().unsqueeze(0) / 127.5 - 1.0
    assert lite2.classify(cat).argmax(-1).item() in range(281, 286)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    cosine = torch.nn.functional.cosine_similarity(lite2(x), effnet(x), dim=1)
    assert lite2(x).shape == (3, 1280) and cosine.max() < 0.9  # a different network, not a renamed Lite0

    # Lite0's weights given as Lite2's: refused as a bad setting (exit code 2), naming it and the right file.
    from artgan.errors import ConfigError

    with pytest.raises(FeatureExtractorUnavailable) as info:
        build_feature_extractor("effnet_lite2", weights_path=effnet_lite0_weights_path())
    assert "effnet_lite2_weights_path" in str(info.value) and "efficientnet-lite2-9656183e.pth" in str(info.value)
    assert isinstance(info.value, ConfigError)
