"""Who used the CPU during a measurement: the machine as a whole and the processes we know.

On 2 cores the stages of the pipeline (encryptor, MongoDB-compatible server, RabbitMQ) and whatever else
runs on the machine share the same cores, so a rate means little without the cores each one got. Read
from `/proc` (Linux); elsewhere the figures are simply absent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of `pid` so far; `None` when it is gone or unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine spent not idle (all cores), from `/proc/stat`."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    return (sum(values) - values[3] - values[4]) / _TICK


def find_pid(*needles: str) -> int | None:
    """The first process whose command line contains every one of `needles`."""
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return None
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if all(needle in cmdline for needle in needles):
            return int(entry.name)
    return None


@dataclass(slots=True)
class CpuMeter:
    """Cores used by named processes and by the machine between `start` and `stop`."""

    pids: dict[str, int]
    _cpu: dict[str, float] = field(default_factory=dict)
    _machine: float | None = None
    _started: float = 0.0

    def start(self) -> None:
        """Take the starting readings."""
        self._started = time.perf_counter()
        self._machine = machine_busy_s()
        self._cpu = {}
        for name, pid in self.pids.items():
            value = process_cpu_s(pid)
            if value is not None:
                self._cpu[name] = value

    def stop(self) -> dict[str, float]:
        """Cores used on average since `start`, per name, plus `machine` (all processes, all cores)."""
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        used: dict[str, float] = {}
        for name, before in self._cpu.items():
            after = process_cpu_s(self.pids[name])
            if after is not None:
                used[name] = round((after - before) / elapsed, 2)
        machine = machine_busy_s()
        if machine is not None and self._machine is not None:
            used["machine"] = round((machine - self._machine) / elapsed, 2)
        return used


def server_pids(mongo_port: int, home: Path) -> Mapping[str, int]:
    """The local MongoDB-compatible server and RabbitMQ, when they run here (best effort)."""
    found: dict[str, int] = {}
    ferret = find_pid("ferretdb", f"--listen-addr=127.0.0.1:{mongo_port}")
    if ferret is not None:
        found["mongo_server"] = ferret
    rabbit = find_pid("beam.smp", str(home / "rabbitmq"))
    if rabbit is not None:
        found["rabbitmq"] = rabbit
    return found
