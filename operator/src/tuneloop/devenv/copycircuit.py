"""A copying circuit written into a small Llama's weights before pre-training (an induction head, built).

Extraction is copying: an invoice id, a total or a date in the answer is a span of the input. Transformers
learn to copy with *induction heads* (Olsson et al., 2022): a head that writes each position's previous
token into the residual stream, and a later head that, from the current token, finds where that token was
followed before and copies what came next. SGD finds them only after tens of millions of tokens — hours on
two CPU cores — and a tiny model that has not found them cannot copy a number it has never seen, so LoRA on
top of it learns the format and guesses the values (held-out field F1 ≈ 0.1). So the base model gets the
circuit by construction, then pre-training teaches the rest of the network when and what to copy.

Layout of the residual stream (`hidden_size` ≥ 3·content + 1):

    [0, c)          token content: each token's embedding is a random unit vector here (tied unembedding,
                    so writing a token's content vector here raises that token's logit)
    c               a constant 1 for every token (what the position-only heads read)
    [c+1, 2c+1)     the previous token's content   (layer 0, head 0: attends exactly one position back)
    [2c+1, 3c+1)    the token before that           (layer 0, head 1: two positions back)
    the rest        free for what pre-training learns

Layer 1, head 0 matches the current and previous tokens against every position's two previous tokens
(a 2-gram match, so a digit pair or a repeated word does not send it to the wrong place) and copies the
matched position's content into the content dims. Position-only attention uses RoPE's fastest frequency
pairs (their phase sets the offset); content matching uses the slowest ones, which barely rotate over a
prompt, so a match scores the same wherever it is. Everything else starts as HF's usual random init.
"""

from __future__ import annotations

import math
from typing import Any

# The circuit's default strengths (attention logit scales and the copy gain); recorded in the recipe.
DEFAULTS: dict[str, float] = {"content_dims": 64, "prev_gain": 20.0, "match_gain": 10.0, "copy_gain": 3.0,
                              "position_pairs": 8, "match_dims": 40}


def install(model: Any, settings: dict[str, float] | None = None, seed: int = 0) -> list[str]:
    """Write the circuit into `model` (a LlamaForCausalLM with ≥ 2 layers, ≥ 2 heads); returns the names
    of the parameters that carry it (pre-training keeps them frozen)."""
    import torch

    s = {**DEFAULTS, **(settings or {})}
    cfg = model.config
    hidden, heads = cfg.hidden_size, cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    c = int(s["content_dims"])
    pairs, match = int(s["position_pairs"]), int(s["match_dims"])
    if hidden < 3 * c + 1 or heads < 2 or cfg.num_hidden_layers < 2 or 2 * match > head_dim:
        raise ValueError("the copy circuit needs hidden_size ≥ 3·content_dims + 1, 2 heads, 2 layers and "
                         "head_dim ≥ 2·match_dims")
    if cfg.num_key_value_heads != heads or getattr(cfg, "tie_word_embeddings", False) is not True:
        raise ValueError("the copy circuit needs one key/value head per head and tied embeddings")
    const, prev1, prev2 = c, slice(c + 1, 2 * c + 1), slice(2 * c + 1, 3 * c + 1)
    theta = float(getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"])
    inv_freq = [theta ** (-(2 * i) / head_dim) for i in range(head_dim // 2)]
    half = head_dim // 2
    scale = math.sqrt(head_dim)  # attention divides by it
    gen = torch.Generator().manual_seed(seed)
    layer0, layer1 = model.model.layers[0], model.model.layers[1]
    with torch.no_grad():
        content = torch.randn(cfg.vocab_size, c, generator=gen)
        content /= content.norm(dim=1, keepdim=True)
        embed = model.model.embed_tokens.weight
        embed.zero_()
        embed[:, :c] = content
        embed[:, const] = 1.0
        for layer in (layer0, layer1):
            for p in layer.self_attn.parameters():
                p.zero_()
        # Layer 0 sees [content (norm 1), 1]; layer 1 sees that plus two previous contents (norm 1 each).
        layer0.input_layernorm.weight.fill_(math.sqrt(2 / hidden))
        layer1.input_layernorm.weight.fill_(math.sqrt(4 / hidden))
        att0 = layer0.self_attn
        for head, offset, target in ((0, 1, prev1), (1, 2, prev2)):
            base = head * head_dim
            for f in range(pairs):  # q.k = sum_f cos(theta_f * (delta - offset)): largest at delta = offset
                att0.q_proj.weight[base + f, const] = s["prev_gain"] * scale / pairs
                att0.k_proj.weight[base + f, const] = math.cos(offset * inv_freq[f])
                att0.k_proj.weight[base + half + f, const] = math.sin(offset * inv_freq[f])
            for d in range(c):
                att0.v_proj.weight[base + d, d] = 1.0
                att0.o_proj.weight[target.start + d, base + d] = 1.0
        # Layer 1, head 0: q = [G·content_i ; G·prev_i], k = [G·prev_j ; G·prev2_j] on the slowest pairs.
        slow = list(range(half - match, half))
        dims = slow + [f + half for f in slow]
        g = torch.linalg.qr(torch.randn(c, c, generator=gen))[0][:match]
        att1 = layer1.self_attn
        for r in range(match):
            att1.q_proj.weight[dims[r], :c] = g[r] * s["match_gain"] * scale
            att1.q_proj.weight[dims[match + r], prev1] = g[r] * s["match_gain"] * scale
            att1.k_proj.weight[dims[r], prev1] = g[r]
            att1.k_proj.weight[dims[match + r], prev2] = g[r]
        for d in range(c):
            att1.v_proj.weight[d, d] = 1.0
            att1.o_proj.weight[d, d] = s["copy_gain"]
        # Read logits from the content dims only at first; pre-training may widen this.
        model.model.norm.weight.zero_()
        model.model.norm.weight[:c] = 1.0
    frozen = ["model.embed_tokens.weight"]
    for i in (0, 1):
        frozen += [f"model.layers.{i}.input_layernorm.weight"]
        frozen += [f"model.layers.{i}.self_attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    return frozen
