"""The CNN zoo's train steps: ResNet-18 and VGG-11 from ``jdl.models`` against flax.linen twins.

Each timed call is ``K`` train steps (forward, softmax cross-entropy, backward, Adam 1e-3)
inside a ``lax.scan``, the train state donated, as in ``benchmarks/cases.py``:

* jdl: ``jdl.models.resnet18`` / ``jdl.models.vgg11`` (dropout off, so both sides compute
  the same function), trained by ``jdl.train.gradient_step`` in a ``jdl.train.batch_loop``;
  batch norm's running statistics travel in the train state;
* reference: :class:`FlaxResNet` / :class:`FlaxVGG`, torchvision's layouts written with
  ``flax.linen`` modules (batch norm with ``mutable=["batch_stats"]``), ``optax.adam``, the
  hand-written step of flax's examples.

The flax side starts from the jdl weights and running statistics, copied in with
:func:`to_flax`; the losses of the first two steps must agree before anything is timed.
The twins are also what ``tests/models/test_cnn_zoo.py`` checks the blocks against.

The images are 64 x 64 and the batch 8 on every backend for now (ImageNet's 224 x 224 takes
seconds a step on two CPU cores); the networks' native sizes belong to the GPU suite.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import flax.linen as fnn
import jax
import jax.numpy as jnp
import optax

from benchmarks.cases import NUM_CLASSES, Budget, Config, jdl_loss_of, train_step_case
from benchmarks.optim_cases import SkipCase
from jdl import models

# ----------------------------------------------------------------------------- the flax twins


def _bn(name, train, dtype=jnp.float32):
    # PyTorch's batch norm: momentum 0.1 of the new value (flax's 0.9 of the old), epsilon 1e-5.
    return fnn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=dtype,
                         name=name)


def _conv(name, features, kernel_size, strides=1, use_bias=False, dtype=jnp.float32):
    return fnn.Conv(features, (kernel_size, kernel_size), strides, padding=(kernel_size - 1) // 2, use_bias=use_bias,
                    dtype=dtype, param_dtype=dtype, name=name)


def residual_block(x, train, prefix: str, features: int, strides: int = 1, bottleneck: bool = False,
                   zero_pad: bool = False, dtype=jnp.float32):
    """torchvision's BasicBlock or Bottleneck (stride on the 3 x 3), called inside a module's
    ``@compact`` method: its layers join that module, named ``prefix`` + jdl's param path joined
    by ``_`` (``layer1_block1_main_conv1``), so every twin's variables are one flat level."""
    out = features * (4 if bottleneck else 1)
    conv = lambda name, *args: _conv(prefix + name, *args, dtype=dtype)  # noqa: E731
    bn = lambda name: _bn(prefix + name, train, dtype)  # noqa: E731
    if bottleneck:
        y = fnn.relu(bn("main_bn1")(conv("main_conv1", features, 1)(x)))
        y = fnn.relu(bn("main_bn2")(conv("main_conv2", features, 3, strides)(y)))
        y = bn("main_bn3")(conv("main_conv3", out, 1)(y))
    else:
        y = fnn.relu(bn("main_bn1")(conv("main_conv1", out, 3, strides)(x)))
        y = bn("main_bn2")(conv("main_conv2", out, 3)(y))
    if x.shape[-1] != out or strides != 1:
        if zero_pad:
            x = x[:, ::strides, ::strides]
            x = jnp.pad(x, ((0, 0),) * 3 + ((0, out - x.shape[-1]),))
        else:
            x = bn("shortcut_bn")(conv("shortcut_conv", out, 1, strides)(x))
    return fnn.relu(y + x)


class FlaxBlock(fnn.Module):
    """One :func:`residual_block` as a module (variables ``main_conv1``, ``main_bn1``, ...)."""

    features: int
    strides: int = 1
    bottleneck: bool = False
    zero_pad: bool = False
    dtype: jnp.dtype = jnp.float32

    @fnn.compact
    def __call__(self, x, train):
        return residual_block(x, train, "", self.features, self.strides, self.bottleneck, self.zero_pad, self.dtype)


class FlaxResNet(fnn.Module):
    """torchvision's ImageNet ResNet of basic (or bottleneck) blocks: 7 x 7/2 stem, 3 x 3/2 max pooling, stages,
    global average pooling, ``fc``; module names are jdl's param paths joined by ``_``."""

    stage_sizes: tuple
    num_classes: int = NUM_CLASSES
    widths: tuple = (64, 128, 256, 512)
    dtype: jnp.dtype = jnp.float32
    bottleneck: bool = False  # ResNet-50 and deeper

    @fnn.compact
    def __call__(self, x, train):
        x = fnn.relu(_bn("bn1", train, self.dtype)(_conv("conv1", self.widths[0], 7, 2, dtype=self.dtype)(x)))
        x = fnn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        for stage, (size, width) in enumerate(zip(self.stage_sizes, self.widths), start=1):
            for index in range(1, size + 1):
                strides = 2 if stage > 1 and index == 1 else 1
                x = residual_block(x, train, f"layer{stage}_block{index}_", width, strides, self.bottleneck,
                                   dtype=self.dtype)
        x = jnp.mean(x, axis=(1, 2))
        return fnn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.dtype, name="fc")(x)


class FlaxVGG(fnn.Module):
    """torchvision's VGG (conv with bias, [batch norm,] ReLU; 2 x 2 max pooling), no dropout."""

    stages: tuple
    hidden_features: int
    num_classes: int
    batch_norm: bool = True
    dtype: jnp.dtype = jnp.float32

    @fnn.compact
    def __call__(self, x, train):
        for stage, widths in enumerate(self.stages, start=1):
            for index, width in enumerate(widths, start=1):
                x = _conv(f"conv{stage}_{index}", width, 3, use_bias=True, dtype=self.dtype)(x)
                if self.batch_norm:
                    x = _bn(f"bn{stage}_{index}", train, self.dtype)(x)
                x = fnn.relu(x)
            x = fnn.max_pool(x, (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        dense = functools.partial(fnn.Dense, dtype=self.dtype, param_dtype=self.dtype)
        x = fnn.relu(dense(self.hidden_features, name="fc6")(x))
        x = fnn.relu(dense(self.hidden_features, name="fc7")(x))
        return dense(self.num_classes, name="fc8")(x)


FLAX_NAMES = {"w": "kernel", "b": "bias", "gamma": "scale", "beta": "bias", "mean": "mean", "var": "var"}


def to_flax(tree):
    """jdl's nested params (or state) as flax's, copied: ``{"main": {"conv1": {"w"}}}`` ->
    ``{"main_conv1": {"kernel"}}``; layers without params have no entry."""
    modules = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        keys = [entry.key for entry in path]
        modules.setdefault("_".join(keys[:-1]), {})[FLAX_NAMES[keys[-1]]] = jnp.array(leaf, copy=True)
    return modules


# ----------------------------------------------------------------------------- the cases


def _flax_loss_of(module):
    def loss_of(params, batch_stats, x, y):
        logits, updates = module.apply({"params": params, "batch_stats": batch_stats}, x, True,
                                       mutable=["batch_stats"])
        loss = optax.losses.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, updates.get("batch_stats", {})  # VGG without batch norm has none

    return loss_of


@dataclasses.dataclass(frozen=True)
class CNNCase:
    name: str
    description: str
    jdl_model: Callable[[], object]  # the jdl network (float32 params, as the zoo's constructors make)
    flax_module: Callable[[], object]  # its flax.linen twin
    size: int = 64
    batch: int = 8
    budget: Budget = Budget(steps_per_call=2, rounds=7, quick_steps_per_call=2, quick_rounds=3)
    kind: str = "train_step"

    def build(self, config: Config) -> dict:
        if config.conv_implementation != "auto":
            raise SkipCase("the zoo's networks use Conv2D's default implementation ('auto')")
        if config.dtype != "float32":
            raise SkipCase(f"the CNN cases run in float32 (the zoo's constructors make float32 params), "
                           f"not {config.dtype}")
        steps, rounds = self.budget.choose(config)
        steps = max(steps, 2)  # the loss check compares two steps
        x_key, y_key, init_key = jax.random.split(jax.random.key(0), 3)
        xs = jax.random.normal(x_key, (steps, self.batch, self.size, self.size, 3), jnp.float32)
        ys = jax.random.randint(y_key, (steps, self.batch), 0, NUM_CLASSES, jnp.int32)
        model = self.jdl_model()
        params, state = jax.jit(model.init)(init_key, xs[0])
        module = self.flax_module()
        expected = jax.eval_shape(lambda key, x: module.init(key, x, False), jax.random.key(0), xs[0])
        shapes = lambda tree: jax.tree.map(lambda a: (a.shape, a.dtype), tree)  # noqa: E731
        for collection, ours in (("params", params), ("batch_stats", state)):
            if shapes(expected.get(collection, {})) != shapes(to_flax(ours)):
                raise AssertionError(f"{self.name}: the flax twin's {collection} differ from the jdl model's")
        # The first loss must agree to float32 rounding; after Adam's sign-like first step (see
        # check_losses) 1e-2. The gradients themselves agree to ~1e-5 of their largest entry
        # (ResNet-18, measured); tests/models/test_cnn_zoo.py checks the blocks' at 1e-4.
        return train_step_case(jdl_loss_of(model), params, state, _flax_loss_of(module), to_flax(params), xs, ys,
                               steps=steps, rounds=rounds, dtype=config.dtype,
                               record={"batch": self.batch, "image_size": self.size},
                               ref_state=to_flax(state), second_step_tolerance=1e-2)


CNN_CASES = {
    case.name: case
    for case in (
        CNNCase("resnet18_train_step", "ResNet-18 (torchvision layout, batch norm) on 64x64x3, batch 8",
                lambda: models.resnet18(NUM_CLASSES), lambda: FlaxResNet((2, 2, 2, 2))),
        CNNCase("vgg11_train_step", "VGG-11 (configuration A, dropout off) on 64x64x3, batch 8",
                lambda: models.vgg11(NUM_CLASSES, dropout_rate=0.0),
                lambda: FlaxVGG(models.VGG_CONFIGS["A"], 4096, NUM_CLASSES, batch_norm=False)),
    )
}
