"""Training data: where it lives (file://, pvc://, s3://), reading JSONL and Parquet, checking every
row against the spec's field mapping, and `prepare()` — validation, PII scrubbing, deduplication, the
hash split and the frozen held-out file — which turns a DatasetSpec into a DatasetSummary.

Every failure is a JobError naming the file, the line (JSONL) or row (Parquet) and the field, with a
distinct exit code per kind (jobs.errors). Reading is strict: one bad row fails the job, because a
silently skipped row changes the dataset hash and what the model learns.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneloop.api.finetune import DatasetSpec, DatasetSummary
from tuneloop.jobs import pii, prompts, splitting
from tuneloop.jobs.errors import ExitCode, JobError

PVC_ROOT_ENV = "TUNELOOP_PVC_ROOT"
DEFAULT_PVC_ROOT = "/mnt/pvc"
DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
MAX_REPORTED_ROWS = 5


@dataclass(frozen=True)
class Location:
    """A resolved URI: a pyarrow filesystem and a path on it."""

    uri: str
    filesystem: Any  # pyarrow.fs.FileSystem
    path: str


def local_path(uri: str) -> Path | None:
    """The local path of a file:// or pvc:// URI (pvc://claim/p maps to $TUNELOOP_PVC_ROOT/claim/p);
    None for remote schemes."""
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    if uri.startswith("pvc://"):
        rest = uri[len("pvc://"):]
        claim, _, sub = rest.partition("/")
        if not claim:
            raise JobError(ExitCode.CONFIG_INVALID, f"{uri}: pvc:// URIs look like pvc://<claim>/<path>")
        return Path(os.environ.get(PVC_ROOT_ENV, DEFAULT_PVC_ROOT)) / claim / sub
    if "://" not in uri:
        return Path(uri)
    return None


def resolve(uri: str) -> Location:
    """Turn a dataset URI into a filesystem and path. s3:// goes through pyarrow's S3 filesystem
    (credentials and endpoint from the usual AWS_* variables)."""
    from pyarrow import fs

    path = local_path(uri)
    if path is not None:
        return Location(uri, fs.LocalFileSystem(), str(path))
    if uri.startswith("s3://"):
        remote = uri[len("s3://"):].split("?", 1)[0]
        if not remote.partition("/")[0]:
            raise JobError(ExitCode.CONFIG_INVALID, f"{uri}: s3:// URIs look like s3://<bucket>/<key>")
        # Region and endpoint from the environment, never looked up: resolving a bucket's region is a
        # network call, and S3-compatible stores (MinIO, Ceph) need AWS_ENDPOINT_URL anyway.
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        filesystem = fs.S3FileSystem(region=region, endpoint_override=os.environ.get("AWS_ENDPOINT_URL") or None)
        return Location(uri, filesystem, remote)
    raise JobError(ExitCode.CONFIG_INVALID,
                   f"{uri}: unsupported dataset URI scheme; use file:///abs/path, pvc://claim/path or s3://bucket/key")


def data_files(location: Location) -> list[str]:
    """The data files at a location: the file itself, or every JSONL/Parquet file under a folder
    (sorted, so the read order is stable)."""
    from pyarrow import fs

    info = location.filesystem.get_file_info(location.path)
    if info.type == fs.FileType.NotFound:
        raise JobError(ExitCode.DATA_NOT_FOUND,
                       f"{location.uri}: no such file or folder ({location.path}); check spec.dataset.uri")
    if info.type == fs.FileType.File:
        return [location.path]
    selector = fs.FileSelector(location.path, recursive=True)
    files = sorted(i.path for i in location.filesystem.get_file_info(selector)
                   if i.type == fs.FileType.File and i.path.endswith(DATA_SUFFIXES))
    if not files:
        raise JobError(ExitCode.DATA_EMPTY, f"{location.uri}: the folder holds no .jsonl, .json or .parquet file")
    return files


@dataclass(frozen=True)
class Row:
    """One raw record and where it came from (file and 1-based line or row number)."""

    file: str
    number: int
    unit: str  # "line" (JSONL) or "row" (Parquet)
    data: Any

    @property
    def where(self) -> str:
        return f"{self.file} {self.unit} {self.number}"


def read_rows(location: Location) -> Iterator[Row]:
    """Every non-blank record of every data file, in order."""
    for path in data_files(location):
        if path.endswith(".parquet"):
            yield from _read_parquet(location, path)
        else:
            yield from _read_jsonl(location, path)


def _read_jsonl(location: Location, path: str) -> Iterator[Row]:
    with location.filesystem.open_input_stream(path) as f:
        raw = f.read()
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise JobError(ExitCode.DATA_ENCODING,
                           f"{path} line {number}: invalid UTF-8 at byte {e.start} of the line "
                           f"({line[max(0, e.start - 8):e.start + 8]!r}); re-encode the file as UTF-8") from e
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise JobError(ExitCode.DATA_INVALID,
                           f"{path} line {number}: not valid JSON ({e.msg} at column {e.colno}); "
                           "each line of a JSONL file must be one JSON object") from e
        yield Row(path, number, "line", data)


def _read_parquet(location: Location, path: str) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, filesystem=location.filesystem)
    except Exception as e:
        raise JobError(ExitCode.DATA_ENCODING, f"{path}: not a readable Parquet file: {e}") from e
    for number, data in enumerate(table.to_pylist(), start=1):
        yield Row(path, number, "row", data)


@dataclass(frozen=True)
class Example:
    """One training example in the shape every format is reduced to."""

    prompt: str
    completion: str
    system: str | None = None
    rejected: str | None = None  # preference format only
    origin: str = ""

    def content(self) -> dict[str, str | None]:
        return {"system": self.system, "prompt": self.prompt, "completion": self.completion,
                "rejected": self.rejected}


def _string_field(data: dict[str, Any], name: str, optional: bool = False) -> str | None:
    if name not in data or data[name] is None:
        if optional:
            return None
        raise ValueError(f"field {name!r} is missing")
    value = data[name]
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} must be a string, got {type(value).__name__}")
    if not value.strip() and not optional:
        raise ValueError(f"field {name!r} is empty")
    return value


def to_example(row: Row, spec: DatasetSpec) -> Example:
    """Check one row against the format and field mapping; ValueError says which field is wrong."""
    data = row.data
    if not isinstance(data, dict):
        raise ValueError(f"record must be a JSON object, got {type(data).__name__}")
    f = spec.fields
    if spec.format in ("instruction", "completion"):
        system = _string_field(data, f.system, optional=True) if spec.format == "instruction" and f.system else None
        return Example(prompt=_string_field(data, f.prompt) or "", completion=_string_field(data, f.completion) or "",
                       system=system, origin=row.where)
    if spec.format == "text":  # continued pretraining: one document, no prompt
        return Example(prompt="", completion=_string_field(data, f.text) or "", origin=row.where)
    if spec.format == "preference":
        return Example(prompt=_string_field(data, f.prompt) or "", completion=_string_field(data, f.chosen) or "",
                       rejected=_string_field(data, f.rejected) or "", origin=row.where)
    messages = data.get(f.messages)
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"field {f.messages!r} must be a non-empty list of {{role, content}} messages")
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise ValueError(f"field {f.messages!r}[{i}] must be an object with string role and content")
    if messages[-1]["role"] != "assistant":
        raise ValueError(f"field {f.messages!r}: the last message must have role 'assistant' (the target)")
    system = "\n".join(m["content"] for m in messages[:-1] if m["role"] == "system") or None
    turns = [m for m in messages[:-1] if m["role"] != "system"]
    if not turns:
        raise ValueError(f"field {f.messages!r}: no user message before the final assistant message")
    return Example(prompt=prompts.chat_to_prompt(turns), completion=messages[-1]["content"], system=system,
                   origin=row.where)


def load_examples(spec: DatasetSpec) -> list[Example]:
    """Read and validate every row; fail on the first bad rows (up to five are named)."""
    location = resolve(spec.uri)
    examples: list[Example] = []
    problems: list[str] = []
    bad = 0
    for row in read_rows(location):
        try:
            examples.append(to_example(row, spec))
        except ValueError as e:
            bad += 1
            if len(problems) < MAX_REPORTED_ROWS:
                problems.append(f"{row.where}: {e}")
    total = len(examples) + bad
    if total == 0:
        raise JobError(ExitCode.DATA_EMPTY, f"{spec.uri}: no records (the file is empty or only blank lines)")
    if bad:
        mapping = {k: v for k, v in spec.fields.model_dump().items() if v is not None}
        raise JobError(ExitCode.DATA_INVALID,
                       f"{spec.uri}: {bad} of {total} records do not match format {spec.format!r} with field "
                       f"mapping {mapping}; first: " + "; ".join(problems)
                       + ". Fix the records or set spec.dataset.fields to the right names.")
    return examples


def scrub_example(example: Example, counts: Counter[str], scrubber: pii.Scrubber) -> Example:
    scrub = scrubber.scrub

    def clean(text: str | None) -> str | None:
        if text is None:
            return None
        out, found = scrub(text)
        counts.update(found)
        return out

    return Example(prompt=clean(example.prompt) or "", completion=clean(example.completion) or "",
                   system=clean(example.system), rejected=clean(example.rejected), origin=example.origin)


@dataclass
class Prepared:
    """What preparation produced: the two splits (sorted by key), their files and the summary."""

    train: list[Example]
    held_out: list[Example]
    train_path: Path
    held_out_path: Path
    summary: DatasetSummary
    keys: dict[str, list[str]] = field(default_factory=dict)


def _write_jsonl_atomic(path: Path, examples: Sequence[Example], keys: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for key, example in zip(keys, examples, strict=True):
            record = {"key": key, **{k: v for k, v in asdict(example).items() if v is not None}}
            f.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_prepared(path: Path) -> list[Example]:
    """Read a split written by `prepare` (train.jsonl or held_out.jsonl)."""
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            record.pop("key", None)
            out.append(Example(**record))
    return out


EXTRA_FORMATS = ("instruction", "completion", "chat")  # formats a prompt → completion example extends


def load_extra(spec: DatasetSpec, uris: Sequence[str]) -> list[Example]:
    """Examples added to the dataset (a retrain's labelled feedback): `{prompt, completion}` records, read
    with the default field names whatever spec.dataset.fields says, since tuneloop wrote them."""
    if uris and spec.format not in EXTRA_FORMATS:
        raise JobError(ExitCode.CONFIG_INVALID,
                       f"--extra-data adds prompt/completion examples; spec.dataset.format {spec.format!r} "
                       f"cannot take them (only {', '.join(EXTRA_FORMATS)})")
    out: list[Example] = []
    for uri in uris:
        extra = DatasetSpec(uri=uri, format="instruction")
        out += load_examples(extra)
    return out


@dataclass(frozen=True)
class Loaded:
    """The dataset read and validated against the spec (the extra examples last), not yet prepared."""

    examples: list[Example]
    added: int


def load(spec: DatasetSpec, extra_uris: Sequence[str] = ()) -> Loaded:
    """Read and validate the dataset and the extra examples: every schema error, before anything slow."""
    added = load_extra(spec, extra_uris)
    return Loaded(load_examples(spec) + added, len(added))


def prepare(spec: DatasetSpec, out_dir: Path, extra_uris: Sequence[str] = (), loaded: Loaded | None = None
            ) -> Prepared:
    """Validate, scrub, dedupe, cap, split and write the dataset; the held-out file is what every
    later evaluation (and the drift monitor's reference) reads. `extra_uris` add examples (after the
    dataset's own, so a cap keeps the original first); each lands on the side of the split its key
    hashes to, like any other, so the original examples keep theirs. `loaded`: read by `load` already."""
    loaded = loaded or load(spec, extra_uris)
    examples = list(loaded.examples)
    total_rows = len(examples)
    counts: Counter[str] = Counter()
    scrubber = pii.scrubber() if spec.pii_scrub else None
    if scrubber is not None:
        examples = [scrub_example(e, counts, scrubber) for e in examples]
    removed = 0
    if spec.dedupe:
        examples, removed = splitting.dedupe(
            examples, [lambda e: splitting.exact_key(e.content()), lambda e: splitting.normalised_key(e.content())])
        if len(examples) < 2:
            raise JobError(ExitCode.DATA_ALL_DUPLICATES,
                           f"{spec.uri}: {total_rows} records but only {len(examples)} distinct after removing "
                           f"{removed} exact or normalised (case/whitespace) duplicates; at least 2 are needed")
    if spec.max_examples is not None:
        examples = examples[: spec.max_examples]

    train: list[tuple[str, Example]] = []
    held_out: list[tuple[str, Example]] = []
    for example in examples:
        key = splitting.exact_key(example.content())
        side = held_out if splitting.is_held_out(splitting.normalised_key(example.content()), spec.split_seed,
                                                 spec.eval_fraction) else train
        side.append((key, example))
    if not held_out or not train:
        empty = "held-out" if not held_out else "training"
        raise JobError(ExitCode.EVAL_SET_EMPTY,
                       f"{spec.uri}: the hash split of {len(examples)} examples with evalFraction "
                       f"{spec.eval_fraction} and splitSeed {spec.split_seed!r} left the {empty} set empty; "
                       "add examples or change spec.dataset.evalFraction")
    train.sort(key=lambda p: p[0])
    held_out.sort(key=lambda p: p[0])
    train_path, held_out_path = out_dir / "train.jsonl", out_dir / "held_out.jsonl"
    _write_jsonl_atomic(train_path, [e for _, e in train], [k for k, _ in train])
    _write_jsonl_atomic(held_out_path, [e for _, e in held_out], [k for k, _ in held_out])
    summary = DatasetSummary(
        hash=splitting.dataset_hash([k for k, _ in train], [k for k, _ in held_out]),
        total_rows=total_rows, train_rows=len(train), eval_rows=len(held_out), duplicates_removed=removed,
        pii_redactions=dict(sorted(counts.items())), pii_engine=scrubber.engine if scrubber else None,
        pii_names=scrubber.names if scrubber else None, held_out_uri=f"file://{held_out_path.resolve()}",
        added_rows=loaded.added,
    )
    return Prepared(train=[e for _, e in train], held_out=[e for _, e in held_out], train_path=train_path,
                    held_out_path=held_out_path, summary=summary,
                    keys={"train": [k for k, _ in train], "held_out": [k for k, _ in held_out]})
