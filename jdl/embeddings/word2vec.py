"""word2vec: skip-gram and CBOW with negative sampling, hierarchical softmax or the full softmax.

Every word ``w`` has an input vector ``v_w`` (the rows of ``params.input``, the word
vectors kept after training) and an output vector ``u_w`` (``params.output``; for
hierarchical softmax, one per inner node of the Huffman tree instead). Seed 002's
objective for a centre word ``c`` and one of its context words ``o`` is

    J = -log P(o | c),   P(o | c) = exp(u_o . v_c) / sum_w exp(u_w . v_c)     (output="softmax")

which costs ``O(V)`` per pair. word2vec replaces it by (Mikolov et al. 2013):

- **negative sampling**: ``J = -log sigma(u_o . h) - sum_{k=1}^K log sigma(-u_{n_k} . h)``
  with ``K = negative`` noise words ``n_k`` drawn from the unigram distribution raised to
  ``3/4`` (:func:`noise_distribution`); a noise word equal to ``o`` is skipped, as in
  word2vec's code.
- **hierarchical softmax**: ``J = -sum_j log sigma((1 - 2 b_j) u_{n_j} . h)`` along the
  Huffman path of ``o`` (:mod:`jdl.embeddings.huffman`): ``O(log V)`` per pair.

``h`` is the input: for **skip-gram** the vector of one word of a pair predicting the other
(in seed 002's notation ``v_c`` predicting ``o``; the training loop feeds the context word
and predicts the centre, as word2vec's code does), for **CBOW** the mean of the context
vectors predicting the centre.

Training is plain SGD with word2vec's learning rate: linear decay from
``learning_rate`` to ``min_learning_rate`` over the whole run (the seeds' ``eps_k =
(1 - k/T) eps_0 + (k/T) eps_T`` with ``k/T`` the fraction of the run done), input vectors
initialised uniformly in ``[-1/d, 1/d]`` (gensim's range; word2vec's C code uses
``[-0.5/d, 0.5/d]``: ``init_range=0.5``) and output vectors at zero. Each epoch
subsamples frequent words (:func:`~jdl.embeddings.corpus.keep_probabilities`), draws
dynamic windows, lays its examples into batches (``order``) and runs them through a
jitted ``lax.scan``: each step gathers the rows its examples touch, computes the summed
loss's gradient with respect to those rows in word2vec's closed form (:func:`negative_sampling_grad`,
:func:`hierarchical_softmax_grad`; tested against ``jax.grad``, and about 1.5 times faster
on a CPU than differentiating the loss), and adds ``-lr`` times it back with one
scatter-add per table. Examples of one batch see the same parameters, where word2vec's
threads see each other's updates at once; by default each row of a batch reads its own
contiguous slice of the corpus in order (``order="streams"``), so that consecutive,
overlapping examples still build on each other's updates, as in word2vec's threads (CBOW
with hierarchical softmax instead reads the corpus in order, 64 examples per step: see
``order``).

**Shared noise words** (``shared_noise=S``, default 8, per ``noise_group`` consecutive
examples, by default the whole batch): instead of ``K`` noise words per example, each
group of examples draws ``S`` noise words and every example in it uses all ``S``, each weighted ``K / S``.
The expected gradient is the same as per-example sampling (every noise term is an
unbiased draw of the same expectation), and the noise scores become one matrix product
per group, ``H_g U_noise^T``, instead of ``K`` gathered rows per example: the gathers and
scatter-adds of ``K`` rows per example, which dominate the step on a CPU, shrink to ``S``
rows per group. This is the idea of Ji et al. (2016, "Parallelizing word2vec in shared and
distributed memory"), who share the noise words of one window, over a larger group.
``shared_noise=None`` is word2vec's own per-example sampling. Measured on a corpus like
the experiment's (skip-gram, shuffled batches, 3 seeds, WordSim353 and SimLex-999 Spearman): 16 noise
words per batch of 1024 give 0.303 and 0.189, 8 give 0.315 and 0.182, gensim 0.260 and
0.182; each halving of ``S`` takes about a sixth off the training time.

Example (a toy corpus; see ``experiments/word_vectors.py`` for a real one):
    >>> import numpy as np
    >>> from jdl.embeddings import Vocabulary, Word2Vec
    >>> sentences = [["the", "cat", "sat", "on", "the", "mat"], ["the", "dog", "sat", "on", "the", "rug"]] * 20
    >>> vocab = Vocabulary.from_sentences(sentences)
    >>> ids = [vocab.encode(s) for s in sentences]
    >>> model = Word2Vec(dim=8, window=2, epochs=3, batch_size=64, sample=0.0, shared_noise=4, compute_loss=True)
    >>> params, losses = model.fit(ids, vocab, seed=0)
    >>> params.input.shape, params.output.shape, len(losses)
    ((7, 8), (7, 8), 3)
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jdl._checks import Positive, PositiveInt, check_that, check_declared
from jdl.embeddings.corpus import Vocabulary, context_pairs, context_windows, keep_probabilities, subsample
from jdl.embeddings.huffman import HuffmanTree, huffman_tree

__all__ = ["Word2Vec", "Word2VecParams", "negative_sampling_loss", "negative_sampling_grad",
           "hierarchical_softmax_loss", "hierarchical_softmax_grad",
           "hierarchical_softmax_log_probs", "softmax_loss", "noise_distribution"]


class Word2VecParams(NamedTuple):
    """``input``: ``(V, d)`` word vectors ``v_w``; ``output``: ``(V, d)`` output vectors ``u_w``,
    or ``(V - 1, d)`` inner-node vectors for hierarchical softmax."""

    input: jax.Array
    output: jax.Array


def negative_sampling_loss(positive_score, noise_scores, noise_weights=1.0):
    """``-log sigma(s_o) - sum_k w_k log sigma(-s_k)``, summed over the last axis of ``noise_scores``.

    ``positive_score = u_o . h`` has shape ``(...)``, ``noise_scores = u_{n_k} . h`` shape
    ``(..., K)``; ``noise_weights`` (broadcast against it) is ``1`` for word2vec, ``K/S``
    with shared noise words, and ``0`` for a skipped noise word.

    Example:
        >>> float(negative_sampling_loss(jnp.array(0.0), jnp.zeros(2)))  # 3 log 2
        2.0794...
    """
    return -jax.nn.log_sigmoid(positive_score) - jnp.sum(noise_weights * jax.nn.log_sigmoid(-noise_scores), -1)


def negative_sampling_grad(positive_score, noise_scores, noise_weights=1.0):
    """The derivatives of :func:`negative_sampling_loss` with respect to its scores:
    ``dJ/ds_o = sigma(s_o) - 1`` and ``dJ/ds_k = w_k sigma(s_k)`` (word2vec's ``g = (label - f)``, negated)."""
    return jax.nn.sigmoid(positive_score) - 1.0, noise_weights * jax.nn.sigmoid(noise_scores)


def hierarchical_softmax_loss(scores, codes, mask):
    """``-log P(w | h) = -sum_j log sigma((1 - 2 b_j) s_j)`` over the path's valid entries.

    ``scores[..., j] = u_{n_j} . h`` at the path's inner nodes, ``codes`` its bits, ``mask``
    which entries are on the path (paths are padded to the longest).
    """
    signs = 1.0 - 2.0 * codes.astype(scores.dtype)
    return -jnp.sum(jnp.where(mask, jax.nn.log_sigmoid(signs * scores), 0.0), -1)


def hierarchical_softmax_grad(scores, codes, mask):
    """``dJ/ds_j = sigma(s_j) - (1 - b_j)`` on the path, 0 off it: word2vec's ``g = 1 - code - f``, negated."""
    return jnp.where(mask, jax.nn.sigmoid(scores) - (1.0 - codes.astype(scores.dtype)), 0.0)


def hierarchical_softmax_log_probs(h, inner_vectors, tree: HuffmanTree):
    """``log P(w | h)`` for every word ``w``: shape ``(..., V)``; ``exp`` of it sums to 1."""
    scores = jnp.einsum("...d,vld->...vl", h, inner_vectors[tree.points])
    return -hierarchical_softmax_loss(scores, jnp.asarray(tree.codes), jnp.asarray(tree.mask))


def softmax_loss(h, output, target):
    """Seed 002's ``-log softmax(U h)_o = -u_o . h + log sum_w exp(u_w . h)``."""
    logits = h @ output.T
    return jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, target[..., None], -1)[..., 0]


def noise_distribution(counts, exponent: float = 0.75) -> np.ndarray:
    """``P_n(w) = count(w)^exponent / sum_w' count(w')^exponent``: word2vec's noise distribution."""
    weights = np.asarray(counts, np.float64) ** exponent
    return weights / weights.sum()


class _Batch(NamedTuple):
    """One step's examples, padded to ``batch_size`` (``weight`` 0 on padding)."""

    inputs: jax.Array  # (B,) centre ids (skip-gram) or (B, 2W) context ids (CBOW)
    input_mask: jax.Array  # (B,) or (B, 2W): which input slots are words
    targets: jax.Array  # (B,) the word to predict
    noise: jax.Array  # (S,) shared, or (B, K) per-example noise ids; (0,) without negative sampling
    weight: jax.Array  # (B,) 1 for an example, 0 for padding
    learning_rate: jax.Array  # ()


@dataclasses.dataclass(frozen=True)
class Word2Vec:
    """word2vec's configuration; :meth:`fit` trains it on a corpus of id arrays.

    Attributes (gensim's names in brackets):
        dim: vector size [``vector_size``]. window: the largest window [``window``].
        model: ``"skip-gram"`` [``sg=1``] or ``"cbow"`` [``sg=0``].
        output: ``"negative-sampling"`` [``negative=K, hs=0``], ``"hierarchical-softmax"``
            [``negative=0, hs=1``] or ``"softmax"`` (seed 002's, for small vocabularies).
        negative: noise words per example, ``K``. noise_exponent: ``3/4`` [``ns_exponent``].
        shared_noise: ``S`` noise words shared by each group of ``noise_group`` consecutive
            examples of a batch (``None``: ``K`` noise words per example, word2vec's way);
            noise_group: ``None`` for the whole batch.
        sample: the subsampling threshold ``t`` [``sample``] (0: keep every word);
            subsampling: its rule, word2vec's or seed 000's (``"mikolov2013"``).
        learning_rate, min_learning_rate: [``alpha``, ``min_alpha``]. epochs: [``epochs``].
        batch_size: examples per step (default 1024 for negative sampling; 64 for CBOW with
            hierarchical softmax, which runs in corpus order; 256 otherwise: every example of a
            batch updates the hierarchical softmax's top nodes, and 1024 summed updates of the
            root diverge); steps_per_call: steps per compiled call (one ``lax.scan``; default
            65,536 examples' worth).
        max_score: word2vec's ``MAX_EXP``: a hierarchical-softmax node whose ``|score|`` is
            at least this is skipped (``None``: never).
        init_range: input vectors start uniform in ``[-init_range/d, init_range/d]``.
        order: how an epoch's examples are laid into batches (``_examples``): ``"streams"``,
            ``"shuffled"`` or ``"corpus"`` (default: ``"corpus"`` for CBOW with hierarchical
            softmax, ``"streams"`` otherwise).
        compute_loss: also sum the loss (costs about a sixth of a negative-sampling step on
            a CPU, so off by default, as gensim's ``compute_loss``).
    """

    dim: PositiveInt = 100
    window: PositiveInt = 5
    model: Literal["skip-gram", "cbow"] = "skip-gram"
    output: Literal["negative-sampling", "hierarchical-softmax", "softmax"] = "negative-sampling"
    negative: PositiveInt = 5
    noise_exponent: Positive = 0.75
    shared_noise: PositiveInt | None = 8
    noise_group: PositiveInt | None = None
    sample: float = 1e-3
    subsampling: Literal["word2vec", "mikolov2013"] = "word2vec"
    learning_rate: Positive = 0.025
    min_learning_rate: float = 1e-4
    epochs: PositiveInt = 5
    batch_size: PositiveInt | None = None
    steps_per_call: PositiveInt | None = None
    compute_loss: bool = False
    max_score: Positive | None = 6.0
    init_range: Positive = 1.0
    order: Literal["streams", "shuffled", "corpus"] | None = None

    def __post_init__(self):
        check_declared(self, Word2Vec, self)
        check_that(self.sample >= 0, self, "sample >= 0", self.sample)
        cbow_hs = (self.model, self.output) == ("cbow", "hierarchical-softmax")
        if self.order is None:  # CBOW with hierarchical softmax learns best in corpus order (``_examples``)
            object.__setattr__(self, "order", "corpus" if cbow_hs else "streams")
        if self.batch_size is None:  # hierarchical softmax shares its top nodes with every example: smaller steps
            object.__setattr__(self, "batch_size", 1024 if self.output == "negative-sampling" else 64 if cbow_hs else 256)
        if self.steps_per_call is None:
            object.__setattr__(self, "steps_per_call", max(1, 65536 // self.batch_size))
        check_that(self.batch_size % (self.noise_group or self.batch_size) == 0, self,
                   f"batch_size divisible by noise_group={self.noise_group}", self.batch_size)
        check_that(0 <= self.min_learning_rate <= self.learning_rate, self,
                   "0 <= min_learning_rate <= learning_rate", self.min_learning_rate)

    def init(self, key, vocab_size: int) -> Word2VecParams:
        """``v ~ U[-r/d, r/d]`` with ``r = init_range``, ``u = 0``."""
        half = self.init_range / self.dim
        outputs = vocab_size - 1 if self.output == "hierarchical-softmax" else vocab_size
        return Word2VecParams(jax.random.uniform(key, (vocab_size, self.dim), jnp.float32, -half, half),
                              jnp.zeros((outputs, self.dim), jnp.float32))

    # -- one step -------------------------------------------------------------------------

    def _input_vector(self, table, batch: _Batch):
        rows = table[batch.inputs]
        if self.model == "skip-gram":
            return rows
        mask = batch.input_mask.astype(rows.dtype)
        # a padding example has no context: its mean is taken over one slot (it carries no weight)
        return jnp.einsum("bwd,bw->bd", rows, mask) / jnp.maximum(mask.sum(-1, keepdims=True), 1.0)

    def _negative_sampling(self, h, output, batch: _Batch):
        """Losses, ``dJ/dh``, and the output rows' ids and gradients (word2vec's closed forms)."""
        positive_rows, noise_rows = output[batch.targets], output[batch.noise]
        positive = jnp.sum(h * positive_rows, -1)
        if self.shared_noise is None:  # (B, K) noise ids: K rows per example
            noise_ids, h_grouped = batch.noise, h[:, None, :]
            noise = jnp.einsum("bd,bkd->bk", h, noise_rows)
        else:  # (G, S) noise ids: group g's examples all use its S rows, one matrix product per group
            groups = batch.noise.shape[0]
            h_grouped = h.reshape(groups, -1, self.dim)
            noise_ids = jnp.repeat(batch.noise, h_grouped.shape[1], axis=0)  # (B, S)
            noise = jnp.einsum("gbd,gsd->gbs", h_grouped, noise_rows).reshape(len(h), -1)
        weights = (noise_ids != batch.targets[:, None]) * (self.negative / (self.shared_noise or self.negative))
        d_positive, d_noise = negative_sampling_grad(positive, noise, weights)
        d_positive, d_noise = d_positive * batch.weight, d_noise * batch.weight[:, None]
        if self.shared_noise is None:
            grad_h, grad_noise = jnp.einsum("bk,bkd->bd", d_noise, noise_rows), d_noise[..., None] * h[:, None, :]
        else:
            d_grouped = d_noise.reshape(h_grouped.shape[:2] + (-1,))
            grad_h = jnp.einsum("gbs,gsd->gbd", d_grouped, noise_rows).reshape(h.shape)
            grad_noise = jnp.einsum("gbs,gbd->gsd", d_grouped, h_grouped)
        ids = jnp.concatenate([batch.targets, batch.noise.reshape(-1)])
        grads = jnp.concatenate([d_positive[:, None] * h, grad_noise.reshape(-1, self.dim)])
        losses = negative_sampling_loss(positive, noise, weights) if self.compute_loss else None
        return losses, d_positive[:, None] * positive_rows + grad_h, ids, grads

    def _hierarchical_softmax(self, h, output, batch: _Batch, tree):
        points, codes, mask = tree.points[batch.targets], tree.codes[batch.targets], tree.mask[batch.targets]
        rows = output[points]  # (B, L, d): the inner nodes on each target's path
        scores = jnp.sum(h[:, None, :] * rows, -1)
        active = mask if self.max_score is None else mask & (jnp.abs(scores) < self.max_score)
        d_scores = hierarchical_softmax_grad(scores, codes, active) * batch.weight[:, None]
        grads = d_scores[..., None] * h[:, None, :]
        losses = hierarchical_softmax_loss(scores, codes, mask) if self.compute_loss else None
        return losses, jnp.sum(d_scores[..., None] * rows, 1), points.reshape(-1), grads.reshape(-1, self.dim)

    def _step(self, params: Word2VecParams, batch: _Batch, tree) -> tuple[Word2VecParams, jax.Array]:
        """One SGD step: ``-lr`` times each touched row's gradient, added back by scatter."""
        lr = batch.learning_rate
        h = self._input_vector(params.input, batch)
        if self.output == "softmax":  # every output row takes part: a dense update
            logits = h @ params.output.T
            d_logits = (jax.nn.softmax(logits) - jax.nn.one_hot(batch.targets, logits.shape[-1])) * batch.weight[:, None]
            losses = softmax_loss(h, params.output, batch.targets) if self.compute_loss else None
            grad_h = d_logits @ params.output
            output = params.output - lr * (d_logits.T @ h)
        else:
            if self.output == "negative-sampling":
                losses, grad_h, ids, grads = self._negative_sampling(h, params.output, batch)
            else:
                losses, grad_h, ids, grads = self._hierarchical_softmax(h, params.output, batch, tree)
            output = params.output.at[ids].add(-lr * grads)
        if self.model == "skip-gram":
            inputs = params.input.at[batch.inputs].add(-lr * grad_h)
        else:  # word2vec's CBOW rule: each context vector moves by the whole gradient of h
            spread = (-lr * grad_h)[:, None, :] * batch.input_mask[..., None].astype(grad_h.dtype)
            inputs = params.input.at[batch.inputs.reshape(-1)].add(spread.reshape(-1, self.dim))
        return Word2VecParams(inputs, output), (jnp.sum(batch.weight * losses) if self.compute_loss else None)

    @property
    def _run_steps(self):
        """The jitted scan over ``steps_per_call`` batches (params donated, updated in place)."""
        def run(params, batches, tree):
            return jax.lax.scan(lambda p, b: self._step(p, b, tree), params, batches)

        return _jitted(self, run)

    # -- an epoch's examples, on the host ------------------------------------------------

    def _examples(self, sentences, keep, rng):
        """The epoch's ``(inputs, input_mask, targets, weight)`` in the order they are trained.

        Skip-gram's input is the *context* word and its target the centre, as in word2vec's
        code and gensim (seed 002 writes ``P(o | c)``; the pairs are the same either way,
        since ``(c, o)`` is a pair whenever ``(o, c)`` is).

        ``order="streams"`` cuts the corpus's examples into ``batch_size`` contiguous slices
        and lets row ``r`` of step ``t`` be example ``t`` of slice ``r``: like word2vec's
        threads, each row reads its own part of the corpus in order, so an example sees the
        vectors its overlapping predecessor just updated, while the examples of one step come
        from far apart. ``"shuffled"`` draws a permutation instead, and ``"corpus"`` keeps
        corpus order: a step is then ``batch_size`` consecutive examples computed from the
        same stale rows, which ruins large batches (skip-gram with negative sampling, 1024 per
        step, WordSim353 0.04 against 0.33 as streams) but not small ones.

        CBOW with hierarchical softmax is the exception, and it is about the order, not the
        batching: one example at a time (no staleness at all), the experiment's corpus in
        corpus order gives WordSim353 0.345 and 0.412 (seeds 0 and 1), but the same examples
        interleaved from 2 or 16 slices give 0.282, 0.338 and 0.308, 0.348, as streams of 2
        or 256 rows do (0.282, 0.339; 0.314, 0.338). gensim reads the corpus in order (its
        threads take consecutive jobs), so its default here is ``"corpus"`` with 64 examples
        per step: 0.336, 0.407, 0.346 for seeds 0-2 (128 per step: 0.333, 0.400, 0.340).
        Skip-gram with hierarchical softmax does not care (0.451, 0.462 in corpus order at
        256 against 0.459 +- 0.012 as streams).
        """
        kept = subsample(sentences, keep, rng) if self.sample > 0 else list(sentences)
        if self.model == "skip-gram":
            centres, contexts = context_pairs(kept, self.window, rng)
            examples = (contexts, np.ones(len(centres), bool), centres, np.ones(len(centres), np.float32))
        else:
            centres, contexts, mask = context_windows(kept, self.window, rng)
            examples = (contexts, mask, centres, np.ones(len(centres), np.float32))
        if self.order == "corpus":
            return examples
        if self.order == "shuffled":
            order = rng.permutation(len(centres))
            return tuple(a[order] for a in examples)
        steps = max(1, -(-len(centres) // self.batch_size))
        pad = steps * self.batch_size - len(centres)  # weight 0 at the end of the last slice
        examples = tuple(np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)]) for a in examples)
        order = np.arange(steps * self.batch_size).reshape(self.batch_size, steps).T.reshape(-1)
        return tuple(a[order] for a in examples)

    def _batches(self, examples, noise_p, rng, progress_at, progress_step):
        """The epoch's examples as stacked, padded batches, ``steps_per_call`` at a time."""
        inputs, input_mask, targets, weight = examples
        per_call = self.batch_size * self.steps_per_call
        calls = max(1, -(-len(targets) // per_call))
        for call in range(calls):
            chunk = slice(call * per_call, (call + 1) * per_call)
            size = len(targets[chunk])
            pad = per_call - size

            def padded(a):
                a = np.concatenate([a[chunk], np.zeros((pad,) + a.shape[1:], a.dtype)])
                return a.reshape((self.steps_per_call, self.batch_size) + a.shape[1:])

            if self.output == "negative-sampling":
                shape = ((self.batch_size // (self.noise_group or self.batch_size), self.shared_noise) if self.shared_noise
                         else (self.batch_size, self.negative))
                noise = rng.choice(len(noise_p), (self.steps_per_call,) + shape, p=noise_p).astype(np.int32)
            else:
                noise = np.zeros((self.steps_per_call, 0), np.int32)
            steps = np.arange(self.steps_per_call)
            done = progress_at + (call * per_call + steps * self.batch_size) * progress_step
            rates = self.learning_rate - (self.learning_rate - self.min_learning_rate) * np.minimum(done, 1.0)
            yield _Batch(padded(inputs), padded(input_mask), padded(targets), noise, padded(weight),
                         rates.astype(np.float32))

    def fit(self, sentences, vocabulary: Vocabulary, *, seed: int = 0, params: Word2VecParams | None = None,
            progress: bool = False) -> tuple[Word2VecParams, list[float]]:
        """Train on ``sentences`` (arrays of ids into ``vocabulary``, rare words already dropped).

        Returns the params and, with ``compute_loss``, each epoch's mean loss per example
        (else ``[]``). ``params`` continues training from them. Same ``seed``, same numbers
        (on one backend).
        """
        where = f"{self!r}.fit"
        check_that(len(vocabulary) >= 2, where, "a vocabulary of at least two words", len(vocabulary))
        check_that(self.output != "softmax" or len(vocabulary) <= 50_000, where,
                   "at most 50,000 words for the full softmax (use negative sampling or hierarchical softmax)",
                   len(vocabulary))
        sentences = [np.asarray(s, np.int32) for s in sentences]
        rng = np.random.default_rng(seed)
        tree = None
        if self.output == "hierarchical-softmax":
            tree = _device_tree(huffman_tree(vocabulary.counts))
        if params is None:
            params = self.init(jax.random.key(seed), len(vocabulary))
        keep = keep_probabilities(vocabulary.counts, self.sample, self.subsampling) if self.sample > 0 else None
        noise_p = noise_distribution(vocabulary.counts, self.noise_exponent)
        def epoch_batches(epoch):
            examples = self._examples(sentences, keep, rng)
            slots = max(len(examples[2]), 1)  # padding included: the learning rate's clock
            chunks = list(self._batches(examples, noise_p, rng, epoch / self.epochs, 1 / (slots * self.epochs)))
            return max(int(examples[3].sum()), 1), chunks

        totals = []
        bar = _progress(progress, self.epochs, repr(self))
        # The host draws epoch e + 1's examples in a second thread while the device trains on
        # epoch e (NumPy and XLA both release the GIL); only that thread touches ``rng``, one
        # epoch after the other, so the numbers do not depend on the timing.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as host:
            upcoming = host.submit(epoch_batches, 0)
            for epoch in range(self.epochs):
                count, chunks = upcoming.result()
                if epoch + 1 < self.epochs:
                    upcoming = host.submit(epoch_batches, epoch + 1)
                total = 0.0
                for batches in chunks:
                    params, step_losses = self._run_steps(params, jax.tree.map(jnp.asarray, batches), tree)
                    if self.compute_loss:
                        total = total + step_losses.sum()
                totals.append((total, count))
                bar(count, float(total) / count if self.compute_loss else None)
        losses = [float(total) / count for total, count in totals] if self.compute_loss else []
        return params, losses


def _device_tree(tree: HuffmanTree):
    return _Tree(jnp.asarray(tree.codes), jnp.asarray(tree.points), jnp.asarray(tree.mask))


class _Tree(NamedTuple):
    codes: jax.Array
    points: jax.Array
    mask: jax.Array


_COMPILED: dict = {}


def _jitted(config: Word2Vec, run):
    """One compiled step loop per configuration (a ``Word2Vec`` is hashable), kept across fits."""
    if config not in _COMPILED:
        _COMPILED[config] = jax.jit(run, donate_argnums=0)
    return _COMPILED[config]


def _progress(enabled: bool, epochs: int, desc: str):
    if not enabled:
        return lambda *_: None
    from tqdm.auto import tqdm

    bar = tqdm(total=epochs, desc=desc, unit="epoch")

    def update(examples, loss):
        bar.set_postfix(examples=f"{examples:,}", **({} if loss is None else {"loss": f"{loss:.4f}"}))
        bar.update(1)
        if bar.n == epochs:
            bar.close()

    return update
