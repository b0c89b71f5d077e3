"""The benchmark: the proxy against a direct keep-alive client, on a local upstream.

Each repetition starts a fresh upstream (bench/upstream.py) and a fresh proxy, then measures
in this order: cold start (spawn to the initialize answer, token fetch included), sequential
`tools/call` latency, throughput at 1, 8 and 64 in flight, head-of-line blocking, and the
proxy's peak RSS and CPU per 1,000 requests. Everything runs for JSON and for event-stream
answers. Medians of the repetitions are reported with their min-max.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import importlib.util
import json
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import psutil

from .clients import COMMAND, DirectClient, Document, ProxyClient

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "latest.json"
DOCS = ROOT / "docs" / "performance.md"
DOCS_START, DOCS_END = "<!-- bench:start -->", "<!-- bench:end -->"
MODES = ("json", "sse")
CONCURRENCY = (1, 8, 64)
SLOW_SECONDS = 2.0
QUICK_CALLS = 20
ECHO: Document = {"name": "echo", "arguments": {"text": "hello"}}


@dataclass(frozen=True)
class Plan:
    """How much work each measurement does."""

    repetitions: int
    sequential: int
    per_concurrency: int
    warm_up: int


FULL = Plan(repetitions=3, sequential=1000, per_concurrency=3000, warm_up=200)
QUICK = Plan(repetitions=1, sequential=50, per_concurrency=200, warm_up=20)


class Client(Protocol):
    async def call(self, method: str, params: Document) -> Document: ...


@asynccontextmanager
async def upstream(mode: str) -> AsyncIterator[tuple[int, psutil.Process]]:
    """The local upstream in its own process, so its CPU is not the proxy's or the client's."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.upstream",
        "--mode",
        mode,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdin is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    try:
        yield json.loads(line)["port"], psutil.Process(process.pid)
    finally:
        process.stdin.close()
        await asyncio.wait_for(process.wait(), 10)


async def sequential(client: Client, count: int) -> list[float]:
    """Milliseconds of each of `count` calls made one after another."""
    took = []
    for _ in range(count):
        start = time.perf_counter()
        answer = await client.call("tools/call", ECHO)
        took.append((time.perf_counter() - start) * 1000)
        assert "result" in answer, answer
    return took


async def throughput(client: Client, in_flight: int, count: int) -> float:
    """Calls per second with `in_flight` callers sharing `count` calls."""
    left = count

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            answer = await client.call("tools/call", ECHO)
            assert "result" in answer, answer

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(in_flight)))
    return count / (time.perf_counter() - start)


async def head_of_line(client: Client) -> dict[str, Any]:
    """One 2-second call, then 20 quick ones: how long until the quick ones are all back,
    and whether the slow one was still running then."""
    slow = asyncio.create_task(
        client.call("tools/call", {"name": "sleep", "arguments": {"seconds": SLOW_SECONDS}})
    )
    await asyncio.sleep(0.05)  # the slow call is on its way before the quick ones
    start = time.perf_counter()
    await asyncio.gather(*(client.call("tools/call", ECHO) for _ in range(QUICK_CALLS)))
    quick = time.perf_counter() - start
    slow_still_running = not slow.done()
    await slow
    return {"quick_calls_s": quick, "slow_still_running": slow_still_running}


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def peak_rss_mb(process: psutil.Process) -> float:
    """The high-water mark where the OS keeps one (Linux VmHWM), else the current RSS."""
    try:
        status = Path(f"/proc/{process.pid}/status").read_text()
    except OSError:
        return float(process.memory_info().rss) / 2**20
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    return kb / 1024


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def measured(
    process: psutil.Process, work: Callable[[], Awaitable[float]]
) -> tuple[float, float, float]:
    """`work`'s result, with the CPU seconds `process` spent and the wall seconds it took."""
    cpu, wall = cpu_seconds(process), time.perf_counter()
    result = await work()
    return result, cpu_seconds(process) - cpu, time.perf_counter() - wall


async def repetition(mode: str, plan: Plan, command: Sequence[str]) -> dict[str, Any]:
    async with upstream(mode) as (port, server):
        direct = DirectClient(port)
        await direct.start()
        with tempfile.TemporaryDirectory() as cache:
            proxy = ProxyClient(port, Path(cache), command)
            cold_start = await proxy.start()
            proxied = psutil.Process(proxy.pid)
            for client in (direct, proxy):
                await sequential(client, plan.warm_up)
            latency = {
                "direct": await sequential(direct, plan.sequential),
                "proxy": await sequential(proxy, plan.sequential),
            }
            rates: dict[str, dict[str, float]] = {}
            proxy_cpu = proxy_calls = 0.0
            server_share = 0.0
            for in_flight in CONCURRENCY:
                direct_rate, _, _ = await measured(
                    server, partial(throughput, direct, in_flight, plan.per_concurrency)
                )
                cpu = cpu_seconds(server)
                proxy_rate, spent, wall = await measured(
                    proxied, partial(throughput, proxy, in_flight, plan.per_concurrency)
                )
                server_share = max(server_share, (cpu_seconds(server) - cpu) / wall)
                proxy_cpu += spent
                proxy_calls += plan.per_concurrency
                rates[str(in_flight)] = {
                    "direct_rps": direct_rate,
                    "proxy_rps": proxy_rate,
                    "ratio": proxy_rate / direct_rate,
                }
            blocking = await head_of_line(proxy)
            rss = peak_rss_mb(proxied)
            exit_status = await proxy.close()
        await direct.close()
    direct_p50 = statistics.median(latency["direct"])
    proxy_p50 = statistics.median(latency["proxy"])
    return {
        "cold_start_ms": cold_start * 1000,
        "latency_ms": {
            who: {
                "p50": statistics.median(values),
                "p90": percentile(values, 0.9),
                "p99": percentile(values, 0.99),
            }
            for who, values in latency.items()
        },
        "added_p50_ms": proxy_p50 - direct_p50,
        "throughput": rates,
        "head_of_line": blocking,
        "peak_rss_mb": rss,
        "cpu_s_per_1k": proxy_cpu / proxy_calls * 1000,
        "upstream_cpu_share_max": server_share,
        "exit_status": exit_status,
    }


def summary(runs: list[dict[str, Any]]) -> Any:
    """Medians with min and max, for every number in the runs' common shape."""
    first = runs[0]
    if isinstance(first, dict):
        return {key: summary([run[key] for run in runs]) for key in first}
    if isinstance(first, bool):
        return all(runs)
    if isinstance(first, int | float):
        values = [float(v) for v in runs]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return first


# (label, the path of the figure in a mode's results, unit, decimals)
ROWS: tuple[tuple[str, tuple[str, ...], str, int], ...] = (
    ("cold start (spawn to initialize answer)", ("cold_start_ms",), " ms", 0),
    *(
        (f"{who} latency {p}", ("latency_ms", who, p), " ms", 2)
        for who in ("direct", "proxy")
        for p in ("p50", "p90", "p99")
    ),
    ("**added p50 latency**", ("added_p50_ms",), " ms", 2),
    *(
        row
        for n in CONCURRENCY
        for row in (
            (f"direct, {n} in flight", ("throughput", str(n), "direct_rps"), "/s", 0),
            (f"proxy, {n} in flight", ("throughput", str(n), "proxy_rps"), "/s", 0),
            (f"**proxy / direct, {n} in flight**", ("throughput", str(n), "ratio"), "", 2),
        )
    ),
    ("head-of-line: 20 quick calls during a 2 s call", ("head_of_line", "quick_calls_s"), " s", 3),
    ("peak RSS of the proxy", ("peak_rss_mb",), " MB", 1),
    ("proxy CPU per 1,000 calls", ("cpu_s_per_1k",), " s", 2),
    ("upstream CPU at most (1.0 = one core)", ("upstream_cpu_share_max",), "", 2),
)


def table(results: dict[str, Any]) -> str:
    """The markdown table docs/performance.md shows: median (min to max)."""
    lines = ["| | " + " | ".join(f"{mode} answers" for mode in MODES) + " |", "|---|---|---|"]
    for label, path, unit, digits in ROWS:
        cells = []
        for mode in MODES:
            node: Any = results[mode]
            for key in path:
                node = node[key]
            median, low, high = node["median"], node["min"], node["max"]
            text = f"{median:.{digits}f}{unit}"
            if low != high:
                text += f" ({low:.{digits}f} to {high:.{digits}f})"
            cells.append(text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpus": psutil.cpu_count(),
        "python": platform.python_version(),
        "httpx": version("httpx"),
        "mcp-oauth2-proxy": version("mcp-oauth2-proxy"),
    }


def compile_bytecode() -> None:
    """Compile the proxy package's bytecode before the first start, as installing a wheel
    does. An editable install keeps bytecode beside the source, and a module edited since
    its last compile is compiled again at every start when nothing may write the result
    (PYTHONDONTWRITEBYTECODE in the shell, which the spawned proxy inherits): the cold start
    would measure the compiler, not the proxy. Compiling here is fairer than letting the
    proxy write its own bytecode, whose first start would still pay for it; with --quick
    that is the only start measured."""
    spec = importlib.util.find_spec("mcp_oauth2_proxy")
    for directory in (spec and spec.submodule_search_locations) or ():
        compileall.compile_dir(directory, quiet=1)


async def run(plan: Plan, command: Sequence[str]) -> dict[str, Any]:
    compile_bytecode()
    results: dict[str, Any] = {}
    for mode in MODES:
        runs = []
        for number in range(plan.repetitions):
            print(f"{mode}: repetition {number + 1} of {plan.repetitions}", file=sys.stderr)
            runs.append(await repetition(mode, plan, command))
        results[mode] = summary(runs)
    return results


def write_docs(command: str, report: dict[str, Any], rendered: str) -> None:
    text = DOCS.read_text(encoding="utf-8")
    head, _, rest = text.partition(DOCS_START)
    _, _, tail = rest.partition(DOCS_END)
    info = report["machine"]
    block = (
        f"{DOCS_START}\nMeasured {report['date']} with `{command}` on {info['platform']}, "
        f"{info['cpus']} CPUs, Python {info['python']}, httpx {info['httpx']}; medians of "
        f"{report['plan']['repetitions']} repetitions, min to max in brackets.\n\n{rendered}\n"
        f"{DOCS_END}"
    )
    DOCS.write_text(head + block + tail, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short repetition (CI smoke)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument(
        "--write-docs", action="store_true", help="put the table into docs/performance.md"
    )
    parser.add_argument(
        "--proxy-command",
        help="measure another proxy that reads the same environment variables, such as the "
        "npm original: 'node .../mcp-oauth2-proxy/dist/index.js'",
    )
    args = parser.parse_args(argv)
    if args.proxy_command and (args.write_docs or args.output == RESULTS):
        parser.error("--proxy-command needs its own --output, and not --write-docs")
    plan = QUICK if args.quick else FULL
    command = shlex.split(args.proxy_command) if args.proxy_command else (str(COMMAND),)
    results = asyncio.run(run(plan, command))
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "proxy_command": list(command),
        "machine": machine(),
        "plan": plan.__dict__,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    rendered = table(results)
    print(rendered)
    if args.write_docs:
        write_docs("python -m bench" + (" --quick" if args.quick else ""), report, rendered)
    return 0
