"""Translate human-written dates in eight languages into ISO dates, with two encoder-decoders.

    "samedi 21 novembre 2026" -> "2026-11-21",   "21. November 2026" -> "2026-11-21", ...

The data come from babel's locale data (:mod:`experiments.dates`): dates written in the
``full``, ``long`` and ``medium`` formats of en_US, en_GB, fr_FR, de_DE, es_ES, it_IT,
pt_BR and nl_NL, split by date, so the test dates never occur in training in any form.
Both models read characters and write characters (the ten digits and ``-``):

* ``transformer``: the Transformer encoder-decoder (:func:`jdl.models.Transformer`),
  post-LN, sinusoidal positions, trained with teacher forcing and label smoothing;
* ``gru_attention``: the RNN encoder-decoder of Bahdanau et al. (a bidirectional GRU
  encoder, a GRU decoder with additive attention; :mod:`jdl.models.seq2seq`).

Both train with Adam (warmup then cosine decay) with ``jdl.train`` (jitted ``lax.scan`` chunks) and are
decoded greedily on the held-out dates (and by beam search for the report). Reported per
model: exact match (the whole ISO date right) and corpus BLEU over the target characters
(:func:`jdl.metrics.corpus_bleu`, sacrebleu's definition; a date is scored as the string of
its 10 characters separated by spaces, since one whitespace token per date would leave no
n-grams to match), training time and parameter count.

    python experiments/translate_dates.py --out experiments/results

writes ``OUT/translate_dates.json`` (``{"transformer": {"exact_match": ..., "bleu": ...},
"gru_attention": {...}, ...}``) and ``OUT/translate_dates_attention.png`` (attention of a
few test examples: the Transformer's last cross-attention layer averaged over heads, and
the GRU decoder's additive attention).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import atomic_save_figure
from experiments.dates import make_split
import jdl
from jdl import io, metrics, models, optim
from jdl.text import Vocab

TARGET_LENGTH = 11  # "YYYY-MM-DD" and eos


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a run does; ``--quick`` shrinks it for the tests."""

    train_dates: int = 3000  # each written in 8 locales x 3 formats: 24 training pairs per date
    test_dates: int = 300  # held out: never seen in training, in any form
    batch: int = 128
    transformer_steps: int = 2400
    gru_steps: int = 3000
    chunk: int = 50  # train steps per jitted call: one point of the loss curve
    learning_rate: float = 2e-3
    beam_size: int = 4  # 0: no beam search
    num_heatmaps: int = 4
    width: int = 64  # d_model of the Transformer, hidden size of the GRUs
    layers: int = 2  # Transformer layers per stack


QUICK = Settings(train_dates=60, test_dates=10, batch=32, transformer_steps=20, gru_steps=20, chunk=10,
                 beam_size=0, num_heatmaps=2, width=16, layers=1)


# ----------------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Data:
    source_vocab: Vocab
    target_vocab: Vocab
    train_source: np.ndarray  # [n, source_length] ids
    train_target: np.ndarray  # [n, TARGET_LENGTH] ids, eos then padding
    test_source: np.ndarray
    test_texts: list[str]  # the human-written test dates
    test_targets: list[str]  # their ISO dates


def make_data(settings: Settings, seed: int) -> Data:
    split = make_split(settings.train_dates, settings.test_dates, seed)
    source_vocab = Vocab.from_corpus(split.train_sources, level="char", unk=True)
    target_vocab = Vocab.from_corpus(split.train_targets, level="char")
    source_length = max(len(text) for text in split.train_sources + split.test_sources)
    encode = lambda vocab, texts, length, **kw: vocab.encode(texts, max_length=length, **kw)[0]  # noqa: E731
    return Data(source_vocab, target_vocab,
                encode(source_vocab, split.train_sources, source_length),
                encode(target_vocab, split.train_targets, TARGET_LENGTH, add_eos=True),
                encode(source_vocab, split.test_sources, source_length),
                split.test_sources, split.test_targets)


# ----------------------------------------------------------------------------------- training


def train(model, loss_fn, example, data: Data, steps: int, settings: Settings, seed: int, log_prefix: str):
    """Adam with warmup + cosine decay on random batches; ``loss_fn(params, source, target, key)``.

    ``jdl.train.fit`` runs ``settings.chunk`` steps per call of one jitted ``sampled_loop``
    (the train state donated); each step draws its batch's rows on the device from its key.
    Returns the params, the mean loss of each chunk and the training time.
    """
    schedule = optim.warmup_cosine_decay_schedule(0.0, settings.learning_rate, min(200, steps // 5 + 1), steps,
                                                  end_value=settings.learning_rate / 20)
    optimizer = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(schedule))
    source, target = jnp.asarray(data.train_source), jnp.asarray(data.train_target)

    def objective(params, state, batch, key):
        return loss_fn(params, *batch, key), (state, {})

    def sample_batch(key, rows):
        index = jax.random.randint(key, (settings.batch,), 0, rows[0].shape[0])
        return rows[0][index], rows[1][index]

    if steps % settings.chunk:
        raise ValueError(f"translate_dates: {steps} steps are not a whole number of chunks of {settings.chunk}")
    step = jdl.train.gradient_step(objective, optimizer)
    run = jdl.train.compile_loop(jdl.train.sampled_loop(step, sample_batch, settings.chunk))
    train_state = jax.jit(lambda key: jdl.train.init(model, optimizer, key, example))(jax.random.key(seed))
    start = time.perf_counter()
    result = jdl.train.fit(train_state, run, (source, target), chunks=steps // settings.chunk, desc=log_prefix)
    return result.train_state.params, result.series("train/loss").tolist(), time.perf_counter() - start


EVAL_BATCH = 256  # test sources per decoder call


def evaluate(decode_fn, data: Data, batch: int = EVAL_BATCH) -> dict:
    """Decode the test sources (``decode_fn(source_ids) -> token ids [n, length]``) and score them."""
    outputs = []
    for first in range(0, len(data.test_source), batch):
        outputs.append(np.asarray(decode_fn(jnp.asarray(data.test_source[first:first + batch]))))
    hypotheses = data.target_vocab.decode(np.concatenate(outputs))
    exact = float(np.mean([h == t for h, t in zip(hypotheses, data.test_targets)]))
    spaced = lambda text: " ".join(text)  # noqa: E731
    bleu = metrics.corpus_bleu([spaced(h) for h in hypotheses], [[spaced(t)] for t in data.test_targets])
    mistakes = [{"source": s, "target": t, "output": h}
                for s, t, h in zip(data.test_texts, data.test_targets, hypotheses) if h != t]
    return {"exact_match": exact, "bleu": float(bleu.score), "examples": len(hypotheses), "mistakes": mistakes[:10]}


# ----------------------------------------------------------------------------------- the models


def transformer_config(data: Data, settings: Settings) -> models.TransformerConfig:
    return models.TransformerConfig(
        len(data.source_vocab), len(data.target_vocab), d_model=settings.width, num_heads=4,
        num_encoder_layers=settings.layers, num_decoder_layers=settings.layers, mlp_features=4 * settings.width,
        dropout_rate=0.1, max_length=max(data.train_source.shape[1], 16))


def run_transformer(data: Data, settings: Settings, seed: int) -> tuple[dict, np.ndarray]:
    model = models.Transformer(transformer_config(data, settings))
    example = (jnp.asarray(data.train_source[:2]), jnp.asarray(data.train_target[:2]))

    def loss_fn(p, source, target, key):
        return model.loss(p, source, target, key=key, train=True, label_smoothing=0.1)

    params, curve, seconds = train(model, loss_fn, example, data, settings.transformer_steps, settings, seed,
                                   "transformer")
    greedy = jax.jit(lambda s: model.greedy_decode(params, s, TARGET_LENGTH).tokens)
    beam = jax.jit(lambda s: model.beam_decode(params, s, TARGET_LENGTH, beam_size=settings.beam_size).tokens[:, 0])
    result = {"greedy": evaluate(greedy, data), "beam": evaluate(beam, data) if settings.beam_size else None}
    examples = jnp.asarray(data.test_source[:settings.num_heatmaps])
    decoded = _first_decoded(greedy, data, settings.num_heatmaps)
    weights = jax.jit(model.cross_attention)(params, examples, model.shift_right(decoded))[-1].mean(axis=1)
    return _summary(result, curve, seconds, models.count_params(params)), np.asarray(weights)


def run_gru_attention(data: Data, settings: Settings, seed: int) -> tuple[dict, np.ndarray]:
    model = models.AttentionSeq2Seq(len(data.source_vocab), len(data.target_vocab), settings.width,
                                    embed_features=settings.width // 2, bos_id=data.target_vocab.bos_id, eos_id=data.target_vocab.eos_id)
    lengths_of = lambda ids: jnp.sum(ids != 0, axis=1).astype(jnp.int32)  # noqa: E731

    def loss_fn(p, source, target, key):
        del key
        return model.loss(p, source, lengths_of(source), target, lengths_of(target))

    params, curve, seconds = train(model, loss_fn, jnp.asarray(data.train_source[:2]), data, settings.gru_steps,
                                   settings, seed, "gru_attention")
    greedy = jax.jit(lambda s: model.greedy_decode(params, s, lengths_of(s), TARGET_LENGTH).tokens)
    beam = jax.jit(lambda s: model.beam_decode(params, s, lengths_of(s), TARGET_LENGTH,
                                               beam_size=settings.beam_size).tokens[:, 0])
    result = {"greedy": evaluate(greedy, data), "beam": evaluate(beam, data) if settings.beam_size else None}
    examples = jnp.asarray(data.test_source[:settings.num_heatmaps])
    decoded = _first_decoded(greedy, data, settings.num_heatmaps)
    _, weights = jax.jit(lambda s, t: model.logits(params, s, lengths_of(s), t))(examples, decoded)
    return _summary(result, curve, seconds, models.count_params(params)), np.asarray(weights)


def _first_decoded(greedy, data: Data, count: int) -> jax.Array:
    """The greedy outputs of the first ``count`` test sources, decoded as :func:`evaluate`'s first
    batch (the same shape: no new compilation of the decoder)."""
    return greedy(jnp.asarray(data.test_source[:EVAL_BATCH]))[:count]


def _summary(result: dict, curve: list[float], seconds: float, num_params: int) -> dict:
    beam = result["beam"] or {}
    return {"exact_match": result["greedy"]["exact_match"], "bleu": result["greedy"]["bleu"],
            "beam_exact_match": beam.get("exact_match"), "beam_bleu": beam.get("bleu"),
            "train_seconds": seconds, "num_params": num_params, "final_train_loss": curve[-1],
            "loss_curve": curve, "greedy": result["greedy"], "beam": result["beam"]}


# ----------------------------------------------------------------------------------- report


def plot_attention(path: str, data: Data, weights: dict, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(weights)
    count = next(iter(weights.values())).shape[0]
    figure, axes = plt.subplots(len(names), count, figsize=(4.2 * count, 2.6 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        for column in range(count):
            text = data.test_texts[column]
            target = data.test_targets[column] + "$"
            grid = weights[name][column][:len(target), :len(text)]
            axis = axes[row][column]
            axis.imshow(grid, cmap="viridis", aspect="auto", vmin=0.0)
            axis.set_xticks(range(len(text)), list(text), fontsize=6)
            axis.set_yticks(range(len(target)), list(target), fontsize=6)
            if column == 0:
                axis.set_ylabel(f"{name}\nexact match {100 * results[name]['exact_match']:.1f}%", fontsize=8)
    figure.suptitle("Attention over the source characters (rows: output characters, $ = end)", fontsize=9)
    figure.tight_layout()
    atomic_save_figure(path, figure)
    plt.close(figure)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", choices=("transformer", "gru_attention"),
                        default=["transformer", "gru_attention"])
    parser.add_argument("--quick", action="store_true", help="a tiny run (for the tests)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    settings = QUICK if args.quick else Settings()
    data = make_data(settings, args.seed)
    print(f"{len(data.train_source)} training pairs ({settings.train_dates} dates), {len(data.test_source)} test "
          f"pairs ({settings.test_dates} held-out dates); source vocabulary {len(data.source_vocab)}", flush=True)
    results, weights = {}, {}
    runners = {"transformer": run_transformer, "gru_attention": run_gru_attention}
    for name in args.models:
        results[name], weights[name] = runners[name](data, settings, args.seed)
        beam = results[name]["beam_exact_match"]
        print(f"{name}: exact match {100 * results[name]['exact_match']:.2f}%, BLEU {results[name]['bleu']:.2f}"
              + ("" if beam is None else f" (beam search: {100 * beam:.2f}%)")
              + f", {results[name]['train_seconds']:.0f} s, {results[name]['num_params']} params", flush=True)
    results["settings"] = {**dataclasses.asdict(settings), "seed": args.seed, "backend": jax.default_backend(),
                           "quick": args.quick}
    os.makedirs(args.out, exist_ok=True)
    io.atomic_write_json(os.path.join(args.out, "translate_dates.json"), results)
    plot_attention(os.path.join(args.out, "translate_dates_attention.png"), data, weights, results)
    print(f"wrote {args.out}/translate_dates.json and translate_dates_attention.png")
    return results


if __name__ == "__main__":
    main()
