"""Gradient reversal: identity forward, gradient times -lambda backward; Ganin-Lempitsky schedule."""

import math

import pytest
import torch

from phenolens.nn.gradient_reversal import GradientReversal, ganin_lambda, reverse_gradient


@pytest.mark.parametrize("lambda_", [0.0, 0.3, 1.0, 2.5])
def test_forward_is_identity_and_backward_flips_the_gradient_times_lambda(lambda_):
    x = torch.tensor([[1.0, -2.0, 3.0]], requires_grad=True)
    weights = torch.tensor([[0.5, 4.0, -1.0]])
    layer = GradientReversal(lambda_)
    y = layer(x)
    assert torch.equal(y, x)
    (y * weights).sum().backward()
    # d/dx of sum(w * x) is w; reversed: -lambda * w
    assert torch.allclose(x.grad, -lambda_ * weights)


def test_lambda_is_settable_between_steps_and_the_function_form_agrees():
    layer = GradientReversal()
    x = torch.ones(2, requires_grad=True)
    layer.lambda_ = 0.25
    layer(x).sum().backward()
    assert torch.allclose(x.grad, torch.full((2,), -0.25))
    z = torch.ones(2, requires_grad=True)
    reverse_gradient(z, 0.25).sum().backward()
    assert torch.equal(z.grad, x.grad)
    assert "lambda_=0.25" in repr(layer)


def test_only_the_layers_below_are_reversed():
    """An adversary above the layer gets its ordinary gradient; the encoder below gets it reversed."""
    encoder = torch.nn.Linear(2, 2, bias=False)
    adversary = torch.nn.Linear(2, 1, bias=False)
    x = torch.tensor([[1.0, 2.0]])
    plain = adversary(encoder(x)).sum()
    plain_grads = torch.autograd.grad(plain, [encoder.weight, adversary.weight])
    reversed_ = adversary(GradientReversal(1.0)(encoder(x))).sum()
    reversed_grads = torch.autograd.grad(reversed_, [encoder.weight, adversary.weight])
    assert torch.allclose(reversed_grads[0], -plain_grads[0])
    assert torch.allclose(reversed_grads[1], plain_grads[1])


def test_ganin_schedule_known_values():
    assert ganin_lambda(0.0) == 0.0
    assert ganin_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert ganin_lambda(1.0) == pytest.approx(0.999909, abs=1e-6)
    assert ganin_lambda(2.0) == ganin_lambda(1.0)  # progress is clipped
    assert ganin_lambda(1.0, scale=0.1) == pytest.approx(0.0999909, abs=1e-7)
    values = [ganin_lambda(p / 10) for p in range(11)]
    assert values == sorted(values)
