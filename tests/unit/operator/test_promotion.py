"""The champion gate as a table: baseline margin, champion margin, direction, held-out set."""

from __future__ import annotations

import pytest

from tuneloop.api.results import ChampionScore
from tuneloop.operator.logic.promotion import Champion, GateInput, decide_promotion, improvement, on_candidate_data

H = "h" * 64


def gate(metric="exact_match", cand=0.8, base=0.5, champ=None, min_base=0.0, min_champ=0.0, required=True,
         cand_hash=H, version="5") -> GateInput:
    return GateInput(metric=metric, candidate_version=version, candidate=cand, candidate_dataset_hash=cand_hash,
                     baseline=base, baseline_required=required, min_improvement=min_base,
                     min_improvement_over_champion=min_champ, champion=champ)


CASES = {
    "first version beats baseline": (gate(), True, "no champion yet"),
    "equal to baseline is not better": (gate(cand=0.5), False, "missed by"),
    "short of the minimum baseline margin": (gate(cand=0.55, min_base=0.1), False, "missed by 0.05"),
    "exactly the minimum margin passes": (gate(cand=0.6, min_base=0.1), True, "beat prompt baseline"),
    "beats champion": (gate(champ=Champion("3", 0.7, H)), True, "beat champion v3"),
    "ties champion": (gate(cand=0.7, champ=Champion("3", 0.7, H)), False, "missed by"),
    "worse than champion by 0.1": (gate(cand=0.7, champ=Champion("3", 0.8, H)), False, "missed by 0.1"),
    "short of the champion margin": (gate(cand=0.75, champ=Champion("3", 0.7, H), min_champ=0.1), False,
                                     "missed by 0.05"),
    "champion on another held-out set": (gate(champ=Champion("3", 0.1, "x" * 64)), False, "different held-out"),
    "champion without a recorded metric": (gate(champ=Champion("3", None, H)), False, "no recorded"),
    "candidate is already champion": (gate(champ=Champion("5", 0.9, H)), True, "already holds"),
    "candidate metric missing": (gate(cand=None), False, "no exact_match"),
    "baseline disabled": (gate(base=None, required=False), True, "no champion yet"),
    "baseline required but missing": (gate(base=None, required=True), False, "prompt baseline has no"),
    "loss lower wins over baseline": (gate(metric="loss", cand=0.4, base=0.9), True, "beat prompt baseline"),
    "loss higher loses to baseline": (gate(metric="loss", cand=1.0, base=0.9), False, "missed by"),
    "loss lower beats champion": (gate(metric="loss", cand=0.4, base=0.9, champ=Champion("3", 0.5, H)), True,
                                  "beat champion"),
    "loss higher loses to champion": (gate(metric="loss", cand=0.6, base=0.9, champ=Champion("3", 0.5, H)), False,
                                      "vs champion v3"),
    # continued pretraining: held-out perplexity, lower is better
    "perplexity lower wins over base": (gate(metric="perplexity", cand=12.0, base=30.0), True, "baseline 30 by 18"),
    "perplexity higher loses to base": (gate(metric="perplexity", cand=31.0, base=30.0), False, "missed by"),
    "perplexity lower beats champion": (gate(metric="perplexity", cand=11.0, base=30.0, champ=Champion("3", 12.0, H)),
                                        True, "beat champion v3 12 by 1"),
    # DPO: preference accuracy, higher is better; the base (its own reference) scores 0.5
    "preference accuracy over chance": (gate(metric="preference_accuracy", cand=0.8, base=0.5), True, "by 0.3"),
    "preference accuracy at chance": (gate(metric="preference_accuracy", cand=0.5, base=0.5), False, "missed by"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_decide_promotion(case: str) -> None:
    given, promoted, says = CASES[case]
    decision = decide_promotion(given)
    assert decision.promoted is promoted, decision.message
    assert says in decision.message
    assert decision.metric == given.metric and decision.candidate == given.candidate


def test_improvement_direction() -> None:
    assert improvement("exact_match", 0.8, 0.5) == pytest.approx(0.3)
    assert improvement("loss", 0.5, 0.8) == pytest.approx(0.3)
    assert improvement("loss", 0.8, 0.5) == pytest.approx(-0.3)


def test_records_previous_champion() -> None:
    decision = decide_promotion(gate(champ=Champion("3", 0.7, H)))
    assert (decision.champion_version, decision.champion, decision.baseline) == ("3", 0.7, 0.5)


OLD = "o" * 64  # the champion's own held-out set (before the retrain's feedback was added)
RESCORED_CASES = {
    # (champion as recorded, the job's re-score, metric) -> the champion the gate compares with
    "re-scored on the candidate's set": (Champion("3", 0.95, OLD), ChampionScore(version="3", dataset_hash=H,
                                         metrics={"exact_match": 0.6}), Champion("3", 0.6, H, rescored=True)),
    "re-score of another version (alias moved)": (Champion("4", 0.95, OLD), ChampionScore(
        version="3", dataset_hash=H, metrics={"exact_match": 0.6}), Champion("4", 0.95, OLD)),
    "re-score without the gate's metric": (Champion("3", 0.95, OLD), ChampionScore(
        version="3", dataset_hash=H, metrics={"loss": 0.6}), Champion("3", 0.95, OLD)),
    "no re-score": (Champion("3", 0.95, OLD), None, Champion("3", 0.95, OLD)),
}


@pytest.mark.parametrize("case", list(RESCORED_CASES), ids=list(RESCORED_CASES))
def test_on_candidate_data(case: str) -> None:
    recorded, rescored, expected = RESCORED_CASES[case]
    assert on_candidate_data(recorded, rescored, "exact_match") == expected


def test_a_retrain_on_a_new_dataset_version_is_compared_with_the_champion_re_scored_on_it() -> None:
    # The champion's recorded 0.95 was on its own set; on the new set (with the drifted feedback) it scores 0.6.
    recorded = Champion("3", 0.95, OLD)
    assert not decide_promotion(gate(cand=0.9, champ=recorded)).promoted  # without the re-score: other data
    rescored = on_candidate_data(recorded, ChampionScore(version="3", dataset_hash=H, metrics={"exact_match": 0.6}),
                                 "exact_match")
    decision = decide_promotion(gate(cand=0.9, champ=rescored))
    assert decision.promoted and "champion v3 0.6 (re-scored on this held-out set) by 0.3" in decision.message
    worse = decide_promotion(gate(cand=0.55, base=0.1, champ=rescored))
    assert not worse.promoted and "vs champion v3 (re-scored on this held-out set) 0.6" in worse.message
