"""The MLflow pyfunc wrapper a training run logs: text prompts in, generated answers out, with the
same prompt template the model was trained on.

Why pyfunc and not `mlflow.transformers`: for a PEFT model the transformers flavor stores only the
adapter and a *name* of the base model that it resolves on the Hugging Face Hub at load time, which a
cluster without Hub access (and a locally built base) cannot do. Here the artifacts are the adapter
(or full model) folder with its tokenizer, and `model_config.base_model_uri` names the base with the
same URIs the FineTune uses (resolved by `modeling.resolve_model_dir`, so hf:// means the local cache).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mlflow.pyfunc import PythonModel

from tuneloop.jobs import evaluating, modeling, prompts


class TunedTextModel(PythonModel):
    """Generates answers for prompts with the fine-tuned model (base + adapter, or full weights)."""

    def load_context(self, context: Any) -> None:
        import torch

        config = context.model_config
        self.method = config["method"]
        self.max_new_tokens = int(config.get("max_new_tokens", 64))
        trained_dir = Path(context.artifacts["model"])
        base_dir = trained_dir
        if self.method != "full":
            base_dir = modeling.resolve_model_dir(config["base_model_uri"], config.get("base_model_revision"),
                                                  Path(tempfile.mkdtemp(prefix="tuneloop-base-")))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = modeling.load_tokenizer(trained_dir)
        self.model = modeling.load_for_inference(base_dir, trained_dir, self.method, self.device)

    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        max_new_tokens = int((params or {}).get("max_new_tokens", self.max_new_tokens))
        texts = [prompts.render_prompt(p) for p in model_input]
        return evaluating.generate(self.model, self.tokenizer, texts, max_new_tokens, self.device)
