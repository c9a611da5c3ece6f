"""Models built from :mod:`jdl.nn` layers: reusable networks, no experiment code.

:mod:`jdl.models.sequence`: a many-to-one sequence classifier, a many-to-many tagger and a
recurrent (character) language model with teacher-forcing, free-running and scheduled
sampling losses and temperature sampling.
"""
from jdl.models.sequence import (
    CharLM,
    LanguageModel,
    SequenceClassifier,
    SequenceTagger,
    masked_accuracy,
    masked_cross_entropy,
    sample_tokens,
    sequence_mask,
)

__all__ = [
    "SequenceClassifier", "SequenceTagger", "CharLM", "LanguageModel",
    "sample_tokens", "sequence_mask", "masked_cross_entropy", "masked_accuracy",
]

from jdl.models.transformer import (  # noqa: E402
    DecodeState,
    EncoderDecoderTransformer,
    Transformer,
    TransformerConfig,
    transformer_base,
)

__all__ += ["Transformer", "TransformerConfig", "transformer_base", "EncoderDecoderTransformer", "DecodeState"]
from jdl.models.seq2seq import AttentionSeq2Seq, RNNEncoderDecoder

__all__ += ["AttentionSeq2Seq", "RNNEncoderDecoder"]
