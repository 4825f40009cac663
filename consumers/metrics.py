"""The encryptor's Prometheus metrics. Labels are codes and dependency names only: never a user id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_SEALED = Counter("pulseseal_events_sealed_total", "Events sealed and newly written to MongoDB.")
DUPLICATES = Counter(
    "pulseseal_events_duplicate_total", "Events that were already stored (redelivery or re-import)."
)
BATCH_SIZE = Histogram(
    "pulseseal_batch_size_events",
    "Sealed documents per micro-batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
)
FLUSH_SECONDS = Histogram(
    "pulseseal_flush_seconds",
    "Time from the start of a flush to the durable write (keys, seal, insert, retries included).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
MESSAGES_IN_FLIGHT = Gauge("pulseseal_messages_in_flight", "Messages received and not yet acknowledged.")
MESSAGES_ACKED = Counter(
    "pulseseal_messages_acked_total", "Messages acknowledged after their events were done."
)
MESSAGES_REQUEUED = Counter(
    "pulseseal_messages_requeued_total", "Messages handed back to the broker for redelivery."
)
DEAD_LETTERS = Counter(
    "pulseseal_dead_letters_total", "Events and messages dead-lettered, by code.", ["code"]
)
TRANSIENT_FAILURES = Counter(
    "pulseseal_transient_failures_total", "Retried failures of a dependency.", ["dependency"]
)
KEY_CACHE_HITS = Counter("pulseseal_key_cache_hits_total", "Data keys served from the encryptor's cache.")
KEY_CACHE_MISSES = Counter("pulseseal_key_cache_misses_total", "Data keys fetched from the key service.")
SHREDS_FOLLOWED = Counter(
    "pulseseal_shreds_followed_total",
    "Shred notices from the key service after which the encryptor dropped that user's cached keys.",
)
