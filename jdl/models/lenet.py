"""LeNet-5 (LeCun, Bottou, Bengio and Haffner, 1998, section II.B), as it is usually built today.

=====  ==================================  ===========  ===========
layer  what                                output       params
=====  ==================================  ===========  ===========
input  a 32 x 32 grey image                32 x 32 x 1
C1     6 convolutions 5 x 5, tanh          28 x 28 x 6        156
S2     2 x 2 average pooling, stride 2     14 x 14 x 6          0
C3     16 convolutions 5 x 5, tanh         10 x 10 x 16     2,416
S4     2 x 2 average pooling, stride 2      5 x 5 x 16          0
C5     120 convolutions 5 x 5, tanh         1 x 1 x 120    48,120
F6     84 units, tanh                      84              10,164
out    ``num_classes`` units (logits)      10                 850
=====  ==================================  ===========  ===========

61,706 params for ten classes. The paper's network has 60,000 trainable ones: its C3
connects each map to only some of S2's (1,516 params instead of 2,416), its subsampling
layers have a trained coefficient and bias per map (12 and 32), its squashing function is
``1.7159 tanh(2a/3)`` and its output is a layer of fixed (untrained) radial basis
functions. Here every map sees every map, pooling is a plain average and the output a
``Dense`` layer, as in most of today's re-implementations.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import models
    >>> model = models.lenet5()
    >>> params, state = jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, 32, 32, 1)))
    >>> jax.jit(model.apply)(params, state, jnp.zeros((2, 32, 32, 1)))[0].shape
    (2, 10)
"""
from __future__ import annotations

from jdl._checks import PositiveInt
from jdl.nn import AvgPool2D, Conv2D, Dense, Flatten, Tanh
from jdl.nn.core import KW_ONLY
from jdl.models.layer_table import LayerTable

__all__ = ["LeNet5", "lenet5"]


class LeNet5(LayerTable):
    """LeNet-5 on ``(*batch, 32, 32, 1)`` images; the table is the module docstring's."""

    num_classes: PositiveInt = 10
    _: KW_ONLY
    name: str = "lenet5"

    def table(self):
        return {
            "c1": Conv2D(6, 5, padding=0), "tanh1": Tanh(),     # 32 - 5 + 1 = 28
            "s2": AvgPool2D(2),                                 # 14
            "c3": Conv2D(16, 5, padding=0), "tanh3": Tanh(),    # 10
            "s4": AvgPool2D(2),                                 # 5
            "c5": Conv2D(120, 5, padding=0), "tanh5": Tanh(),   # 1
            "flatten": Flatten(),
            "f6": Dense(84), "tanh6": Tanh(),
            "output": Dense(self.num_classes),
        }


def lenet5(num_classes: int = 10) -> LeNet5:
    """LeNet-5 for 32 x 32 grey images (see :mod:`jdl.models.lenet`)."""
    return LeNet5(num_classes)
