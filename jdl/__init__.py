"""jdl: a JAX deep learning toolkit in the functional style.

Layers are pairs of pure functions over plain nested-dict pytrees (:mod:`jdl.nn`);
initialisers, activations, losses and metrics are plain functions; :mod:`jdl.optim` holds
the optimizers, :mod:`jdl.models` reusable networks built from the layers,
:mod:`jdl.decoding` greedy and beam search, :mod:`jdl.text` tokenisation;
:mod:`jdl.embeddings` word vectors (counts, PPMI, LSA, word2vec) and their evaluation;
:mod:`jdl.linear_units` the perceptron, delta rules and logistic regression with their
learning rules, :mod:`jdl.backprop` backpropagation written out by hand, :mod:`jdl.regions`
the linear regions of ReLU networks; :mod:`jdl.augment` keyed, jittable data augmentation,
:mod:`jdl.ensembles` vmapped ensembles, averaged predictions and bagging; :mod:`jdl.train`
the train state, steps, compiled loops and ``fit``, :mod:`jdl.checkpoint` saving and
restoring pytrees (safetensors and JSON), :mod:`jdl.sharding` params and batches on a device
mesh, :func:`jdl.summary` a model's table of layers.
"""
from jdl import (
    activations, augment, backprop, checkpoint, decoding, embeddings, ensembles, init, io, linear_units, losses, metrics,
    models, nn, optim, regions, sharding, text, train,
)
from jdl.summaries import capture_intermediates, count_params, flops, summary

__version__ = "0.1.0"
__all__ = ["activations", "augment", "backprop", "checkpoint", "decoding", "embeddings", "ensembles", "init", "io", "linear_units",
           "losses", "metrics",
           "models", "nn", "optim", "regions", "sharding", "text", "train", "summary", "count_params", "flops", "capture_intermediates"]
