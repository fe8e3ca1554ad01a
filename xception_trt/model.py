"""The PyTorch reference Xception (Chollet 2017, "Xception: Deep Learning with Depthwise
Separable Convolutions", Fig. 5).

Module names follow timm/Cadene ``legacy_xception`` (``conv1``, ``block1.rep.0.conv1``,
``block1.skip``, ``conv3.pointwise``, ``fc`` ...) so their state dicts load without renaming.
At 1000 classes the model has exactly 22,855,952 parameters (the paper's Table 3).
"""

from __future__ import annotations

import logging
from typing import Any

from .config import ModelSpec, PoolPadding
from .extras import needs

with needs("the PyTorch Xception model"):
    import torch
    import torch.nn.functional as F
    from torch import nn

__all__ = ["Xception", "SeparableConv2d", "Block", "TFSameMaxPool2d", "build_xception",
           "count_parameters", "scaled_channels"]

log = logging.getLogger(__name__)

#: Channel widths of the paper's Xception: stem, entry-flow blocks, middle flow, exit flow.
_STEM = (32, 64)
_ENTRY = (128, 256, 728)
_EXIT = (1024, 1536, 2048)


def scaled_channels(channels: int, width: float) -> int:
    """Channels of a layer of the width-``width`` model (multiples of 8; identity at 1.0)."""
    return max(8, int(round(channels * width / 8.0)) * 8)


class TFSameMaxPool2d(nn.Module):
    """3x3 stride-2 max-pool with TensorFlow ``padding='same'`` semantics.

    TF pads ``max((ceil(n/s) - 1) * s + k - n, 0)`` in total, the smaller half before and the
    larger half after. On odd inputs that is 1/1 (identical to PyTorch ``padding=1``); on even
    inputs it is 0/1, which PyTorch's symmetric padding cannot express. Padding uses -inf so
    padded cells never win the max (as in TF).
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    @staticmethod
    def _pads(n: int, k: int, s: int) -> tuple[int, int]:
        total = max((-(-n // s) - 1) * s + k - n, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        top, bottom = self._pads(h, self.kernel_size, self.stride)
        left, right = self._pads(w, self.kernel_size, self.stride)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding=tf-same"


def _max_pool(padding: PoolPadding) -> nn.Module:
    if padding is PoolPadding.TF_SAME:
        return TFSameMaxPool2d(3, 2)
    return nn.MaxPool2d(3, 2, 1)


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 conv followed by a pointwise 1x1 conv, no bias, nothing in between."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding,
                               groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


class Block(nn.Module):
    """An Xception residual block: ``reps`` x (ReLU, SeparableConv, BN), optional pool, plus a
    1x1 (strided) conv + BN shortcut when the shape changes, identity otherwise."""

    def __init__(self, in_channels: int, out_channels: int, reps: int, stride: int = 1, *,
                 start_with_relu: bool = True, grow_first: bool = True,
                 pool_padding: PoolPadding = PoolPadding.SYMMETRIC, bn_eps: float = 1e-5) -> None:
        super().__init__()
        if out_channels != in_channels or stride != 1:
            self.skip: nn.Module | None = nn.Conv2d(in_channels, out_channels, 1, stride=stride,
                                                    bias=False)
            self.skipbn: nn.Module | None = nn.BatchNorm2d(out_channels, eps=bn_eps)
        else:
            self.skip = None
            self.skipbn = None

        layers: list[nn.Module] = []
        for i in range(reps):
            if grow_first:
                inc = in_channels if i == 0 else out_channels
                outc = out_channels
            else:
                inc = in_channels
                outc = in_channels if i < reps - 1 else out_channels
            # The first ReLU must not be in-place: the block input also feeds the shortcut.
            layers.append(nn.ReLU(inplace=i > 0))
            layers.append(SeparableConv2d(inc, outc, 3, 1, 1))
            layers.append(nn.BatchNorm2d(outc, eps=bn_eps))
        if not start_with_relu:
            layers = layers[1:]
        if stride != 1:
            layers.append(_max_pool(pool_padding))
        self.rep = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rep(x)
        skip = self.skipbn(self.skip(x)) if self.skip is not None else x
        return out + skip


class Xception(nn.Module):
    """Xception: entry flow, ``spec.middle_blocks`` middle-flow blocks, exit flow, global
    average pooling and a linear classifier. Build it with :func:`build_xception`."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        c = lambda n: scaled_channels(n, spec.width)  # noqa: E731
        eps, pad = spec.bn_eps, spec.pool_padding

        self.conv1 = nn.Conv2d(spec.in_chans, c(_STEM[0]), 3, 2, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(c(_STEM[0]), eps=eps)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c(_STEM[0]), c(_STEM[1]), 3, bias=False)
        self.bn2 = nn.BatchNorm2d(c(_STEM[1]), eps=eps)
        self.act2 = nn.ReLU(inplace=True)

        kw: dict[str, Any] = dict(pool_padding=pad, bn_eps=eps)
        blocks: list[Block] = [
            Block(c(_STEM[1]), c(_ENTRY[0]), 2, 2, start_with_relu=False, **kw),
            Block(c(_ENTRY[0]), c(_ENTRY[1]), 2, 2, **kw),
            Block(c(_ENTRY[1]), c(_ENTRY[2]), 2, 2, **kw),
        ]
        blocks += [Block(c(_ENTRY[2]), c(_ENTRY[2]), 3, 1, **kw)
                   for _ in range(spec.middle_blocks)]
        blocks.append(Block(c(_ENTRY[2]), c(_EXIT[0]), 2, 2, grow_first=False, **kw))
        # block1..blockN as attributes: the timm/Cadene state-dict names.
        self.num_blocks = len(blocks)
        for i, block in enumerate(blocks, start=1):
            self.add_module(f"block{i}", block)

        self.conv3 = SeparableConv2d(c(_EXIT[0]), c(_EXIT[1]), 3, 1, 1)
        self.bn3 = nn.BatchNorm2d(c(_EXIT[1]), eps=eps)
        self.act3 = nn.ReLU(inplace=True)
        self.conv4 = SeparableConv2d(c(_EXIT[1]), c(_EXIT[2]), 3, 1, 1)
        self.bn4 = nn.BatchNorm2d(c(_EXIT[2]), eps=eps)
        self.act4 = nn.ReLU(inplace=True)
        self.num_features = c(_EXIT[2])
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, spec.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal convolutions, unit BatchNorm, small-uniform classifier (timm's init)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.reset_classifier()

    def reset_classifier(self, num_classes: int | None = None,
                         labels: tuple[str, ...] | None = None) -> None:
        """Re-initialise the classifier, optionally for a new number of classes (fine-tuning)."""
        if num_classes is not None and num_classes != self.spec.num_classes:
            self.spec = self.spec.replace(num_classes=num_classes, labels=labels)
            self.fc = nn.Linear(self.num_features, num_classes)
        elif labels is not None:
            self.spec = self.spec.replace(labels=labels)
        bound = 1.0 / self.num_features ** 0.5
        nn.init.uniform_(self.fc.weight, -bound, bound)
        nn.init.zeros_(self.fc.bias)

    def blocks(self) -> list[Block]:
        """The residual blocks in order (entry, middle, exit flow)."""
        return [getattr(self, f"block{i}") for i in range(1, self.num_blocks + 1)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map before global pooling, ``(N, num_features, h, w)``."""
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        for block in self.blocks():
            x = block(x)
        x = self.act3(self.bn3(self.conv3(x)))
        return self.act4(self.bn4(self.conv4(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for a float NCHW batch preprocessed per ``self.spec``."""
        x = self.global_pool(self.forward_features(x)).flatten(1)
        return self.fc(x)


def build_xception(*, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0,
                   middle_blocks: int = 8, input_size: int = 299,
                   spec: ModelSpec | None = None, **spec_fields: Any) -> Xception:
    """Build a randomly initialised Xception in eval mode.

    Args:
        num_classes: Number of output logits.
        in_chans: Input channels.
        width: Channel multiplier (1.0 = the paper's model; 0.25 is a fast test model).
        middle_blocks: Middle-flow blocks (8 in the paper).
        input_size: Square input size the model is meant for, in pixels (>= 71).
        spec: A complete :class:`ModelSpec`; when given, the other arguments must be omitted.
        **spec_fields: Further :class:`ModelSpec` fields (``pool_padding``, ``bn_eps``,
            ``labels``, preprocessing ...).

    Returns:
        The model, in ``eval()`` mode, with ``model.spec`` set.

    Raises:
        ConfigError: An argument is out of range.
    """
    if spec is None:
        spec = ModelSpec(num_classes=num_classes, in_chans=in_chans, width=width,
                         middle_blocks=middle_blocks, input_size=input_size, **spec_fields)
    elif spec_fields:
        spec = spec.replace(**spec_fields)
    model = Xception(spec)
    model.eval()
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable and non-trainable parameters (BatchNorm running stats excluded)."""
    return sum(p.numel() for p in model.parameters())
