"""A character-level LSTM language model trained on the Python standard library's own source.

The corpus is found on this machine, nothing is downloaded: the top-level ``.py`` files of
``sysconfig.get_paths()["stdlib"]``, sorted by name (the generated, machine-specific
``_sysconfigdata*`` left out), the first ``max_file_chars`` characters of each (so that
every module contributes, not only the first ones in alphabetical order); every tenth
file goes to validation, the rest to training, each side cut at a character budget. The
standard library differs between Python versions, so the JSON records the Python version
and every file used with its character count.
Characters seen fewer than ``MIN_COUNT`` times in the training text share one unknown id.

The model is :func:`jdl.models.CharLM` (embedding, one LSTM layer, a dense layer to the
vocabulary) trained with teacher forcing on random windows of the training text: Adam
with a cosine-decayed rate after a short warm-up, gradients clipped to global norm 1. The
steps run inside a jitted ``lax.scan`` (one compilation, the host visited once per chunk of
steps). The result is the validation **bits per character**, the mean cross-entropy in
nats over the held-out text divided by ``ln 2``, next to the unigram baseline (the entropy
of the training characters, and the unigram model's cross-entropy on the validation text),
and samples drawn at a few temperatures. The same seed gives the same numbers on CPU.

    python experiments/char_lm.py                       # about 4 minutes on 2 CPU cores
    python experiments/char_lm.py --seed 1 --steps 500 --hidden 128 --out /tmp/run
    python experiments/char_lm.py --quick --out /tmp/quick   # seconds: a smoke test

Writes ``OUT/char_lm.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import sysconfig
import time
import tokenize
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np

import jdl
from jdl import io, models, nn, optim

MIN_COUNT = 20  # rarer training characters map to the unknown id
UNKNOWN = "\ufffd"  # how the unknown id prints in samples
VALID_EVERY = 10  # file i goes to validation when i % 10 == 5
PROMPTS = ("import ", "def ")


@dataclasses.dataclass(frozen=True)
class Config:
    steps: int = 2000
    hidden: int = 256
    embed_features: int = 64
    batch_size: int = 32
    seq_len: int = 64  # characters read per window; the loss covers seq_len predictions
    learning_rate: float = 4e-3
    warmup_steps: int = 100
    clip_norm: float = 1.0
    forget_bias: float = 1.0
    train_chars: int = 2_000_000
    valid_chars: int = 200_000
    max_file_chars: int = 20_000  # the first characters of each file
    eval_streams: int = 50  # the validation text is read as this many contiguous streams
    sample_length: int = 300
    temperatures: tuple = (0.5, 1.0)
    evals: int = 10  # chunks of training steps (points of the loss curve)


QUICK = Config(steps=30, hidden=32, embed_features=16, batch_size=8, seq_len=32, learning_rate=1e-2, warmup_steps=5,
               train_chars=60_000, valid_chars=6_000, eval_streams=4, sample_length=40, evals=2)


# ---------------------------------------------------------------------------------------
# The corpus: the standard library's source on this machine


def stdlib_files() -> tuple[str, list[str]]:
    """The stdlib folder and its top-level ``.py`` files, sorted (generated config files left out)."""
    folder = sysconfig.get_paths()["stdlib"]
    names = sorted(name for name in os.listdir(folder)
                   if name.endswith(".py") and not name.startswith("_sysconfigdata")
                   and os.path.isfile(os.path.join(folder, name)))
    return folder, names


def read_source(path: str) -> str:
    with tokenize.open(path) as f:  # honours the file's encoding declaration (PEP 263)
        return f.read()


def load_corpus(train_chars: int, valid_chars: int, max_file_chars: int) -> dict:
    """Train and validation text, split by file, at most ``max_file_chars`` of each, each side cut at its budget."""
    folder, names = stdlib_files()
    parts = {"train": [], "valid": []}
    left = {"train": train_chars, "valid": valid_chars}
    for index, name in enumerate(names):
        if max(left.values()) <= 0:
            break
        split = "valid" if index % VALID_EVERY == VALID_EVERY // 2 else "train"
        if left[split] <= 0:
            continue
        try:
            text = read_source(os.path.join(folder, name))[: min(left[split], max_file_chars)]
        except (SyntaxError, UnicodeDecodeError):  # an undecodable file is skipped, and not listed
            continue
        parts[split].append((name, text))
        left[split] -= len(text)
    corpus = {"stdlib": folder, "python": platform.python_version(), "files_available": len(names)}
    for split, files in parts.items():
        corpus[split] = "".join(text for _, text in files)
        corpus[f"{split}_files"] = {name: len(text) for name, text in files}
    if not corpus["train"] or not corpus["valid"]:
        raise RuntimeError(f"char_lm: found too little Python source under {folder} for a train/validation split")
    return corpus


def make_vocabulary(text: str) -> list[str]:
    """Id 0 is the unknown character; then every training character seen MIN_COUNT times, sorted."""
    counts = Counter(text)
    return [UNKNOWN] + sorted(c for c, n in counts.items() if n >= MIN_COUNT and c != UNKNOWN)


def encode(text: str, vocabulary: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(vocabulary)}
    return np.fromiter((index.get(c, 0) for c in text), np.int32, count=len(text))


def decode(ids, vocabulary: list[str]) -> str:
    return "".join(vocabulary[int(i)] for i in np.asarray(ids))


def unigram_baseline(train_ids: np.ndarray, valid_ids: np.ndarray, vocab_size: int) -> dict:
    """The entropy of the training characters and the unigram model's bits/char on validation.

    ``p(c) = (n_c + 1) / (N + V)`` (add-one, so no validation character has probability 0);
    entropy ``H = -sum_c p(c) log2 p(c)``; cross-entropy ``-(1/M) sum_i log2 p(v_i)``.
    """
    counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 1.0
    p = counts / counts.sum()
    return {"unigram_entropy_bits": float(-(p * np.log2(p)).sum()),
            "unigram_valid_bits_per_char": float(-np.log2(p[valid_ids]).mean())}


# ---------------------------------------------------------------------------------------
# Training and evaluation


def make_optimizer(config: Config) -> optim.GradientTransformation:
    warmup = min(config.warmup_steps, config.steps - 1)
    schedule = optim.warmup_cosine_decay_schedule(0.0, config.learning_rate, warmup, config.steps,
                                                  end_value=config.learning_rate * 0.05)
    return optim.chain(optim.clip_by_global_norm(config.clip_norm), optim.adam(schedule))


def make_trainer(model: models.LanguageModel, optimizer, config: Config):
    """``run(train_state, train_ids) -> (train_state, metrics)``: one chunk of training steps.

    Each step reads ``batch_size`` windows of ``seq_len + 1`` characters at random offsets
    (drawn on the device from the step's key) and takes one Adam step on their
    teacher-forcing loss: a ``jdl.train.sampled_loop``, jitted once.
    """
    window = config.seq_len + 1

    def sample_windows(key, train_ids):
        offsets = jax.random.randint(key, (config.batch_size,), 0, train_ids.shape[0] - window + 1)
        return jax.vmap(lambda start: jax.lax.dynamic_slice(train_ids, (start,), (window,)))(offsets)

    def objective(params, state, batch, key):
        return model.teacher_forcing_loss(params, batch), (state, {})

    step = jdl.train.gradient_step(objective, optimizer)
    return jdl.train.compile_loop(jdl.train.sampled_loop(step, sample_windows, config.steps // config.evals))


def as_streams(ids: np.ndarray, streams: int) -> np.ndarray:
    """``ids`` cut into ``streams`` contiguous rows of equal length (the remainder dropped)."""
    length = len(ids) // streams
    if length < 2:
        raise ValueError(f"char_lm: {len(ids)} characters are too few for {streams} evaluation streams")
    return ids[: streams * length].reshape(streams, length)


def train(config: Config, seed: int, corpus: dict, progress: bool = True) -> dict:
    vocabulary = make_vocabulary(corpus["train"])
    train_ids, valid_ids = encode(corpus["train"], vocabulary), encode(corpus["valid"], vocabulary)
    model = models.CharLM(len(vocabulary), nn.LSTMCell(config.hidden, forget_bias=config.forget_bias),
                          embed_features=config.embed_features)
    optimizer = make_optimizer(config)
    train_key, sample_key = jax.random.split(jax.random.key(seed))
    example = jax.ShapeDtypeStruct((config.batch_size, config.seq_len), jnp.int32)
    train_state = jax.jit(lambda key: jdl.train.init(model, optimizer, key, example))(train_key)
    run = make_trainer(model, optimizer, config)

    start = time.perf_counter()
    fitted = jdl.train.fit(train_state, run, jnp.asarray(train_ids), chunks=config.evals, progress=progress,
                           desc="char_lm")
    train_seconds = time.perf_counter() - start
    losses = fitted.series("train/loss")
    curve = {"step": fitted.series("step").tolist(), "train_loss_nats": losses.tolist(),
             "train_bits_per_char": (losses / math.log(2)).tolist(),
             "seconds": np.cumsum(fitted.series("seconds")).tolist()}
    params = fitted.train_state.params

    start = time.perf_counter()
    evaluate = jax.jit(model.teacher_forcing_loss)
    valid_streams = as_streams(valid_ids, config.eval_streams)
    valid_nats = float(evaluate(params, jnp.asarray(valid_streams)))
    # The same number of training characters, read the same way: how far validation lags behind.
    train_nats = float(evaluate(params, jnp.asarray(as_streams(train_ids[: valid_streams.size], config.eval_streams))))
    eval_seconds = time.perf_counter() - start

    start = time.perf_counter()
    samples = {}
    for p_index, prompt in enumerate(PROMPTS):
        prompt_ids = jnp.asarray(encode(prompt, vocabulary))
        for t_index, temperature in enumerate(config.temperatures):
            key = jax.random.fold_in(sample_key, p_index * len(config.temperatures) + t_index)
            new_ids = model.generate(params, key, prompt_ids, config.sample_length, temperature=temperature)
            samples[f"T={temperature} prompt={prompt!r}"] = prompt + decode(new_ids, vocabulary)
    sample_seconds = time.perf_counter() - start

    return {
        "valid_bits_per_char": valid_nats / math.log(2),
        "valid_loss_nats": valid_nats,
        "train_eval_bits_per_char": train_nats / math.log(2),
        **unigram_baseline(train_ids, valid_ids, len(vocabulary)),
        "uniform_bits_per_char": math.log2(len(vocabulary)),
        "valid_chars_predicted": int(valid_streams.shape[0] * (valid_streams.shape[1] - 1)),
        "vocab_size": len(vocabulary),
        "vocabulary": "".join(vocabulary),
        "unknown_fraction_valid": float(np.mean(valid_ids == 0)),
        "num_params": models.count_params(params),
        "curve": curve,
        "samples": samples,
        "seconds": {"train": train_seconds, "evaluate": eval_seconds, "sample": sample_seconds},
    }


# ---------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help=f"training steps (default {Config.steps}; --quick {QUICK.steps})")
    parser.add_argument("--hidden", type=int,
                        help=f"LSTM hidden size (default {Config.hidden}; --quick {QUICK.hidden})")
    parser.add_argument("--quick", action="store_true", help="a tiny model on a small corpus: a smoke test in seconds")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                        help="output folder (default: experiments/results/)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    overrides = {name: getattr(args, name) for name in ("steps", "hidden") if getattr(args, name) is not None}
    args.config = dataclasses.replace(QUICK if args.quick else Config(), **overrides)
    if args.config.steps < 1 or args.config.hidden < 1:
        parser.error("--steps and --hidden must be positive")
    if args.config.steps % args.config.evals:
        parser.error(f"--steps must be a multiple of {args.config.evals} (the chunks of the loss curve)")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = args.config
    start = time.perf_counter()
    corpus = load_corpus(config.train_chars, config.valid_chars, config.max_file_chars)
    load_seconds = time.perf_counter() - start
    print(f"corpus: Python {corpus['python']} stdlib ({corpus['stdlib']}): {len(corpus['train']):,} training "
          f"characters from {len(corpus['train_files'])} files, {len(corpus['valid']):,} validation characters "
          f"from {len(corpus['valid_files'])} files; backend: {jax.default_backend()}")
    result = train(config, args.seed, corpus, progress=not args.no_progress)
    result["seconds"]["load"] = load_seconds
    result["seconds"]["total"] = time.perf_counter() - start
    result.update({
        "seed": args.seed,
        "config": dataclasses.asdict(config),
        "quick": args.quick,
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "corpus": {key: value for key, value in corpus.items() if key not in ("train", "valid")}
        | {"train_chars": len(corpus["train"]), "valid_chars": len(corpus["valid"])},
    })
    path = os.path.join(args.out, "char_lm.json")
    io.atomic_write_json(path, result)
    print(f"\nvalidation: {result['valid_bits_per_char']:.3f} bits/char over {result['valid_chars_predicted']:,} "
          f"characters (training text read the same way: {result['train_eval_bits_per_char']:.3f}); unigram entropy "
          f"{result['unigram_entropy_bits']:.3f} bits, unigram on validation "
          f"{result['unigram_valid_bits_per_char']:.3f}, uniform {result['uniform_bits_per_char']:.3f}")
    for name, text in result["samples"].items():
        print(f"\n--- sample, {name}\n{text}")
    print(f"\n{result['seconds']['total']:.0f} s in all ({result['seconds']['train']:.0f} s training) on "
          f"{jax.default_backend()}; wrote {path}")
    return result


if __name__ == "__main__":
    main()
