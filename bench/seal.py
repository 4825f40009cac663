"""Scenario 1 — seal throughput: our recipe against the raw AEAD and what users would use instead.

For each plaintext size (canonical JSON of exactly 300 bytes and 4 KiB), the same pre-built validated
events, spread over the same users, with every user's key already in memory, are run through:

- `seal`: `pulseseal.envelope.seal` per event, as the encryptor calls it (canonical JSON, associated data,
  fresh nonce, AES-256-GCM, the document dict);
- `seal_many`: the batch form (1000 events a call) with one clock read and one draw of randomness;
- `raw`: `AESGCM.encrypt` of the already-serialised canonical bytes with a fresh `os.urandom(12)` nonce
  and the same associated data, also precomputed — the ceiling for any AES-GCM recipe in Python;
- `json`: `canonical_json` alone, the serialisation that `seal` pays and `raw` does not;
- the competitors of `bench.competitors` (Tink, MongoDB explicit encryption, AWS Encryption SDK), which
  also get the canonical bytes ready-made.

The scenario also times the **transport envelope** (pulseseal/transit.py, contract §4) per broker message:
HPKE seal (what every producer pays) and open (what the encryptor pays) of a single event, a 100-event and
a 1000-event NDJSON batch, with the bytes it adds.

Each subject is timed in `repeats` runs of at least `min_seconds`, 1000 events per call, keeping the
call's 1000 outputs alive until it returns (a pipeline holds its batch until it is stored); the figure is
the median. Ratios compare `seal_many` (the same documents as `seal`, byte for byte) with the others.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

# The raw AEAD is the ceiling this scenario measures against; it is used here on benchmark data only,
# never on anything stored (the recipes in pulseseal/envelope.py and keyservice/wrapping.py are those).
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.competitors import AwsEsdk, MongoExplicit, Plain, TinkAead
from bench.harness import BenchContext
from bench.results import Figure, ScenarioResult, ratio
from bench.timing import Rate, measure_rate
from bench.traffic import make_workload
from bench.workload import sized_events
from pulseseal import transit
from pulseseal.envelope import DataKey, associated_data, seal, seal_many, to_millis
from pulseseal.settings import redact_url
from pulseseal.topology import NDJSON
from schemas import HealthEvent, canonical_json

SIZES = (300, 4096)
CHUNK = 1000

_LABELS = {
    "seal": "seal (per event, as the encryptor calls it)",
    "seal_many": "seal_many (batches of 1000)",
    "raw": "raw AESGCM.encrypt (ceiling)",
    "json": "canonical JSON only (part of seal)",
    "tink": "Tink AEAD (AES256_GCM)",
    "csfle": "MongoDB explicit encryption (Random)",
    "esdk": "AWS Encryption SDK, caching CMM (unsigned suite)",
    "esdk_signed": "AWS Encryption SDK, caching CMM (default suite, ECDSA P-384)",
}
_NOTES = {
    "seal": "includes serialising the event and building the document",
    "seal_many": "same documents as seal; includes serialising",
    "raw": "plaintext and associated data precomputed; nonce drawn per call",
    "tink": "plaintext precomputed; same associated data",
    "csfle": "plaintext precomputed; key cache never expires during the run",
    "esdk": "plaintext precomputed; encryption context {user_id}",
    "esdk_signed": "plaintext precomputed; a P-384 signature per message",
}


async def run(ctx: BenchContext, result: ScenarioResult) -> None:
    """Measure every subject at every size and the ratios of `seal_many` to the others."""
    # Fewer users in a quick run: every MongoDB data key costs a key vault read before timing, and on
    # FerretDB each read scans the key vault, so warming n keys takes time in n squared.
    users = [f"user-{n:05d}" for n in range(ctx.pick(quick=100, full=1000))]
    counts = {300: ctx.pick(quick=20_000, full=50_000), 4096: ctx.pick(quick=5_000, full=20_000)}
    min_seconds = ctx.pick(quick=0.25, full=1.0)
    repeats = ctx.pick(quick=3, full=7)
    result.notes.append(
        f"{len(users)} users; {counts[300]} events of 300 B and {counts[4096]} of 4 KiB (canonical JSON); "
        f"median of {repeats} runs of ≥ {min_seconds} s each, {CHUNK} events a call; keys in memory"
    )
    competitors = _Competitors(ctx, users, result)
    competitors.record(result)
    try:
        for size in SIZES:
            ctx.say(f"  seal: building {counts[size]} events of {size} B")
            rng = random.Random(ctx.seed + size)
            events = sized_events(counts[size], size, users, rng)
            rates = _measure_size(ctx, events, users, competitors, min_seconds, repeats)
            _record(result, size, rates, competitors.errors)
    finally:
        competitors.close()
    _measure_transport(ctx, result, users, min_seconds, repeats)


TRANSPORT_MESSAGES = (1, 100, 1000)


def _measure_transport(
    ctx: BenchContext, result: ScenarioResult, users: Sequence[str], min_seconds: float, repeats: int
) -> None:
    """Seal and open per message with the transport envelope, for messages of 1, 100 and 1000 events."""
    key = transit.TransportPrivateKey.generate()
    keys = {key.key_id: key}
    lines = make_workload(max(TRANSPORT_MESSAGES), len(users), ctx.seed).lines  # the realistic mix
    for events in TRANSPORT_MESSAGES:
        body = b"".join(line + b"\n" for line in lines[:events])
        bodies = [body] * 16
        sealed = [transit.seal(b, key.public_key, NDJSON) for b in bodies]
        ctx.say(f"  seal: transport envelope, {events}-event messages ({len(body):,} B)")

        def seal_all(chunk: Sequence[bytes]) -> list[transit.SealedMessage]:
            return [transit.seal(b, key.public_key, NDJSON) for b in chunk]

        def open_all(chunk: Sequence[transit.SealedMessage]) -> list[bytes]:
            return [transit.open_message(m, keys) for m in chunk]

        shown = f"{events}-event message ({len(body) / 1000:,.1f} KB)"
        for name, rate in (
            ("seal", measure_rate(seal_all, bodies, chunk=4, min_seconds=min_seconds, repeats=repeats)),
            ("open", measure_rate(open_all, sealed, chunk=4, min_seconds=min_seconds, repeats=repeats)),
        ):
            result.add(
                Figure(
                    f"transport_{name}_us_{events}",
                    f"transport {name} (HPKE MLKEM768-X25519, AES-256-GCM), {shown}",
                    round(1e6 / rate.per_s, 1),
                    "µs/message",
                    f"median of {rate.repeats} runs; {rate.per_cpu_s:,.0f} messages/s of CPU time",
                )
            )
        overhead = len(sealed[0].body) - len(body)
        result.add(
            Figure(
                f"transport_overhead_bytes_{events}",
                f"transport envelope size added, {shown}",
                overhead,
                "bytes",
                f"{100 * overhead / len(body):.2f} % of the plaintext",
            )
        )


class _Competitors:
    # Built once for both sizes (the MongoDB data keys take a while to create) and closed at the end.
    def __init__(self, ctx: BenchContext, users: Sequence[str], result: ScenarioResult) -> None:
        self.subjects: dict[str, Callable[[Sequence[Plain]], object]] = {}
        self.errors: dict[str, str] = {}
        self._mongo: MongoExplicit | None = None
        ctx.say(f"  seal: creating keys for {len(users)} users in Tink, MongoDB and the AWS SDK")
        builders: dict[str, Callable[[], Callable[[Sequence[Plain]], object]]] = {
            "tink": lambda: TinkAead(users).run,
            "csfle": lambda: self._open_mongo(ctx.settings.mongo_url, users).run,
            "esdk": lambda: AwsEsdk(users).run,
            "esdk_signed": lambda: AwsEsdk(users, signed=True).run,
        }
        for name, build in builders.items():
            try:
                self.subjects[name] = build()
            except Exception as exc:  # noqa: BLE001 - a competitor that cannot run here is reported, not fatal
                self.errors[name] = f"could not run here: {type(exc).__name__}: {exc}".splitlines()[0][:200]
        if "csfle" not in self.errors:
            result.notes.append(
                "MongoDB key vault: a collection on the local MongoDB-compatible server "
                f"({redact_url(ctx.settings.mongo_url)}); data key creation and lookups worked there"
            )

    def _open_mongo(self, url: str, users: Sequence[str]) -> MongoExplicit:
        self._mongo = MongoExplicit(url, users)
        return self._mongo

    def record(self, result: ScenarioResult) -> None:
        # Not a throughput: what the first use of each key cost, before timing (see MongoExplicit).
        result.add(
            Figure(
                "csfle_key_first_use_ms",
                "MongoDB explicit encryption: first use of a data key (key vault read), mean",
                None if self._mongo is None else round(self._mongo.first_use_ms, 2),
                "ms",
                self.errors.get(
                    "csfle", "one find on the key vault collection per key; excluded from the rates"
                ),
            )
        )

    def close(self) -> None:
        if self._mongo is not None:
            self._mongo.close()


def _measure_size(
    ctx: BenchContext,
    events: list[HealthEvent],
    users: Sequence[str],
    competitors: _Competitors,
    min_seconds: float,
    repeats: int,
) -> dict[str, Rate]:
    keys = {user: DataKey(user, 1, os.urandom(32)) for user in users}
    aeads = {user: AESGCM(os.urandom(32)) for user in users}
    plains = [
        Plain(
            event.user_id,
            canonical_json(event),
            associated_data(
                v=1,
                event_id=event.event_id,
                user_id=event.user_id,
                occurred_at_ms=to_millis(event.occurred_at),
                key_version=1,
            ),
        )
        for event in events
    ]
    now = datetime.now(UTC)

    # Every subject returns what it made for the whole chunk, so the chunk's outputs are alive together,
    # as a pipeline holds a batch until its `insert_many`. That is a real cost: with 4 KiB outputs the
    # allocator hands memory back to the system and faults it in again for every chunk (see
    # docs/benchmarks.md); a subject that dropped each output at once would not pay it.
    def per_event(chunk: Sequence[HealthEvent]) -> list[dict[str, Any]]:
        return [seal(event, keys[event.user_id], now=now) for event in chunk]

    def batched(chunk: Sequence[HealthEvent]) -> list[dict[str, Any]]:
        return seal_many(chunk, keys, now=now)

    def raw(chunk: Sequence[Plain]) -> list[bytes]:
        urandom = os.urandom
        return [
            aeads[item.user_id].encrypt(urandom(12), item.plaintext, item.associated_data) for item in chunk
        ]

    def serialise(chunk: Sequence[HealthEvent]) -> None:
        # Each plaintext dropped at once, as inside seal (only the ciphertext outlives the event).
        for event in chunk:
            canonical_json(event)

    on_events: dict[str, Callable[[Sequence[HealthEvent]], object]] = {
        "seal": per_event,
        "seal_many": batched,
        "json": serialise,
    }
    on_plains: dict[str, Callable[[Sequence[Plain]], object]] = {"raw": raw, **competitors.subjects}
    size = len(plains[0].plaintext)
    rates: dict[str, Rate] = {}
    for name, subject in on_events.items():
        ctx.say(f"  seal {size} B: {name}")
        rates[name] = measure_rate(subject, events, chunk=CHUNK, min_seconds=min_seconds, repeats=repeats)
    for name, subject_p in on_plains.items():
        ctx.say(f"  seal {size} B: {name}")
        try:
            rates[name] = measure_rate(
                subject_p, plains, chunk=CHUNK, min_seconds=min_seconds, repeats=repeats
            )
        except Exception as exc:  # noqa: BLE001 - e.g. the key vault server went away mid-run
            competitors.errors[name] = f"failed: {type(exc).__name__}: {exc}".splitlines()[0][:200]
    return rates


def _record(result: ScenarioResult, size: int, rates: dict[str, Rate], errors: dict[str, str]) -> None:
    tag = "4k" if size == 4096 else str(size)
    shown = "4 KiB" if size == 4096 else f"{size} B"
    for name, label in _LABELS.items():
        rate = rates.get(name)
        note = _NOTES.get(name, "") if rate is not None else errors.get(name, "not measured")
        detail: dict[str, Any] = {}
        if rate is not None:
            # Per second of this process's CPU: close to the figure on a quiet machine, higher when the
            # process waited for a core.
            note = f"{note}; {rate.per_cpu_s:,.0f}/s of CPU time".lstrip("; ")
            detail = {
                "best_per_s": round(rate.best_per_s),
                "per_cpu_s": round(rate.per_cpu_s),
                "repeats": rate.repeats,
                "events_per_repeat": rate.items_per_repeat,
                "samples_per_s": [round(s) for s in rate.samples],
            }
        result.add(
            Figure(
                f"{name}_{tag}",
                f"{label}, {shown}",
                None if rate is None else round(rate.per_s),
                "events/s",
                note,
                detail,
            )
        )

    def per_s(name: str) -> float | None:
        rate = rates.get(name)
        return None if rate is None else rate.per_s

    best = per_s("seal_many")
    # Serialising and encrypting, nothing else: what seal could reach if its own work cost nothing.
    json_rate, raw_rate = per_s("json"), per_s("raw")
    floor = None if not json_rate or not raw_rate else 1 / (1 / json_rate + 1 / raw_rate)
    for name, label, other in (
        ("ratio_raw", "seal_many ÷ raw AESGCM", per_s("raw")),
        ("ratio_raw_per_event", "seal (per event) ÷ raw AESGCM", None),
        ("ratio_json_plus_raw", "seal_many ÷ (canonical JSON + raw AESGCM)", floor),
        ("ratio_tink", "seal_many ÷ Tink AEAD", per_s("tink")),
        ("ratio_csfle", "seal_many ÷ MongoDB explicit encryption", per_s("csfle")),
        ("ratio_esdk", "seal_many ÷ AWS Encryption SDK (unsigned)", per_s("esdk")),
        ("ratio_esdk_signed", "seal_many ÷ AWS Encryption SDK (default, signed)", per_s("esdk_signed")),
    ):
        value = ratio(per_s("seal"), per_s("raw")) if name == "ratio_raw_per_event" else ratio(best, other)
        result.add(
            Figure(f"{name}_{tag}", f"{label}, {shown}", None if value is None else round(value, 3), "x")
        )
