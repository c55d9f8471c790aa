"""Feedback as retrain examples: only answered-by-a-person requests, the correction over the label,
PII scrubbed, duplicates dropped (within the feedback and against the original set, by the training job's
exact and normalised keys), an order-independent hash — and a file the training job reads as a dataset."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

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
