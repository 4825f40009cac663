"""Figures, ratios and target verdicts."""

from __future__ import annotations

import pytest

from bench.results import Figure, ScenarioResult, Target, judge_all, ratio


def test_a_ratio_needs_both_figures_and_a_positive_denominator() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(3.0, None) is None
    assert ratio(3.0, 0.0) is None


@pytest.mark.parametrize(
    ("op", "value", "verdict"),
    [
        (">=", 0.5, "met"),
        (">=", 0.49, "not met"),
        ("<=", 50.0, "met"),
        ("<=", 50.01, "not met"),
        (">=", None, "not measured"),
        ("<=", None, "not measured"),
    ],
)
def test_a_target_is_met_not_met_or_not_measured(op: str, value: float | None, verdict: str) -> None:
    threshold = 0.5 if op == ">=" else 50.0
    target = Target("t", "seal", "f", op, threshold, "x")  # type: ignore[arg-type]
    assert target.judge(value) == verdict


def test_judging_finds_the_figure_of_the_right_scenario() -> None:
    seal = ScenarioResult(1, "seal", "Seal", "ok")
    seal.add(Figure("f", "f", 2.0, "x"))
    other = ScenarioResult(2, "keyservice", "Keys", "ok")
    other.add(Figure("f", "f", 0.0, "x"))
    targets = (Target("a", "seal", "f", ">=", 1, "x"), Target("b", "e2e", "f", ">=", 1, "x"))
    judgements = judge_all(targets, [seal, other])
    assert [(j.value, j.verdict) for j in judgements] == [(2.0, "met"), (None, "not measured")]


def test_a_figure_name_is_recorded_once_per_scenario() -> None:
    result = ScenarioResult(1, "seal", "Seal", "ok")
    result.add(Figure("f", "f", 1.0, "x"))
    with pytest.raises(ValueError, match="recorded twice"):
        result.add(Figure("f", "again", 2.0, "x"))
    assert result.value("f") == 1.0
    assert result.value("missing") is None
