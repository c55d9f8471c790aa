"""One base model per process with LoRA adapters attached and detached by name, and generation with
one of them — the model side of a serving replica, independent of Ray.

The base is loaded once (`modeling.resolve_model_dir` + `modeling.load_for_inference`, as the training
job's evaluation loads it); each version's adapter is attached with transformers' adapter API
(`load_adapter` / `set_adapter` / `delete_adapter`), so a version costs its adapter weights, not a
second base. Greedy decoding is the evaluation's (`evaluating.generate`: same tokenisation, same
`generate` arguments, same answer cut), so a served answer equals the one the job scored.

Not thread-safe: the active adapter is state on the model. The Serve replica runs every call on one
worker thread, which also keeps a long generation off its event loop.
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.jobs import modeling, prompts
from tuneloop.serving import adapters


@dataclass(frozen=True)
class Generated:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or the answer's end marker) or "length"


class BaseModelRuntime:
    """The base model, its tokenizer, and the adapters attached to it."""

    def __init__(self, base_model_uri: str, base_model_revision: str | None = None,
                 cache_dir: Path | None = None) -> None:
        import torch

        self.base_model_uri = base_model_uri
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        cache = cache_dir or Path(tempfile.mkdtemp(prefix="tuneloop-serve-base-"))
        base_dir = modeling.resolve_model_dir(base_model_uri, base_model_revision, cache)
        self.tokenizer = modeling.load_tokenizer(base_dir)
        self.model = modeling.load_for_inference(base_dir, None, "lora", self.device)
        self.attached: set[str] = set()
        self._names = itertools.count(1)

    def attach(self, artifact: adapters.AdapterArtifact) -> str:
        """Attach a version's adapter; returns the adapter name to generate with."""
        if artifact.base_model_uri != self.base_model_uri:
            raise adapters.ModelNotServable(
                f"model {artifact.model_id} was trained on base {artifact.base_model_uri}, but this deployment "
                f"serves base {self.base_model_uri}; deploy it with that base model")
        name = f"adapter{next(self._names)}"  # fresh per load: an evicted id may come back
        self.model.load_adapter(str(artifact.path), adapter_name=name)
        self.model.eval()
        self.attached.add(name)
        return name

    def detach(self, name: str) -> None:
        if name in self.attached:
            self.attached.discard(name)
            self.model.delete_adapter(name)

    def generate(self, adapter_name: str, prompt_text: str, max_new_tokens: int, temperature: float) -> Generated:
        """Continue `prompt_text` (already rendered) with the adapter; greedy when temperature is 0."""
        import torch

        if adapter_name not in self.attached:
            raise RuntimeError(f"adapter {adapter_name} is not attached (evicted while in use?)")
        self.model.set_adapter(adapter_name)
        ids = list(self.tokenizer(prompt_text)["input_ids"])
        input_ids = torch.tensor([ids], device=self.device)
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        with torch.no_grad():
            out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                      max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                                      eos_token_id=self.tokenizer.eos_token_id, **sampling)
        new = out[0, len(ids):].tolist()
        eos = self.tokenizer.eos_token_id
        completion_tokens = new.index(eos) + 1 if eos in new else len(new)
        raw = self.tokenizer.decode(new, skip_special_tokens=True)
        text = prompts.cut_answer(raw)
        stopped = eos in new or prompts.ANSWER_STOP in raw
        return Generated(text=text, prompt_tokens=len(ids), completion_tokens=completion_tokens,
                         finish_reason="stop" if stopped or completion_tokens < max_new_tokens else "length")


class AttachedAdapter:
    """A version attached to the base model: what the replica's `@serve.multiplexed` loader caches. LRU
    eviction calls `__del__` (from another thread); the adapter is detached only once no request is using
    it, through `detach` (the replica queues it on its generation thread, never under a generation)."""

    def __init__(self, artifact: adapters.AdapterArtifact, name: str, detach: Callable[[str], object]) -> None:
        self.artifact, self.name = artifact, name
        self._detach = detach
        self._lock = threading.Lock()
        self._in_use = 0
        self._evicted = self._detached = False

    @contextlib.contextmanager
    def use(self) -> Iterator[bool]:
        """Yields False when the adapter was already detached (evicted before this request got to it)."""
        with self._lock:
            usable = not self._detached
            self._in_use += 1
        try:
            yield usable
        finally:
            with self._lock:
                self._in_use -= 1
            self._maybe_detach()

    def __del__(self) -> None:
        with self._lock:
            self._evicted = True
        self._maybe_detach()

    def _maybe_detach(self) -> None:
        with self._lock:
            if not self._evicted or self._in_use or self._detached:
                return
            self._detached = True
        with contextlib.suppress(Exception):  # the executor is gone at interpreter exit
            self._detach(self.name)
