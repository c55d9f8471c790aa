"""Dataset reading, validation errors (code + file/line/field in the message), URI resolution and
`prepare()` on small files. No torch, no Ray: this is the part that must fail fast and precisely."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tuneloop.api.finetune import DatasetSpec
from tuneloop.jobs import datasets, pii
from tuneloop.jobs.errors import ExitCode, JobError


def rows(n: int, start: int = 0) -> list[dict[str, str]]:
    return [{"prompt": f"Invoice {i} from Acme", "completion": json.dumps({"id": i})} for i in range(start, start + n)]


def write(path: Path, lines: list[object] | bytes) -> Path:
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def spec_for(path: Path, **kw: object) -> DatasetSpec:
    return DatasetSpec.model_validate({"uri": f"file://{path}", "evalFraction": 0.3, **kw})


BAD = [
    # (name, file content, spec overrides, exit code, substrings the message must contain)
    ("missing field", [*rows(3), {"prompt": "p"}], {}, ExitCode.DATA_INVALID,
     ["line 4", "field 'completion' is missing"]),
    ("wrong type", [{"prompt": 5, "completion": "c"}, *rows(2)], {}, ExitCode.DATA_INVALID,
     ["line 1", "field 'prompt' must be a string, got int"]),
    ("renamed field", rows(3), {"fields": {"prompt": "question"}}, ExitCode.DATA_INVALID,
     ["3 of 3", "field 'question' is missing", "spec.dataset.fields"]),
    ("not an object", [*rows(2), [1, 2]], {}, ExitCode.DATA_INVALID, ["line 3", "JSON object"]),
    ("not json", ["{bad", *[json.dumps(r) for r in rows(2)]], {}, ExitCode.DATA_INVALID,
     ["line 1", "not valid JSON"]),
    ("empty file", [], {}, ExitCode.DATA_EMPTY, ["no records"]),
    ("blank lines only", ["", "  "], {}, ExitCode.DATA_EMPTY, ["no records"]),
    ("invalid utf-8", b'{"prompt": "ok", "completion": "x"}\n{"prompt": "caf\xe9", "completion": "y"}\n', {},
     ExitCode.DATA_ENCODING, ["line 2", "invalid UTF-8"]),
    ("all duplicates", [rows(1)[0]] * 3 + [{"prompt": "INVOICE 0  FROM acme", "completion": '{"id": 0}'}], {},
     ExitCode.DATA_ALL_DUPLICATES, ["4 records", "only 1 distinct", "3 exact or normalised"]),
    ("chat without assistant", [{"messages": [{"role": "user", "content": "hi"}]}], {"format": "chat"},
     ExitCode.DATA_INVALID, ["line 1", "role 'assistant'"]),
    ("eval set empty", rows(2), {"evalFraction": 0.001}, ExitCode.EVAL_SET_EMPTY,
     ["held-out set empty", "evalFraction"]),
]


@pytest.mark.parametrize(("content", "overrides", "code", "needles"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_data(tmp_path: Path, content, overrides, code: ExitCode, needles: list[str]) -> None:
    path = write(tmp_path / "data.jsonl", content)
    with pytest.raises(JobError) as info:
        datasets.prepare(spec_for(path, **overrides), tmp_path / "out")
    assert info.value.code == code, info.value.message
    for needle in needles:
        assert needle in info.value.message
    if code != ExitCode.DATA_ALL_DUPLICATES and code != ExitCode.EVAL_SET_EMPTY:
        assert str(path) in info.value.message
    assert not (tmp_path / "out" / "held_out.jsonl").exists()


def test_missing_file_and_folder_without_data(tmp_path: Path) -> None:
    with pytest.raises(JobError) as info:
        datasets.prepare(spec_for(tmp_path / "nope.jsonl"), tmp_path / "out")
    assert info.value.code == ExitCode.DATA_NOT_FOUND
    (tmp_path / "empty").mkdir()
    with pytest.raises(JobError) as info:
        datasets.prepare(spec_for(tmp_path / "empty"), tmp_path / "out")
    assert info.value.code == ExitCode.DATA_EMPTY


@pytest.mark.parametrize(("uri", "expected"), [
    ("file:///data/x.jsonl", "/data/x.jsonl"),
    ("pvc://claim-a/sets/x.parquet", "/mnt/pvc-test/claim-a/sets/x.parquet"),
    ("s3://bucket/key.jsonl", None),
])
def test_local_path(monkeypatch: pytest.MonkeyPatch, uri: str, expected: str | None) -> None:
    monkeypatch.setenv(datasets.PVC_ROOT_ENV, "/mnt/pvc-test")
    got = datasets.local_path(uri)
    assert (str(got) if got else None) == expected


def test_s3_uri_goes_through_pyarrow_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    location = datasets.resolve("s3://some-bucket/data/train.jsonl")
    assert location.path == "some-bucket/data/train.jsonl"
    assert location.filesystem.type_name == "s3"


def test_unsupported_scheme_is_a_config_error() -> None:
    with pytest.raises(JobError) as info:
        datasets.resolve("gs://bucket/x.jsonl")
    assert info.value.code == ExitCode.CONFIG_INVALID


def test_prepare_parquet_folder_via_pvc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(datasets.PVC_ROOT_ENV, str(tmp_path))
    folder = tmp_path / "claim" / "set"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows(20)), folder / "a.parquet")
    pq.write_table(pa.Table.from_pylist([*rows(20, start=20), {"prompt": "mail me at a@b.com", "completion": "x"}]),
                   folder / "b.parquet")
    spec = DatasetSpec.model_validate({"uri": "pvc://claim/set", "evalFraction": 0.25})
    prepared = datasets.prepare(spec, tmp_path / "out")
    s = prepared.summary
    assert s.total_rows == 41 and s.train_rows + s.eval_rows == 41 and s.eval_rows > 0
    assert s.pii_redactions == {"email": 1}
    assert any("[EMAIL]" in e.prompt for e in prepared.train + prepared.held_out)
    assert s.held_out_uri == f"file://{(tmp_path / 'out' / 'held_out.jsonl').resolve()}"


@pytest.mark.parametrize(("engine", "ip_redacted"), [("presidio", True), ("regex", False)])
def test_the_summary_says_which_scrubber_ran_and_that_names_were_not_detected(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str, ip_redacted: bool) -> None:
    monkeypatch.setattr(pii, "_scrubber", None)  # the process's scrubber is built once: build it under this env
    monkeypatch.setenv(pii.ENGINE_ENV, engine)
    data = [*rows(20), {"prompt": "Anna Schmidt at 10.20.30.40, a@b.com", "completion": "x"}]
    prepared = datasets.prepare(spec_for(write(tmp_path / "d.jsonl", data)), tmp_path / "out")
    s = prepared.summary
    assert s.pii_engine == engine
    assert s.pii_names is not None and s.pii_names.startswith("off: ")  # no spaCy model can be installed here
    assert s.pii_redactions == ({"email": 1, "ip": 1} if ip_redacted else {"email": 1})
    scrubbed = next(e.prompt for e in prepared.train + prepared.held_out if "Anna" in e.prompt)
    assert scrubbed == ("Anna Schmidt at [IP], [EMAIL]" if ip_redacted else "Anna Schmidt at 10.20.30.40, [EMAIL]")


def test_no_scrubber_named_when_scrubbing_is_off(tmp_path: Path) -> None:
    s = datasets.prepare(spec_for(write(tmp_path / "d.jsonl", rows(20)), piiScrub=False), tmp_path / "out").summary
    assert s.pii_engine is None and s.pii_names is None and s.pii_redactions == {}


def test_split_and_hash_are_stable_under_reorder_and_append(tmp_path: Path) -> None:
    base = rows(60)
    first = datasets.prepare(spec_for(write(tmp_path / "a.jsonl", base)), tmp_path / "a")
    reordered = datasets.prepare(spec_for(write(tmp_path / "b.jsonl", base[::-1])), tmp_path / "b")
    assert reordered.summary.hash == first.summary.hash
    assert (tmp_path / "a" / "held_out.jsonl").read_bytes().count(b"\n") == first.summary.eval_rows
    assert reordered.keys == first.keys

    appended = datasets.prepare(spec_for(write(tmp_path / "c.jsonl", base + rows(40, start=60))), tmp_path / "c")
    assert appended.summary.hash != first.summary.hash
    assert set(first.keys["held_out"]) <= set(appended.keys["held_out"])
    assert set(first.keys["train"]) <= set(appended.keys["train"])


def test_chat_and_system_fields(tmp_path: Path) -> None:
    chat = [{"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}"}]} for i in range(10)]
    prepared = datasets.prepare(spec_for(write(tmp_path / "c.jsonl", chat), format="chat", evalFraction=0.5),
                                tmp_path / "out")
    example = (prepared.train + prepared.held_out)[0]
    assert example.system == "Be terse."
    assert example.prompt.startswith("user: q") and example.completion.startswith("a")


def test_extra_data_is_a_new_dataset_version_and_the_original_examples_keep_their_side(tmp_path: Path) -> None:
    original = spec_for(write(tmp_path / "data.jsonl", rows(60)))
    before = datasets.prepare(original, tmp_path / "before")
    extra = write(tmp_path / "feedback.jsonl", [*rows(20, start=1000), *rows(2)])  # 2 already in the dataset
    after = datasets.prepare(original, tmp_path / "after", extra_uris=[f"file://{extra}"])
    assert after.summary.added_rows == 22 and after.summary.total_rows == 82
    assert after.summary.duplicates_removed == before.summary.duplicates_removed + 2
    assert after.summary.hash != before.summary.hash
    assert set(before.keys["held_out"]) <= set(after.keys["held_out"])
    assert set(before.keys["train"]) <= set(after.keys["train"])
    assert len(after.train) + len(after.held_out) == 80
    assert before.summary.added_rows == 0


def test_extra_data_is_read_with_the_default_field_names(tmp_path: Path) -> None:
    renamed = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(30)]
    spec = spec_for(write(tmp_path / "data.jsonl", renamed), fields={"prompt": "question", "completion": "answer"})
    extra = write(tmp_path / "feedback.jsonl", rows(10, start=500))
    prepared = datasets.prepare(spec, tmp_path / "out", extra_uris=[f"file://{extra}"])
    assert prepared.summary.added_rows == 10
    assert any(e.prompt == "Invoice 500 from Acme" for e in prepared.train + prepared.held_out)


def test_extra_data_for_a_format_it_cannot_extend_is_a_config_error(tmp_path: Path) -> None:
    data = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(10)]
    spec = spec_for(write(tmp_path / "pref.jsonl", data), format="preference")
    with pytest.raises(JobError) as e:
        datasets.prepare(spec, tmp_path / "out", extra_uris=[f"file://{write(tmp_path / 'f.jsonl', rows(3))}"])
    assert e.value.code == ExitCode.CONFIG_INVALID and "--extra-data" in str(e.value)
