from __future__ import annotations

import pytest
import torch

from xception_trt.config import ModelSpec, PoolPadding
from xception_trt.errors import ConfigError
from xception_trt.model import (
    Block,
    SeparableConv2d,
    TFSameMaxPool2d,
    build_xception,
    count_parameters,
)


def test_paper_parameter_count_is_exact():
    model = build_xception(num_classes=1000)
    assert count_parameters(model) == 22_855_952


def test_structure_follows_the_paper():
    model = build_xception()
    blocks = model.blocks()
    assert len(blocks) == 12  # 3 entry + 8 middle + 1 exit
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is None for c in convs)
    seps = [m for m in model.modules() if isinstance(m, SeparableConv2d)]
    assert len(seps) == 2 * 3 + 3 * 8 + 2 + 2  # entry, middle, exit block, exit convs
    assert all(s.conv1.groups == s.conv1.in_channels for s in seps)
    # 1x1 stride-2 shortcuts exactly where the shape changes (entry blocks and exit block).
    with_skip = [i for i, b in enumerate(blocks, 1) if b.skip is not None]
    assert with_skip == [1, 2, 3, 12]
    assert all(blocks[i - 1].skip.stride == (2, 2) and blocks[i - 1].skip.kernel_size == (1, 1)
               for i in with_skip)
    # The first entry block starts without ReLU; the others start with one.
    assert isinstance(blocks[0].rep[0], SeparableConv2d)
    assert all(isinstance(b.rep[0], torch.nn.ReLU) for b in blocks[1:])


@pytest.mark.slow
def test_forward_shapes_at_299():
    model = build_xception(num_classes=1000)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 299, 299)).shape == (2, 1000)


@pytest.mark.parametrize("size", [71, 72, 100])
def test_forward_shapes_small_inputs(size):
    model = build_xception(num_classes=7, width=0.125, middle_blocks=1, input_size=size)
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 7)


def test_too_small_input_is_rejected():
    with pytest.raises(ConfigError, match="at least 71x71"):
        build_xception(input_size=70)


def test_tf_same_pool_matches_symmetric_on_odd_and_differs_on_even():
    sym = torch.nn.MaxPool2d(3, 2, 1)
    tf = TFSameMaxPool2d()
    odd = torch.randn(1, 2, 9, 9)
    assert torch.equal(sym(odd), tf(odd))
    even = torch.randn(1, 2, 10, 10)
    a, b = sym(even), tf(even)
    assert a.shape == b.shape == (1, 2, 5, 5)
    assert not torch.equal(a, b)
    # TF 'same' on 10: pad 0 before, 1 after -> first window covers rows 0..2
    assert torch.equal(b[0, 0, 0, 0], even[0, 0, 0:3, 0:3].max())


def test_pool_padding_follows_the_spec():
    model = build_xception(width=0.125, middle_blocks=0, input_size=71,
                           pool_padding=PoolPadding.TF_SAME, bn_eps=1e-3)
    pools = [m for m in model.modules() if isinstance(m, TFSameMaxPool2d)]
    assert len(pools) == 4
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bn.eps == 1e-3 for bn in bns)


def test_reset_classifier_changes_classes():
    model = build_xception(width=0.125, middle_blocks=0, input_size=71, num_classes=5)
    model.reset_classifier(3, labels=("a", "b", "c"))
    assert model.fc.out_features == 3 and model.spec.class_names() == ("a", "b", "c")


def test_builder_is_keyword_only():
    with pytest.raises(TypeError):
        build_xception(1000)  # type: ignore[misc]


def test_block_first_relu_is_not_inplace():
    """The block input feeds the shortcut too; an in-place first ReLU would corrupt it."""
    block = Block(16, 16, 3, 1)
    assert block.rep[0].inplace is False
    x = torch.randn(1, 16, 5, 5)
    x_copy = x.clone()
    block.eval()(x)
    assert torch.equal(x, x_copy)


def test_spec_is_carried_on_the_model():
    spec = ModelSpec(num_classes=3, width=0.25, middle_blocks=1, input_size=80)
    assert build_xception(spec=spec).spec == spec
