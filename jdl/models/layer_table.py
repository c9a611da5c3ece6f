"""What the convolutional networks share: a network written as its paper's layer table.

A :class:`LayerTable` is a :class:`~jdl.nn.Sequential` whose layers its configuration
fields list, by name, in ``table()``: ``{"conv1": Conv2D(96, 11, strides=4, padding=0),
"relu1": ReLU(), "pool1": MaxPool2D(3, strides=2), ...}``. The names are the params' keys
(``params["conv1"]["w"]``) and the rows of :func:`jdl.summary`, so a model, its params
and its summary read like the table in the paper; its ``repr`` is the configuration
(``AlexNet(num_classes=10)``), not the list of layers.

The helpers below are the pieces several tables use: a convolution padded to keep its
size (``p = (f - 1) / 2``), batch norm with PyTorch's defaults, and the classifier that
AlexNet, ZFNet and VGG end with.
"""
from __future__ import annotations

from dataclasses import field
from typing import Any

from jdl import init as initializers
from jdl.nn import BatchNorm, Conv2D, Dense, Dropout, Flatten, ReLU
from jdl.nn.core import Layer, Sequential

__all__ = ["LayerTable", "conv", "batch_norm", "classifier", "HE_FAN_OUT"]

# torchvision's initialisation of VGG's and ResNet's convolutions (kaiming_normal_, mode
# "fan_out"). One instance, so that equal layers stay equal (initialisers compare by identity).
HE_FAN_OUT = initializers.variance_scaling(2.0, "fan_out", "normal")


class LayerTable(Sequential):
    """A :class:`~jdl.nn.Sequential` of the named layers ``table()`` builds from the fields."""

    layers: Any = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "layers", self.table())
        super().__post_init__()

    def table(self) -> dict[str, Layer]:
        """The layers, in order, by name."""
        raise NotImplementedError

    __repr__ = Layer.__repr__


def conv(features: int, kernel_size: int, strides: int = 1, *, use_bias: bool = True):
    """A square convolution padded by ``p = (f - 1) / 2`` on each side (PyTorch's symmetric
    padding: the size is kept at stride 1 and divided, rounding up, at stride 2), He-initialised."""
    return Conv2D(features, kernel_size, strides, padding=(kernel_size - 1) // 2, use_bias=use_bias,
                  kernel_init=HE_FAN_OUT)


def batch_norm() -> BatchNorm:
    """PyTorch's ``BatchNorm2d`` defaults: ``epsilon = 1e-5`` and momentum 0.1 in its convention
    (the weight of the new batch), which is ``momentum = 0.9`` in jdl's (and flax's)."""
    return BatchNorm(momentum=0.9, epsilon=1e-5)


def classifier(hidden_features: int, num_classes: int, dropout_rate: float) -> dict[str, Layer]:
    """AlexNet's, ZFNet's and VGG's head: flatten, two ReLU layers with dropout after each, the logits."""
    return {
        "flatten": Flatten(),
        "fc6": Dense(hidden_features), "relu6": ReLU(), "dropout6": Dropout(dropout_rate),
        "fc7": Dense(hidden_features), "relu7": ReLU(), "dropout7": Dropout(dropout_rate),
        "fc8": Dense(num_classes),
    }
