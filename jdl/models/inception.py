"""The Inception module and GoogLeNet (Szegedy et al., 2015, "Going deeper with convolutions").

An Inception module looks at its input at several scales at once: four branches side by
side, each keeping the spatial size (stride 1, ``"SAME"`` padding), concatenated along the
channels (:class:`Inception`, a :class:`~jdl.nn.Concat`; ReLU after every convolution):

* ``1x1``: ``ch1x1`` filters 1 x 1;
* ``3x3``: a 1 x 1 reduction to ``ch3x3_reduce`` channels, then ``ch3x3`` filters 3 x 3;
* ``5x5``: a 1 x 1 reduction to ``ch5x5_reduce`` channels, then ``ch5x5`` filters 5 x 5;
* ``pool``: 3 x 3 max pooling, then ``pool_proj`` filters 1 x 1.

The **naive** module (the paper's figure 2a, :func:`naive_inception`) has no 1 x 1
reductions or projection (``None``): its pooling branch passes all its input channels on.

**Multiplies** on a 28 x 28 x 256 input (seed 003), one per kernel weight and output position
(``H W C_in F F C_out``; pooling multiplies nothing):

* naive, 1x1/128, 3x3/192, 5x5/96, pool: ``28 x 28 x 256 x (128 + 9 x 192 + 25 x 96)``
  = 854,196,224, and the output has 128 + 192 + 96 + 256 = 672 channels;
* with the 1 x 1 bottlenecks of the seed's drawing (1x1/128; 1x1/64 then 3x3/192; 1x1/64
  then 5x5/96; pool then 1x1/64), the six convolutions cost
  ``28 x 28 x (256 x 128 + 256 x 64 + 256 x 64 + 64 x 9 x 192 + 64 x 25 x 96 + 256 x 64)``
  = 25,690,112 + 12,845,056 + 12,845,056 + 86,704,128 + 120,422,400 + 12,845,056
  = 271,351,808, for 480 output channels.

The seed (after CS231n's slide) writes "about 358M" for the second figure: that is the six
terms above with the 3 x 3 convolution's 86,704,128 counted twice (358,055,936), a slip of
the arithmetic; the terms it lists sum to 271,351,808, which :func:`jdl.summary` counts
(its FLOPs are two per multiply-add).

**GoogLeNet** (Table 1; input 224 x 224 x 3): a stem of 7 x 7/2 convolution (112), 3 x 3/2
max pooling (56), local response norm, 1 x 1 and 3 x 3 convolutions (192 channels), local
response norm, 3 x 3/2 max pooling (28); Inception 3a, 3b, pooling (14); 4a to 4e, pooling
(7); 5a, 5b; 7 x 7 average pooling, dropout 0.4, a linear layer of ``num_classes``. The
training-time auxiliary classifiers are left out. Poolings of stride 2 round up (``"SAME"``:
112 -> 56 -> 28 -> 14 -> 7). With biases, without batch norm and with Table 1's 5 x 5
filters (torchvision's ``googlenet`` adds batch norm and uses 3 x 3 there) it has
6,998,552 params for 1000 classes (Table 1's params column, which leaves out the biases and
whose rows stray a few percent from their own filter counts, sums to about 6.8M).

Example:
    >>> import jax
    >>> from jdl import models, summary
    >>> module = models.Inception(128, 64, 192, 64, 96, 64)   # the seed's bottleneck module
    >>> table = summary(module, jax.ShapeDtypeStruct((1, 28, 28, 256), "float32"))
    >>> table.total_flops // 2, table.rows[0].output.shape
    (271351808, (1, 28, 28, 480))
"""
from __future__ import annotations

from dataclasses import field
from typing import Any

from jdl._checks import PositiveInt, Rate, check_tuple
from jdl.nn import Concat, Conv2D, Dense, Dropout, GlobalAvgPool, LocalResponseNorm, MaxPool2D, ReLU, Sequential
from jdl.nn.core import KW_ONLY, Layer
from jdl.models.layer_table import LayerTable

__all__ = ["Inception", "naive_inception", "GoogLeNet", "GOOGLENET_STAGES", "googlenet"]


def _branch(reduce: int | None, features: int, kernel_size: int) -> Sequential:
    """An optional 1 x 1 reduction, then ``features`` filters ``kernel_size`` square, each with ReLU."""
    reduction = {} if reduce is None else {"reduce": Conv2D(reduce, 1), "reduce_relu": ReLU()}
    return Sequential(reduction | {"conv": Conv2D(features, kernel_size), "relu": ReLU()})


class Inception(Concat):
    """An Inception module: the four branches of the module docstring, concatenated on channels.

    The arguments are Table 1's columns in order; a ``None`` reduction or projection leaves it
    out (all three ``None``: the naive module). Params: ``{"1x1", "3x3", "5x5", "pool"}``, each
    ``{"reduce"?, "conv"}`` (``{"proj"}`` for the pooling branch).
    """

    layers: Any = field(default=(), init=False, repr=False, compare=False)
    axis: int = field(default=-1, init=False, repr=False)
    ch1x1: PositiveInt
    ch3x3_reduce: PositiveInt | None
    ch3x3: PositiveInt
    ch5x5_reduce: PositiveInt | None
    ch5x5: PositiveInt
    pool_proj: PositiveInt | None
    _: KW_ONLY
    name: str = "inception"

    def __post_init__(self):
        pool = {"pool": MaxPool2D(3, strides=1, padding="SAME")}
        if self.pool_proj is not None:
            pool |= {"proj": Conv2D(self.pool_proj, 1), "relu": ReLU()}
        object.__setattr__(self, "layers", {
            "1x1": Sequential({"conv": Conv2D(self.ch1x1, 1), "relu": ReLU()}),
            "3x3": _branch(self.ch3x3_reduce, self.ch3x3, 3),
            "5x5": _branch(self.ch5x5_reduce, self.ch5x5, 5),
            "pool": Sequential(pool),
        })
        super().__post_init__()

    __repr__ = Layer.__repr__


def naive_inception(ch1x1: int, ch3x3: int, ch5x5: int) -> Inception:
    """The naive module (figure 2a): 1 x 1, 3 x 3 and 5 x 5 convolutions and 3 x 3 max pooling, no reductions."""
    return Inception(ch1x1, None, ch3x3, None, ch5x5, None)


# Table 1's Inception rows (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj), by stage:
# a stride-2 max pooling follows each stage but the last.
GOOGLENET_STAGES = (
    ((64, 96, 128, 16, 32, 32),             # 3a  28 x 28 x 256
     (128, 128, 192, 32, 96, 64)),          # 3b  28 x 28 x 480
    ((192, 96, 208, 16, 48, 64),            # 4a  14 x 14 x 512
     (160, 112, 224, 24, 64, 64),           # 4b  14 x 14 x 512
     (128, 128, 256, 24, 64, 64),           # 4c  14 x 14 x 512
     (112, 144, 288, 32, 64, 64),           # 4d  14 x 14 x 528
     (256, 160, 320, 32, 128, 128)),        # 4e  14 x 14 x 832
    ((256, 160, 320, 32, 128, 128),         # 5a   7 x  7 x 832
     (384, 192, 384, 48, 128, 128)),        # 5b   7 x  7 x 1024
)


class GoogLeNet(LayerTable):
    """GoogLeNet on ``(*batch, 224, 224, 3)`` images (see the module docstring).

    ``stem_widths`` are the first three convolutions' filters (7 x 7, 1 x 1, 3 x 3) and
    ``stages`` the Inception rows of each stage (:data:`GOOGLENET_STAGES`); the modules are
    named as in Table 1 (``inception3a`` ... ``inception5b``).
    """

    num_classes: PositiveInt = 1000
    _: KW_ONLY
    stem_widths: tuple[int, int, int] = (64, 64, 192)
    stages: tuple = GOOGLENET_STAGES
    dropout_rate: Rate = 0.4
    name: str = "googlenet"

    def __post_init__(self):
        object.__setattr__(self, "stem_widths", tuple(self.stem_widths))
        object.__setattr__(self, "stages", tuple(tuple(tuple(row) for row in stage) for stage in self.stages))
        check_tuple(self, self.stem_widths, 3, "stem_widths", "the 7x7, 1x1 and 3x3 convolutions' filters")
        super().__post_init__()

    def table(self):
        conv1, conv2_reduce, conv2 = self.stem_widths
        layers = {
            "conv1": Conv2D(conv1, 7, strides=2, padding=3), "relu1": ReLU(),                 # 112
            "pool1": MaxPool2D(3, strides=2, padding="SAME"),                                 # 56
            "norm1": LocalResponseNorm(),
            "conv2_reduce": Conv2D(conv2_reduce, 1), "relu2_reduce": ReLU(),
            "conv2": Conv2D(conv2, 3), "relu2": ReLU(),                                       # 56
            "norm2": LocalResponseNorm(),
            "pool2": MaxPool2D(3, strides=2, padding="SAME"),                                 # 28
        }
        for stage, rows in enumerate(self.stages, start=3):
            for index, row in enumerate(rows):
                layers[f"inception{stage}{chr(ord('a') + index)}"] = Inception(*row)
            if stage < 2 + len(self.stages):
                layers[f"pool{stage}"] = MaxPool2D(3, strides=2, padding="SAME")              # 14, 7
        return layers | {"avgpool": GlobalAvgPool(2), "dropout": Dropout(self.dropout_rate),
                         "fc": Dense(self.num_classes)}


def googlenet(num_classes: int = 1000, **options) -> GoogLeNet:
    """GoogLeNet for 224 x 224 RGB images (Table 1, no auxiliary classifiers); ``options``:
    ``stem_widths``, ``stages``, ``dropout_rate``."""
    return GoogLeNet(num_classes, **options)
