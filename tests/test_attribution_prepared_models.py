"""The model copies attribution runs on: folded batch norm, convolutions matched to one-image calls."""

from __future__ import annotations

import copy

import pytest
import torch

from phenolens.core.errors import PhenolensError
from phenolens.explain.attribution import prepare_model
from phenolens.explain.prepared import OneImageBackendConv2d, no_nan_fill
from phenolens.nn.backbones import FoldedBatchNorm, build_backbone, fold_batch_norm, inplace_relus


def _model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    extra = {"resnet18": {"blocks": [1, 1, 1]}, "vgg": {}, "densenet": {"blocks": [2, 2], "growth_rate": 16}}[arch]
    model = build_backbone(arch, in_channels=2, n_classes=3, width=0.25, **extra).eval()
    for module in model.modules():  # non-trivial statistics and affine parameters, as in a trained model
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.3, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    return model


@pytest.mark.parametrize("arch", ["resnet18", "vgg", "densenet"])
def test_folded_batch_norm_gives_the_same_logits(arch):
    model = _model(arch)
    x = torch.randn(6, 2, 20, 20)
    folded = inplace_relus(fold_batch_norm(prepare_model(model, "integrated_gradients")))  # a copy: model untouched
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    n_folded = sum(isinstance(m, FoldedBatchNorm) for m in folded.modules())
    # resnet: stem, 2 per block, 2 shortcuts; vgg: every convolution; densenet: stem + 4 bottlenecks
    assert n_folded == {"resnet18": 9, "vgg": 6, "densenet": 5}[arch]
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
    assert folded.get_submodule("stages.stem.1") is not None  # module paths still resolve (Grad-CAM layers)
    with pytest.raises(PhenolensError, match="eval mode"):
        fold_batch_norm(_model(arch).train())


def test_occlusion_copy_runs_relus_in_place_only_on_fresh_tensors():
    model = _model("resnet18")
    prepared = prepare_model(model, "occlusion")
    assert prepared.stages["stem"][2].inplace and prepared.stages["stage1"][0].relu.inplace
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    assert not any(getattr(m, "inplace", False) for m in prepare_model(model, "gradcam").modules())
    x = torch.randn(5, 2, 20, 20).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():  # in place or not, the same numbers
        assert torch.equal(prepared.feature_maps(x), prepare_model(model, "ig").feature_maps(x))
        # the head computes the logits in float64 (occlusion maps are differences of two logits)
        logits = prepared(x)
        assert logits.dtype == torch.float64 and next(model.parameters()).dtype == torch.float32  # the caller's model untouched
        exact = copy.deepcopy(model).double()(x.double())
        assert (logits - exact).abs().max() <= 1e-5 * exact.abs().max()


@pytest.mark.parametrize("arch", ["resnet18", "vgg", "densenet"])
def test_saliency_copy_computes_a_batch_bitwise_as_one_image_calls(arch):
    model = _model(arch, seed=1)
    prepared = prepare_model(model, "saliency")
    assert all(type(m) is not torch.nn.Conv2d for m in prepared.modules())
    assert all(type(m) is not OneImageBackendConv2d for m in model.modules())  # the caller's model keeps its layers
    x = torch.randn(24, 2, 20, 20)
    with torch.no_grad():
        one_by_one = torch.cat([model.feature_maps(x[i : i + 1]) for i in range(len(x))])
        assert torch.equal(prepared.feature_maps(x), one_by_one)  # so every ReLU gate is the per-image one
    # and the gradient through the prepared copy is the per-image gradient (up to backward rounding)
    from captum.attr import Saliency

    targets = torch.arange(len(x)) % 3
    batched = Saliency(prepared).attribute(x.clone().requires_grad_(), target=targets)
    single = torch.cat([Saliency(model).attribute(x[i : i + 1].clone().requires_grad_(), target=int(targets[i])) for i in range(len(x))])
    assert (batched - single).abs().max() <= 1e-5 * single.abs().max()


def test_nan_fill_is_off_only_inside_attribution():
    before = torch.utils.deterministic.fill_uninitialized_memory
    with no_nan_fill():
        assert torch.utils.deterministic.fill_uninitialized_memory is False
    assert torch.utils.deterministic.fill_uninitialized_memory == before
