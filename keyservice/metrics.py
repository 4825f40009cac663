"""Prometheus metrics of the key service. Labels are endpoint, action and reason names only: never a user
id, a caller's token or a key."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class KeyServiceMetrics:
    """The service's counters and histograms, in their own registry (one per app, so tests can build many).

    Args:
        registry: Where to register; a fresh one by default.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.grants = Counter(
            "pulseseal_keyservice_keys_granted",
            "Data keys handed out or created, by action.",
            ["action"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "pulseseal_keyservice_refusals",
            "Requests or keys refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        # By caller, never by user: which caller keeps asking for erased data is the question an operator
        # can act on; the audit log names the users.
        self.shredded_access = Counter(
            "pulseseal_shredded_access",
            "Encrypt or decrypt requests that named a crypto-shredded user, by caller.",
            ["caller"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pulseseal_keyservice_request_duration_seconds",
            "Time to answer a request, by endpoint.",
            ["endpoint"],
            buckets=_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
