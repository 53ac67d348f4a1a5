"""Receptive fields: the fx tracer matches gradient probing at every position of a residual net."""

import numpy as np
import pytest
import torch
from sign_networks import TinyResNet
from torch import nn

from phenolens.core.errors import PhenolensError
from phenolens.explain.sign.receptive import INPUT, ReceptiveFields, probe_support

pytestmark = pytest.mark.usefixtures("one_thread")

LAYERS = ["layer1", "layer2", "layer3"]


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return TinyResNet().eval()


def test_traced_fields_equal_gradient_support_everywhere(network):
    example = torch.zeros(1, 1, 19, 19)
    fields = ReceptiveFields.of(network, LAYERS, example)
    assert fields.shapes == {INPUT: (19, 19), "layer1": (10, 10), "layer2": (5, 5), "layer3": (3, 3)}
    for earlier, later in fields.reads:
        positions = list(np.ndindex(*fields.shapes[later]))
        probed = probe_support(network, earlier, later, example, np.array(positions))
        for position, support in zip(positions, probed):
            assert np.array_equal(fields.field(later, position, earlier), support), f"{earlier} -> {later} at {position}"


def test_offsets_and_input_boxes_follow_the_conv_geometry(network):
    fields = ReceptiveFields.of(network, LAYERS, torch.zeros(1, 1, 64, 64))
    # layer1 -> layer2: 3x3 stride-2 conv then 3x3 conv, plus a 1x1 stride-2 shortcut: O = [-3, 3]^2 dense
    stride, offsets = fields.offsets("layer2")
    assert stride == (2, 2)
    assert len(offsets) == 49 and offsets.min() == -3 and offsets.max() == 3
    # layer2 -> layer3: the second conv is dilated by 2, so O has holes at +-2
    stride, offsets = fields.offsets("layer3")
    assert sorted(set(offsets[:, 0])) == [-5, -4, -3, -1, 0, 1, 3, 4, 5]
    # input field of layer1: 5x5 stem conv, 3x3/2 max-pool, two 3x3 convs -> 15 pixels wide in the interior
    boxes = fields.input_boxes("layer1")
    top, left, bottom, right = boxes[10, 10]
    assert (bottom - top + 1, right - left + 1) == (15, 15)
    assert boxes[0, 0].tolist() == [0, 0, 7, 7]  # clipped at the image corner


def test_probe_method_agrees_with_tracing(network):
    example = torch.zeros(1, 1, 15, 15)
    traced = ReceptiveFields.of(network, ["layer1", "layer2"], example)
    probed = ReceptiveFields.of(network, ["layer1", "layer2"], example, method="probe")
    for pair in traced.reads:
        assert (traced.reads[pair] != probed.reads[pair]).nnz == 0


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow defeats symbolic tracing
            return self.conv(x)
        return self.conv(-x)


def test_untraceable_network_is_reported_with_the_fallback():
    with pytest.raises(PhenolensError, match="method 'probe'"):
        ReceptiveFields.of(Untraceable().eval(), ["conv"], torch.zeros(1, 1, 8, 8))
    fields = ReceptiveFields.of(Untraceable().eval(), ["conv"], torch.zeros(1, 1, 8, 8), method="probe")
    assert fields.input_boxes("conv")[4, 4].tolist() == [3, 3, 5, 5]


def test_backbone_with_shape_checks_is_followed_module_by_module():
    from phenolens.explain.sign.layers import default_layers
    from phenolens.nn.backbones import ResNet18

    torch.manual_seed(0)
    model = ResNet18(1, 3, width=0.125, blocks=[1, 1, 1]).eval()  # its forward checks shapes: fx cannot trace it whole
    layers = default_layers(model)
    assert layers == ["stages.stem", "stages.stage1", "stages.stage2", "stages.stage3"]
    example = torch.zeros(1, 1, 16, 16)
    fields = ReceptiveFields.of(model, layers, example)
    for earlier, later in fields.reads:
        positions = np.array([[0, 0], [fields.shapes[later][0] // 2, 1], [fields.shapes[later][0] - 1, fields.shapes[later][1] - 1]])
        for position, support in zip(positions, probe_support(model, earlier, later, example, positions)):
            assert np.array_equal(fields.field(later, tuple(position), earlier), support), f"{earlier} -> {later} at {position}"
