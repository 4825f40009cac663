"""The alert rules and the dashboard in infra/monitoring/ speak of metrics the services really export.

There is no Prometheus here to load them, so every expression is parsed down to the metric names it reads
and each name is looked up in the services' own registries (the encryptor's, the producers' and the key
service's), by the names Prometheus sees (`_total`, `_bucket`, ...)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry

# Imported for their side effect: the encryptor's and the producers' metrics register in REGISTRY.
import consumers.metrics  # noqa: F401
import producers.metrics  # noqa: F401
from keyservice.metrics import KeyServiceMetrics

MONITORING = Path(__file__).resolve().parents[2] / "infra" / "monitoring"
# Not ours: Prometheus' own scrape health, and RabbitMQ's rabbitmq_prometheus plugin.
EXTERNAL = frozenset({"up", "rabbitmq_queue_messages_ready"})
PROMQL_WORDS = frozenset(
    {"sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "irate", "histogram_quantile",
     "and", "or", "unless", "offset", "bool", "on", "ignoring", "group_left", "group_right", "abs", "le"}
)  # fmt: skip
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_names() -> set[str]:
    """Every series name the encryptor, the producers and the key service can expose."""
    names: set[str] = set()
    registries: list[CollectorRegistry] = [REGISTRY, KeyServiceMetrics().registry]
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (strings, label matchers, ranges and groupings removed)."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without)\s*\([^)]*\)", "", text)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", text))
    functions = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*\(", text))
    return {w for w in words - functions if w not in PROMQL_WORDS and not w[0].isdigit()}


def unknown_metrics(expr: str, known: set[str]) -> set[str]:
    return metric_names(expr) - known - EXTERNAL


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = json.loads((MONITORING / "dashboard.json").read_text())["panels"]
    return panels


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: str(rule["alert"]))
def test_every_alert_reads_exported_metrics_and_says_what_it_means(rule: dict[str, Any]) -> None:
    assert metric_names(rule["expr"]), "an alert with no metric cannot fire"
    assert unknown_metrics(rule["expr"], exported_names()) == set()
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["summary"]


@pytest.mark.parametrize("panel", _panels(), ids=lambda panel: str(panel["title"]))
def test_every_dashboard_panel_reads_exported_metrics(panel: dict[str, Any]) -> None:
    [target] = panel["targets"]
    assert metric_names(target["expr"])
    assert unknown_metrics(target["expr"], exported_names()) == set()


def test_the_rules_cover_shredded_access_dead_letters_refusals_queue_and_readiness() -> None:
    read = set().union(*(metric_names(rule["expr"]) for rule in _rules()))
    assert {
        "pulseseal_shredded_access_total",
        "pulseseal_dead_letters_total",
        "pulseseal_keyservice_refusals_total",
        "rabbitmq_queue_messages_ready",
        "up",
    } <= read


def test_the_lint_names_a_metric_nobody_exports() -> None:
    expr = 'sum by (caller) (rate(pulseseal_shreded_access_total{caller="x"}[5m])) > 0'
    assert unknown_metrics(expr, exported_names()) == {"pulseseal_shreded_access_total"}
