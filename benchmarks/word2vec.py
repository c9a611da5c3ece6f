"""word2vec training throughput: jdl's against gensim's, on the word-vectors experiment's corpus.

    python -m benchmarks.word2vec --quick                    # ~1 minute on 2 CPU cores
    python -m benchmarks.word2vec --json benchmarks/results/cpu_word2vec.json \\
        --markdown benchmarks/results/cpu_word2vec.md

The corpus, vocabulary and hyperparameters are ``experiments/word_vectors.py``'s (its
``load_corpus``; dim 100, window 5, 5 negatives, min count 5, sample 1e-3, learning rate
0.025, 5 epochs): 512,520 tokens of gensim's Wikipedia sample and Lee corpus. One call is
a whole training run: jdl's ``Word2Vec.fit`` on the encoded corpus (the vocabulary and
ids built once, outside; compiled by the first, untimed call), and gensim's
``Word2Vec.train`` on the token lists (its vocabulary built once, outside), with 2 worker
threads (this machine's two cores) and with 1. The calls alternate round by round
(:func:`benchmarks.harness.time_alternating`); each figure is the median call.

Words per second are the corpus's tokens times the epochs over that median, as gensim
counts its ``corpus_total_words``; the ratio is jdl's words per second over gensim's
(above 1: jdl is faster). The default case is skip-gram with negative sampling (the
issue's target: at least gensim's speed with 2 workers); ``--all`` adds skip-gram with
hierarchical softmax and both CBOW variants.
"""
from __future__ import annotations

import argparse
import sys

from benchmarks.harness import time_alternating
from benchmarks.report import cell, markdown_table, provenance
from experiments.word_vectors import WORD2VEC, load_corpus
from jdl import embeddings
from jdl.io import atomic_write_json, atomic_write_text

HYPERPARAMETERS = {"dim": 100, "window": 5, "negative": 5, "min_count": 5, "sample": 1e-3, "learning_rate": 0.025}


def calls_for(name: str, sentences, ids, vocab, epochs: int) -> dict:
    from gensim.models import Word2Vec as GensimWord2Vec

    model, output = WORD2VEC[name]
    h = HYPERPARAMETERS
    ours = embeddings.Word2Vec(dim=h["dim"], window=h["window"], model=model, output=output, negative=h["negative"],
                               sample=h["sample"], learning_rate=h["learning_rate"], epochs=epochs)
    calls = {"jdl": lambda: ours.fit(ids, vocab, seed=0)[0]}
    hs = output == "hierarchical-softmax"
    for workers in (2, 1):
        twin = GensimWord2Vec(vector_size=h["dim"], window=h["window"], min_count=h["min_count"],
                              sg=int(model == "skip-gram"), hs=int(hs), negative=0 if hs else h["negative"],
                              sample=h["sample"], alpha=h["learning_rate"], epochs=epochs, workers=workers, seed=0)
        twin.build_vocab(sentences)
        calls[f"gensim_{workers}"] = (lambda twin: lambda: twin.train(
            sentences, total_examples=twin.corpus_count, epochs=epochs))(twin)
    return calls


def run(names, rounds: int, epochs: int, max_tokens: int | None) -> list[dict]:
    sentences = load_corpus(max_tokens)
    vocab = embeddings.Vocabulary.from_sentences(sentences, min_count=HYPERPARAMETERS["min_count"])
    ids = [vocab.encode(s, drop_unknown=True) for s in sentences]
    tokens = sum(map(len, sentences))
    records = []
    for name in names:
        times, _ = time_alternating(calls_for(name, sentences, ids, vocab, epochs), rounds=rounds, warmup=0)
        speed = {side: tokens * epochs / t.median_s for side, t in times.items()}
        record = {"case": name, "tokens": tokens, "epochs": epochs, "vocabulary": len(vocab), "rounds": rounds,
                  **{f"{side}_s": t.median_s for side, t in times.items()},
                  **{f"{side}_words_per_s": s for side, s in speed.items()},
                  "jdl_compile_s": times["jdl"].compile_s,
                  "ratio_vs_gensim_2": speed["jdl"] / speed["gensim_2"],
                  "ratio_vs_gensim_1": speed["jdl"] / speed["gensim_1"], **provenance()}
        print(f"{name}: jdl {speed['jdl']:,.0f} words/s, gensim 2 workers {speed['gensim_2']:,.0f}, "
              f"1 worker {speed['gensim_1']:,.0f}: ratio {record['ratio_vs_gensim_2']:.2f} "
              f"({record['backend']})", flush=True)
        records.append(record)
    return records


COLUMNS = {"case": cell("case"), "backend": cell("backend"),
           "jdl words/s": cell("jdl_words_per_s", ",.0f"), "gensim (2 workers) words/s": cell("gensim_2_words_per_s", ",.0f"),
           "gensim (1 worker) words/s": cell("gensim_1_words_per_s", ",.0f"),
           "jdl / gensim 2": cell("ratio_vs_gensim_2", ".2f"), "jdl / gensim 1": cell("ratio_vs_gensim_1", ".2f")}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch on the first 100,000 tokens, 2 rounds")
    parser.add_argument("--all", action="store_true", help="all four word2vec variants, not only skip-gram + NS")
    parser.add_argument("--rounds", type=int, default=None, help="timed calls per side (default 3, quick 2)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    names = list(WORD2VEC) if args.all else ["sgns"]
    rounds = args.rounds or (2 if args.quick else 3)
    records = run(names, rounds, epochs=1 if args.quick else 5, max_tokens=100_000 if args.quick else None)
    table = markdown_table(COLUMNS, records, text_columns=2)
    print(table)
    if args.json:
        atomic_write_json(args.json, records)
    if args.markdown:
        r = records[0]
        atomic_write_text(args.markdown, f"# word2vec throughput, jdl against gensim\n\nDevice: {r['device']} "
                          f"({r['backend']}), jax {r['jax_version']}, commit {r['git_commit']}, {r['timestamp']}.\n"
                          f"Command: `python -m benchmarks.word2vec {' '.join(sys.argv[1:] if argv is None else argv)}`"
                          f"\n\n{table}\n")
    return records


if __name__ == "__main__":
    main()
