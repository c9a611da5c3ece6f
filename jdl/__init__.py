"""jdl: a JAX deep learning toolkit in the functional style.

Layers are pairs of pure functions over plain nested-dict pytrees (:mod:`jdl.nn`);
initialisers, activations, losses and metrics are plain functions; :mod:`jdl.optim` holds
the optimizers, :mod:`jdl.models` reusable networks built from the layers,
:mod:`jdl.decoding` greedy and beam search, :mod:`jdl.text` tokenisation.
"""
from jdl import activations, decoding, init, io, losses, metrics, models, nn, optim, text

__version__ = "0.1.0"
__all__ = ["activations", "decoding", "init", "io", "losses", "metrics", "models", "nn", "optim", "text"]
