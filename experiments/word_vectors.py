"""Word vectors on one corpus: PPMI, PPMI + SVD and word2vec's four variants, each beside gensim.

Seeds 000 and 002 end their language chapters with word representations. This experiment
builds each on the same corpus and judges them the same way:

* **PPMI**: the word-context co-occurrence counts within ``--window`` words, re-weighted
  by positive PMI with the context distribution smoothed by ``alpha = 0.75``
  (:func:`jdl.embeddings.ppmi`); a word's vector is its sparse row (one dimension per word).
* **PPMI + SVD**: the rank-``--dim`` truncated SVD of that matrix, ``U_k S_k^0.5`` (LSA with
  Levy, Goldberg and Dagan's eigenvalue weighting).
* **word2vec** (:class:`jdl.embeddings.Word2Vec`): skip-gram and CBOW, each with negative
  sampling and with hierarchical softmax, and beside each **gensim's** ``Word2Vec`` with the
  same hyperparameters (dimension, window, negatives, min count, subsampling threshold,
  learning rate, epochs; 2 worker threads, the machine's two cores).

Corpus: the real text every gensim install ships in ``gensim/test/test_data``: the sample
of English Wikipedia (106 articles, extracted from their markup by the functions of
gensim's ``WikiCorpus``, about 453,000 tokens) and the Lee background corpus (300 news articles,
about 58,000 tokens, by :func:`jdl.embeddings.tokenize`), articles cut into pieces of at
most 10,000 tokens (gensim's limit per sentence): 512,520 tokens, 9,762 words seen at least
5 times. Evaluation: Spearman's rho against WordSim353 and SimLex-999 and the accuracy
on the Google analogies (3CosAdd, among all the vocabulary's words), each over the pairs
or questions whose words are all in the vocabulary, with that coverage. Training time
excludes compilation (each jdl configuration compiles once, on a few sentences, first)
and gensim's vocabulary building; words per second are the corpus's tokens times the
epochs over the training time, for both.

What it shows (3 seeds, dim 100, window 5, 5 negatives, min count 5, sample 1e-3, 5 epochs,
on 2 CPU cores; the table is in the README): see ``docs/results/word_vectors.json``.

    python experiments/word_vectors.py --out docs/results
    python experiments/word_vectors.py --max-tokens 50000 --num-seeds 1 --epochs 1 --out /tmp/wv

Writes ``OUT/word_vectors.json`` and ``OUT/word_vectors.png``.
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from collections.abc import Iterator

import jax
import numpy as np

from experiments.common import atomic_save_figure, require_positive, write_results
from jdl import embeddings

METHODS = ("ppmi", "ppmi_svd", "sgns", "sg_hs", "cbow_ns", "cbow_hs")
WORD2VEC = {"sgns": ("skip-gram", "negative-sampling"), "sg_hs": ("skip-gram", "hierarchical-softmax"),
            "cbow_ns": ("cbow", "negative-sampling"), "cbow_hs": ("cbow", "hierarchical-softmax")}
NEIGHBOURS = ("king", "war", "music", "university", "france", "computer")
PROJECTED = ("france", "paris", "germany", "berlin", "italy", "rome", "spain", "madrid",
             "january", "march", "june", "october", "one", "two", "three", "four")
MAX_SENTENCE = 10_000  # gensim trains on at most this many tokens of a sentence


# ---------------------------------------------------------------------------------------
# Data


def gensim_data(name: str) -> str:
    from gensim.test.utils import datapath

    return datapath(name)


def wikipedia_articles() -> Iterator[list[str]]:
    """gensim's Wikipedia sample as token lists, one article at a time: its own page extraction,
    markup filter and tokeniser, and the rules of its ``WikiCorpus`` (articles of at least 50
    tokens, no ``Wikipedia:``/``Category:``/``File:`` pages), run in this process: ``WikiCorpus``
    itself forks a worker pool, which JAX's threads make unsafe."""
    import bz2

    from gensim.corpora import wikicorpus

    path = gensim_data("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    with bz2.BZ2File(path) as dump:
        for title, text, pageid in wikicorpus.extract_pages(dump, ("0",)):
            tokens = wikicorpus.process_article((text, title, pageid))[0]
            if len(tokens) >= wikicorpus.ARTICLE_MIN_WORDS and not any(
                    title.startswith(namespace + ":") for namespace in wikicorpus.IGNORED_NAMESPACES):
                yield tokens


def lee_documents() -> Iterator[list[str]]:
    """gensim's Lee background corpus, one token list per line."""
    with open(gensim_data("lee_background.cor"), encoding="utf8") as f:
        yield from (embeddings.tokenize(line) for line in f)


def load_corpus(max_tokens: int | None) -> list[list[str]]:
    """The Wikipedia sample, then the Lee corpus, as token lists of at most 10,000 tokens each,
    the first ``max_tokens`` tokens of them. The articles are parsed only as far as needed
    (gensim's markup filter is most of the time a small budget takes: 8 s for the whole
    sample, against a fraction of a second for the five pieces of 30,000 tokens)."""
    documents = itertools.chain(wikipedia_articles(), lee_documents())
    pieces = (d[i:i + MAX_SENTENCE] for d in documents for i in range(0, len(d), MAX_SENTENCE))
    if max_tokens is None:
        return list(pieces)
    kept, total = [], 0
    for piece in pieces:
        kept.append(piece[:max_tokens - total])
        total += len(kept[-1])
        if total >= max_tokens:
            break
    return kept


def evaluation_sets() -> dict:
    return {"wordsim353": embeddings.read_word_pairs(gensim_data("wordsim353.tsv")),
            "simlex999": embeddings.read_word_pairs(gensim_data("simlex999.txt")),
            "analogies": [q for qs in embeddings.read_analogies(gensim_data("questions-words.txt")).values()
                          for q in qs]}


def evaluate(vectors: embeddings.WordVectors, sets: dict) -> dict:
    scores = {}
    for name in ("wordsim353", "simlex999"):
        result = vectors.evaluate_word_pairs(sets[name])
        scores[name] = {"spearman": result.spearman, "coverage": result.coverage}
    analogies = vectors.evaluate_analogies(sets["analogies"])
    scores["analogies"] = {"accuracy": analogies.accuracy, "coverage": analogies.coverage}
    return scores


# ---------------------------------------------------------------------------------------
# The methods


def count_based(ids, vocab, args, sets) -> dict:
    start = time.perf_counter()
    matrix = embeddings.ppmi(embeddings.cooccurrence_matrix(ids, len(vocab), args.window), alpha=0.75)
    ppmi_seconds = time.perf_counter() - start
    svd = embeddings.lsa(matrix, rank=min(args.dim, len(vocab) - 1), power=0.5)
    svd_seconds = time.perf_counter() - start
    rows = {"ppmi": (embeddings.WordVectors(vocab.words, matrix.astype(np.float32).toarray()), ppmi_seconds),
            "ppmi_svd": (embeddings.WordVectors(vocab.words, svd), svd_seconds)}
    results = {}
    for name, (vectors, seconds) in rows.items():
        results[name] = {"jdl": {"runs": [{**evaluate(vectors, sets), "seconds": seconds}]}}
        if name == "ppmi_svd":
            results[name]["neighbours"] = neighbours(vectors)
    return results


def jdl_word2vec(name, ids, vocab, args, seed):
    model, output = WORD2VEC[name]
    config = embeddings.Word2Vec(dim=args.dim, window=args.window, model=model, output=output,
                                 negative=args.negative, sample=args.sample, learning_rate=args.learning_rate,
                                 epochs=args.epochs)
    if seed == args.seed:  # compile on a few sentences first: the timing below is training alone
        config.fit(ids[:2], vocab, seed=seed)
    start = time.perf_counter()
    params, _ = config.fit(ids, vocab, seed=seed)
    vectors = np.asarray(jax.block_until_ready(params.input))
    return embeddings.WordVectors(vocab.words, vectors), time.perf_counter() - start


def gensim_word2vec(name, sentences, args, seed):
    from gensim.models import Word2Vec

    model, output = WORD2VEC[name]
    hs = output == "hierarchical-softmax"
    twin = Word2Vec(vector_size=args.dim, window=args.window, min_count=args.min_count, sg=int(model == "skip-gram"),
                    hs=int(hs), negative=0 if hs else args.negative, sample=args.sample, alpha=args.learning_rate,
                    min_alpha=1e-4, epochs=args.epochs, workers=2, seed=seed)
    twin.build_vocab(sentences)
    start = time.perf_counter()
    twin.train(sentences, total_examples=twin.corpus_count, epochs=args.epochs)
    seconds = time.perf_counter() - start
    words = tuple(twin.wv.index_to_key)
    return embeddings.WordVectors(words, twin.wv.vectors), seconds


def neighbours(vectors: embeddings.WordVectors, words=NEIGHBOURS, n: int = 5) -> dict:
    return {w: [v for v, _ in vectors.most_similar(w, n)] for w in words if w in vectors.index}


def word2vec_rows(sentences, ids, vocab, args, sets, seeds) -> tuple[dict, dict]:
    results, projected = {}, {}
    for name in (m for m in args.methods if m in WORD2VEC):
        results[name] = {}
        for library, train in (("jdl", lambda s: jdl_word2vec(name, ids, vocab, args, s)),
                               ("gensim", lambda s: gensim_word2vec(name, sentences, args, s))):
            runs = []
            for seed in seeds:
                vectors, seconds = train(seed)
                words_per_second = args.epochs * sum(map(len, sentences)) / seconds
                runs.append({**evaluate(vectors, sets), "seconds": seconds, "words_per_second": words_per_second})
                print(f"{name:8s} {library:6s} seed {seed}: WordSim353 {runs[-1]['wordsim353']['spearman']:.3f}, "
                      f"SimLex {runs[-1]['simlex999']['spearman']:.3f}, "
                      f"analogies {runs[-1]['analogies']['accuracy']:.3f}, {seconds:.1f} s, "
                      f"{words_per_second:,.0f} words/s", flush=True)
                if seed == seeds[0]:
                    results[name].setdefault("neighbours", {})[library] = neighbours(vectors)
                    if library == "jdl":
                        projected[name] = vectors
            results[name][library] = {"runs": runs}
    return results, projected


def summarise(results: dict) -> None:
    """Mean and spread over the seeds of every figure, beside the runs."""
    for row in results.values():
        for library in ("jdl", "gensim"):
            if library not in row:
                continue
            runs = row[library]["runs"]
            summary = {}
            for key in ("wordsim353", "simlex999", "analogies"):
                field = "accuracy" if key == "analogies" else "spearman"
                values = [r[key][field] for r in runs]
                summary[key] = {"mean": statistics.fmean(values),
                                "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
                                "coverage": runs[0][key]["coverage"]}
            summary["seconds"] = statistics.median(r["seconds"] for r in runs)
            if "words_per_second" in runs[0]:
                summary["words_per_second"] = statistics.median(r["words_per_second"] for r in runs)
            row[library]["summary"] = summary


def table(results: dict) -> str:
    """The markdown table of the README."""
    lines = ["| method | library | WordSim353 rho | SimLex-999 rho | analogies (3CosAdd) | train s | words/s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    names = {"ppmi": "PPMI", "ppmi_svd": "PPMI + SVD", "sgns": "skip-gram + negative sampling",
             "sg_hs": "skip-gram + hierarchical softmax", "cbow_ns": "CBOW + negative sampling",
             "cbow_hs": "CBOW + hierarchical softmax"}
    for key, row in results.items():
        for library in ("jdl", "gensim"):
            if library not in row:
                continue
            s = row[library]["summary"]
            speed = f"{s['words_per_second']:,.0f}" if "words_per_second" in s else ""
            lines.append(f"| {names[key]} | {library} | {s['wordsim353']['mean']:.3f} +- {s['wordsim353']['std']:.3f} "
                         f"| {s['simlex999']['mean']:.3f} +- {s['simlex999']['std']:.3f} "
                         f"| {100 * s['analogies']['mean']:.1f}% +- {100 * s['analogies']['std']:.1f} "
                         f"| {s['seconds']:.1f} | {speed} |")
    return "\n".join(lines)


def plot(results: dict, projected: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bars, scatter) = plt.subplots(1, 2, figsize=(13, 5))
    rows = list(results)
    for offset, library in ((-0.2, "jdl"), (0.2, "gensim")):
        present = [i for i, r in enumerate(rows) if library in results[r]]
        means = [results[rows[i]][library]["summary"]["wordsim353"]["mean"] for i in present]
        spreads = [results[rows[i]][library]["summary"]["wordsim353"]["std"] for i in present]
        bars.bar(np.array(present) + offset, means, 0.4, yerr=spreads, label=library, capsize=3)
    bars.set_xticks(range(len(rows)), [r.replace("_", "\n") for r in rows])
    bars.set_ylabel("WordSim353 Spearman rho")
    bars.set_title("Word similarity (mean +- std over seeds)")
    bars.legend()
    bars.grid(axis="y", alpha=0.3)
    name = next((n for n in ("sg_hs", "sgns", "cbow_hs", "cbow_ns") if n in projected), None)
    if name is not None:
        vectors = projected[name]
        words = [w for w in PROJECTED if w in vectors.index]
        if len(words) >= 3:
            points = np.array([vectors[w] for w in words], np.float64)
            points = points - points.mean(0)
            _, _, vt = np.linalg.svd(points, full_matrices=False)
            xy = points @ vt[:2].T
            scatter.scatter(xy[:, 0], xy[:, 1], s=12)
            for (x, y), word in zip(xy, words):
                scatter.annotate(word, (x, y), fontsize=9)
            scatter.set_title(f"jdl {name.replace('_', ' ')}: chosen words, first two principal components")
    scatter.grid(alpha=0.3)
    figure.tight_layout()
    atomic_save_figure(path, figure)
    plt.close(figure)


# ---------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--num-seeds", type=int, default=3, help="runs per word2vec row (and its gensim twin)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--negative", type=int, default=5)
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--sample", type=float, default=1e-3, help="subsampling threshold t (0: off)")
    parser.add_argument("--learning-rate", type=float, default=0.025)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=None, help="use only the corpus's first N tokens")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    require_positive(parser, args, ("num_seeds", "dim", "window", "negative", "min_count", "epochs"))
    if args.max_tokens is not None and args.max_tokens < 1000:
        parser.error(f"--max-tokens must be at least 1000, got {args.max_tokens}")
    if not args.learning_rate > 0:
        parser.error(f"--learning-rate must be positive, got {args.learning_rate}")
    if not args.sample >= 0:
        parser.error(f"--sample must be >= 0, got {args.sample}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    sentences = load_corpus(args.max_tokens)
    vocab = embeddings.Vocabulary.from_sentences(sentences, min_count=args.min_count)
    ids = [vocab.encode(s, drop_unknown=True) for s in sentences]
    sets = evaluation_sets()
    print(f"corpus: {sum(map(len, sentences)):,} tokens in {len(sentences)} pieces, "
          f"{len(vocab):,} words seen at least {args.min_count} times", flush=True)
    results = {}
    if "ppmi" in args.methods or "ppmi_svd" in args.methods:
        counted = count_based(ids, vocab, args, sets)
        results.update({k: v for k, v in counted.items() if k in args.methods})
    trained, projected = word2vec_rows(sentences, ids, vocab, args, sets, seeds)
    results.update(trained)
    summarise(results)
    print(table(results))
    output = {"corpus": {"tokens": sum(map(len, sentences)), "pieces": len(sentences), "vocabulary": len(vocab),
                         "source": "gensim test data: enwiki sample (WikiCorpus) + lee_background.cor"},
              "hyperparameters": {k: getattr(args, k) for k in ("dim", "window", "negative", "min_count", "sample",
                                                                 "learning_rate", "epochs")},
              "seeds": seeds, "methods": results, "table": table(results), "backend": jax.default_backend(),
              "seconds": round(time.perf_counter() - start, 1)}
    write_results(args.out, "word_vectors", output, lambda r, path: plot(results, projected, path))
    return output


if __name__ == "__main__":
    main()
