import math

import pytest
import torch

from artgan.losses import get_loss, gradient_penalty, r1_penalty

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def softplus(x):
    return math.log1p(math.exp(x))


def test_bce_on_hand_computed_values():
    loss = get_loss("bce")
    # D: -log sigmoid(real) - log(1 - sigmoid(fake)) = softplus(-real) + softplus(fake), averaged.
    expected_d = (softplus(-2.0) + softplus(1.0)) / 2 + (softplus(0.5) + softplus(-3.0)) / 2
    assert loss.d_loss(REAL, FAKE, 0.0).item() == pytest.approx(expected_d, rel=1e-6)
    # Non-saturating G: -log sigmoid(fake).
    assert loss.g_loss(FAKE).item() == pytest.approx((softplus(-0.5) + softplus(3.0)) / 2, rel=1e-6)
    assert loss.score(torch.tensor([0.0])).item() == 0.5


def test_bce_one_sided_label_smoothing():
    loss = get_loss("bce")
    s = 0.1
    # Real target 0.9: -(0.9 log sig(x) + 0.1 log(1 - sig(x))) = 0.9 softplus(-x) + 0.1 softplus(x)
    real_term = sum(0.9 * softplus(-x) + 0.1 * softplus(x) for x in (2.0, -1.0)) / 2
    fake_term = (softplus(0.5) + softplus(-3.0)) / 2
    assert loss.d_loss(REAL, FAKE, s).item() == pytest.approx(real_term + fake_term, rel=1e-6)


def test_hinge_on_hand_computed_values():
    loss = get_loss("hinge")
    # relu(1 - real): [0, 2] -> 1 ; relu(1 + fake): [1.5, 0] -> 0.75
    assert loss.d_loss(REAL, FAKE, 0.0).item() == pytest.approx(1.75)
    assert loss.g_loss(FAKE).item() == pytest.approx(1.25)


def test_lsgan_on_hand_computed_values():
    loss = get_loss("lsgan")
    # 0.5 * mean((real-1)^2) = 0.5 * (1 + 4)/2 ; 0.5 * mean(fake^2) = 0.5 * (0.25 + 9)/2
    assert loss.d_loss(REAL, FAKE, 0.0).item() == pytest.approx(1.25 + 2.3125)
    assert loss.g_loss(FAKE).item() == pytest.approx(0.5 * (0.25 + 16.0) / 2)


def test_wgan_on_hand_computed_values():
    loss = get_loss("wgan-gp")
    assert loss.d_loss(REAL, FAKE, 0.0).item() == pytest.approx(-1.25 - 0.5)
    assert loss.g_loss(FAKE).item() == pytest.approx(1.25)


def test_unknown_loss():
    with pytest.raises(ValueError, match="bce, hinge, lsgan, wgan-gp"):
        get_loss("mse")


def test_gradient_penalty_of_linear_critic():
    # D(x) = sum(w * x) has gradient w everywhere: penalty = (||w|| - 1)^2.
    w = torch.full((1, 3, 4, 4), 0.5)

    def critic(x):
        return (x * w).flatten(1).sum(1)

    gp = gradient_penalty(critic, torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4))
    assert gp.item() == pytest.approx((w.norm().item() - 1.0) ** 2, rel=1e-5)


def test_r1_penalty_of_quadratic():
    x = torch.randn(4, 3, 2, 2, requires_grad=True)
    logits = (x**2).flatten(1).sum(1)  # gradient 2x
    expected = (2 * x.detach()).flatten(1).pow(2).sum(1).mean()
    assert r1_penalty(logits, x).item() == pytest.approx(expected.item(), rel=1e-5)
