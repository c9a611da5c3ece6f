"""VGG (Simonyan and Zisserman, 2015): stacks of 3 x 3 convolutions, as in the paper's Table 1.

Every convolution is 3 x 3 with stride 1 and one pixel of padding (``p = (f - 1) / 2``:
the size is kept), followed by ReLU (with ``batch_norm=True``, batch norm between the two,
as torchvision's ``vgg*_bn``); every stage ends in 2 x 2 max pooling, stride 2. Table 1's
configurations, ``conv3-<filters>`` per stage:

======  ======  ================================================================  ===========
config  model   stages (each followed by maxpool)                                 params
======  ======  ================================================================  ===========
A       VGG-11  64 | 128 | 256 256 | 512 512 | 512 512                            132,863,336
B       VGG-13  64 64 | 128 128 | 256 256 | 512 512 | 512 512                     133,047,848
D       VGG-16  64 64 | 128 128 | 256 256 256 | 512 512 512 | 512 512 512        138,357,544
E       VGG-19  64 64 | 128 128 | 256 x 4 | 512 x 4 | 512 x 4                     143,667,240
======  ======  ================================================================  ===========

then FC-4096, FC-4096 (ReLU and dropout 0.5 after each) and FC-``num_classes``. The params
are for 224 x 224 inputs (7 x 7 x 512 into the first FC layer) and 1000 classes, as
torchvision counts them; batch norm adds ``2 x`` each convolution's filters (8,448 for VGG-16).
torchvision also pools adaptively to 7 x 7 before the classifier; here the first FC layer
takes what the convolutions give, so other input sizes change its size instead.

Example:
    >>> import jax
    >>> from jdl import count_params, models
    >>> image = jax.ShapeDtypeStruct((1, 224, 224, 3), "float32")
    >>> shapes = jax.eval_shape(models.vgg16(batch_norm=True).init, jax.random.key(0), image)[0]
    >>> count_params(shapes), count_params(shapes) - 8_448  # batch norm's scales and offsets apart
    (138365992, 138357544)
"""
from __future__ import annotations

from jdl._checks import PositiveInt, Rate
from jdl.nn import MaxPool2D, ReLU
from jdl.nn.core import KW_ONLY
from jdl.models.layer_table import LayerTable, batch_norm, classifier, conv

__all__ = ["VGG", "VGG_CONFIGS", "vgg11", "vgg13", "vgg16", "vgg19"]

VGG_CONFIGS = {
    "A": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "B": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "D": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "E": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


class VGG(LayerTable):
    """A VGG network: ``stages`` lists each stage's filters (``VGG_CONFIGS["D"]`` is VGG-16).

    Layer names follow the paper's stages: ``conv3_2`` is the second convolution of the third
    stage (then ``bn3_2`` with batch norm, and ``relu3_2``), ``pool3`` ends it; the classifier
    is ``fc6``, ``fc7``, ``fc8``.
    """

    stages: tuple[tuple[int, ...], ...]
    num_classes: PositiveInt = 1000
    _: KW_ONLY
    batch_norm: bool = False
    hidden_features: PositiveInt = 4096
    dropout_rate: Rate = 0.5
    name: str = "vgg"

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(tuple(widths) for widths in self.stages))
        super().__post_init__()

    def table(self):
        layers = {}
        for stage, widths in enumerate(self.stages, start=1):
            for index, width in enumerate(widths, start=1):
                layers[f"conv{stage}_{index}"] = conv(width, 3)
                if self.batch_norm:
                    layers[f"bn{stage}_{index}"] = batch_norm()
                layers[f"relu{stage}_{index}"] = ReLU()
            layers[f"pool{stage}"] = MaxPool2D(2)
        return layers | classifier(self.hidden_features, self.num_classes, self.dropout_rate)


def _constructor(config: str, depth: int):
    def constructor(num_classes: int = 1000, batch_norm: bool = False, **options) -> VGG:
        return VGG(VGG_CONFIGS[config], num_classes, batch_norm=batch_norm, **options)

    constructor.__name__ = constructor.__qualname__ = f"vgg{depth}"
    constructor.__doc__ = (f"VGG-{depth} (configuration {config} of Table 1) for 224 x 224 RGB images; "
                           f"``options``: ``hidden_features``, ``dropout_rate``.")
    return constructor


vgg11 = _constructor("A", 11)
vgg13 = _constructor("B", 13)
vgg16 = _constructor("D", 16)
vgg19 = _constructor("E", 19)
