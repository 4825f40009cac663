"""The producers' Prometheus metrics. Labels are status codes and reason codes only: never a user id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PUBLISH_SECONDS = Histogram(
    "pulseseal_publish_confirm_seconds",
    "Time from publishing a message to the broker's confirm.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PUBLISH_FAILURES = Counter(
    "pulseseal_publish_failures_total",
    "Messages the broker did not confirm, by reason (unavailable, timeout, nacked, returned, sealing).",
    ["reason"],
)
BROKER_CONNECTED = Gauge(
    "pulseseal_publisher_connected", "1 while the publisher holds an open channel to RabbitMQ."
)

GATEWAY_REQUESTS = Counter(
    "pulseseal_gateway_requests_total", "Answered `POST /v1/events` requests, by status code.", ["status"]
)
GATEWAY_EVENTS_ACCEPTED = Counter(
    "pulseseal_gateway_events_accepted_total", "Events answered 202 (every one confirmed by the broker)."
)
GATEWAY_EVENTS_REFUSED = Counter(
    "pulseseal_gateway_events_refused_total", "Events in requests answered 422 (nothing published)."
)
GATEWAY_REQUEST_SECONDS = Histogram(
    "pulseseal_gateway_request_seconds",
    "Time to answer `POST /v1/events`, body reading and broker confirms included.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
