"""The GPU suite runs end to end at toy sizes on CPU (the same code as on a GPU), and its
peak table and FLOP count are the published ones."""
import json
import os
import pathlib
import subprocess

import pytest

from benchmarks import gpu_suite, run
from jdl import models


@pytest.fixture(scope="module")
def toy_records(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu_suite") / "gpu.json"
    records = run.main(["--suite", "gpu", "--toy", "--json", str(path)])
    return records, json.loads(path.read_text())


def test_toy_suite_runs_every_case_and_writes_its_json(toy_records):
    records, written = toy_records
    assert [r["case"] for r in records] == ["gpt_toy", "resnet_bottleneck_toy", "lstm_t8", "adam_update",
                                            "repeat_compile"]
    assert written == records
    lm, resnet, lstm, adam, compile_times = records
    assert compile_times["speedup"] == pytest.approx(compile_times["unrolled_compile_s"] / compile_times["repeat_compile_s"])
    assert lm["tokens_per_s"] > 0 and lm["final_loss"] > 0 and lm["device"] and lm["toy"] is True
    assert lm["model_tflops_per_s"] == pytest.approx(lm["flops_per_token"] * lm["tokens_per_s"] / 1e12)
    assert resnet["images_per_s"] == pytest.approx(resnet["batch"] / resnet["jdl_s"]) and resnet["ratio"] > 0
    assert lstm["ratio"] > 0 and lstm["cudnn_s"] is None  # cuDNN only on CUDA
    assert adam["jdl_bytes_per_s"] > 0
    # No peak for a CPU: no made-up utilisation.
    assert lm["mfu"] is None and adam["jdl_hbm_fraction"] is None and lm["peaks"] is None


def test_peaks_are_matched_on_the_device_kind():
    assert gpu_suite.device_peaks("NVIDIA H100 80GB HBM3")["name"] == "H100"
    assert gpu_suite.device_peaks("NVIDIA H100 PCIe")["bfloat16_tflops"] == 756.0  # not the SXM part's peak
    assert gpu_suite.device_peaks("NVIDIA H200")["hbm_tb_s"] == 4.8
    assert gpu_suite.device_peaks("NVIDIA A100-SXM4-80GB")["bfloat16_tflops"] == 312.0
    assert gpu_suite.device_peaks("cpu") is None


def test_gpt2_small_flops_per_token_is_palms_estimate():
    """GPT-2 small at T = 1024: N = 124,439,808 - 1024 * 768 (positions) = 123,653,376, so
    6 N + 12 L d T = 741,920,256 + 113,246,208 = 855,166,464 FLOPs per token."""
    case = gpu_suite.LMCase("gpt_124m", models.GPTConfig(50257), batch=1, length=1024)
    assert case.flops_per_token(124_439_808) == 855_166_464


def test_the_prepared_device_script_parses_and_names_its_stages(tmp_path):
    """``benchmarks/gpu_session.sh``, what a session lent a GPU runs (its toy run is the suite's above):
    valid bash, and a wrong stage is refused before anything starts."""
    script = pathlib.Path(__file__).parents[2] / "benchmarks" / "gpu_session.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    refused = subprocess.run(["bash", str(script), "train"], capture_output=True, text=True,
                             env={**os.environ, "OUT": str(tmp_path)})
    assert refused.returncode == 2 and "suite|steps" in refused.stderr
    assert not any(tmp_path.iterdir())
