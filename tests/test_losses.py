import math

import pytest
import torch

from artgan.losses import (
    HingeLoss,
    LeastSquaresLoss,
    NonSaturatingLoss,
    RelativisticLoss,
    WassersteinGPLoss,
    gradient_penalty,
    r1_penalty,
)

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def softplus(x):
    return math.log1p(math.exp(x))


def test_bce_on_hand_computed_values():
    loss = NonSaturatingLoss()
    # D: -log sigmoid(real) - log(1 - sigmoid(fake)) = softplus(-real) + softplus(fake), averaged.
    expected_d = (softplus(-2.0) + softplus(1.0)) / 2 + (softplus(0.5) + softplus(-3.0)) / 2
    assert loss.d_terms(REAL, FAKE).item() == pytest.approx(expected_d, rel=1e-6)
    # Non-saturating G: -log sigmoid(fake).
    assert loss.g_term(FAKE, None).item() == pytest.approx((softplus(-0.5) + softplus(3.0)) / 2, rel=1e-6)
    assert loss.score(torch.tensor([0.0])).item() == 0.5


def test_bce_one_sided_label_smoothing():
    loss = NonSaturatingLoss(label_smoothing=0.1)
    # Real target 0.9: -(0.9 log sig(x) + 0.1 log(1 - sig(x))) = 0.9 softplus(-x) + 0.1 softplus(x)
    real_term = sum(0.9 * softplus(-x) + 0.1 * softplus(x) for x in (2.0, -1.0)) / 2
    fake_term = (softplus(0.5) + softplus(-3.0)) / 2
    assert loss.d_terms(REAL, FAKE).item() == pytest.approx(real_term + fake_term, rel=1e-6)
    with pytest.raises(ValueError, match="label_smoothing"):
        NonSaturatingLoss(label_smoothing=1.0)


def test_hinge_on_hand_computed_values():
    loss = HingeLoss()
    # relu(1 - real): [0, 2] -> 1 ; relu(1 + fake): [1.5, 0] -> 0.75
    assert loss.d_terms(REAL, FAKE).item() == pytest.approx(1.75)
    assert loss.g_term(FAKE, None).item() == pytest.approx(1.25)


def test_lsgan_on_hand_computed_values():
    loss = LeastSquaresLoss()
    # 0.5 * mean((real-1)^2) = 0.5 * (1 + 4)/2 ; 0.5 * mean(fake^2) = 0.5 * (0.25 + 9)/2
    assert loss.d_terms(REAL, FAKE).item() == pytest.approx(1.25 + 2.3125)
    assert loss.g_term(FAKE, None).item() == pytest.approx(0.5 * (0.25 + 16.0) / 2)


def test_wgan_on_hand_computed_values():
    loss = WassersteinGPLoss()
    assert loss.d_terms(REAL, FAKE).item() == pytest.approx(-1.25 - 0.5)
    assert loss.g_term(FAKE, None).item() == pytest.approx(1.25)
    assert loss.d_wins_g_loss is None  # an unbounded critic's accuracy says nothing


def test_relativistic_loss_sees_real_logits_in_the_generator_step():
    loss = RelativisticLoss(r1_gamma=0.0)
    # D: softplus(-(real - fake)) pairwise: pairs (2, 0.5) and (-1, -3).
    assert loss.d_terms(REAL, FAKE).item() == pytest.approx((softplus(-1.5) + softplus(-2.0)) / 2)
    assert loss.g_term(FAKE, REAL).item() == pytest.approx((softplus(1.5) + softplus(2.0)) / 2)
    seen = []

    def critic(x):
        seen.append(x)
        return x.flatten(1).mean(1)

    loss.generator_loss(critic, torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4))
    assert len(seen) == 2 and torch.equal(seen[0], torch.ones(2, 3, 4, 4))  # D ran on the real images too


def test_discriminator_loss_adds_lazy_r1_only_every_r1_every_steps():
    w = torch.full((1, 3, 2, 2), 0.5)

    def critic(x):
        return (x * w).flatten(1).sum(1)

    real, fake = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    loss = HingeLoss(r1_gamma=2.0, r1_every=4)
    plain = loss.discriminator_loss(critic, real, fake, step=1)
    lazy = loss.discriminator_loss(critic, real, fake, step=4)
    # The critic's input gradient is w everywhere: R1 = ||w||^2 = 3, added as 0.5 * gamma * every * R1.
    assert torch.equal(plain.total, plain.adversarial)
    assert (lazy.total - lazy.adversarial).item() == pytest.approx(0.5 * 2.0 * 4 * w.pow(2).sum().item())
    assert not lazy.real_logits.requires_grad  # handed back detached, for logging and ADA


def test_gradient_penalty_of_linear_critic():
    # D(x) = sum(w * x) has gradient w everywhere: penalty = (||w|| - 1)^2.
    w = torch.full((1, 3, 4, 4), 0.5)

    def critic(x):
        return (x * w).flatten(1).sum(1)

    gp = gradient_penalty(critic, torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4))
    assert gp.item() == pytest.approx((w.norm().item() - 1.0) ** 2, rel=1e-5)
    out = WassersteinGPLoss(gp_weight=10.0).discriminator_loss(critic, torch.randn(5, 3, 4, 4),
                                                               torch.randn(5, 3, 4, 4), step=1)
    assert (out.total - out.adversarial).item() == pytest.approx(10 * (w.norm().item() - 1.0) ** 2, rel=1e-5)


def test_r1_penalty_of_quadratic():
    x = torch.randn(4, 3, 2, 2, requires_grad=True)
    logits = (x**2).flatten(1).sum(1)  # gradient 2x
    expected = (2 * x.detach()).flatten(1).pow(2).sum(1).mean()
    assert r1_penalty(logits, x).item() == pytest.approx(expected.item(), rel=1e-5)


def test_losses_pickle_for_ddp_spawn():
    import pickle

    trained = HingeLoss(lecam=0.3)
    trained.discriminator_loss(lambda x: x.mean((1, 2, 3)), torch.ones(2, 3, 4, 4), -torch.ones(2, 3, 4, 4), step=1)
    for loss in (NonSaturatingLoss(0.1), HingeLoss(1.0), LeastSquaresLoss(), WassersteinGPLoss(), RelativisticLoss(),
                 trained):
        clone = pickle.loads(pickle.dumps(loss))
        assert clone.spec() == loss.spec() and clone.state_dict() == loss.state_dict()
    assert trained.state_dict()["lecam_anchors"] == {"real": 1.0, "fake": -1.0}


def test_mode_seeking_term_is_inverse_image_gap_per_latent_gap():
    from artgan.losses import mode_seeking_term

    latents = torch.cat([torch.zeros(2, 4), torch.ones(2, 4)])           # latent gap 1 per pair
    fake = torch.cat([torch.zeros(2, 3, 2, 2), torch.full((2, 3, 2, 2), 0.5)])  # image gap 0.5
    assert mode_seeking_term(fake, latents).item() == pytest.approx(2.0, rel=1e-4)
    # A generator that paints one picture for different latents gets a large term; varied pictures a small one.
    assert mode_seeking_term(torch.zeros(4, 3, 2, 2), latents).item() > 1e4


def test_mode_seeking_weight_adds_to_generator_loss_only_when_on():
    fake = torch.cat([torch.zeros(2, 3, 2, 2), torch.full((2, 3, 2, 2), 0.5)])
    latents = torch.cat([torch.zeros(2, 4), torch.ones(2, 4)])
    def critic(x):
        return torch.zeros(x.shape[0])
    off = HingeLoss().generator_loss(critic, fake, fake, latents)
    on = HingeLoss(mode_seeking=0.5).generator_loss(critic, fake, fake, latents)
    assert off.item() == pytest.approx(0.0)
    assert on.item() == pytest.approx(0.5 * 2.0, rel=1e-4)
    with pytest.raises(ValueError, match="mode_seeking"):
        HingeLoss(mode_seeking=-1.0)


def _smooth_images(n: int, seed: int) -> torch.Tensor:
    """Paintings-like test images: smooth colour fields and a faint grain, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    smooth = torch.nn.functional.interpolate(coarse, size=64, mode="bicubic", align_corners=False)
    return (smooth + 0.02 * torch.randn(n, 3, 64, 64, generator=g)).clamp(-1, 1)


#: a one-pixel checkerboard of +-1 at 64 px, the up-sampling artefact the spectral regularizer is for
CHECKERBOARD = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 2 - 1.0


def test_spectrum_matching_term_is_zero_for_one_set_and_grows_with_a_checkerboard():
    from artgan.losses import spectrum_matching_term

    real = _smooth_images(8, 0)
    assert spectrum_matching_term(real, real).item() == pytest.approx(0.0, abs=1e-12)
    checker = CHECKERBOARD
    faint = (real + 0.02 * checker).clamp(-1, 1)
    strong = (real + 0.1 * checker).clamp(-1, 1)
    assert 0 < spectrum_matching_term(faint, real).item() < spectrum_matching_term(strong, real).item()


def test_spectrum_matching_gradient_removes_the_checkerboard():
    """What G gets from the term: descending it takes the speckle out of a picture, not the picture."""
    from artgan.losses import spectrum_matching_term

    real = _smooth_images(8, 0)
    checker = CHECKERBOARD
    fake = (_smooth_images(8, 1) + 0.1 * checker).requires_grad_(True)
    opt = torch.optim.Adam([fake], lr=5e-3)
    before = spectrum_matching_term(fake, real).item()
    for _ in range(100):
        opt.zero_grad()
        spectrum_matching_term(fake, real).backward()
        opt.step()
    assert spectrum_matching_term(fake, real).item() < 0.2 * before
    residual_checker = (fake.detach() * checker).mean().item()  # the checkerboard's amplitude left
    assert abs(residual_checker) < 0.5 * 0.1


def test_spectrum_matching_weight_adds_to_generator_loss_only_when_on():
    from artgan.losses import spectrum_matching_term

    real, fake = _smooth_images(4, 0), _smooth_images(4, 1)
    def critic(x):
        return torch.zeros(x.shape[0])
    off = HingeLoss().generator_loss(critic, fake, real)
    on = HingeLoss(spectrum_matching=2.0).generator_loss(critic, fake, real)
    assert off.item() == pytest.approx(0.0)
    assert on.item() == pytest.approx(2.0 * spectrum_matching_term(fake, real).item(), rel=1e-5)
    with pytest.raises(ValueError, match="spectrum_matching"):
        NonSaturatingLoss(spectrum_matching=-1.0)


def test_ot_matching_term_is_zero_for_a_reordered_set_and_the_square_of_a_known_shift():
    from artgan.losses import ot_matching_term

    real = _smooth_images(8, 0)
    assert ot_matching_term(real[torch.randperm(8)], real).item() == pytest.approx(0.0, abs=1e-12)
    # A shift of every pixel by c: the best pairing is each image with its own original, costing c^2.
    assert ot_matching_term(real + 0.3, real).item() == pytest.approx(0.09, rel=1e-5)


def test_ot_matching_gradient_pulls_a_collapsed_batch_apart_onto_distinct_paintings():
    """What G gets from the term: eight copies of one picture, descended, become eight different layouts, each
    the coarse layout of a different painting (one to one), not eight copies of their mean."""
    from artgan.losses import ot_matching_term

    real = _smooth_images(8, 0)
    fake = _smooth_images(1, 1).repeat(8, 1, 1, 1).requires_grad_(True)
    opt = torch.optim.Adam([fake], lr=2e-2)
    for _ in range(200):
        opt.zero_grad()
        ot_matching_term(fake, real).backward()
        opt.step()
    coarse = torch.nn.functional.adaptive_avg_pool2d
    f, r = coarse(fake.detach(), 16).flatten(1), coarse(real, 16).flatten(1)
    nearest = torch.cdist(f, r).argmin(dim=1)
    assert sorted(nearest.tolist()) == list(range(8))
    assert ot_matching_term(fake, real).item() < 0.01


def test_ot_matching_weight_adds_to_generator_loss_only_when_on():
    from artgan.losses import ot_matching_term

    real, fake = _smooth_images(4, 0), _smooth_images(4, 1)
    def critic(x):
        return torch.zeros(x.shape[0])
    off = HingeLoss().generator_loss(critic, fake, real)
    on = HingeLoss(ot_matching=3.0, ot_matching_size=8).generator_loss(critic, fake, real)
    assert off.item() == pytest.approx(0.0)
    assert on.item() == pytest.approx(3.0 * ot_matching_term(fake, real, 8).item(), rel=1e-5)
    with pytest.raises(ValueError, match="ot_matching"):
        HingeLoss(ot_matching=-1.0)
    with pytest.raises(ValueError, match="ot_matching_size"):
        HingeLoss(ot_matching_size=0)


def test_lecam_term_on_hand_computed_values():
    from artgan.losses import LogitAnchors, lecam_term

    anchors = LogitAnchors(decay=0.99)
    anchors.real, anchors.fake = torch.tensor(1.0), torch.tensor(-1.0)
    # Real logits above the fake anchor and fake logits below the real anchor are pulled in, squared; the rest
    # (a real logit already below the fake anchor, a fake one above the real anchor) cost nothing.
    real, fake = torch.tensor([2.0, -3.0]), torch.tensor([0.0, 4.0])
    assert lecam_term(real, fake, anchors).item() == pytest.approx((3.0**2 + 0.0) / 2 + (1.0**2 + 0.0) / 2)


def test_lecam_anchors_follow_a_moving_average_and_round_trip():
    from artgan.losses import LogitAnchors

    anchors = LogitAnchors(decay=0.9)
    anchors.update(torch.tensor([1.0, 3.0]), torch.tensor([-2.0]))  # the first batch sets them
    assert (float(anchors.real), float(anchors.fake)) == (2.0, -2.0)
    anchors.update(torch.tensor([12.0]), torch.tensor([8.0]))
    assert float(anchors.real) == pytest.approx(0.9 * 2.0 + 0.1 * 12.0)
    assert float(anchors.fake) == pytest.approx(0.9 * -2.0 + 0.1 * 8.0)
    restored = LogitAnchors(decay=0.9)
    restored.load_state_dict(anchors.state_dict())
    restored.update(torch.tensor([0.0]), torch.tensor([0.0]))
    anchors.update(torch.tensor([0.0]), torch.tensor([0.0]))
    assert float(restored.real) == pytest.approx(float(anchors.real))
    assert float(restored.fake) == pytest.approx(float(anchors.fake))


def test_lecam_adds_to_the_discriminator_loss_and_stops_it_separating_the_sets():
    from artgan.losses import lecam_term

    real, fake = torch.full((8, 1), 3.0), torch.full((8, 1), -3.0)
    def critic(x):  # logits far past the hinge margins: the adversarial part is 0, D is as sure as it gets
        return x.mean(1)
    plain = HingeLoss().discriminator_loss(critic, real, fake, step=1)
    loss = HingeLoss(lecam=0.5)
    regularized = loss.discriminator_loss(critic, real, fake, step=1)
    assert plain.total.item() == 0.0 and regularized.adversarial.item() == 0.0
    assert regularized.total.item() == pytest.approx(0.5 * lecam_term(real.mean(1), fake.mean(1), loss._anchors).item())
    assert regularized.total.item() == pytest.approx(0.5 * (36.0 + 36.0))  # 3 - (-3) on each side, squared
    # its gradient pulls D's logits on both sets towards each other
    logits = torch.tensor([3.0, -3.0], requires_grad=True)
    lecam_term(logits[:1], logits[1:], loss._anchors).backward()
    assert logits.grad[0] > 0 and logits.grad[1] < 0  # descent lowers the real logit and raises the fake one
    assert "lecam=0.5" in repr(loss) and "_anchors" not in loss.spec()
    with pytest.raises(ValueError, match="lecam"):
        HingeLoss(lecam=-0.1)
    with pytest.raises(ValueError, match="lecam_decay"):
        HingeLoss(lecam=0.3, lecam_decay=1.0)
