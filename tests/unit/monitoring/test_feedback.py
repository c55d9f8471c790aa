"""Feedback as retrain examples: only answered-by-a-person requests, the correction over the label,
PII scrubbed, duplicates dropped (within the feedback and against the original set, by the training job's
exact and normalised keys), an order-independent hash — and a file the training job reads as a dataset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tuneloop.api.finetune import DatasetSpec
from tuneloop.jobs import datasets
from tuneloop.monitoring import feedback

ORIGINAL = [{"prompt": "Invoice INV-1 from Acme", "completion": '{"invoice_id": "INV-1"}'}]


def window() -> pd.DataFrame:
    return pd.DataFrame([
        {"prompt": "Invoice INV-2 from Globex", "feedback_label": '{"invoice_id": "INV-2"}',
         "feedback_correction": None},
        {"prompt": "invoice   INV-2 from GLOBEX", "feedback_label": None,  # a normalised duplicate of the first
         "feedback_correction": '{"invoice_id": "inv-2"}'},
        {"prompt": "Invoice INV-1 from Acme", "feedback_label": '{"invoice_id": "INV-1"}',  # in the original
         "feedback_correction": None},
        {"prompt": "Invoice INV-3, questions to jane.doe@example.com", "feedback_label": "wrong",
         "feedback_correction": '{"invoice_id": "INV-3"}'},  # the correction wins; the e-mail is scrubbed
        {"prompt": "Invoice INV-4 from Initech", "feedback_label": None, "feedback_correction": None},  # no feedback
    ])


def test_feedback_becomes_new_scrubbed_unique_examples() -> None:
    got = feedback.build_feedback_set(window(), ORIGINAL)
    assert got.examples == [
        {"prompt": "Invoice INV-2 from Globex", "completion": '{"invoice_id": "INV-2"}'},
        {"prompt": "Invoice INV-3, questions to [EMAIL]", "completion": '{"invoice_id": "INV-3"}'},
    ]
    assert (got.labelled, got.duplicates, got.already_known) == (4, 1, 1)
    assert got.pii_redactions == {"email": 1}


def test_the_hash_depends_on_the_examples_not_their_order() -> None:
    first = feedback.build_feedback_set(window(), ORIGINAL)
    reordered = window().iloc[[3, 0, 2, 4]]  # the normalised duplicate left out: the same examples either way
    assert feedback.build_feedback_set(reordered, ORIGINAL).hash == first.hash
    changed = window()
    changed.loc[3, "feedback_correction"] = '{"invoice_id": "INV-33"}'
    assert feedback.build_feedback_set(changed, ORIGINAL).hash != first.hash


def test_the_training_job_reads_the_written_file_as_a_dataset(tmp_path: Path) -> None:
    got = feedback.build_feedback_set(window(), ORIGINAL)
    path = tmp_path / "feedback.jsonl"
    feedback.write_jsonl(got, path)
    examples = datasets.load_examples(DatasetSpec(uri=f"file://{path}"))
    assert [(e.prompt, e.completion) for e in examples] == [(x["prompt"], x["completion"]) for x in got.examples]


IN_A_FRESH_PROCESS = """
import sys
import pandas as pd
from tuneloop.monitoring import feedback
window = pd.DataFrame([{"prompt": "Invoice INV-3, questions to jane.doe@example.com", "feedback_label": "x",
                        "feedback_correction": None}])
got = feedback.build_feedback_set(window, [])
print(got.examples[0]["prompt"], feedback.scrubber().engine, "spacy" in sys.modules, "torch" in sys.modules)
"""


def test_the_monitors_second_pass_keeps_spacy_and_torch_out_of_the_checking_process() -> None:
    """The checks run in the operator's process: Presidio's spaCy (which imports torch) stays out of it
    unless TUNELOOP_PII_ENGINE asks for it."""
    env = {k: v for k, v in os.environ.items() if k != "TUNELOOP_PII_ENGINE"}
    done = subprocess.run([sys.executable, "-c", IN_A_FRESH_PROCESS], env=env, capture_output=True, text=True,
                          timeout=300, check=True)
    assert done.stdout.split() == ["Invoice", "INV-3,", "questions", "to", "[EMAIL]", "regex", "False", "False"]


def test_the_engine_can_be_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feedback, "_scrubber", None)
    monkeypatch.setenv("TUNELOOP_PII_ENGINE", "presidio")
    window = pd.DataFrame([{"prompt": "from 10.1.2.3", "feedback_label": "x", "feedback_correction": None}])
    assert feedback.build_feedback_set(window, []).examples == [{"prompt": "from [IP]", "completion": "x"}]
    assert feedback.scrubber().engine == "presidio"
