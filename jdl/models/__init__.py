"""Models built from :mod:`jdl.nn` layers: reusable networks, no experiment code.

Every model is a :class:`~jdl.nn.Layer` (``init``/``apply``), with more methods where it
has more entry points (``loss``, ``generate``, ``greedy_decode``, ...).

* :mod:`jdl.models.sequence`: a many-to-one sequence classifier, a many-to-many tagger and
  a recurrent (character) language model with teacher-forcing, free-running and scheduled
  sampling losses and temperature sampling.
* :mod:`jdl.models.seq2seq`: the RNN encoder-decoder with additive attention (Bahdanau et al.).
* :mod:`jdl.models.transformer`: the Transformer encoder-decoder (Vaswani et al.), with
  cached greedy and beam decoding.
* :mod:`jdl.models.autoencoder`: the autoencoder (undercomplete, deep, tied weights,
  denoising with a corruption layer), ``encode`` and ``decode`` beside ``apply``.
* The convolutional networks, each file a paper's layer table (constructors in lower case,
  after torchvision): :mod:`~jdl.models.lenet` (``lenet5``), :mod:`~jdl.models.alexnet`
  (``alexnet``, ``zfnet``), :mod:`~jdl.models.vgg` (``vgg11`` ... ``vgg19``, with
  ``batch_norm=True``), :mod:`~jdl.models.inception` (the Inception module, naive and with
  bottlenecks, and ``googlenet``), :mod:`~jdl.models.resnet` (``resnet18`` ... ``resnet152``
  and the CIFAR ``resnet20`` ... ``resnet110``).
"""
from jdl.models.alexnet import AlexNet, ZFNet, alexnet, zfnet
from jdl.models.autoencoder import Autoencoder
from jdl.models.inception import GoogLeNet, Inception, googlenet, naive_inception
from jdl.models.lenet import LeNet5, lenet5
from jdl.models.resnet import (
    BasicBlock, Bottleneck, ResNet, resnet18, resnet20, resnet32, resnet34, resnet44, resnet50, resnet56, resnet101,
    resnet110, resnet152,
)
from jdl.models.seq2seq import AttentionSeq2Seq, RNNEncoderDecoder
from jdl.models.sequence import CharLM, LanguageModel, SequenceClassifier, SequenceTagger
from jdl.models.transformer import (
    DecodeState, EncoderDecoderTransformer, Transformer, TransformerConfig, count_params, transformer_base,
)
from jdl.models.gpt import GPT, GPTConfig
from jdl.models.vgg import VGG, VGG_CONFIGS, vgg11, vgg13, vgg16, vgg19

__all__ = [
    "Autoencoder",
    "SequenceClassifier", "SequenceTagger", "CharLM", "LanguageModel",
    "AttentionSeq2Seq", "RNNEncoderDecoder",
    "Transformer", "TransformerConfig", "transformer_base", "EncoderDecoderTransformer", "DecodeState",
    "GPT", "GPTConfig",
    "count_params",
    "LeNet5", "lenet5", "AlexNet", "ZFNet", "alexnet", "zfnet", "VGG", "VGG_CONFIGS", "vgg11", "vgg13", "vgg16", "vgg19",
    "Inception", "naive_inception", "GoogLeNet", "googlenet",
    "BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
]
