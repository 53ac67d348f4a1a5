"""i-ResNet: every block inverts, every residual branch is a contraction, bad configurations fail clearly."""

import re

import pytest
import torch

from phenolens.core.errors import PhenolensError
from phenolens.nn.autoencoder import ConvAutoencoder
from phenolens.nn.iresnet import ActNorm, InvertibleBlock, InvertibleResNet, SpectralConv2d, Squeeze

pytestmark = pytest.mark.usefixtures("one_thread")


def small_model(pad_channels: int = 5, seed: int = 0) -> InvertibleResNet:
    """A two-scale i-ResNet whose ActNorms are initialised on one batch and whose spectral bounds
    rest on converged singular vectors, as after training."""
    torch.manual_seed(seed)
    model = InvertibleResNet(2, 2, 16, blocks=[2, 1], hidden=[8, 8], pad_channels=pad_channels, inverse_tolerance=1e-7)
    for conv in (m for m in model.modules() if isinstance(m, SpectralConv2d)):
        conv.conv.weight.data *= 4.0  # well beyond the bound, so the normalisation has work to do
    model.train()
    model(torch.randn(8, 2, 16, 16))
    model.converge_spectral_norms(100)
    return model.eval()


def test_squeeze_and_actnorm_invert_exactly():
    x = torch.randn(3, 4, 8, 8)
    squeeze = Squeeze()
    assert squeeze(x).shape == (3, 16, 4, 4)
    assert torch.equal(squeeze.inverse(squeeze(x)), x)
    actnorm = ActNorm(4).train()
    y = actnorm(x * 3 + 1)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(y.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-4)
    assert torch.allclose(actnorm.inverse(y), x * 3 + 1, atol=1e-5)


def test_actnorm_keeps_constant_channels_unscaled():
    x = torch.cat([torch.randn(4, 1, 5, 5), torch.zeros(4, 1, 5, 5)], 1)
    actnorm = ActNorm(2).train()
    actnorm(x)
    assert actnorm.log_scale[0, 1].item() == 0.0


def test_every_block_inverts():
    model = small_model()
    x = torch.randn(4, 2, 16, 16)
    with torch.no_grad():
        h = model.pad(x)
        for stage in model.stages:
            y = stage(h)
            if isinstance(stage, InvertibleBlock):
                back, residual, used = stage.inverse(y, iterations=200, tolerance=1e-7)
                assert residual < 1e-5 and used <= 200
            else:
                back = stage.inverse(y)
            assert torch.allclose(back, h, atol=1e-4), type(stage).__name__
            h = y
        z = model.encode(x)
        assert z.shape == (4, *model.latent_shape) and z.numel() == 4 * (2 + 5) * 16 * 16
        assert torch.allclose(model.decode(z), x, atol=1e-4)
    assert model.last_inverse.max_relative_residual < 1e-5


def test_fewer_iterations_leave_a_larger_reported_residual():
    model = small_model()
    with torch.no_grad():
        z = model.encode(torch.randn(2, 2, 16, 16))
        model.decode(z, iterations=1, tolerance=0.0)
        rough = model.last_inverse
        model.decode(z, iterations=100, tolerance=0.0)
    assert rough.iterations == 1 and model.last_inverse.iterations == 100
    assert rough.max_relative_residual > 10 * model.last_inverse.max_relative_residual


def test_accelerated_inverse_agrees_with_the_plain_iteration_in_fewer_evaluations():
    # A branch close to -coeff^3 times the identity: the slowest contraction the bound allows, where
    # the plain iteration needs tens of evaluations (random small blocks converge in ~5 either way).
    torch.manual_seed(0)
    block = InvertibleBlock(4, 4, 8, coeff=0.97, n_power_iterations=5)
    with torch.no_grad():
        for conv, sign in zip(block.branch.convs, [1, 1, -1]):
            weight = conv.conv.weight
            centre = weight.shape[-1] // 2
            weight.zero_()
            weight[range(4), range(4), centre, centre] = sign
            weight.add_(0.05 * torch.randn_like(weight))
            conv.power_iterate(200)
        block.actnorm.initialized.fill_(True)
        block.eval()
        x = torch.randn(3, 4, 8, 8) + 1
        y = block(x)
        plain, plain_residual, plain_used = block.inverse(y, iterations=500, tolerance=1e-6, memory=0)
        fast, fast_residual, fast_used = block.inverse(y, iterations=500, tolerance=1e-6, memory=4)
    assert plain_residual < 1e-6 and fast_residual < 1e-6
    assert torch.allclose(fast, x, atol=1e-4) and torch.allclose(plain, x, atol=1e-4)
    assert plain_used >= 20 and fast_used <= 0.75 * plain_used, (fast_used, plain_used)


def test_warm_started_inverse_of_a_nearby_latent_agrees_in_fewer_iterations():
    model = small_model(pad_channels=0)  # without padding every latent has an image, so encode(decode(z)) = z
    model.inverse_tolerance = 1e-5
    with torch.no_grad():
        trace: list = []
        x = torch.randn(3, 2, 16, 16)
        z = model.encode(x, trace)
        assert len(trace) == 3 and torch.equal(trace[-1][1], z)
        moved = z + 0.3 * torch.randn_like(z)
        cold = model.decode(moved)
        cold_iterations = model.last_inverse.iterations
        warm = model.decode(moved, near=trace)
        warm_iterations = model.last_inverse.iterations
        assert torch.allclose(model.encode(warm), moved, atol=1e-3)
        assert torch.allclose(warm, cold, atol=1e-3)
        assert warm_iterations < cold_iterations
        # the own latent from its own trace: already converged at the first update
        model.decode(z, near=trace)
        assert model.last_inverse.iterations == 1


def _jacobian_norm(branch, x: torch.Tensor, iterations: int = 30) -> float:
    """Largest singular value of the branch's Jacobian J at x, by power iteration on J^T J.
    J v comes from double backward: J^T u is linear in u, and its gradient along v is J v."""
    x = x.clone().requires_grad_(True)
    y = branch(x)
    u = torch.zeros_like(y, requires_grad=True)
    (transposed,) = torch.autograd.grad(y, x, grad_outputs=u, create_graph=True)
    v = torch.randn_like(x)
    for _ in range(iterations):
        v = v / v.norm()
        (jv,) = torch.autograd.grad(transposed, u, grad_outputs=v, retain_graph=True)
        (v,) = torch.autograd.grad(y, x, grad_outputs=jv, retain_graph=True)
    v = v / v.norm()
    (jv,) = torch.autograd.grad(transposed, u, grad_outputs=v, retain_graph=True)
    return jv.norm().item()


def test_residual_branches_are_contractions():
    model = small_model()
    branches = model.residual_branches()
    assert len(branches) == 3
    generator = torch.Generator().manual_seed(1)
    for branch, shape in zip(branches, [(1, 28, 8, 8), (1, 28, 8, 8), (1, 112, 4, 4)]):
        for conv in branch.convs:
            # The convolution's operator norm, estimated from a fresh start, respects the bound.
            probe = SpectralConv2d(conv.conv.in_channels, conv.conv.out_channels, conv.conv.kernel_size[0], shape[-1], 0.8, 0)
            probe.conv.weight.data = conv.normalized_weight().detach()
            probe.power_iterate(200)
            assert probe.sigma().item() <= 0.8 + 1e-3
        with torch.no_grad():
            a, b = torch.randn(64, *shape[1:], generator=generator), torch.randn(64, *shape[1:], generator=generator)
            ratio = (branch(a) - branch(b)).flatten(1).norm(dim=1) / (a - b).flatten(1).norm(dim=1)
        assert ratio.max().item() < 1.0
        assert _jacobian_norm(branch, torch.randn(*shape, generator=generator)) < 1.0


def test_small_kernels_are_left_unscaled():
    conv = SpectralConv2d(3, 3, 3, 8, coeff=0.8, n_power_iterations=0)
    conv.conv.weight.data *= 1e-3
    conv.power_iterate(100)
    assert conv.sigma().item() < 0.8
    assert torch.equal(conv.normalized_weight(), conv.conv.weight)


def test_bad_configurations_fail_clearly():
    with pytest.raises(PhenolensError, match="divisible"):
        InvertibleResNet(2, 2, 18, blocks=[1, 1], hidden=[4, 4])
    with pytest.raises(PhenolensError, match=r"\(0, 1\)"):
        InvertibleResNet(2, 2, 16, coeff=1.0)
    with pytest.raises(PhenolensError, match="one entry per scale"):
        InvertibleResNet(2, 2, 16, blocks=[1, 1], hidden=[4])
    with pytest.raises(PhenolensError, match="expects 2 channels"):
        InvertibleResNet(2, 2, 16, blocks=[1], hidden=[4])(torch.zeros(1, 3, 16, 16))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_classes": 1e9}, "n_classes=1000000000.0: must be a whole number from 2 to 64"),
        ({"n_classes": 1}, "n_classes=1"),
        ({"image_size": "16"}, "image_size='16'"),
        ({"image_size": 100_000}, "image_size=100000"),
        ({"in_channels": True}, "in_channels=True"),
        ({"blocks": [1, "x"], "hidden": [4, 4]}, "blocks='x'"),
        ({"blocks": 2}, "blocks=2: give a non-empty list"),
        ({"hidden": [4, 10**6]}, "hidden=1000000"),
        ({"inverse_tolerance": float("nan")}, "inverse_tolerance=nan"),
    ],
)
def test_damaged_hyperparameters_are_refused_before_allocation(changes, message):
    arguments = {"in_channels": 2, "n_classes": 2, "image_size": 16, "blocks": [1, 1], "hidden": [4, 4], **changes}
    with pytest.raises(PhenolensError, match=re.escape(message)):
        InvertibleResNet(**arguments)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"latent_dim": 10**9}, "latent_dim=1000000000"),
        ({"image_size": 100_000}, "image_size=100000"),
        ({"in_channels": "2"}, "in_channels='2'"),
        ({"widths": [4, 0]}, "widths=0"),
        ({"image_size": 18}, "not divisible by 2**3"),
    ],
)
def test_damaged_autoencoder_hyperparameters_are_refused(changes, message):
    with pytest.raises(PhenolensError, match=re.escape(message)):
        ConvAutoencoder(**{"in_channels": 2, "image_size": 16, "latent_dim": 8, **changes})
