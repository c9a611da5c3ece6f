"""AlexNet (Krizhevsky, Sutskever and Hinton, 2012) and ZFNet (Zeiler and Fergus, 2014).

**AlexNet**, in one tower (the paper splits every layer over two GPUs), as seed 003 tabulates
it. Sizes follow ``(N - F + 2P) / S + 1``; weights are ``F x F x C_in x C_out`` (each layer
also has one bias per output):

=======  ========================================  ===============  ===========
layer    what                                      output           weights
=======  ========================================  ===============  ===========
input                                              227 x 227 x 3
conv1    96 filters 11 x 11, stride 4, ReLU        55 x 55 x 96          34,848
pool1    3 x 3 max, stride 2 (overlapping)         27 x 27 x 96
norm1    local response norm (k 2, n 5)            27 x 27 x 96
conv2    256 filters 5 x 5, pad 2, ReLU            27 x 27 x 256        614,400
pool2    3 x 3 max, stride 2                       13 x 13 x 256
norm2    local response norm                       13 x 13 x 256
conv3    384 filters 3 x 3, pad 1, ReLU            13 x 13 x 384        884,736
conv4    384 filters 3 x 3, pad 1, ReLU            13 x 13 x 384      1,327,104
conv5    256 filters 3 x 3, pad 1, ReLU            13 x 13 x 256        884,736
pool5    3 x 3 max, stride 2                       6 x 6 x 256
fc6      4096 units, ReLU, dropout 0.5             4096              37,748,736
fc7      4096 units, ReLU, dropout 0.5             4096              16,777,216
fc8      ``num_classes`` logits                    1000               4,096,000
=======  ========================================  ===============  ===========

62,378,344 params for 1000 classes (the weights above and 10,568 biases). The seed normalises
after pooling (as CS231n's table); the paper normalises before (``conv, ReLU, norm, pool``):
the shapes and params are the same. torchvision's ``alexnet`` is a later variant (64-192-384-
256-256 filters, no normalisation, 61,100,840 params).

**ZFNet** is AlexNet retuned after visualising it (the paper's figure 3): a 7 x 7 first layer
with stride 2 (not 11 x 11, stride 4) and a stride-2 second layer; input 224 x 224. Its
sizes 224, 110, 55, 26, 13, 13, 6 need one pixel of padding on conv1 and the first two
poolings rounding up (Caffe's pooling, ``"SAME"`` here).

Example:
    >>> import jax
    >>> from jdl import count_params, models
    >>> image = jax.ShapeDtypeStruct((1, 227, 227, 3), "float32")
    >>> params, state = jax.eval_shape(models.alexnet().init, jax.random.key(0), image)
    >>> count_params(params)
    62378344
"""
from __future__ import annotations

from typing import ClassVar

from jdl._checks import PositiveInt, Rate, check_tuple
from jdl.nn import Conv2D, LocalResponseNorm, MaxPool2D, ReLU
from jdl.nn.core import KW_ONLY
from jdl.models.layer_table import LayerTable, classifier

__all__ = ["AlexNet", "ZFNet", "alexnet", "zfnet"]


class _AlexNetFamily(LayerTable):
    """Five convolutions (their widths a field), three max poolings, two LRNs, the classifier.

    The two nets differ only in their front: the first two convolutions' ``(kernel, stride,
    padding)`` and the first two poolings' padding (class attributes below).
    """

    num_classes: PositiveInt = 1000
    _: KW_ONLY
    widths: tuple[int, ...] = (96, 256, 384, 384, 256)
    hidden_features: PositiveInt = 4096
    dropout_rate: Rate = 0.5

    conv1: ClassVar[tuple[int, int, int]]
    conv2: ClassVar[tuple[int, int, int]]
    pool_padding: ClassVar[str]

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(self.widths))
        check_tuple(self, self.widths, 5, "widths", "the five convolutions' filters")
        super().__post_init__()

    def table(self):
        c1, c2, c3, c4, c5 = self.widths
        (k1, s1, p1), (k2, s2, p2) = self.conv1, self.conv2
        return {
            "conv1": Conv2D(c1, k1, strides=s1, padding=p1), "relu1": ReLU(),
            "pool1": MaxPool2D(3, strides=2, padding=self.pool_padding),
            "norm1": LocalResponseNorm(),
            "conv2": Conv2D(c2, k2, strides=s2, padding=p2), "relu2": ReLU(),
            "pool2": MaxPool2D(3, strides=2, padding=self.pool_padding),
            "norm2": LocalResponseNorm(),
            "conv3": Conv2D(c3, 3, padding=1), "relu3": ReLU(),
            "conv4": Conv2D(c4, 3, padding=1), "relu4": ReLU(),
            "conv5": Conv2D(c5, 3, padding=1), "relu5": ReLU(),
            "pool5": MaxPool2D(3, strides=2),
            **classifier(self.hidden_features, self.num_classes, self.dropout_rate),
        }


class AlexNet(_AlexNetFamily):
    """AlexNet on ``(*batch, 227, 227, 3)`` images; the table is the module docstring's.

    Sizes: conv1 ``(227 - 11) / 4 + 1 = 55``, pool1 ``(55 - 3) / 2 + 1 = 27``, conv2 ``27 - 5 +
    4 + 1 = 27``, pool2 13, conv3-5 13, pool5 6.
    """

    _: KW_ONLY
    name: str = "alexnet"
    conv1: ClassVar = (11, 4, 0)
    conv2: ClassVar = (5, 1, 2)
    pool_padding: ClassVar = "VALID"


class ZFNet(_AlexNetFamily):
    """ZFNet on ``(*batch, 224, 224, 3)`` images (see the module docstring).

    Sizes: conv1 ``(224 - 7 + 2) / 2 + 1 = 110``, pool1 55 (rounding up), conv2 ``(55 - 5) / 2 +
    1 = 26``, pool2 13 (rounding up), conv3-5 13, pool5 6.
    """

    _: KW_ONLY
    name: str = "zfnet"
    conv1: ClassVar = (7, 2, 1)
    conv2: ClassVar = (5, 2, 0)
    pool_padding: ClassVar = "SAME"


def alexnet(num_classes: int = 1000, **options) -> AlexNet:
    """AlexNet for 227 x 227 RGB images (seed 003's single-tower table); ``options``: ``widths``,
    ``hidden_features``, ``dropout_rate``."""
    return AlexNet(num_classes, **options)


def zfnet(num_classes: int = 1000, **options) -> ZFNet:
    """ZFNet for 224 x 224 RGB images; ``options`` as :func:`alexnet`'s."""
    return ZFNet(num_classes, **options)
