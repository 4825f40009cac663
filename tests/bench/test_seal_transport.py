"""The seal scenario's transport-envelope figures: seal and open per message, and the bytes added."""

from __future__ import annotations

from bench.harness import BenchContext
from bench.results import ScenarioResult
from bench.seal import TRANSPORT_MESSAGES, _measure_transport
from pulseseal.settings import Settings
from pulseseal.transit import OVERHEAD_BYTES


def test_transport_seal_and_open_are_timed_per_message_size() -> None:
    ctx = BenchContext(quick=True, settings=Settings(), seed=7, progress=lambda _: None, events=None)
    result = ScenarioResult(1, "seal", "seal", "ok")
    _measure_transport(ctx, result, [f"user-{n}" for n in range(20)], 0.02, 1)
    figures = {f.name: f for f in result.figures}
    for events in TRANSPORT_MESSAGES:
        for name in ("seal", "open"):
            figure = figures[f"transport_{name}_us_{events}"]
            assert figure.unit == "µs/message"
            assert isinstance(figure.value, float)
            assert 0 < figure.value < 100_000
        assert figures[f"transport_overhead_bytes_{events}"].value == OVERHEAD_BYTES == 1136
