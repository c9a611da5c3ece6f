"""jdl: a JAX deep learning toolkit in the functional style.

Layers are pairs of pure functions over plain nested-dict pytrees (:mod:`jdl.nn`);
initialisers, activations, losses and metrics are plain functions.
"""
from jdl import activations, init, io, losses, metrics, nn, text

__version__ = "0.1.0"
__all__ = ["activations", "init", "io", "losses", "metrics", "nn", "text"]
