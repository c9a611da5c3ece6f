"""Layers: each a frozen dataclass with the pure methods ``init`` and ``apply`` (see :mod:`jdl.nn.core`)."""
from jdl.nn.activation import (
    ELU, GELU, HardTanh, LeakyReLU, LogSoftmax, PReLU, ReLU, Sigmoid, Softmax, Softplus, Step, Tanh,
)
from jdl.nn.additive import AdditiveAttention, additive_attention_keys
from jdl.nn.masks import causal_mask, combine_masks, masked_softmax, padding_mask
from jdl.nn.multi_head import KVCache, MultiHeadAttention, init_kv_cache
from jdl.nn.scaled_dot_product import dot_product_attention, dot_product_attention_weights
from jdl.nn.conv import Conv, Conv1D, Conv2D, conv_output_size
from jdl.nn.core import Concat, Lambda, Layer, Parallel, Residual, Sequential, ParamFree, check_params, output_shape
from jdl.nn.dense import Dense
from jdl.nn.dropout import Dropout
from jdl.nn.noise import GaussianNoise, MaskingNoise, add_weight_noise
from jdl.nn.embed import Embedding, attend
from jdl.nn.norm import BatchNorm, LayerNorm, LocalResponseNorm
from jdl.nn.position import LearnedPositionalEmbedding, SinusoidalPositionalEncoding, sinusoidal_positions
from jdl.nn.radial import RadialBasis
from jdl.nn.pool import AvgPool, AvgPool1D, AvgPool2D, GlobalAvgPool, GlobalMaxPool, MaxPool, MaxPool1D, MaxPool2D
from jdl.nn.reshape import Flatten, Reshape
from jdl.nn.cells import Cell, GRUCell, LSTMCell, SimpleRNNCell, SimplifiedGRUCell
from jdl.nn.recurrent import GRU, LSTM, RNN, Bidirectional, StackedRNN
from jdl.nn.recurrent_scan import flip_sequences

__all__ = [
    "Layer", "ParamFree", "check_params", "output_shape",
    "Sequential", "Residual", "Parallel", "Concat", "Lambda",
    "Dense", "Conv", "Conv1D", "Conv2D", "conv_output_size",
    "MaxPool", "AvgPool", "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D", "GlobalAvgPool", "GlobalMaxPool",
    "Flatten", "Reshape", "Dropout", "BatchNorm", "LayerNorm", "LocalResponseNorm", "Embedding", "attend",
    "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "PReLU", "ELU", "GELU", "Softmax", "LogSoftmax", "Step",
    "Softplus", "HardTanh", "RadialBasis", "GaussianNoise", "MaskingNoise", "add_weight_noise",
]
__all__ += [
    "Cell", "SimpleRNNCell", "LSTMCell", "GRUCell", "SimplifiedGRUCell", "RNN", "LSTM", "GRU", "Bidirectional", "StackedRNN",
    "flip_sequences",
]
__all__ += [
    "dot_product_attention", "dot_product_attention_weights", "padding_mask", "causal_mask", "combine_masks",
    "masked_softmax", "MultiHeadAttention", "KVCache", "init_kv_cache", "AdditiveAttention", "additive_attention_keys",
    "sinusoidal_positions", "SinusoidalPositionalEncoding", "LearnedPositionalEmbedding",
]

from jdl.nn.transformer import FeedForward, TransformerDecoderBlock, TransformerEncoderBlock  # noqa: E402

__all__ += ["FeedForward", "TransformerEncoderBlock", "TransformerDecoderBlock"]
from jdl.nn.precision import MixedPrecision, Policy, cast_floating  # noqa: E402
from jdl.nn.remat import Remat  # noqa: E402
from jdl.nn.repeat import Repeat  # noqa: E402
__all__ += ["MixedPrecision", "Policy", "cast_floating", "Remat", "Repeat"]
