"""A small base model that already models text, pre-trained here once from a seed and cached.

LoRA adapts a model; it cannot teach a random-weight one to read. So `make demo` and the e2e tests fine-tune
a tiny Llama that was first pre-trained on a *generic* synthetic corpus: records of many kinds (orders,
flights, tickets, books, sensors …, never invoices) written out as prose, as `Label: value` lines and as
JSON of a few of their fields, in a plain document format that is not the training job's instruction
template. The model learns to copy spans, digits and names from context into JSON; the fine-tune then has
to learn the invoice task itself — which fields, where each comes from in three invoice layouts, the
instruction format and when to stop — so held-out quality moves from the prompt baseline's to near 1.

Nothing is downloaded. The folder is keyed by a hash of the recipe (`RECIPE` and this module's
`RECIPE_VERSION`) under `~/.cache/tuneloop/base-model/` (`TUNELOOP_CACHE` moves it), built under a file lock
(parallel tests build it once) into a temporary folder that is renamed into place when complete.
`python -m tuneloop.devenv.basemodel` builds it and prints the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tuneloop.devenv import tinymodel

# Bump when the corpus or the training loop changes in a way the recipe does not show.
RECIPE_VERSION = 1
RECIPE: dict[str, Any] = {
    "hidden_size": 128, "layers": 4, "heads": 4, "vocab_size": 512,
    "steps": 1400, "batch_size": 32, "learning_rate": 3e-3, "warmup_steps": 100, "max_tokens": 192,
    "seed": 1234,
}

_WORDS = ("amber", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor", "indigo", "juniper",
          "kestrel", "lumen", "meadow", "nimbus", "onyx", "pebble", "quartz", "raven", "sierra", "tundra",
          "umber", "violet", "willow", "xenon", "yarrow", "zephyr", "north", "river", "stone", "blue",
          "copper", "silver", "orchid", "falcon", "maple", "harvest", "summit", "coral", "atlas", "beacon")
_PEOPLE = ("Ada Moreau", "Ben Okafor", "Chen Wei", "Dana Ruiz", "Eli Novak", "Fatima Haddad", "Gus Lind",
           "Hana Sato", "Ivan Petrov", "Jo Keller", "Kai Berg", "Lena Costa", "Mo Farouk", "Nia Adams")
_CITIES = ("Lisbon", "Oslo", "Nairobi", "Osaka", "Quito", "Tallinn", "Perth", "Lyon", "Austin", "Krakow",
           "Dakar", "Hanoi", "Porto", "Bergen")
_CODES = ("ABX", "KLM", "QRT", "ZNV", "PLO", "WES", "MUC", "LHR", "SFO", "GVA", "NRT", "OSL")


def _value(kind: str, rng: random.Random) -> str:
    if kind == "id":
        return f"{rng.choice(_CODES)}-{rng.randint(0, 99999):05d}"
    if kind == "word":
        return rng.choice(_WORDS)
    if kind == "words":
        return f"{rng.choice(_WORDS).title()} {rng.choice(_WORDS).title()}"
    if kind == "person":
        return rng.choice(_PEOPLE)
    if kind == "city":
        return rng.choice(_CITIES)
    if kind == "int":
        return str(rng.randint(1, 9999))
    if kind == "decimal":
        return f"{rng.randint(0, 9999)}.{rng.randint(0, 99):02d}"
    if kind == "date":
        return f"{rng.randint(2019, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if kind == "code":
        return rng.choice(_CODES)
    raise ValueError(kind)


# Record kinds: (noun, [(key, label, value kind)]) — generic business-like records, no invoices.
_KINDS: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    ("order", (("order_id", "Order", "id"), ("customer", "Customer", "person"), ("quantity", "Qty", "int"),
               ("price", "Price", "decimal"), ("city", "Ship to", "city"), ("placed", "Placed on", "date"))),
    ("flight", (("flight", "Flight", "id"), ("origin", "From", "code"), ("destination", "To", "code"),
                ("departure", "Departs", "date"), ("passenger", "Passenger", "person"), ("seat", "Seat", "int"))),
    ("ticket", (("ticket_id", "Ticket", "id"), ("owner", "Owner", "person"), ("priority", "Priority", "word"),
                ("opened", "Opened", "date"), ("component", "Component", "words"))),
    ("book", (("isbn", "ISBN", "id"), ("title", "Title", "words"), ("author", "Author", "person"),
              ("year", "Published", "int"), ("pages", "Pages", "int"))),
    ("reading", (("sensor", "Sensor", "id"), ("site", "Site", "city"), ("value", "Reading", "decimal"),
                 ("unit", "Unit", "code"), ("taken", "Taken", "date"))),
    ("shipment", (("tracking", "Tracking no.", "id"), ("carrier", "Carrier", "words"), ("weight", "Weight", "decimal"),
                  ("destination", "Destination", "city"), ("shipped", "Shipped", "date"))),
    ("booking", (("booking_ref", "Booking", "id"), ("guest", "Guest", "person"), ("hotel", "Hotel", "words"),
                 ("nights", "Nights", "int"), ("check_in", "Check-in", "date"), ("rate", "Rate", "decimal"))),
    ("payment", (("reference", "Reference", "id"), ("payer", "Payer", "person"), ("amount", "Amount", "decimal"),
                 ("method", "Method", "word"), ("paid", "Paid on", "date"))),
)


def _render_text(noun: str, fields: list[tuple[str, str, str]], rng: random.Random) -> str:
    """One of three layouts: labelled lines, a sentence of labelled clauses, or a run-on prose line."""
    style = rng.randrange(3)
    order = fields[:]
    rng.shuffle(order)
    if style == 0:
        return f"{noun.upper()}\n" + "\n".join(f"{label}: {value}" for _, label, value in order)
    if style == 1:
        return f"A {noun} with " + ", ".join(f"{label.lower()} {value}" for _, label, value in order) + "."
    return f"{noun.title()} record. " + " ".join(f"{label} is {value}." for _, label, value in order)


def generic_document(rng: random.Random) -> str:
    """A record as text, then a JSON object with some of its fields in a random order."""
    noun, schema = rng.choice(_KINDS)
    fields = [(key, label, _value(kind, rng)) for key, label, kind in schema]
    text = _render_text(noun, fields, rng)
    chosen = rng.sample(fields, rng.randint(2, len(fields)))
    keys = ", ".join(key for key, _, _ in chosen)
    obj = json.dumps({key: value for key, _, value in chosen}, separators=(", ", ": "))
    return f"{text}\nFields {keys}:\n{obj}"


def corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [generic_document(rng) for _ in range(n)]


def recipe_key(recipe: dict[str, Any] | None = None) -> str:
    body = json.dumps({"version": RECIPE_VERSION, **(recipe or RECIPE)}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def cache_root() -> Path:
    base = os.environ.get("TUNELOOP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tuneloop")
    return Path(base) / "base-model"


Progress = Callable[[int, int, float], None]


def ensure_base_model(progress: Progress | None = None, recipe: dict[str, Any] | None = None,
                      root: Path | None = None) -> Path:
    """The cached pre-trained model folder, building it first when missing (once, under a lock)."""
    recipe = recipe or RECIPE
    root = root or cache_root()
    target = root / recipe_key(recipe)
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{target.name}.lock"):
        if (target / "config.json").is_file():
            return target
        partial = root / f"{target.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        pretrain(partial, recipe, progress)
        partial.rename(target)
    return target


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def pretrain(directory: Path, recipe: dict[str, Any], progress: Progress | None = None) -> Path:
    """Build the tokenizer and a random Llama, then train it on the generic corpus; writes `directory`."""
    import torch

    seed = int(recipe["seed"])
    tokenizer_texts = corpus(3000, seed + 1) + tinymodel.format_texts()
    model_dir = tinymodel.build_model(directory, hidden_size=recipe["hidden_size"], layers=recipe["layers"],
                                      heads=recipe["heads"], seed=seed, vocab_size=recipe["vocab_size"],
                                      tokenizer_texts=tokenizer_texts)
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = LlamaForCausalLM.from_pretrained(str(model_dir))
    torch.manual_seed(seed)
    steps, batch_size = int(recipe["steps"]), int(recipe["batch_size"])
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["learning_rate"], weight_decay=0.01,
                                  betas=(0.9, 0.98))
    warmup = int(recipe["warmup_steps"])

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model.train()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    started, loss_value = time.monotonic(), math.nan
    for step in range(steps):
        rows = [[*list(tokenizer(generic_document(rng))["input_ids"])[:recipe["max_tokens"] - 1], eos]
                for _ in range(batch_size)]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        labels = torch.tensor([r + [-100] * (width - len(r)) for r in rows])
        mask = (labels != -100).long()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = float(loss)
        if progress is not None and (step % 20 == 0 or step == steps - 1):
            progress(step + 1, steps, loss_value)
    model.save_pretrained(str(model_dir))
    (model_dir / "tuneloop-pretraining.json").write_text(json.dumps(
        {"recipe": recipe, "recipe_version": RECIPE_VERSION, "final_loss": loss_value,
         "seconds": round(time.monotonic() - started, 1)}, indent=2))
    return model_dir


def main(argv: Sequence[str] | None = None) -> int:
    del argv

    def show(step: int, steps: int, loss: float) -> None:
        print(f"pre-training base model: step {step}/{steps} loss {loss:.3f}", file=sys.stderr, flush=True)

    print(ensure_base_model(show))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
