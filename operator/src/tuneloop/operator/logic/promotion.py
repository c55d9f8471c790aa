"""The champion gate: does a candidate version earn the `champion` alias?

A candidate is promoted only if it beats the prompt baseline by `minImprovement` AND beats the
current champion by `minImprovementOverChampion` on the same frozen held-out set. "Same set" is
proven by the dataset hash the champion was registered with; a champion scored on other data cannot
be compared, so the candidate stays challenger and the message says why. Zero minimums still mean
strictly better. Metric direction comes from `finetune.LOWER_IS_BETTER` (loss, perplexity: lower wins).
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneloop.api import constants
from tuneloop.api.finetune import LOWER_IS_BETTER, PromotionStatus
from tuneloop.api.results import ChampionScore

# Differences this small are float noise, not an improvement.
EPSILON = 1e-9


@dataclass(frozen=True)
class Champion:
    """The version holding the champion alias before this decision."""

    version: str
    value: float | None  # its recorded metric (MLflow tag tuneloop.eval.<metric>)
    dataset_hash: str | None  # the held-out set it was scored on
    rescored: bool = False  # value was taken by the candidate's job on the candidate's held-out set


@dataclass(frozen=True)
class GateInput:
    metric: str
    candidate_version: str
    candidate: float | None
    candidate_dataset_hash: str | None
    baseline: float | None  # None when the baseline is disabled or was not scored
    baseline_required: bool
    min_improvement: float
    min_improvement_over_champion: float
    champion: Champion | None


def on_candidate_data(champion: Champion, rescored: ChampionScore | None, metric: str) -> Champion:
    """The champion as the gate should compare it: its figure on the candidate's held-out set when the job
    scored that very version there (a retrain's new dataset version), else its recorded figure. A score
    of another version (the alias moved while the job ran) or without the metric changes nothing."""
    if rescored is None or rescored.version != champion.version or metric not in rescored.metrics:
        return champion
    return Champion(champion.version, rescored.metrics[metric], rescored.dataset_hash, rescored=True)


def improvement(metric: str, value: float, reference: float) -> float:
    """How much `value` is better than `reference` (negative when worse), in metric units."""
    return reference - value if metric in LOWER_IS_BETTER else value - reference


def _beats(margin: float, minimum: float) -> bool:
    return margin > EPSILON and margin >= minimum - EPSILON


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def decide_promotion(gate: GateInput) -> PromotionStatus:
    """The decision and the numbers behind it; `promoted` selects champion, else challenger."""
    def decided(promoted: bool, message: str) -> PromotionStatus:
        return PromotionStatus(
            promoted=promoted,
            metric=gate.metric,
            candidate=gate.candidate,
            baseline=gate.baseline,
            champion=gate.champion.value if gate.champion else None,
            champion_version=gate.champion.version if gate.champion else None,
            message=message,
        )

    m = gate.metric
    if gate.champion is not None and gate.champion.version == gate.candidate_version:
        return decided(True, f"version {gate.candidate_version} already holds the {constants.ALIAS_CHAMPION} alias")
    if gate.candidate is None:
        return decided(False, f"the job reported no {m} for the candidate; it cannot be compared")
    parts: list[str] = []
    if gate.baseline is None:
        if gate.baseline_required:
            return decided(False, f"the prompt baseline has no {m}; it is required by spec.evaluation.baseline")
    else:
        margin = improvement(m, gate.candidate, gate.baseline)
        missed = _missed(m, gate.candidate, "prompt baseline", gate.baseline, margin, gate.min_improvement)
        if missed:
            return decided(False, missed)
        parts.append(f"beat prompt baseline {_fmt(gate.baseline)} by {_fmt(margin)}")
    champ = gate.champion
    if champ is None:
        parts.append("no champion yet")
        return decided(True, f"{m} {_fmt(gate.candidate)}: " + "; ".join(parts))
    if champ.value is None:
        return decided(False, f"champion version {champ.version} has no recorded {m} "
                              f"(tag {constants.TAG_EVAL_METRIC_PREFIX}{m}); it cannot be compared")
    if champ.dataset_hash is None or champ.dataset_hash != gate.candidate_dataset_hash:
        return decided(False, (
            f"champion version {champ.version} was scored on a different held-out set (dataset hash "
            f"{(champ.dataset_hash or 'unknown')[:12]} vs {(gate.candidate_dataset_hash or 'unknown')[:12]}); "
            "re-evaluate it on this data or move the alias by hand"
        ))
    margin = improvement(m, gate.candidate, champ.value)
    missed = _missed(m, gate.candidate, f"champion v{champ.version}" + (" (re-scored on this held-out set)"
                                                                        if champ.rescored else ""), champ.value, margin,
                     gate.min_improvement_over_champion)
    if missed:
        return decided(False, missed)
    where = " (re-scored on this held-out set)" if champ.rescored else ""
    parts.append(f"beat champion v{champ.version} {_fmt(champ.value)}{where} by {_fmt(margin)}")
    return decided(True, f"{m} {_fmt(gate.candidate)}: " + "; ".join(parts))


def _missed(metric: str, candidate: float, label: str, reference: float, margin: float, needed: float) -> str | None:
    """Why `candidate` does not beat `reference` by more than `needed`, or None when it does."""
    if _beats(margin, needed):
        return None
    return (
        f"{metric} {_fmt(candidate)} vs {label} {_fmt(reference)}: improvement {_fmt(margin)}, needed more "
        f"than {_fmt(needed)} (missed by {_fmt(max(needed, 0.0) - margin)})"
    )
