"""Health events of an exact size for the seal benchmark.

The realistic mix of everyday traffic is `shell.synthetic` (the demo's and the soak's too).
`sized_events` turns it into validated events whose canonical JSON is exactly a target size: about 300
bytes (the realistic mix, device names padded) or a few KiB (migraine attacks with long multilingual
notes), so each seal comparison runs on equal plaintexts. Everything comes from the `random.Random`
given, so a seed gives the same events for the same `now`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from schemas import HealthEvent, canonical_json, validate_event
from shell import synthetic

_TRIGGERS = (
    "bright light",
    "poor sleep",
    "stress",
    "red wine",
    "skipped meal",
    "weather change",
    "screen time over six hours without a break",
    "strong perfume on the commute",
    "dehydration after a long run in the heat",
    "late coffee (third cup after 4 pm)",
    "long flight with cabin pressure changes and little water",
    "loud open-plan office, noise-cancelling headphones forgotten",
    "menstrual cycle, day one",
    "aged cheese and cured meat at dinner",
    "bright low sun while driving west in the late afternoon",
    "neck tension after a night on an unfamiliar pillow",
    "strong smell of paint and solvent in the stairwell",
    "missed the evening dose of the preventive medication",
    "intense workout in a hot, humid gym without air conditioning",
    "flickering LED lights in the supermarket aisle",
)
# Notes as people type them into a diary app, in several languages: multi-byte UTF-8 on purpose, so a
# 4 KiB plaintext fits the 2000-character limit of `notes`.
_NOTES = (
    "Started behind the left eye around lunch, throbbing, worse when bending down. ",
    "Pulsierender Schmerz hinter dem linken Auge, Übelkeit, Lichtempfindlichkeit — hingelegt. ",
    "Céphalée très forte côté droit, nausées, sensibilité à la lumière et au bruit. ",
    "左目の奥がずきずき痛む。光と音に敏感。暗い部屋で横になった。",
    "Сильная пульсирующая боль, тошнота, пришлось лечь в тёмной комнате. ",
    "Aura: zigzag lines for twenty minutes, then numb fingers on the right hand. ",
    "朝から頭が重く、昼過ぎに吐き気が出た。薬を飲んで二時間休んだ。",
    "Головная боль началась утром, к вечеру усилилась, таблетка помогла через час. ",
    "Πονοκέφαλος από το πρωί, ναυτία και ευαισθησία στο φως. ",
    "偏头痛从下午开始、右侧太阳穴跳痛、怕光怕吵、躺了三个小时。",
)
MAX_DEVICE = 128
MAX_NOTES = 2000


def sized_events(
    n: int, size: int, users: Sequence[str], rng: random.Random, *, now: datetime | None = None
) -> list[HealthEvent]:
    """`n` validated events whose canonical JSON is exactly `size` bytes.

    Up to 512 bytes: the realistic mix, each event's `source.device` padded to the size. Larger: migraine
    attacks with all triggers and notes filled to the size.

    Raises:
        ValueError: `size` cannot be reached within the field limits of docs/contract.md §3.
    """
    events = synthetic.events(n, users, rng, now=now)
    if size <= 512:
        return [_pad_device(event, size) for event in events]
    return [_migraine_of_size(event, size, rng) for event in events]


def _pad_device(event: dict[str, Any], size: int) -> HealthEvent:
    source = event["source"]  # every synthetic event has one
    missing = size - len(canonical_json(validate_event(event)))
    if missing < 0 and event["type"] == "migraine_attack":  # the one type that can outgrow 300 bytes
        event["data"].pop("notes", None)
        event["data"]["triggers"] = []
        missing = size - len(canonical_json(validate_event(event)))
    device = source["device"] + _DEVICE_DETAIL
    if missing < 0 or len(source["device"]) + missing > MAX_DEVICE:
        raise ValueError(f"a {event['type']} event cannot be made exactly {size} bytes")
    source["device"] = device[: len(source["device"]) + missing]
    return _exact(event, size)


# What a wearable app could report as its device: model, firmware, serial (ASCII, nothing JSON escapes).
_DEVICE_DETAIL = " / firmware 4.2.1-build.20261118 / serial " + "PB2X7Q9K4M1N8R3T6V5W0Y2Z" * 4


def _migraine_of_size(event: dict[str, Any], size: int, rng: random.Random) -> HealthEvent:
    occurred = datetime.fromisoformat(event["occurred_at"])
    event["type"] = "migraine_attack"
    event["source"] = {"kind": "app", "device": rng.choice(synthetic.DEVICES)}
    event["data"] = {
        "severity": rng.randint(3, 10),
        "aura": rng.random() < 0.3,
        "ended_at": (occurred + timedelta(minutes=rng.randint(30, 1440))).isoformat(),
        "triggers": list(_TRIGGERS),
        "notes": "",
    }
    missing = size - len(canonical_json(validate_event(event)))
    first = rng.randrange(len(_NOTES))
    # Starting points are tried in turn: which sentences come first decides how many bytes fit in the
    # 2000 characters allowed.
    for start in range(first, first + len(_NOTES)):
        text = "".join(_NOTES[(start + i) % len(_NOTES)] for i in range(64))
        notes = text.encode()[: max(missing, 0)].decode(errors="ignore")
        notes += "." * (missing - len(notes.encode()))
        if missing >= 0 and len(notes) <= MAX_NOTES:
            event["data"]["notes"] = notes
            return _exact(event, size)
    raise ValueError(f"a migraine attack cannot be made exactly {size} bytes")


def _exact(event: dict[str, Any], size: int) -> HealthEvent:
    validated = validate_event(event)
    actual = len(canonical_json(validated))
    if actual != size:  # a padding character that JSON escapes would do this; none of ours does
        raise ValueError(f"built an event of {actual} bytes instead of {size}")
    return validated
