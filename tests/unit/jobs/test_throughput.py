"""Model FLOPs per token and MFU as tables, against hand counts and published figures."""

from __future__ import annotations

import pytest

from tuneloop.jobs import throughput
from tuneloop.jobs.throughput import LlamaShape

# Llama 3.2 1B: hidden 2048, 16 layers, 32 heads (8 KV), intermediate 8192, vocab 128256, tied embeddings.
LLAMA_1B = LlamaShape(hidden=2048, layers=16, intermediate=8192, vocab=128256, heads=32, kv_heads=8)
TINY = LlamaShape(hidden=4, layers=2, intermediate=8, vocab=10, heads=2, kv_heads=1)


def test_matmul_params_by_hand() -> None:
    # per layer: q, o 4x4 = 32; k, v 4x2 = 16; gate, up, down 3x4x8 = 96 -> 144; 2 layers 288; head 4x10 = 40
    assert throughput.matmul_params(TINY) == 328


def test_matmul_params_of_llama_1b_match_its_published_size() -> None:
    # 1.236e9 parameters in all, of which the 262.7M embedding matrix is the LM head too (tied): the
    # matmul count is everything (head included once) except the RMSNorm weights (33 x 2048).
    assert throughput.matmul_params(LLAMA_1B) == 1_235_814_400 - 33 * 2048


@pytest.mark.parametrize(("method", "seq_len", "adapter", "expected"), [
    ("full", 3, 0, 6 * 328 + 12 * 2 * 4 * 3),
    ("lora", 3, 0, 4 * 328 + 12 * 2 * 4 * 3),
    ("qlora", 3, 10, 4 * 328 + 12 * 2 * 4 * 3 + 60),
    ("dpo", 1, 10, 4 * 328 + 12 * 2 * 4 + 60),
])
def test_train_flops_per_token(method: str, seq_len: int, adapter: int, expected: int) -> None:
    assert throughput.train_flops_per_token(TINY, seq_len, method, adapter) == expected


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        throughput.train_flops_per_token(TINY, 3, "rlhf")


def test_lora_params_by_hand() -> None:
    # rank 2 on q (4+4) and v (4+2) per layer: 2 x (8 + 6) = 28; two layers
    assert throughput.lora_params(TINY, 2, ("q_proj", "v_proj")) == 56


@pytest.mark.parametrize(("tokens_per_second", "flops", "peak", "gpus", "expected"), [
    (1000.0, 6e9, 1e12, 1, 6.0),  # more than the peak: the FLOP count or the timing is wrong, not hidden
    (10_000.0, 6e9, 989e12, 1, 6e13 / 989e12),
    (20_000.0, 6e9, 989e12, 2, 6e13 / 989e12),  # two GPUs at twice the throughput: the same MFU
])
def test_mfu(tokens_per_second: float, flops: float, peak: float, gpus: int, expected: float) -> None:
    assert throughput.mfu(tokens_per_second, flops, peak, gpus) == pytest.approx(expected)


def test_mfu_needs_a_peak() -> None:
    with pytest.raises(ValueError):
        throughput.mfu(1.0, 1.0, 0.0)


def test_a_1b_lora_step_at_35_percent_of_an_h100() -> None:
    # What the goal means in tokens/s: 35% MFU for LoRA at 2048-token sequences on one H100.
    per_token = throughput.train_flops_per_token(LLAMA_1B, 2048, "lora")
    assert 5.7e9 < per_token < 5.8e9  # 4 x 1.236e9 + 12 x 16 x 2048 x 2048
    assert 60_000 < 0.35 * 989e12 / per_token < 70_000


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA L4", 121e12),
    ("NVIDIA L40S", 362e12),
    ("Tesla T4", None),
])
def test_peak_by_device_name(name: str, peak: float | None) -> None:
    assert throughput.peak_bf16_flops(name) == peak
