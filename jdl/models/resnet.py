"""Residual networks (He, Zhang, Ren and Sun, 2016), ImageNet's in torchvision's layout and CIFAR's.

A residual block learns the change to its input, not its replacement:
``y = relu(F(x) + shortcut(x))``, where ``F`` ends in batch norm and ``shortcut`` is the
identity, or, where ``F`` changes the shape (stride 2, more channels), a 1 x 1 convolution
with stride and batch norm (the paper's option B, ``shortcut="projection"``) or the input
subsampled and padded with zero channels (option A, ``shortcut="zero_pad"``: no params).

* :class:`BasicBlock` (ResNet-18/34, the CIFAR nets): ``F`` = 3 x 3 conv (the block's
  stride), BN, ReLU, 3 x 3 conv, BN; ``features`` out.
* :class:`Bottleneck` (ResNet-50/101/152): ``F`` = 1 x 1 conv to ``features``, BN, ReLU,
  3 x 3 conv (the block's stride, as torchvision, "ResNet v1.5"; the paper strides the
  first 1 x 1), BN, ReLU, 1 x 1 conv to ``4 x features``, BN.

Convolutions have no bias (batch norm's ``beta`` follows each); batch norm keeps its
running statistics as state, with PyTorch's momentum and epsilon. **ImageNet** (Table 1; input
224 x 224 x 3):

======  ==========  ==================  ======  ======  ======  ======  ======
stage   output      block               18      34      50      101     152
======  ==========  ==================  ======  ======  ======  ======  ======
conv1   112 x 112   7 x 7, 64, stride 2, BN, ReLU
pool    56 x 56     3 x 3 max, stride 2
layer1  56 x 56     64 filters          2       3       3       3       3
layer2  28 x 28     128, stride 2       2       4       4       4       8
layer3  14 x 14     256, stride 2       2       6       6       23      36
layer4  7 x 7       512, stride 2       2       3       3       3       3
head    1 x 1       global average pooling, ``num_classes`` logits
params (1000 classes)                   11.69M  21.80M  25.56M  44.55M  60.19M
======  ==========  ==================  ======  ======  ======  ======  ======

(basic blocks for 18 and 34, bottlenecks for the rest; exactly 11,689,512, 21,797,672,
25,557,032, 44,549,160 and 60,192,808, torchvision's counts, BN's ``gamma`` and ``beta``
included.) **CIFAR-10** (section 4.2; input 32 x 32 x 3): a 3 x 3 convolution with 16 filters,
three stages of ``n`` basic blocks with 16, 32 and 64 filters on 32, 16 and 8 pixel maps,
zero-padding shortcuts, global average pooling and 10 logits: ``6n + 2`` layers.
ResNet-20, 32, 44, 56 and 110 (``n`` = 3, 5, 7, 9, 18) have 269,722, 464,154, 658,586,
853,018 and 1,727,962 params (the paper's 0.27M, 0.46M, 0.66M, 0.85M and 1.7M).

Example:
    >>> import jax
    >>> from jdl import count_params, models
    >>> model = models.resnet20()
    >>> images = jax.ShapeDtypeStruct((2, 32, 32, 3), "float32")
    >>> params, state = jax.eval_shape(model.init, jax.random.key(0), images)   # shapes only
    >>> count_params(params), sorted(state["layer1"]["block1"]["main"]["bn1"])  # running statistics are state
    (269722, ['mean', 'var'])
    >>> jax.eval_shape(lambda p, s, x: model.apply(p, s, x, train=True), params, state, images)[0].shape
    (2, 10)
"""
from __future__ import annotations

from typing import ClassVar, Literal

import jax
import jax.numpy as jnp

from jdl._checks import PositiveInt, check_that
from jdl.nn import Dense, GlobalAvgPool, MaxPool2D, ReLU, Residual, Sequential
from jdl.nn.conv import check_spatial_input
from jdl.nn.core import KW_ONLY, Layer, ParamFree, check_params
from jdl.models.layer_table import LayerTable, batch_norm, conv

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
           "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]

Shortcut = Literal["projection", "zero_pad"]


class _ZeroPadShortcut(ParamFree):
    """Option A: ``x[..., ::s, ::s, :]`` with zero channels after the input's, up to ``features``.

    Where the zeros go changes nothing (the next filters are learned); some re-implementations
    put half before the input's channels and half after.
    """

    features: PositiveInt
    strides: PositiveInt = 1
    _: KW_ONLY
    name: str = "zero_pad_shortcut"

    def check_input(self, x):
        check_spatial_input(self, x, 2)
        check_that(x.shape[-1] <= self.features, self, f"at most {self.features} input channels (zeros are "
                   f"added, none dropped)", x.shape[-1])

    def fn(self, x):
        subsampled = x[..., ::self.strides, ::self.strides, :]
        return jnp.pad(subsampled, [(0, 0)] * (x.ndim - 1) + [(0, self.features - x.shape[-1])])


class _Block(Layer):
    """``relu(F(x) + shortcut(x))``; a subclass gives ``F`` (``main_branch``) and its ``expansion``.

    Params and state: ``{"main": {...}, "shortcut": {"conv", "bn"}}`` (no ``"shortcut"`` where
    it is the identity or option A). The shortcut is decided by the input's channels, as the
    other layers' sizes are.
    """

    features: PositiveInt
    strides: PositiveInt = 1
    _: KW_ONLY
    shortcut: Shortcut = "projection"
    expansion: ClassVar[int] = 1

    def main_branch(self) -> dict[str, Layer]:
        raise NotImplementedError

    def residual(self, in_channels: int) -> Residual:
        out_channels = self.features * self.expansion
        if in_channels == out_channels and self.strides == 1:
            skip = None
        elif self.shortcut == "zero_pad":
            skip = _ZeroPadShortcut(out_channels, self.strides)
        else:
            skip = Sequential({"conv": conv(out_channels, 1, self.strides, use_bias=False), "bn": batch_norm()})
        return Residual(Sequential(self.main_branch()), skip)

    def init(self, key, x):
        check_spatial_input(self, x, 2)
        return self.residual(x.shape[-1]).init(key, x)

    def apply(self, params, state, x, *, key=None, train=False):
        check_params(self, params, state, x)
        y, state = self.residual(x.shape[-1]).apply(params, state, x, key=key, train=train)
        return jax.nn.relu(y), state


class BasicBlock(_Block):
    """Two 3 x 3 convolutions with ``features`` filters, the first with ``strides`` (module docstring)."""

    _: KW_ONLY
    name: str = "basic_block"

    def main_branch(self):
        return {"conv1": conv(self.features, 3, self.strides, use_bias=False), "bn1": batch_norm(), "relu1": ReLU(),
                "conv2": conv(self.features, 3, use_bias=False), "bn2": batch_norm()}


class Bottleneck(_Block):
    """1 x 1 down to ``features``, 3 x 3 with ``strides``, 1 x 1 up to ``4 x features`` (module docstring)."""

    _: KW_ONLY
    name: str = "bottleneck"
    expansion: ClassVar[int] = 4

    def main_branch(self):
        width = self.features
        return {"conv1": conv(width, 1, use_bias=False), "bn1": batch_norm(), "relu1": ReLU(),
                "conv2": conv(width, 3, self.strides, use_bias=False), "bn2": batch_norm(), "relu2": ReLU(),
                "conv3": conv(width * self.expansion, 1, use_bias=False), "bn3": batch_norm()}


class ResNet(LayerTable):
    """A residual network: ``stage_sizes[i]`` blocks of ``widths[i]`` filters in stage ``i + 1``.

    Each stage after the first halves the maps in its first block. ``stem="imagenet"``: 7 x 7
    convolution with stride 2 and 3 x 3 max pooling with stride 2 (``conv1``, ``bn1``,
    ``relu``, ``maxpool``); ``"cifar"``: one 3 x 3 convolution. Then ``layer1`` ... (each
    ``{"block1", ...}``), ``avgpool`` and ``fc``.
    """

    block: Literal["basic", "bottleneck"]
    stage_sizes: tuple[int, ...]
    num_classes: PositiveInt = 1000
    _: KW_ONLY
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem: Literal["imagenet", "cifar"] = "imagenet"
    shortcut: Shortcut = "projection"
    name: str = "resnet"

    def __post_init__(self):
        object.__setattr__(self, "stage_sizes", tuple(self.stage_sizes))
        object.__setattr__(self, "widths", tuple(self.widths))
        check_that(len(self.widths) == len(self.stage_sizes), self, f"one width per stage ({len(self.stage_sizes)})",
                   f"widths={self.widths}")
        super().__post_init__()

    def table(self):
        block = BasicBlock if self.block == "basic" else Bottleneck
        stem_width = self.widths[0]
        if self.stem == "imagenet":
            layers = {"conv1": conv(stem_width, 7, 2, use_bias=False), "bn1": batch_norm(), "relu": ReLU(),  # 112
                      "maxpool": MaxPool2D(3, strides=2, padding=1)}                                        # 56
        else:
            layers = {"conv1": conv(stem_width, 3, use_bias=False), "bn1": batch_norm(), "relu": ReLU()}
        for stage, (size, width) in enumerate(zip(self.stage_sizes, self.widths), start=1):
            first_strides = 1 if stage == 1 else 2
            layers[f"layer{stage}"] = Sequential({
                f"block{index}": block(width, first_strides if index == 1 else 1, shortcut=self.shortcut)
                for index in range(1, size + 1)})
        return layers | {"avgpool": GlobalAvgPool(2), "fc": Dense(self.num_classes)}


IMAGENET_RESNETS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
                    101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}


def _imagenet_resnet(depth: int):
    def constructor(num_classes: int = 1000, **options) -> ResNet:
        return ResNet(*IMAGENET_RESNETS[depth], num_classes, **options)

    constructor.__name__ = constructor.__qualname__ = f"resnet{depth}"
    constructor.__doc__ = f"ResNet-{depth} for 224 x 224 RGB images, torchvision's layout (see :mod:`jdl.models.resnet`)."
    return constructor


def _cifar_resnet(depth: int):
    blocks = (depth - 2) // 6

    def constructor(num_classes: int = 10, **options) -> ResNet:
        cifar = dict(widths=(16, 32, 64), stem="cifar", shortcut="zero_pad")
        return ResNet("basic", (blocks,) * 3, num_classes, **(cifar | options))

    constructor.__name__ = constructor.__qualname__ = f"resnet{depth}"
    constructor.__doc__ = (f"ResNet-{depth} for 32 x 32 CIFAR images: 3 stages of {blocks} basic blocks, 16-32-64 "
                           f"filters, zero-padding shortcuts (see :mod:`jdl.models.resnet`).")
    return constructor


resnet18, resnet34, resnet50, resnet101, resnet152 = (_imagenet_resnet(d) for d in (18, 34, 50, 101, 152))
resnet20, resnet32, resnet44, resnet56, resnet110 = (_cifar_resnet(d) for d in (20, 32, 44, 56, 110))
