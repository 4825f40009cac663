"""What a benchmark run produces: figures per scenario, and the issue's targets judged against them.

A figure is keyed by `(scenario id, name)`; a target names one figure, a comparison and a threshold. A
figure that could not be measured has the value `None` and says why in its note, and every target on it is
"not measured" — never met by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "partial", "failed", "not implemented"]
Verdict = Literal["met", "not met", "not measured"]


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured number (or the reason there is none)."""

    name: str
    """Stable key, unique within its scenario (`seal_300.seal_many`); targets refer to it."""
    label: str
    """What a reader sees in the table."""
    value: float | None
    unit: str
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    """Raw samples and secondary numbers; JSON only."""


@dataclass(slots=True)
class ScenarioResult:
    """The outcome of one scenario."""

    number: int
    id: str
    title: str
    status: Status
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def add(self, figure: Figure) -> Figure:
        """Record `figure`.

        Raises:
            ValueError: a figure of that name is already recorded.
        """
        if any(f.name == figure.name for f in self.figures):
            raise ValueError(f"figure {figure.name!r} recorded twice in scenario {self.id!r}")
        self.figures.append(figure)
        return figure

    def value(self, name: str) -> float | None:
        """The value of figure `name`, `None` when absent or not measured."""
        for figure in self.figures:
            if figure.name == name:
                return figure.value
        return None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """`numerator / denominator`, or `None` when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


@dataclass(frozen=True, slots=True)
class Target:
    """A goal, on one figure of one scenario."""

    label: str
    scenario: str
    figure: str
    op: Literal[">=", "<="]
    threshold: float
    unit: str

    def judge(self, value: float | None) -> Verdict:
        """Met, not met, or not measured (`value` is `None`)."""
        if value is None:
            return "not measured"
        met = value >= self.threshold if self.op == ">=" else value <= self.threshold
        return "met" if met else "not met"


@dataclass(frozen=True, slots=True)
class Judgement:
    """A target with the figure it was judged on."""

    target: Target
    value: float | None
    verdict: Verdict


def judge_all(targets: tuple[Target, ...], results: list[ScenarioResult]) -> list[Judgement]:
    """Judge every target against the figures of `results` (a missing scenario: not measured)."""
    by_id = {result.id: result for result in results}
    judgements = []
    for target in targets:
        result = by_id.get(target.scenario)
        value = None if result is None else result.value(target.figure)
        judgements.append(Judgement(target, value, target.judge(value)))
    return judgements


# The targets, as ratios and figures of the same run on the same machine.
TARGETS: tuple[Target, ...] = (
    Target("end-to-end ÷ slowest stage ceiling", "e2e", "ratio_slowest_stage", ">=", 0.8, "x"),
    Target("end-to-end ÷ naive pipeline", "e2e", "ratio_naive", ">=", 10, "x"),
    Target("end-to-end ÷ peer (explicit CSFLE)", "e2e", "ratio_peer", ">=", 10, "x"),
    Target("seal ÷ raw AESGCM (300 B)", "seal", "ratio_raw_300", ">=", 0.5, "x"),
    Target("seal ÷ MongoDB explicit encryption (300 B)", "seal", "ratio_csfle_300", ">=", 10, "x"),
    Target("encryptor peak RSS", "e2e", "encryptor_peak_rss_mb", "<=", 250, "MB"),
    Target("importer peak RSS, 1M lines", "producers", "importer_peak_rss_mb", "<=", 150, "MB"),
    Target(
        "gateway events/s (100-event requests, 16 clients)",
        "producers",
        "gateway_events_per_s",
        ">=",
        20_000,
        "events/s",
    ),
    Target("key service 1000-key p99", "keyservice", "thousand_keys_p99_ms", "<=", 50, "ms"),
    Target("replay of 1,000 events among 1M documents", "replay", "replay_large_s", "<=", 1.0, "s"),
    Target("replay time, 1M ÷ 10k documents", "replay", "replay_growth", "<=", 3.0, "x"),
)
