"""Models built from :mod:`jdl.nn` layers: reusable networks, no experiment code.

Every model is a :class:`~jdl.nn.Layer` (``init``/``apply``), with more methods where it
has more entry points (``loss``, ``generate``, ``greedy_decode``, ...).

* :mod:`jdl.models.sequence`: a many-to-one sequence classifier, a many-to-many tagger and
  a recurrent (character) language model with teacher-forcing, free-running and scheduled
  sampling losses and temperature sampling.
* :mod:`jdl.models.seq2seq`: the RNN encoder-decoder with additive attention (Bahdanau et al.).
* :mod:`jdl.models.transformer`: the Transformer encoder-decoder (Vaswani et al.), with
  cached greedy and beam decoding.
"""
from jdl.models.seq2seq import AttentionSeq2Seq, RNNEncoderDecoder
from jdl.models.sequence import CharLM, LanguageModel, SequenceClassifier, SequenceTagger
from jdl.models.transformer import (
    DecodeState, EncoderDecoderTransformer, Transformer, TransformerConfig, count_params, transformer_base,
)

__all__ = [
    "SequenceClassifier", "SequenceTagger", "CharLM", "LanguageModel",
    "AttentionSeq2Seq", "RNNEncoderDecoder",
    "Transformer", "TransformerConfig", "transformer_base", "EncoderDecoderTransformer", "DecodeState",
    "count_params",
]
