"""The benchmark run: a registry of scenarios, a shared context, and one report.

Every scenario runs in this one process, one after the other, against the same local servers. A scenario
is a module with `async def run(ctx: BenchContext, result: ScenarioResult) -> None` that adds figures to
`result` as it measures them (so a failure halfway keeps what was measured). Scenarios that are planned
but not written yet have no module: they are reported as not implemented, and the targets on their
figures as not measured. Adding one is writing its module and naming it in `SCENARIOS`.

Resources that several scenarios use (the key service process, say) are opened once through
`BenchContext.shared` and closed when the whole run ends.
"""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from bench import machine
from bench.results import TARGETS, Judgement, ScenarioResult, judge_all
from pulseseal.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """A benchmark scenario."""

    number: int
    id: str
    title: str
    module: str | None
    """`bench.<name>` with a `run` coroutine (or `module:function`); `None` while not implemented."""
    needs: tuple[str, ...] = ()
    """Local servers it talks to: `mongo`, `keystore`, `amqp`."""


SCENARIOS: tuple[ScenarioSpec, ...] = (
    ScenarioSpec(
        1,
        "seal",
        "Seal: our recipe vs raw AES-GCM, Tink, MongoDB explicit encryption, AWS Encryption SDK",
        "bench.seal",
        ("mongo",),
    ),
    ScenarioSpec(
        2,
        "keyservice",
        "Key service: encrypt-request latency and throughput",
        "bench.keyservice",
        ("keystore",),
    ),
    ScenarioSpec(
        3,
        "e2e",
        "End to end: drain, stage ceilings, naive and peer pipelines, fixed offered load",
        "bench.e2e",
        ("amqp", "mongo", "keystore"),
    ),
    ScenarioSpec(
        4,
        "scaleout",
        "Scale-out: the drain with 1 and 2 encryptor processes",
        "bench.scaleout",
        ("amqp", "mongo", "keystore"),
    ),
    ScenarioSpec(5, "producers", "Producers: gateway and importer", "bench.producers", ("amqp",)),
    ScenarioSpec(
        6,
        "replay",
        "Replay: one user's 1,000 events among 10k and 1M sealed documents",
        "bench.replay",
        ("mongo",),
    ),
    ScenarioSpec(
        7,
        "encryptor_core",
        "Encryptor per core, store excluded: transport open, decode, seal, a sink that costs nothing",
        "bench.encryptor_core",
    ),
)


class BenchContext:
    """What scenarios share: the mode, the settings, progress output and long-lived resources.

    Args:
        quick: The short run (`--quick`): smaller data sets and fewer repeats, same scenarios.
        settings: Server URLs and the rest (`PULSESEAL_*`).
        seed: Seed of every random workload, so two runs measure the same events.
        progress: Where one-line progress messages go.
        events: Events of the drain's workload (scenarios 3 and 4); `None` for the default of the mode.
    """

    def __init__(
        self,
        *,
        quick: bool,
        settings: Settings,
        seed: int,
        progress: Callable[[str], None],
        events: int | None = None,
    ) -> None:
        self.quick = quick
        self.events = events
        self.settings = settings
        self.seed = seed
        self._progress = progress
        self._stack = AsyncExitStack()
        self._shared: dict[str, Any] = {}
        self.results: dict[str, ScenarioResult] = {}
        """The results of this run so far, by scenario id: a later scenario may add a figure that belongs
        to an earlier one (the encryptor's key-cache hit ratio, measured in scenario 3, is scenario 2's)."""

    def pick(self, *, quick: T, full: T) -> T:
        """`quick` in a quick run, else `full`."""
        return quick if self.quick else full

    def say(self, message: str) -> None:
        """Report progress (one line)."""
        self._progress(message)

    async def shared(self, name: str, opener: Callable[[BenchContext], AbstractAsyncContextManager[T]]) -> T:
        """The resource `name`, opened with `opener` on first use and closed at the end of the run."""
        if name not in self._shared:
            self._shared[name] = await self._stack.enter_async_context(opener(self))
        return cast(T, self._shared[name])

    async def aclose(self) -> None:
        """Close every shared resource."""
        await self._stack.aclose()


@dataclass(slots=True)
class BenchReport:
    """Everything one run measured, on which machine, under which load."""

    quick: bool
    started_at: datetime
    machine: dict[str, Any]
    load_start: list[float]
    load_end: list[float] = field(default_factory=list)
    seconds: float = 0.0
    scenarios: list[ScenarioResult] = field(default_factory=list)
    judgements: list[Judgement] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every implemented scenario that ran measured everything it set out to."""
        return all(s.status in ("ok", "not implemented") for s in self.scenarios)


def select(ids: Sequence[str]) -> list[ScenarioSpec]:
    """The scenarios named by id or number (all when `ids` is empty), in registry order.

    Raises:
        ValueError: an unknown id.
    """
    known = {spec.id: spec for spec in SCENARIOS} | {str(spec.number): spec for spec in SCENARIOS}
    unknown = [name for name in ids if name not in known]
    if unknown:
        names = ", ".join(spec.id for spec in SCENARIOS)
        raise ValueError(f"unknown scenario {unknown[0]!r}: choose from {names}")
    chosen = {known[name].id for name in ids}
    return [spec for spec in SCENARIOS if not ids or spec.id in chosen]


async def run_bench(
    specs: Sequence[ScenarioSpec],
    *,
    quick: bool,
    settings: Settings,
    seed: int = 7,
    progress: Callable[[str], None] = lambda _: None,
    events: int | None = None,
) -> BenchReport:
    """Run `specs` in order in this process and judge the targets on what they measured."""
    report = BenchReport(
        quick=quick,
        started_at=datetime.now(UTC),
        machine=machine.describe(),
        load_start=machine.load_average(),
    )
    started = time.perf_counter()
    ctx = BenchContext(quick=quick, settings=settings, seed=seed, progress=progress, events=events)
    try:
        for spec in specs:
            report.scenarios.append(await _run_one(spec, ctx))
    finally:
        await ctx.aclose()
    report.seconds = time.perf_counter() - started
    report.load_end = machine.load_average()
    report.judgements = judge_all(TARGETS, report.scenarios)
    return report


async def _run_one(spec: ScenarioSpec, ctx: BenchContext) -> ScenarioResult:
    result = ScenarioResult(spec.number, spec.id, spec.title, "ok")
    ctx.results[spec.id] = result
    if spec.module is None:
        result.status = "not implemented"
        result.notes.append("not yet measured: this scenario is not implemented yet")
        return result
    ctx.say(f"scenario {spec.number} ({spec.id}) …")
    started = time.perf_counter()
    try:
        module_name, _, function = spec.module.partition(":")
        module = importlib.import_module(module_name)
        run: Callable[[BenchContext, ScenarioResult], Awaitable[None]] = getattr(module, function or "run")
        await run(ctx, result)
    except Exception as exc:  # noqa: BLE001 - a scenario that breaks must not take the others' figures with it
        result.status = "failed"
        result.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        where = traceback.extract_tb(exc.__traceback__)[-1]
        result.notes.append(f"failed at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}")
    else:
        if any(figure.value is None for figure in result.figures) and result.status == "ok":
            result.status = "partial"
    result.seconds = time.perf_counter() - started
    ctx.say(f"scenario {spec.number} ({spec.id}) {result.status} in {result.seconds:.1f} s")
    return result
