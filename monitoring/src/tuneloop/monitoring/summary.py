"""What one monitor check found, as plain typed data: the window's verdict, the drift share and every
column's drift score, the quality figures, the sample counts and where the Evidently report went.

Plain frozen dataclasses (no Evidently, no pandas), so the operator stores them in status and decides
on them without importing what computed them; `to_dict()` is JSON-ready.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

# InsufficientData: the window had fewer answered requests than minSamples, so nothing was concluded
# (never a false alarm). Otherwise Healthy, or Degraded when drift or a quality breach was found.
Verdict = Literal["InsufficientData", "Healthy", "Degraded"]
INSUFFICIENT_DATA: Verdict = "InsufficientData"
HEALTHY: Verdict = "Healthy"
DEGRADED: Verdict = "Degraded"


@dataclass(frozen=True)
class ColumnDrift:
    """One descriptor column's drift test. `score` is a p-value (drift when below `threshold`) or a
    distance (drift when at or above it), as `score_kind` says."""

    column: str
    method: str
    threshold: float
    score: float
    score_kind: str
    drifted: bool
    reference_mean: float | None = None
    current_mean: float | None = None


@dataclass(frozen=True)
class Quality:
    """Quality on the window. `values` holds every figure computed: label-free `json_valid` (and
    `schema_match` when the reference has a JSON shape) over all answered requests, labelled
    `exact_match` and `field_f1` over those with feedback. `value` is the spec's metric, None when it
    could not be measured (too little feedback)."""

    metric: str
    minimum: float
    value: float | None
    below_minimum: bool | None
    labelled_samples: int
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MonitorSummary:
    """One check of a traffic window against the reference."""

    verdict: Verdict
    samples: int
    reference_samples: int
    min_samples: int
    drift_share: float | None
    drift_share_threshold: float
    drift_detected: bool | None
    columns: tuple[ColumnDrift, ...]
    quality: Quality | None
    skipped_columns: dict[str, str] = field(default_factory=dict)
    drift_rows: int = 0  # current rows the drift test used (a seeded sample of `samples` when over the cap)
    report_path: str | None = None
    seconds: float = 0.0

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["drifted_columns"] = self.drifted_columns
        return out
