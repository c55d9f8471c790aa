"""Every way the training job can fail on purpose: one exception type carrying a reason (the
CamelCase word the controller puts into its condition), a distinct exit code, and a message that names
the file, row and field and says what to do. The table below is the contract with the controller,
which reads the exit code (or the `reason` of the Failed JobResult) to decide whether a retry helps:
data and config errors never get better by retrying; training and tracking errors may.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes of `python -m tuneloop.jobs.train` (argparse usage errors exit 2)."""

    OK = 0
    INTERNAL = 1  # a bug or an unexpected exception; the traceback is in the log
    USAGE = 2  # argparse: unknown or missing command-line arguments
    CONFIG_INVALID = 10  # the spec does not parse or is inconsistent
    METHOD_NOT_IMPLEMENTED = 11  # no method now; the number stays reserved for the controller's table
    RESOURCES_UNAVAILABLE = 12  # e.g. qlora without a GPU or without bitsandbytes
    DATA_NOT_FOUND = 20  # dataset URI points at nothing
    DATA_EMPTY = 21  # the file (or folder) holds no rows
    DATA_ENCODING = 22  # bytes that are not UTF-8, or a line that is not JSON
    DATA_INVALID = 23  # a row misses a field or has the wrong type
    DATA_ALL_DUPLICATES = 24  # deduplication left fewer than two examples
    EVAL_SET_EMPTY = 25  # the hash split put no example (or every example) in the held-out set
    MODEL_NOT_FOUND = 30  # base model URI does not resolve to a loadable model
    TRAINING_FAILED = 40  # Ray Train reported a failure
    TRACKING_FAILED = 50  # MLflow refused or could not be reached


REASONS: dict[ExitCode, str] = {
    ExitCode.INTERNAL: "InternalError",
    ExitCode.USAGE: "UsageError",
    ExitCode.CONFIG_INVALID: "ConfigInvalid",
    ExitCode.METHOD_NOT_IMPLEMENTED: "MethodNotImplemented",
    ExitCode.RESOURCES_UNAVAILABLE: "ResourcesUnavailable",
    ExitCode.DATA_NOT_FOUND: "DataNotFound",
    ExitCode.DATA_EMPTY: "DataEmpty",
    ExitCode.DATA_ENCODING: "DataEncodingInvalid",
    ExitCode.DATA_INVALID: "DataInvalid",
    ExitCode.DATA_ALL_DUPLICATES: "DataAllDuplicates",
    ExitCode.EVAL_SET_EMPTY: "EvalSetEmpty",
    ExitCode.MODEL_NOT_FOUND: "ModelNotFound",
    ExitCode.TRAINING_FAILED: "TrainingFailed",
    ExitCode.TRACKING_FAILED: "TrackingFailed",
}

# Retrying cannot fix these: the controller marks the run Failed at once.
PERMANENT: frozenset[ExitCode] = frozenset({
    ExitCode.USAGE, ExitCode.CONFIG_INVALID, ExitCode.METHOD_NOT_IMPLEMENTED, ExitCode.RESOURCES_UNAVAILABLE,
    ExitCode.DATA_NOT_FOUND, ExitCode.DATA_EMPTY, ExitCode.DATA_ENCODING, ExitCode.DATA_INVALID,
    ExitCode.DATA_ALL_DUPLICATES, ExitCode.EVAL_SET_EMPTY, ExitCode.MODEL_NOT_FOUND,
})

MAX_MESSAGE_CHARS = 2000


class JobError(Exception):
    """A failure the job understands: carries its exit code, reason and an actionable message."""

    def __init__(self, code: ExitCode, message: str) -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 15] + " …(truncated)"
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[JobError], tuple[ExitCode, str]]:
        # Ray pickles a worker's exception to the driver; keep the code, not just the text.
        return (JobError, (self.code, self.message))

    @property
    def reason(self) -> str:
        return REASONS[self.code]

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"

