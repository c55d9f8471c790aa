"""The copy circuit copies before any training, and without it the same model does not."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tuneloop.devenv import basemodel, copycircuit, tinymodel

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = basemodel.RECIPE
    return tinymodel.build_model(tmp_path_factory.mktemp("copycircuit") / "m", hidden_size=r["hidden_size"],
                                 layers=r["layers"], heads=r["heads"], seed=3, vocab_size=r["vocab_size"],
                                 tokenizer_texts=basemodel.corpus(1500, 2) + tinymodel.format_texts(),
                                 individual_digits=r["individual_digits"],
                                 intermediate_size=r["intermediate_size"], rope_theta=r["rope_theta"])


def _model(directory: Path, circuit: bool):
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(directory))
    frozen = copycircuit.install(model, basemodel.RECIPE["copy_circuit"], seed=3) if circuit else []
    return model.eval(), AutoTokenizer.from_pretrained(str(directory)), frozen


def _next_token_accuracy(model, tok, n: int = 24) -> float:
    """Teacher-forced: share of a copied run's tokens (after its first) predicted from the run seen before."""
    rng = random.Random(5)
    hits = total = 0
    with torch.no_grad():
        for _ in range(n):
            seq = " ".join(str(rng.randint(0, 10 ** rng.randint(2, 6))) for _ in range(rng.randint(2, 5)))
            context = list(tok(f"Copy: {seq}\n")["input_ids"])
            target = list(tok(seq, add_special_tokens=False)["input_ids"])
            logits = model(input_ids=torch.tensor([context + target])).logits[0]
            predicted = logits[len(context):-1].argmax(-1).tolist()
            hits += sum(p == g for p, g in zip(predicted, target[1:], strict=True))
            total += len(target) - 1
    return hits / total


def test_the_circuit_copies_numbers_it_has_never_seen_before_any_training(model_dir: Path):
    model, tok, frozen = _model(model_dir, circuit=True)
    assert _next_token_accuracy(model, tok) >= 0.9
    names = dict(model.named_parameters())
    assert "model.embed_tokens.weight" in frozen and all(name in names for name in frozen)


def test_without_the_circuit_the_same_untrained_model_does_not_copy(model_dir: Path):
    model, tok, _ = _model(model_dir, circuit=False)
    assert _next_token_accuracy(model, tok) < 0.2


def test_a_model_too_small_for_the_circuit_is_refused():
    from transformers import LlamaConfig, LlamaForCausalLM

    small = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True))
    with pytest.raises(ValueError, match="hidden_size"):
        copycircuit.install(small)
