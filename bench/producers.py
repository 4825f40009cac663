"""Scenario 5 — producers: what the gateway accepts and how fast the importer publishes.

- `bench_gateway`: events/s a running gateway accepts (202, so broker-confirmed) from `clients`
  concurrent clients sending `events_per_request`-event JSON arrays, with p50/p99 request latency.
- `bench_importer`: events/s and peak RSS of `pulseseal import` on a generated NDJSON file.

In `pulseseal bench` (`run`) both publish to the benchmark's own virtual host (`bench.scratch`), whose
queue is emptied after each measurement; the gateway gets a throwaway home with its own user-token
secret. `python -m bench.producers` runs the same measurements on their own, against a scratch virtual
host created and deleted for the purpose, so nothing lands in the real `pulseseal.seal` queue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt

from bench.harness import BenchContext
from bench.keyservice import shared_keyservice
from bench.results import Figure, ScenarioResult
from bench.scratch import shared_scratch
from pulseseal.secretfiles import open_new_private
from shell.devservices import rabbitmqctl
from shell.processes import Child, StartFailed, free_port, spawn

ROOT = Path(__file__).resolve().parents[1]
PULSESEAL = str(Path(sys.executable).with_name("pulseseal"))
_SUMMARY = re.compile(r"imported (\d+) events, rejected (\d+), in ([\d.]+) s \((\d+) events/s\)")
_PEAK = re.compile(r"^peak-rss-kb (\d+)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class GatewayResult:
    """Accepted events per second and request latency over the measured window."""

    clients: int
    events_per_request: int
    seconds: float
    requests: int
    failed_requests: int
    events_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True, slots=True)
class ImporterResult:
    """One `pulseseal import` run on a generated file."""

    lines: int
    file_mb: float
    seconds: float
    events_per_s: float
    peak_rss_mb: float


# --- event generation (no test helpers: the bench ships without tests/) ------------------------------


def _event(rng: random.Random, user: str, when: datetime) -> dict[str, object]:
    kind = rng.random()
    base: dict[str, object] = {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "user_id": user,
        "occurred_at": when.isoformat(),
        "source": {"kind": "wearable", "device": "Pulse Band 2"},
    }
    if kind < 0.6:
        return base | {"type": "heart_rate", "data": {"bpm": rng.randint(45, 180)}}
    if kind < 0.8:
        return base | {"type": "steps", "data": {"count": rng.randint(0, 3000), "period_s": 900}}
    if kind < 0.9:
        return base | {"type": "spo2", "data": {"percent": round(rng.uniform(92, 100), 1)}}
    return base | {
        "type": "sleep",
        "data": {"stage": rng.choice(["light", "deep", "rem"]), "duration_s": 1800},
    }


def generate_ndjson(path: Path, lines: int, *, seed: int = 7, users: int = 1000) -> None:
    """Write `lines` valid events as NDJSON (about 200 bytes a line)."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=30)
    with path.open("w", encoding="utf-8") as out:
        for i in range(lines):
            event = _event(rng, f"user-{i % users:05d}", start + timedelta(seconds=i))
            out.write(json.dumps(event, separators=(",", ":")) + "\n")


# --- gateway ---------------------------------------------------------------------------------------


async def bench_gateway(
    gateway_url: str,
    secret: bytes,
    *,
    audience: str = "authenticated",
    clients: int = 16,
    events_per_request: int = 100,
    seconds: float = 10.0,
    warmup_s: float = 2.0,
) -> GatewayResult:
    """Drive a running gateway and measure what it accepts.

    Args:
        gateway_url: Its base URL.
        secret: The HS256 user-token secret it verifies with.
        audience: The `aud` it requires.
        clients: Concurrent clients (each its own user, connection and token).
        events_per_request: Events per request (a JSON array).
        seconds: Length of the measured window.
        warmup_s: Traffic before the window, not counted.
    """
    rng = random.Random(11)
    now = datetime.now(UTC)
    latencies: list[float] = []
    counts = {"requests": 0, "failed": 0, "events": 0}
    begin = time.perf_counter() + warmup_s
    end = begin + seconds

    host, port = _host_port(gateway_url)

    async def client(number: int) -> None:
        user = f"bench-user-{number:02d}"
        token = jwt.encode({"sub": user, "aud": audience, "exp": int(time.time()) + 3600}, secret, "HS256")
        requests = [
            _request(
                host,
                token,
                [
                    _event(rng, user, now - timedelta(seconds=rng.randint(1, 86400)))
                    for _ in range(events_per_request)
                ],
            )
            for _ in range(20)
        ]
        reader, writer = await asyncio.open_connection(host, port)
        try:
            i = 0
            while (started := time.perf_counter()) < end:
                writer.write(requests[i % len(requests)])
                status, body = await _response(reader)
                i += 1
                if started < begin:
                    continue
                latencies.append(time.perf_counter() - started)
                counts["requests"] += 1
                if status == 202:
                    counts["events"] += json.loads(body)["accepted"]
                else:
                    counts["failed"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    latencies.sort()
    return GatewayResult(
        clients=clients,
        events_per_request=events_per_request,
        seconds=seconds,
        requests=counts["requests"],
        failed_requests=counts["failed"],
        events_per_s=counts["events"] / seconds,
        p50_ms=1000 * latencies[len(latencies) // 2] if latencies else 0.0,
        p99_ms=1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0,
    )


def _host_port(url: str) -> tuple[str, int]:
    parsed = httpx.URL(url)
    return parsed.host, parsed.port or 80


def _request(host: str, token: str, events: list[dict[str, object]]) -> bytes:
    body = json.dumps(events).encode()
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    # A minimal HTTP/1.1 client: on a 2-core machine httpx's own CPU time would be measured as the
    # gateway's slowness. Keep-alive, Content-Length bodies only (what the gateway sends).
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    return status, await reader.readexactly(length)


def start_gateway(amqp_url: str, port: int, extra_env: dict[str, str] | None = None) -> Child:
    """`pulseseal gateway` on `port`, once its /healthz answers 200.

    Raises:
        RuntimeError: it did not become ready within 30 s.
    """
    env = (
        os.environ | (extra_env or {}) | {"PULSESEAL_AMQP_URL": amqp_url, "PULSESEAL_GATEWAY_PORT": str(port)}
    )
    # Its output is not kept: a request log line each would be measured as the gateway's work.
    gateway = spawn("gateway", ["gateway"], env=env, log=Path(os.devnull))
    try:
        gateway.wait_ready(f"http://127.0.0.1:{port}/healthz", 30)
    except StartFailed:
        gateway.kill()
        raise RuntimeError("the gateway did not become ready within 30 s") from None
    return gateway


# --- importer --------------------------------------------------------------------------------------


def bench_importer(path: Path, amqp_url: str, extra_env: dict[str, str] | None = None) -> ImporterResult:
    """Run `pulseseal import path` and measure its rate and peak RSS (from the kernel's rusage).

    The import runs under `bench.peakrss`, a small process of its own, so that its peak RSS is not
    inflated by this (large) process's pages (see that module).

    Raises:
        RuntimeError: the import failed.
    """
    env = os.environ | (extra_env or {}) | {"PULSESEAL_AMQP_URL": amqp_url}
    command = [sys.executable, "-m", "bench.peakrss", PULSESEAL, "import", str(path)]
    process = subprocess.run(command, env=env, capture_output=True, check=False)
    output = process.stdout.decode()
    match = _SUMMARY.search(output)
    peak = _PEAK.search(output)
    if process.returncode != 0 or match is None or peak is None:
        raise RuntimeError(f"pulseseal import exited {process.returncode}: {output.strip()[-200:]}")
    lines = int(match.group(1))
    return ImporterResult(
        lines=lines,
        file_mb=path.stat().st_size / 1e6,
        seconds=float(match.group(3)),
        events_per_s=float(match.group(4)),
        peak_rss_mb=int(peak.group(1)) / 1024,
    )


# --- the scenario ---------------------------------------------------------------------------------


async def run(ctx: BenchContext, result: ScenarioResult) -> None:
    """Measure the gateway (16 clients, 100-event requests) and the importer on generated files."""
    scratch = await ctx.shared("scratch", shared_scratch)
    # Producers seal every message under the key service's transport key (contract §4).
    service = await ctx.shared("keyservice", shared_keyservice)
    seconds, warmup = ctx.pick(quick=(5.0, 1.0), full=(15.0, 2.0))
    files = ctx.pick(quick=(100_000,), full=(1_000_000, 100_000))
    with tempfile.TemporaryDirectory(prefix="pulseseal-bench-gw-") as home:
        secret = secrets.token_urlsafe(48)
        secret_file = Path(home) / "gateway-jwt.secret"
        # 0600: the gateway refuses a secret that group or others can read.
        with os.fdopen(open_new_private(secret_file), "w", encoding="utf-8") as out:
            out.write(secret)
        env = {
            "PULSESEAL_HOME": home,
            "PULSESEAL_GATEWAY_JWT_SECRET_FILE": str(secret_file),
            "PULSESEAL_GATEWAY_HOST": "127.0.0.1",
            "PULSESEAL_KEYSERVICE_URL": service.url,
        }
        port = free_port()
        ctx.say(f"  producers: gateway, 16 clients, 100-event requests, {seconds:.0f} s")
        gateway = await asyncio.to_thread(start_gateway, scratch.amqp_url, port, env)
        try:
            measured = await bench_gateway(
                f"http://127.0.0.1:{port}", secret.encode(), seconds=seconds, warmup_s=warmup
            )
        finally:
            await gateway.stop_async(30)
    await scratch.reset_queues()
    result.add(
        Figure(
            "gateway_events_per_s",
            "gateway: events accepted (202), 100-event requests, 16 clients",
            round(measured.events_per_s),
            "events/s",
            f"{measured.requests:,} requests in {seconds:.0f} s after {warmup:.0f} s of warm-up, "
            f"{measured.failed_requests} not 202; one gateway process",
        )
    )
    result.add(Figure("gateway_p50_ms", "gateway: request latency, p50", round(measured.p50_ms, 2), "ms"))
    result.add(Figure("gateway_p99_ms", "gateway: request latency, p99", round(measured.p99_ms, 2), "ms"))
    for lines in files:
        ctx.say(f"  producers: importer, {lines:,}-line NDJSON file")
        with tempfile.TemporaryDirectory(prefix="pulseseal-bench-import-") as folder:
            path = Path(folder) / "events.ndjson"
            await asyncio.to_thread(generate_ndjson, path, lines, seed=ctx.seed)
            env = {"PULSESEAL_HOME": folder, "PULSESEAL_KEYSERVICE_URL": service.url}
            imported = await asyncio.to_thread(bench_importer, path, scratch.amqp_url, env)
        await scratch.reset_queues()
        tag = "" if lines == files[0] else f"_{lines // 1000}k"
        shown = f"{lines:,} lines ({imported.file_mb:.0f} MB)"
        result.add(
            Figure(
                f"importer{tag}_events_per_s",
                f"importer: {shown}",
                round(imported.events_per_s),
                "events/s",
                "as `pulseseal import` reports it: publishing with confirms",
            )
        )
        result.add(
            Figure(
                f"importer{tag}_peak_rss_mb",
                f"importer peak RSS: {shown}",
                round(imported.peak_rss_mb, 1),
                "MB",
                "ru_maxrss of the `pulseseal import` process (wait4, through bench.peakrss)",
            )
        )


# --- scratch vhost and main ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run both benchmarks and print their results as JSON lines."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--amqp-url", default=os.environ.get("PULSESEAL_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    parser.add_argument(
        "--secret-file", type=Path, default=ROOT / ".pulseseal" / "credentials" / "gateway-jwt.secret"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="gateway measurement window")
    parser.add_argument("--lines", default="1000000", help="importer file sizes, comma-separated")
    parser.add_argument("--skip", choices=["gateway", "importer"], action="append", default=[])
    args = parser.parse_args(argv)
    vhost = f"bench{secrets.token_hex(3)}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    amqp_url = args.amqp_url.rstrip("/") + "/" + vhost
    try:
        if "gateway" not in args.skip:
            port = free_port()
            gateway = start_gateway(amqp_url, port)
            try:
                secret = args.secret_file.read_text(encoding="utf-8").strip().encode()
                result = asyncio.run(bench_gateway(f"http://127.0.0.1:{port}", secret, seconds=args.seconds))
                print(json.dumps({"bench": "gateway"} | asdict(result)), flush=True)
            finally:
                gateway.stop(30)
        if "importer" not in args.skip:
            for lines in (int(n) for n in args.lines.split(",")):
                with tempfile.TemporaryDirectory() as scratch:
                    path = Path(scratch) / "events.ndjson"
                    generate_ndjson(path, lines)
                    importer = bench_importer(path, amqp_url)
                    print(json.dumps({"bench": "importer"} | asdict(importer)), flush=True)
    finally:
        rabbitmqctl("delete_vhost", vhost)
    return 0


if __name__ == "__main__":
    sys.exit(main())
