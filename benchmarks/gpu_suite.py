"""The GPU suite: what accelerator users measure, each figure recorded with the device's name.

    python -m benchmarks.run --suite gpu --json benchmarks/results/gpu_h200.json
    python -m benchmarks.run --suite gpu --toy          # the same code at toy sizes (CPU: the test)

* ``gpt_124m`` / ``gpt_350m``: the decoder-only LM's train step (``models.GPT``, GPT-2 small
  and medium, ``scan_layers``; AdamW; bfloat16 compute over float32 params and optimizer
  state with ``nn.MixedPrecision``), batch x 1024 tokens: tokens per second and model FLOPs
  utilisation, ``(6 N + 12 L d T) * tokens/s / peak`` (PaLM's appendix B estimate, as
  nanoGPT's ``estimate_mfu``: ``N`` the params without the position table, ``L`` blocks,
  ``d`` width, ``T`` context), against the device's dense bfloat16 peak.
* ``resnet50_train_step``: ResNet-50 (torchvision's layout, batch norm) on 224 x 224 images,
  against its flax + optax twin with copied weights (the train-step harness of
  ``benchmarks.run``: same batches, losses checked, median of timed rounds): images per second
  and the ratio.
* ``lstm``: one LSTM layer's forward + backward against flax ``nn.RNN(OptimizedLSTMCell)``
  and, on CUDA, ``jax.experimental.rnn.lstm`` (cuDNN's fused kernel).
* ``adam_update``: ``jdl.optim.adam``'s update against optax's; the bytes an ideal update moves
  per second as a share of the device's HBM bandwidth.
* ``repeat_compile``: compile seconds of a 24-block encoder's train step, unrolled against
  ``nn.Repeat`` (``benchmarks.scaling``'s case, on this device's compiler).

Peaks (dense, no sparsity; SXM parts, and the H100's PCIe card) come from :data:`PEAKS`, matched on the device kind; on
an unknown device (a CPU) MFU and bandwidth shares are ``None``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jdl
from benchmarks import scaling
from benchmarks.cases import Budget, Config
from benchmarks.cnn_cases import CNNCase, FlaxResNet
from benchmarks.harness import time_alternating
from benchmarks.optim_cases import OPTIMIZER_CASES, param_shapes
from benchmarks.recurrent_cases import BATCH as LSTM_BATCH, FEATURES as LSTM_FEATURES, HIDDEN as LSTM_HIDDEN
from benchmarks.recurrent_cases import RecurrentCase
from benchmarks.report import device_description, provenance
from jdl import losses, models, nn

# Dense peak throughput (TFLOP/s) and memory bandwidth (TB/s) from the vendors' data sheets.
PEAKS = {  # the first name found in the device kind wins: the PCIe part before the SXM one
    "H100 PCIE": {"bfloat16_tflops": 756.0, "float32_tflops": 51.2, "hbm_tb_s": 2.0},
    "H200": {"bfloat16_tflops": 989.4, "float32_tflops": 66.9, "hbm_tb_s": 4.8},
    "H100": {"bfloat16_tflops": 989.4, "float32_tflops": 66.9, "hbm_tb_s": 3.35},
    "A100": {"bfloat16_tflops": 312.0, "float32_tflops": 19.5, "hbm_tb_s": 2.039},
}


def device_peaks(kind: str | None = None) -> dict | None:
    """The :data:`PEAKS` row whose name is in the device kind (``"NVIDIA H100 80GB HBM3"``), or ``None``."""
    kind = jax.devices()[0].device_kind if kind is None else kind
    return next((dict(peaks, name=name) for name, peaks in PEAKS.items() if name in kind.upper()), None)


# ----------------------------------------------------------------------------- the language model

@dataclasses.dataclass(frozen=True)
class LMCase:
    name: str
    config: models.GPTConfig
    batch: int
    length: int
    steps_per_call: int = 5
    rounds: int = 5

    def flops_per_token(self, num_params: int) -> float:
        c = self.config
        non_positional = num_params - c.max_length * c.d_model
        return 6.0 * non_positional + 12.0 * c.num_layers * c.d_model * self.length


def lm_train_step(case: LMCase) -> dict:
    """Tokens per second and MFU of ``case``'s bfloat16 train step (median of timed calls)."""
    model = nn.MixedPrecision(models.GPT(case.config),
                              nn.Policy.from_string("params=float32,compute=bfloat16,output=float32"))
    optimizer = jdl.optim.adamw(3e-4, weight_decay=0.1)

    def objective(params, state, ids, key):
        logits, state = model.apply(params, state, ids)
        loss = jnp.mean(losses.softmax_cross_entropy_with_integer_labels(logits[:, :-1], ids[:, 1:]))
        return loss, (state, {})

    run = jdl.train.compile_loop(jdl.train.batch_loop(jdl.train.gradient_step(objective, optimizer)))
    ids = jax.random.randint(jax.random.key(1), (case.steps_per_call, case.batch, case.length), 0,
                             case.config.vocab_size, jnp.int32)
    state = jax.jit(jdl.train.init, static_argnums=(0, 1))(model, optimizer, jax.random.key(0), ids[0])
    num_params = jdl.summaries.count_params(state.params)
    carried = {"state": state}

    def call():
        carried["state"], carried["metrics"] = run(carried["state"], ids)
        return carried["state"]

    times, _ = time_alternating({"jdl": call}, rounds=case.rounds)
    step_s = times["jdl"].median_s / case.steps_per_call
    loss = np.asarray(carried["metrics"]["loss"], np.float32)
    if not np.all(np.isfinite(loss)):
        raise FloatingPointError(f"{case.name}: non-finite loss {loss}")
    tokens_per_s = case.batch * case.length / step_s
    flops_per_token = case.flops_per_token(num_params)
    peaks = device_peaks()
    return {"case": case.name, "kind": "lm_train_step", "dtype": "bfloat16", "num_params": num_params,
            "batch": case.batch, "length": case.length, "step_s": step_s, "tokens_per_s": tokens_per_s,
            "flops_per_token": flops_per_token, "model_tflops_per_s": flops_per_token * tokens_per_s / 1e12,
            "mfu": None if peaks is None else flops_per_token * tokens_per_s / (peaks["bfloat16_tflops"] * 1e12),
            "final_loss": float(loss.reshape(-1)[-1]), "compile_and_first_call_s": times["jdl"].compile_s,
            "rounds": case.rounds, "steps_per_call": case.steps_per_call}


# ----------------------------------------------------------------------------- cuDNN's LSTM

def cudnn_lstm_seconds(time_steps: int, rounds: int) -> float | None:
    """Forward + backward of ``jax.experimental.rnn.lstm`` at the LSTM case's sizes; ``None`` off CUDA."""
    if jax.default_backend() != "gpu" or "cuda" not in jax.devices()[0].client.platform_version.lower():
        return None
    from jax.experimental import rnn

    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (LSTM_BATCH, time_steps, LSTM_FEATURES))
    cotangent = jax.random.normal(keys[1], (LSTM_BATCH, time_steps, LSTM_HIDDEN))
    size = rnn.get_num_params_in_lstm(LSTM_FEATURES, LSTM_HIDDEN, 1, False)
    weights = jax.random.normal(keys[2], (size,)) * 0.05
    zeros = jnp.zeros((1, LSTM_BATCH, LSTM_HIDDEN))
    lengths = jnp.full((LSTM_BATCH,), time_steps, jnp.int32)

    def loss(w, v):
        y, _, _ = rnn.lstm(v, zeros, zeros, w, lengths, LSTM_FEATURES, LSTM_HIDDEN, 1, 0.0, False)
        return jnp.sum(y * cotangent)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return time_alternating({"cudnn": lambda: grad(weights, x)}, rounds=rounds)[0]["cudnn"].median_s


# ----------------------------------------------------------------------------- the suite

def suite(toy: bool) -> dict:
    """The cases at full size, or (``toy``) at sizes a CPU runs in seconds, the same code either way."""
    if toy:
        gpt = [LMCase("gpt_toy", models.GPTConfig(256, d_model=32, num_heads=2, num_layers=2, max_length=32,
                                                  scan_layers=True), batch=2, length=32, steps_per_call=2, rounds=2)]
        widths = (8, 16)
        resnet = CNNCase("resnet_bottleneck_toy", "bottleneck ResNet, two stages of one block, widths 8 and 16, "
                         "32x32x3, batch 2", lambda: models.ResNet("bottleneck", (1, 1), 10, widths=widths),
                         lambda: FlaxResNet((1, 1), widths=widths, bottleneck=True), size=32, batch=2,
                         budget=Budget(2, 2, 2, 2))
        adam = dataclasses.replace(OPTIMIZER_CASES["adam_update"], shapes=param_shapes(
            d=32, vocab=100, context=16, hidden=64, blocks=1, classes=10, patch=4))
        lstm = RecurrentCase("lstm_t8", "lstm", 8, budget=Budget(1, 2, 1, 2))
        config = Config(steps_per_call=2, rounds=2)
        repeat_compile = dict(layers=2, shape=(2, 8, 16), rounds=1,
                              block=nn.TransformerEncoderBlock(num_heads=2, mlp_features=32))
    else:
        gpt = [LMCase("gpt_124m", models.GPTConfig(50257, scan_layers=True), batch=16, length=1024),
               LMCase("gpt_350m", models.GPTConfig(50257, d_model=1024, num_heads=16, num_layers=24,
                                                   scan_layers=True), batch=8, length=1024)]
        resnet = CNNCase("resnet50_train_step", "ResNet-50 (torchvision layout, batch norm) on 224x224x3, batch 64",
                         lambda: models.resnet50(1000), lambda: FlaxResNet((3, 4, 6, 3), 1000, bottleneck=True),
                         size=224, batch=64, budget=Budget(5, 11, 5, 5))
        lstm = RecurrentCase("lstm_t200", "lstm", 200)
        config = Config()
        repeat_compile = dict(layers=24, rounds=1)  # one compile each after the warm-up: device time is scarce
        adam = OPTIMIZER_CASES["adam_update"]
    return {"gpt": gpt, "resnet": resnet, "lstm": lstm, "adam": adam, "config": config,
            "repeat_compile": repeat_compile}


def run(toy: bool = False, on_record: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Every case of the suite, one record each (``benchmarks.run``'s fields for the compared cases).

    ``on_record`` gets the records so far after each case: a run cut short keeps what it measured.
    """
    from benchmarks.run import run_case

    cases = suite(toy)
    peaks = device_peaks()
    where = {**provenance(), "peaks": peaks, "toy": toy}
    records = []

    def keep(record: dict) -> None:
        records.append({**where, **record})
        if on_record is not None:
            on_record(records)

    for case in cases["gpt"]:
        keep(lm_train_step(case))
    resnet = run_case(cases["resnet"].name, cases["config"], case=cases["resnet"])
    resnet["images_per_s"] = resnet["batch"] / resnet["jdl_s"]
    resnet["ref_images_per_s"] = resnet["batch"] / resnet["ref_s"]
    keep(resnet)
    lstm = run_case(cases["lstm"].name, cases["config"], case=cases["lstm"])
    cudnn = cudnn_lstm_seconds(lstm["time"], lstm["repeats"])
    lstm.update(cudnn_s=cudnn, jdl_over_cudnn=None if cudnn is None else lstm["jdl_s"] / cudnn)
    keep(lstm)
    adam = run_case("adam_update", dataclasses.replace(cases["config"], quick=True), case=cases["adam"])
    adam["jdl_hbm_fraction"] = None if peaks is None else adam["jdl_bytes_per_s"] / (peaks["hbm_tb_s"] * 1e12)
    adam["ref_hbm_fraction"] = None if peaks is None else adam["ref_bytes_per_s"] / (peaks["hbm_tb_s"] * 1e12)
    keep(adam)
    keep({"case": "repeat_compile", "kind": "compile", **scaling.repeat_compile(**cases["repeat_compile"])})
    return records


def summary(records: list[dict]) -> str:
    """One line per case, the figures the suite is for."""
    def share(value):
        return "n/a (no peak for this device)" if value is None else f"{100 * value:.1f}%"

    lines = [f"GPU suite on {device_description()} ({records[0]['backend']})"]
    for r in records:
        if r["kind"] == "lm_train_step":
            lines.append(f"{r['case']}: {r['num_params'] / 1e6:.1f}M params, {r['tokens_per_s']:,.0f} tokens/s, "
                         f"{r['model_tflops_per_s']:.1f} model TFLOP/s, MFU {share(r['mfu'])}")
        elif r["kind"] == "train_step":
            lines.append(f"{r['case']}: {r['images_per_s']:,.1f} images/s (flax + optax {r['ref_images_per_s']:,.1f}), "
                         f"ratio {r['ratio']:.2f}")
        elif r["kind"] == "recurrent_fwd_bwd":
            cudnn = "" if r["cudnn_s"] is None else f", cuDNN {1e3 * r['cudnn_s']:.2f} ms ({r['jdl_over_cudnn']:.2f}x)"
            lines.append(f"{r['case']}: {1e3 * r['jdl_s']:.2f} ms, flax {1e3 * r['ref_s']:.2f} ms, ratio "
                         f"{r['ratio']:.2f}{cudnn}")
        elif r["kind"] == "compile":
            lines.append(f"{r['case']}: {r['layers']} blocks unrolled {r['unrolled_compile_s']:.2f} s, Repeat "
                         f"{r['repeat_compile_s']:.2f} s ({r['speedup']:.1f}x)")
        else:
            lines.append(f"{r['case']}: {r['jdl_bytes_per_s'] / 1e9:.1f} GB/s (optax {r['ref_bytes_per_s'] / 1e9:.1f}), "
                         f"HBM share {share(r['jdl_hbm_fraction'])}")
    return "\n".join(lines)

