"""The conformance table: every public layer and model, a small example input, and what it is.

Modelled on haiku's ``integration/descriptors.py``. Each :class:`Case` says how to build the
layer (``make``), another instance whose params must not fit it (``other``), and a pair
``(x, kwargs)`` of example inputs (``example(seed)``: the arrays ``apply`` takes; every array in
``kwargs`` has the batch axis first, like ``x``). The battery in ``test_battery.py`` runs every
case through the same rules. **A new public layer or model joins this table in the commit that
adds it**; ``test_every_public_layer_and_model_is_in_the_table`` fails until it does.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jdl import models, nn

BATCH, LENGTH, FEATURES, VOCAB = 2, 3, 4, 7


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], nn.Layer]
    other: Callable[[], nn.Layer] | None  # same kind, other sizes: its params must be refused
    example: Callable[[int], tuple[Any, dict]]  # seed -> (x, apply's array keyword arguments)
    stochastic: bool = False  # draws with the key in training (dropout)
    integer_input: bool = False  # x holds ids: NaN is tested through the params instead
    options: dict = dataclasses.field(default_factory=dict)  # apply's non-array keyword arguments
    all_nan: bool = True  # NaN everywhere in gives NaN everywhere out (else: NaN somewhere)
    model: bool = False  # a jdl.models entry (run by test_models.py)
    output_dtype: Any = None  # a dtype the layer always gives (a precision policy's), else the input's

    def __repr__(self) -> str:
        return self.name


def floats(*shape: int) -> Callable[[int], tuple[Any, dict]]:
    return lambda seed: (jax.random.normal(jax.random.key(seed), shape), {})


def ids(*shape: int, vocab: int = VOCAB) -> Callable[[int], tuple[Any, dict]]:
    return lambda seed: (jax.random.randint(jax.random.key(seed), shape, 1, vocab), {})


def with_context(x_shape, context_shape, name: str = "context"):
    def example(seed):
        x_key, c_key = jax.random.split(jax.random.key(seed))
        return jax.random.normal(x_key, x_shape), {name: jax.random.normal(c_key, context_shape)}
    return example


def with_lengths(x_shape, lengths, integer: bool = False):
    def example(seed):
        key = jax.random.key(seed)
        x = jax.random.randint(key, x_shape, 1, VOCAB) if integer else jax.random.normal(key, x_shape)
        return x, {"lengths": jnp.asarray(lengths, jnp.int32)}
    return example


def seq2seq_example(seed):
    source_key, target_key = jax.random.split(jax.random.key(seed))
    return (jax.random.randint(source_key, (BATCH, LENGTH), 3, VOCAB),
            {"target_ids": jax.random.randint(target_key, (BATCH, LENGTH), 3, VOCAB)})


def transformer_example(seed):
    source_key, target_key = jax.random.split(jax.random.key(seed))
    return (jax.random.randint(source_key, (BATCH, LENGTH), 3, VOCAB),
            jax.random.randint(target_key, (BATCH, LENGTH), 3, VOCAB)), {}


def _config(d_model: int = 8) -> models.TransformerConfig:
    return models.TransformerConfig(VOCAB, VOCAB, d_model=d_model, num_heads=2, num_encoder_layers=1,
                                    num_decoder_layers=1, mlp_features=8, max_length=8)


X = floats(BATCH, LENGTH, FEATURES)
SEQ = (BATCH, LENGTH, FEATURES)
IMAGE = floats(BATCH, 5, 5, FEATURES)

CASES = [
    # dense, convolution, pooling, reshapes
    Case("Dense", lambda: nn.Dense(5), lambda: nn.Dense(6), X),
    Case("Conv1D", lambda: nn.Conv1D(5, 2), lambda: nn.Conv1D(5, 3), X),
    Case("Conv2D", lambda: nn.Conv2D(5, 2, padding="VALID"), lambda: nn.Conv2D(6, 2), IMAGE),
    Case("MaxPool1D", lambda: nn.MaxPool1D(2), None, X),
    Case("MaxPool2D", lambda: nn.MaxPool2D(2), None, IMAGE),
    Case("AvgPool1D", lambda: nn.AvgPool1D(2, padding="SAME"), None, X),
    Case("AvgPool2D", lambda: nn.AvgPool2D(2), None, IMAGE),
    Case("GlobalAvgPool", lambda: nn.GlobalAvgPool(), None, X),
    Case("GlobalMaxPool", lambda: nn.GlobalMaxPool(2), None, IMAGE),
    Case("Flatten", lambda: nn.Flatten(), None, X),
    Case("Reshape", lambda: nn.Reshape((2, 6)), None, X),
    # regularisation and normalisation
    Case("Dropout", lambda: nn.Dropout(0.5), None, X, stochastic=True),
    Case("GaussianNoise", lambda: nn.GaussianNoise(0.5), None, X, stochastic=True),
    Case("MaskingNoise", lambda: nn.MaskingNoise(0.5), None, X, stochastic=True),
    Case("BatchNorm", lambda: nn.BatchNorm(), None, X),
    Case("LayerNorm", lambda: nn.LayerNorm(), None, X),
    Case("LocalResponseNorm", lambda: nn.LocalResponseNorm(3), None, X),
    Case("Embedding", lambda: nn.Embedding(VOCAB, 4), lambda: nn.Embedding(VOCAB, 5), ids(BATCH, LENGTH),
         integer_input=True),
    # activations
    *[Case(name, make, None, X) for name, make in [
        ("Sigmoid", nn.Sigmoid), ("Tanh", nn.Tanh), ("ReLU", nn.ReLU), ("LeakyReLU", nn.LeakyReLU),
        ("ELU", nn.ELU), ("GELU", nn.GELU), ("Softmax", nn.Softmax), ("LogSoftmax", nn.LogSoftmax),
        ("Step", nn.Step), ("Softplus", nn.Softplus), ("HardTanh", nn.HardTanh)]],
    Case("RadialBasis", lambda: nn.RadialBasis(5), lambda: nn.RadialBasis(6), X),
    Case("PReLU", lambda: nn.PReLU(), None, X),
    Case("Lambda", lambda: nn.Lambda(jnp.tanh), None, X),
    # combinators
    Case("Sequential", lambda: nn.Sequential([nn.Dense(5), nn.ReLU(), nn.Dense(3)]),
         lambda: nn.Sequential([nn.Dense(6), nn.ReLU(), nn.Dense(3)]), X),
    Case("Residual", lambda: nn.Residual(nn.Dense(FEATURES)), lambda: nn.Residual(nn.Dense(FEATURES, use_bias=False)),
         X),
    Case("Parallel", lambda: nn.Parallel([nn.Dense(2), nn.Dense(3)]), lambda: nn.Parallel([nn.Dense(2)]), X),
    Case("Concat", lambda: nn.Concat([nn.Dense(2), nn.Dense(3)]), lambda: nn.Concat([nn.Dense(3), nn.Dense(3)]), X),
    # recurrent cells and layers
    *[Case(name, lambda cls=cls: cls(5), lambda cls=cls: cls(6), floats(BATCH, FEATURES))
      for name, cls in [("SimpleRNNCell", nn.SimpleRNNCell), ("LSTMCell", nn.LSTMCell), ("GRUCell", nn.GRUCell),
                        ("SimplifiedGRUCell", nn.SimplifiedGRUCell)]],
    # With lengths, the outputs of padded steps are zeros whatever the input: NaN shows in the real steps.
    Case("RNN", lambda: nn.RNN(nn.SimpleRNNCell(5)), lambda: nn.RNN(nn.SimpleRNNCell(6)), with_lengths(SEQ, [3, 2]),
         all_nan=False),
    Case("LSTM", lambda: nn.LSTM(5), lambda: nn.LSTM(6), with_lengths(SEQ, [3, 2]), all_nan=False),
    Case("GRU", lambda: nn.GRU(5, implementation="autodiff"), lambda: nn.GRU(6), X),
    Case("Bidirectional", lambda: nn.Bidirectional(nn.GRUCell(5)), lambda: nn.Bidirectional(nn.GRUCell(6)),
         with_lengths(SEQ, [3, 1]), all_nan=False),
    Case("StackedRNN", lambda: nn.StackedRNN([nn.LSTMCell(5), nn.LSTMCell(5)]),
         lambda: nn.StackedRNN([nn.LSTMCell(5)]), X),
    # attention and the Transformer's blocks
    Case("MultiHeadAttention", lambda: nn.MultiHeadAttention(2), lambda: nn.MultiHeadAttention(2, qkv_features=8), X),
    Case("AdditiveAttention", lambda: nn.AdditiveAttention(5, context_features=3),
         lambda: nn.AdditiveAttention(6, context_features=3), with_context((BATCH, FEATURES), (BATCH, LENGTH, 3))),
    Case("SinusoidalPositionalEncoding", lambda: nn.SinusoidalPositionalEncoding(8), None, X),
    Case("LearnedPositionalEmbedding", lambda: nn.LearnedPositionalEmbedding(8),
         lambda: nn.LearnedPositionalEmbedding(9), X),
    Case("FeedForward", lambda: nn.FeedForward(8), lambda: nn.FeedForward(9), X),
    Case("TransformerEncoderBlock", lambda: nn.TransformerEncoderBlock(2, 8, dropout_rate=0.5),
         lambda: nn.TransformerEncoderBlock(2, 9), X, stochastic=True),
    Case("TransformerDecoderBlock", lambda: nn.TransformerDecoderBlock(2, 8, dropout_rate=0.5),
         lambda: nn.TransformerDecoderBlock(2, 9), with_context(SEQ, (BATCH, 5, FEATURES)), stochastic=True),
    # memory, compile time and precision
    Case("Remat", lambda: nn.Remat(nn.TransformerEncoderBlock(2, 8, dropout_rate=0.5)),
         lambda: nn.Remat(nn.TransformerEncoderBlock(2, 9)), X, stochastic=True),
    Case("Repeat", lambda: nn.Repeat(nn.TransformerEncoderBlock(2, 8, dropout_rate=0.5), 2),
         lambda: nn.Repeat(nn.TransformerEncoderBlock(2, 8), 3), X, stochastic=True),
    Case("MixedPrecision", lambda: nn.MixedPrecision(nn.Sequential([nn.Dense(5), nn.ReLU(), nn.Dense(3)]),
                                                     nn.Policy(jnp.float32, jnp.bfloat16, jnp.float32)),
         lambda: nn.MixedPrecision(nn.Sequential([nn.Dense(6), nn.ReLU(), nn.Dense(3)])), X,
         output_dtype=jnp.float32),
    # models
    Case("SequenceClassifier", lambda: models.SequenceClassifier(3, nn.LSTMCell(5), dropout_rate=0.5),
         lambda: models.SequenceClassifier(3, nn.LSTMCell(6)), with_lengths(SEQ, [3, 2]), stochastic=True, model=True),
    Case("SequenceTagger", lambda: models.SequenceTagger(3, nn.GRUCell(5), vocab_size=VOCAB),
         lambda: models.SequenceTagger(3, nn.GRUCell(5), vocab_size=VOCAB + 1),
         with_lengths((BATCH, LENGTH), [3, 2], integer=True), integer_input=True, model=True),
    Case("CharLM", lambda: models.CharLM(VOCAB, nn.LSTMCell(5)), lambda: models.CharLM(VOCAB, nn.LSTMCell(6)),
         ids(BATCH, LENGTH), integer_input=True, model=True),
    Case("AttentionSeq2Seq", lambda: models.AttentionSeq2Seq(VOCAB, VOCAB, 4),
         lambda: models.AttentionSeq2Seq(VOCAB, VOCAB, 5), seq2seq_example, integer_input=True, model=True),
    Case("Transformer", lambda: models.Transformer(_config()), lambda: models.Transformer(_config(d_model=12)),
         transformer_example, integer_input=True, stochastic=True, model=True),
    Case("GPT", lambda: models.GPT(models.GPTConfig(VOCAB, d_model=8, num_heads=2, num_layers=2, max_length=LENGTH,
                                                   dropout_rate=0.5)),
         lambda: models.GPT(models.GPTConfig(VOCAB, d_model=8, num_heads=2, num_layers=3, max_length=LENGTH)),
         ids(BATCH, LENGTH), integer_input=True, stochastic=True, model=True),
    Case("Autoencoder", lambda: models.Autoencoder((5, 3), corruption=nn.MaskingNoise(0.5)),
         lambda: models.Autoencoder((5, 2)), X, stochastic=True, model=True),
    Case("TiedAutoencoder", lambda: models.Autoencoder((5, 3), tied=True, activation="sigmoid",
                                                       corruption=nn.GaussianNoise(0.1)),
         lambda: models.Autoencoder((5, 3), activation="sigmoid"), X, stochastic=True, model=True),
    # the convolutional networks: each family small, at the smallest input its table takes, with equal widths
    # where they are free (equal shapes share compiled programs, the battery's main cost)
    Case("LeNet5", lambda: models.lenet5(3), lambda: models.lenet5(4), floats(BATCH, 32, 32, 1), model=True),
    Case("AlexNet", lambda: models.alexnet(3, widths=(3,) * 5, hidden_features=3),
         lambda: models.alexnet(3, widths=(3, 3, 3, 3, 4), hidden_features=3), floats(BATCH, 67, 67, 3),
         stochastic=True, model=True),
    Case("ZFNet", lambda: models.zfnet(3, widths=(3,) * 5, hidden_features=3),
         lambda: models.zfnet(3, widths=(3,) * 5, hidden_features=4), floats(BATCH, 53, 53, 3),
         stochastic=True, model=True),
    Case("VGG", lambda: models.VGG(((2,), (3,)), 3, batch_norm=True, hidden_features=5),
         lambda: models.VGG(((2,), (3,)), 3, hidden_features=5), floats(BATCH, 4, 4, 3), stochastic=True, model=True),
    Case("Inception", lambda: models.Inception(2, 2, 3, 1, 2, 2), lambda: models.naive_inception(2, 3, 2), IMAGE,
         model=True),
    Case("GoogLeNet", lambda: models.googlenet(3, stem_widths=(2, 2, 2), stages=(((1,) * 6,), ((1,) * 6,))),
         lambda: models.googlenet(3, stem_widths=(2, 2, 2), stages=(((1,) * 6,),)),
         floats(BATCH, 16, 16, 3), stochastic=True, model=True),
    Case("BasicBlock", lambda: models.BasicBlock(5, strides=2), lambda: models.BasicBlock(6, strides=2), IMAGE,
         model=True),
    Case("Bottleneck", lambda: models.Bottleneck(2, shortcut="zero_pad"), lambda: models.Bottleneck(3), IMAGE,
         model=True),
    Case("ResNet", lambda: models.ResNet("basic", (1, 1), 3, widths=(2, 4), stem="cifar", shortcut="zero_pad"),
         lambda: models.ResNet("basic", (1, 1), 3, widths=(2, 5), stem="cifar"), floats(BATCH, 8, 8, 3), model=True),
]

# Public names that are not layers to run on an input (functions, bases, NamedTuples).
NOT_LAYERS = {"Layer", "ParamFree", "Cell"}


def public_layer_classes() -> set[str]:
    """Every class exported by ``jdl.nn`` and ``jdl.models`` that is a :class:`~jdl.nn.Layer`."""
    names = set()
    for module in (nn, models):
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, nn.Layer) and name not in NOT_LAYERS:
                names.add(value.__name__)
    return names


def stack(examples: list[tuple[Any, dict]]) -> tuple[Any, dict]:
    """Two examples as one batch of examples (a new leading axis), for ``jax.vmap``."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *examples)


def to_dtype(tree: Any, dtype) -> Any:
    """Floating leaves cast to ``dtype``; integer leaves (ids, lengths) kept."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def floating_leaves(tree: Any) -> list:
    return [np.asarray(a, np.float64) for a in jax.tree.leaves(tree) if jnp.issubdtype(a.dtype, jnp.floating)]
