"""The binary tree of hierarchical softmax: a Huffman code built from the word counts.

Hierarchical softmax (seed 000; Morin and Bengio 2005, word2vec) puts the ``V`` words at
the leaves of a binary tree with ``V - 1`` inner nodes, each holding a vector ``u_n``. A
word's probability is that of the random walk from the root to its leaf: at inner node
``n`` the walk takes the branch coded 0 with probability ``sigma(h . u_n)`` and the branch
coded 1 with ``sigma(-h . u_n)``, so for the word ``w`` with code bits ``b_1..b_L`` along
the inner nodes ``n_1..n_L`` (its *points*)

    P(w | h) = prod_j sigma((1 - 2 b_j) h . u_{n_j}),

which sums to 1 over the leaves because the two branches of every node do. A Huffman tree
(repeatedly merge the two least frequent subtrees) gives frequent words short codes, so
the expected cost per word is about the entropy of the unigram distribution in bits
rather than ``log2 V``. With 8 equally frequent words every code has 3 bits.

:func:`huffman_tree` follows word2vec's construction: leaves are the words in id order,
the inner node made by the ``i``-th merge has index ``i`` (the root is ``V - 2``), the
first-popped (lighter) subtree gets bit 0. The heap compares weights alone, so equal
weights fall as ``heapq`` leaves them, which is what gensim does: its codes and points
are the same as these, bit for bit (a test checks). Any tie-breaking gives an optimal code.

Example:
    >>> tree = huffman_tree([1, 1, 1, 1, 1, 1, 1, 1])
    >>> tree.lengths.tolist()
    [3, 3, 3, 3, 3, 3, 3, 3]
    >>> huffman_tree([5, 2, 1, 1]).lengths.tolist()   # the frequent word has the short code
    [1, 2, 3, 3]
"""
from __future__ import annotations

import heapq
from typing import NamedTuple

import numpy as np

from jdl._checks import check_that

__all__ = ["HuffmanTree", "huffman_tree"]


class HuffmanTree(NamedTuple):
    """Each word's path, padded to the longest: ``codes[w, j]`` the ``j``-th bit (0 or 1),
    ``points[w, j]`` the inner node it is read at (root first), ``lengths[w]`` the number
    of valid entries; entries past a word's length are 0."""

    codes: np.ndarray  # (V, L) int8
    points: np.ndarray  # (V, L) int32
    lengths: np.ndarray  # (V,) int32

    @property
    def mask(self) -> np.ndarray:
        """``(V, L)`` bool: which entries of ``codes`` and ``points`` are on the word's path."""
        return np.arange(self.codes.shape[1]) < self.lengths[:, None]


class _Subtree(NamedTuple):
    weight: int
    node: int

    def __lt__(self, other):  # by weight alone: ties fall as the heap leaves them, as in gensim's tree
        return self.weight < other.weight


def huffman_tree(counts) -> HuffmanTree:
    """The Huffman tree of ``counts`` (one positive count per word, at least two words)."""
    counts = np.asarray(counts)
    check_that(counts.ndim == 1 and counts.size >= 2 and (counts > 0).all(), "huffman_tree",
               "at least two positive counts, one per word", f"shape {counts.shape}")
    size = len(counts)
    heap = [_Subtree(int(c), w) for w, c in enumerate(counts)]  # leaves 0..V-1, inner nodes V..2V-2
    heapq.heapify(heap)
    children = {}
    for merge in range(size - 1):
        zero, one = heapq.heappop(heap), heapq.heappop(heap)
        children[size + merge] = (zero.node, one.node)
        heapq.heappush(heap, _Subtree(zero.weight + one.weight, size + merge))
    paths = {}
    stack = [(2 * size - 2, (), ())]  # (node, bits so far, inner nodes so far), from the root
    while stack:
        node, bits, points = stack.pop()
        if node < size:
            paths[node] = (bits, points)
            continue
        for bit, child in enumerate(children[node]):
            stack.append((child, bits + (bit,), points + (node - size,)))
    lengths = np.array([len(paths[w][0]) for w in range(size)], np.int32)
    codes = np.zeros((size, lengths.max()), np.int8)
    points = np.zeros((size, lengths.max()), np.int32)
    for w, (bits, nodes) in paths.items():
        codes[w, :len(bits)], points[w, :len(nodes)] = bits, nodes
    return HuffmanTree(codes, points, lengths)
