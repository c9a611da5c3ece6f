"""Word vectors (seeds 000 and 002): from one-hot and counts to word2vec, and how to judge them.

One family per module:

- :mod:`~jdl.embeddings.corpus`: tokens, a counted :class:`Vocabulary`, subsampling of
  frequent words, context pairs and windows (word2vec's dynamic window), one-hot vectors.
- :mod:`~jdl.embeddings.counts`: the co-occurrence matrix, PPMI (with context smoothing),
  TF-IDF, LSA by truncated SVD (SciPy sparse matrices).
- :mod:`~jdl.embeddings.huffman`: the Huffman tree of hierarchical softmax.
- :mod:`~jdl.embeddings.word2vec`: skip-gram and CBOW with negative sampling,
  hierarchical softmax or the full softmax; their losses; jitted, batched training.
- :mod:`~jdl.embeddings.evaluation`: cosine similarity, nearest neighbours, Spearman on
  word-similarity sets, analogies by 3CosAdd and 3CosMul, each with its coverage.

gensim is the reference these are held against (in the tests and the experiment); jdl
does not import it.
"""
from jdl.embeddings import corpus, counts, evaluation, huffman, word2vec
from jdl.embeddings.corpus import (
    Vocabulary, context_pairs, context_windows, keep_probabilities, one_hot, subsample, tokenize,
)
from jdl.embeddings.counts import cooccurrence_matrix, lsa, ppmi, term_document_matrix, tfidf, truncated_svd
from jdl.embeddings.evaluation import (
    AnalogyResult, PairsResult, WordVectors, cosine_similarity, read_analogies, read_word_pairs, spearman,
)
from jdl.embeddings.huffman import HuffmanTree, huffman_tree
from jdl.embeddings.word2vec import (
    Word2Vec, Word2VecParams, hierarchical_softmax_grad, hierarchical_softmax_log_probs, hierarchical_softmax_loss,
    negative_sampling_grad, negative_sampling_loss, noise_distribution, softmax_loss,
)

__all__ = [
    "corpus", "counts", "evaluation", "huffman", "word2vec",
    "Vocabulary", "tokenize", "keep_probabilities", "subsample", "context_pairs", "context_windows", "one_hot",
    "cooccurrence_matrix", "ppmi", "term_document_matrix", "tfidf", "truncated_svd", "lsa",
    "HuffmanTree", "huffman_tree",
    "Word2Vec", "Word2VecParams", "negative_sampling_loss", "negative_sampling_grad", "hierarchical_softmax_loss",
    "hierarchical_softmax_grad",
    "hierarchical_softmax_log_probs", "softmax_loss", "noise_distribution",
    "WordVectors", "PairsResult", "AnalogyResult", "cosine_similarity", "spearman", "read_word_pairs",
    "read_analogies",
]
