"""The soak's figures, the checks that make it pass or fail, and how they are printed."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from shell.soak import replica_faults
from shell.soak.canaries import PlaceCount
from shell.soak.faults import FaultResult

# Places where a canary must never be found; the others are reported as they are. The broker's data
# directory and its dead letters are clean since transport sealing (contract §4).
MUST_BE_CLEAN = (
    "mongodb_data",
    "rabbitmq_data",
    "dead_letters",
    "keystore_redis",
    "logs",
    "metrics",
    "rejected_files",
    "http_errors",
    "keystore_backup",
    "shred_ledger",
)


@dataclass
class SoakReport:
    """Everything a soak run measured."""

    seed: int
    rate: float
    duration_s: float
    traffic_s: float = 0.0
    drain_s: float = 0.0
    accepted: int = 0
    accepted_gateway: int = 0
    accepted_importer: int = 0
    stored: int = 0
    stored_accepted: int = 0
    missing: list[str] = field(default_factory=list)
    extra_attempted: int = 0
    extra_unknown: list[str] = field(default_factory=list)
    opened: int = 0
    matched: int = 0
    failed_to_open: list[str] = field(default_factory=list)
    rejected_gateway: int = 0
    rejected_importer: int = 0
    resubmitted: int = 0
    duplicates_seen: int = 0
    importer_files: int = 0
    importer_resumes: int = 0
    dead_letters: int = 0
    dead_letters_accepted: list[str] = field(default_factory=list)
    faults: list[FaultResult] = field(default_factory=list)
    restore: dict[str, Any] = field(default_factory=dict)
    canaries_planted: int = 0
    canaries: dict[str, PlaceCount] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return not self.problems

    def judge(self) -> None:
        """Fill `problems` from the figures."""
        checks = [
            (not self.missing, f"{len(self.missing)} accepted events are not stored"),
            (not self.extra_unknown, f"{len(self.extra_unknown)} stored events were never sent"),
            (not self.failed_to_open, f"{len(self.failed_to_open)} documents failed to open"),
            (self.matched == self.stored_accepted, "opened events differ from what was sent"),
            (
                not self.dead_letters_accepted,
                f"{len(self.dead_letters_accepted)} accepted events dead-lettered",
            ),
            (self.accepted > 0, "nothing was accepted"),
        ]
        self.problems += [message for ok, message in checks if not ok]
        self.problems += [
            f"fault {r.fault.kind} at +{r.started_s:.0f} s: {r.error}" for r in self.faults if r.error
        ]
        self.problems += replica_faults.problems(
            (r.fault.kind, r.started_s, r.disruption_s) for r in self.faults
        )
        for place in MUST_BE_CLEAN:
            found = self.canaries.get(place)
            if found is not None and found.occurrences:
                self.problems.append(f"{found.occurrences} canary occurrences in {place}")

    def by_kind(self) -> dict[str, dict[str, float | int | None]]:
        """Per fault kind: how often, the longest recovery (stored again, caught up) and disruption."""
        kinds: dict[str, dict[str, float | int | None]] = {}
        for result in self.faults:
            entry = kinds.setdefault(
                result.fault.kind,
                {"count": 0, "stored_again_s": None, "caught_up_s": None, "disruption_s": None},
            )
            entry["count"] = int(entry["count"] or 0) + 1
            for name, value in (
                ("stored_again_s", result.stored_again_s),
                ("caught_up_s", result.caught_up_s),
                ("disruption_s", result.disruption_s),
            ):
                if value is not None:
                    entry[name] = max(float(entry[name] or 0.0), value)
        return kinds

    def lines(self) -> list[str]:
        """The report as text."""
        out = [
            f"soak: seed {self.seed}, {self.rate:g} events/s offered for {self.traffic_s:.0f} s "
            f"(planned {self.duration_s:.0f} s); drained {self.drain_s:.1f} s after traffic stopped",
            f"events: accepted {self.accepted} (gateway {self.accepted_gateway}, importer "
            f"{self.accepted_importer}), stored {self.stored} ({self.stored_accepted} of them accepted), "
            f"missing {len(self.missing)}, opened {self.opened}, identical to what was sent {self.matched}, "
            f"failed to open {len(self.failed_to_open)}",
            f"rejected: gateway {self.rejected_gateway} (422), importer {self.rejected_importer} lines; "
            f"resubmitted after 503 {self.resubmitted}; duplicates found already stored by the encryptors "
            f"running at the end {self.duplicates_seen}; stored but never acknowledged (partial publish "
            f"before a 503) "
            f"{self.extra_attempted}",
            f"importer: {self.importer_files} files, {self.importer_resumes} resumed after a lost broker",
            f"dead letters: {self.dead_letters} (accepted events among them: {len(self.dead_letters_accepted)})",
            f"faults injected: {len(self.faults)}",
        ]
        for kind, entry in sorted(self.by_kind().items()):
            out.append(
                f"  {kind:<19} x{entry['count']}: longest recovery after the fault ended — stored again "
                f"{_s(entry['stored_again_s'])}, caught up {_s(entry['caught_up_s'])}; longest disruption "
                f"(fault + recovery) {_s(entry['disruption_s'])}"
            )
        if self.restore:
            out.append(
                "key-store restore drill: "
                + ", ".join(f"{k} {v}" for k, v in self.restore.items() if not isinstance(v, list))
            )
        out.append(
            f"canaries planted: {self.canaries_planted}; found (occurrences / distinct / files scanned):"
        )
        for place, count in self.canaries.items():
            rule = "must be 0" if place in MUST_BE_CLEAN else "reported"
            out.append(
                f"  {place:<16} {count.occurrences:>6} / {len(count.distinct):>4} / {count.files:>5}  ({rule})"
            )
        out.append(
            "PASS: zero loss, every check held" if self.passed else "FAIL: " + "; ".join(self.problems)
        )
        return out

    def to_json(self) -> str:
        """The report as JSON (lists of ids cut to 20)."""
        data = asdict(self)
        for name in ("missing", "extra_unknown", "failed_to_open", "dead_letters_accepted"):
            data[name] = data[name][:20]
        data["canaries"] = {
            p: {"occurrences": c.occurrences, "distinct": len(c.distinct), "files": c.files}
            for p, c in self.canaries.items()
        }
        data["by_kind"] = self.by_kind()
        for fault, result in zip(data["faults"], self.faults, strict=True):
            fault["disruption_s"] = result.disruption_s
        data["passed"] = self.passed
        return json.dumps(data, indent=2, default=str)


def _s(value: float | int | None) -> str:
    return "—" if value is None else f"{float(value):.1f} s"
