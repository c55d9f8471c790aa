"""How much of the accelerator a training loop uses: model FLOPs per trained token and MFU.

MFU (model FLOPs utilisation, PaLM appendix B) = FLOPs the model needs per token x tokens/s / the
hardware's peak FLOP/s. The FLOPs are the model's, not the implementation's: activation recomputation or
padding do not count. Per token of a sequence of T tokens, with N the parameters of the matrix
multiplications (attention and MLP projections of every layer, and the LM head; embedding lookups cost
none):

- forward: 2N, plus attention scores and their mix with the values, 4·L·d·T (L layers, model width d);
- backward: twice the forward for the activations' gradients; the weights' gradients another 2N, but
  only for trained weights. So full fine-tuning costs 6N + 12·L·d·T, and LoRA or QLoRA, whose base is
  frozen, 4N + 12·L·d·T plus 6 per adapter parameter.

Pure and standard-library only; `bench/bench_train_gpu.py` reports it, the unit tables check it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Dense (no sparsity) bf16 peak FLOP/s per GPU from the vendors' data sheets, by a substring of
# torch.cuda.get_device_name(). SXM parts; a PCIe part reports lower clocks (H100 PCIe 756e12).
PEAK_BF16_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
}


@dataclass(frozen=True)
class LlamaShape:
    """What the FLOP count needs of a Llama-style config."""

    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def matmul_params(shape: LlamaShape) -> int:
    """Parameters that take part in matrix multiplications: per layer q and o (d x d), k and v (d x kv
    heads x head dim), gate, up and down (3 x d x intermediate); plus the LM head (d x vocab)."""
    d, kv = shape.hidden, shape.kv_heads * shape.head_dim
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * shape.intermediate
    return shape.layers * per_layer + d * shape.vocab


def lora_params(shape: LlamaShape, rank: int, targets: tuple[str, ...]) -> int:
    """Adapter parameters: rank x (in + out) per targeted projection per layer."""
    d, kv, ff = shape.hidden, shape.kv_heads * shape.head_dim, shape.intermediate
    sizes = {"q_proj": (d, d), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (d, d),
             "gate_proj": (d, ff), "up_proj": (d, ff), "down_proj": (ff, d)}
    return shape.layers * sum(rank * (sizes[t][0] + sizes[t][1]) for t in targets)


def train_flops_per_token(shape: LlamaShape, seq_len: int, method: str, adapter_params: int = 0) -> float:
    """Model FLOPs to train on one token of a `seq_len`-token sequence (forward and backward)."""
    n = matmul_params(shape)
    attention = 12 * shape.layers * shape.hidden * seq_len
    if method == "full":
        return 6 * n + attention
    if method in ("lora", "qlora", "dpo"):
        return 4 * n + attention + 6 * adapter_params
    raise ValueError(f"unknown method {method!r}")


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops_per_second: float, gpus: int = 1) -> float:
    """The share of the GPUs' peak that the model's FLOPs at this throughput are."""
    if peak_flops_per_second <= 0 or gpus < 1:
        raise ValueError("peak FLOP/s and GPU count must be positive")
    return tokens_per_second * flops_per_token / (peak_flops_per_second * gpus)


def peak_bf16_flops(device_name: str) -> float | None:
    """The data-sheet peak of a GPU by its CUDA name (longest matching key wins); None when unknown."""
    matches = [k for k in PEAK_BF16_FLOPS if k in device_name]
    return PEAK_BF16_FLOPS[max(matches, key=len)] if matches else None
