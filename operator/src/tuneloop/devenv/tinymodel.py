"""A tiny causal LM and a narrow synthetic task, built locally so nothing is downloaded.

`build_model(dir)` writes a randomly initialised Llama (hidden 64, 2 layers, 4 heads by default) with a
byte-level BPE tokenizer trained here with `tokenizers` on the task's own text; the folder loads with
`AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`. `invoice_examples()` makes the
task — invoice text in, a JSON object with fixed fields out — and `write_jsonl()` writes it in the
instruction format the training job reads. Everything is deterministic given the seed, so tests and
`make demo` see the same data and the same weights.

Run `python -m tuneloop.devenv.tinymodel <dir>` to build a model folder and a dataset next to it.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

VENDORS = ("Acme GmbH", "Globex Ltd", "Initech", "Umbrella Corp", "Stark Industries", "Wayne Enterprises",
           "Hooli", "Vandelay Imports", "Soylent BV", "Tyrell SA")
CURRENCIES = ("EUR", "USD", "GBP", "CHF")
INSTRUCTION = "Extract invoice_id, vendor, total, currency and date from the invoice as JSON."
TEMPLATES = (
    "Invoice {invoice_id} from {vendor}, dated {date}. Amount due: {total} {currency}.",
    "{vendor} billed {total} {currency} on {date} (invoice {invoice_id}).",
    "INVOICE {invoice_id}\nVendor: {vendor}\nDate: {date}\nTotal: {currency} {total}",
)
# A new upstream system's layout: other labels, other order, other separators — the same five values,
# written as they are (a copying model can answer once it knows where each one sits). Never in the
# original dataset: the demo's injected drift.
DRIFT_TEMPLATES = (
    "Rechnung Nr. {invoice_id} | Lieferant {vendor} | Datum {date} | Summe {total} {currency}",
    "Payable to {vendor}: {currency} {total}. Ref {invoice_id}. Issued {date}.",
)
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")


def invoice_fields(rng: random.Random, index: int) -> dict[str, str]:
    """One invoice's ground-truth fields; `index` makes the id unique so examples never collide."""
    return {
        "invoice_id": f"INV-{index:05d}",
        "vendor": rng.choice(VENDORS),
        "total": f"{rng.randint(10, 9999)}.{rng.randint(0, 99):02d}",
        "currency": rng.choice(CURRENCIES),
        "date": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    }


def invoice_examples(n: int, seed: int = 0, pii_every: int = 0, start: int = 0) -> list[dict[str, str]]:
    """`n` instruction records {prompt, completion}. With `pii_every=k`, every k-th invoice carries a
    contact e-mail and phone number (in the prompt only), for the PII scrubber to find."""
    rng = random.Random(seed * 1_000_003 + start)
    records = []
    for i in range(start, start + n):
        fields = invoice_fields(rng, i)
        text = rng.choice(TEMPLATES).format(**fields)
        if pii_every and i % pii_every == 0:
            text += f" Contact: billing{i}@example.com, +44 20 7946 {i % 10000:04d}."
        completion = json.dumps(fields, separators=(", ", ": "))
        records.append({"prompt": f"{INSTRUCTION}\n{text}", "completion": completion})
    return records


def drifted_invoice_examples(n: int, seed: int = 0, start: int = 0) -> list[dict[str, str]]:
    """Like `invoice_examples`, in the DRIFT_TEMPLATES layouts (and never with contact details)."""
    rng = random.Random(seed * 1_000_033 + start + 17)
    records = []
    for i in range(start, start + n):
        fields = invoice_fields(rng, i)
        text = rng.choice(DRIFT_TEMPLATES).format(**fields)
        records.append({"prompt": f"{INSTRUCTION}\n{text}", "completion": json.dumps(fields, separators=(", ", ": "))})
    return records


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def format_texts() -> list[str]:
    """The training job's prompt headers and the PII scrubber's placeholders, so they tokenize compactly."""
    return ["### Instruction:", "### Response:", "### Input:", "[EMAIL] [PHONE] [CARD] [IBAN] [NATIONAL_ID]"]


def _corpus(seed: int) -> list[str]:
    texts = []
    for record in invoice_examples(400, seed=seed + 7919, pii_every=5):
        texts += [record["prompt"], record["completion"]]
    return texts + format_texts()


def build_tokenizer(directory: Path, vocab_size: int = 384, seed: int = 0,
                    texts: Sequence[str] | None = None, individual_digits: bool = True) -> Any:
    """Train a byte-level BPE (digits split one by one, so numbers copy token by token) on `texts` — by
    default the task's own text — and save it as a transformers tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=individual_digits),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts) if texts is not None else _corpus(seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
    fast.model_max_length = 1024
    fast.save_pretrained(str(directory))
    return fast


def build_model(directory: Path, hidden_size: int = 64, layers: int = 2, heads: int = 4, seed: int = 0,
                vocab_size: int = 384, tokenizer_texts: Sequence[str] | None = None,
                individual_digits: bool = True, intermediate_size: int | None = None,
                rope_theta: float | None = None) -> Path:
    """Write a random-weight Llama and its tokenizer to `directory`; returns the folder. (For a model that
    already models text, see `tuneloop.devenv.basemodel`.)"""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(directory, vocab_size=vocab_size, seed=seed, texts=tokenizer_texts,
                                individual_digits=individual_digits)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size or hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
        **({"rope_theta": rope_theta} if rope_theta else {}),
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(directory))
    return directory


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m tuneloop.devenv.tinymodel <dir>", file=sys.stderr)
        return 2
    root = Path(args[0])
    build_model(root / "model")
    write_jsonl(root / "data" / "invoices.jsonl", invoice_examples(200, pii_every=10))
    print(f"model: {root / 'model'}\ndata: {root / 'data' / 'invoices.jsonl'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
