"""Soak: the installed `mcp-oauth2-proxy`, configured by environment only, carries thousands of
mixed requests while its upstream restarts, forgets sessions, cuts response streams and JSON
bodies, and its tokens expire every few seconds (tests/soak/fault_upstream.py).

The test is the MCP client: raw JSON-RPC lines on the proxy's stdin and stdout, up to
IN_FLIGHT requests outstanding. Afterwards every request must have exactly one answer (its
result or a JSON-RPC error), every echo its own argument, stdout nothing but JSON-RPC; the
proxy's sockets and memory must have stayed bounded, and it must exit 0 on end of input.

The default (CI) run is short: SHORT_REQUESTS requests, or more until every kind of fault has
come (CLOCK_FAULTS). The long form:
    SOAK_REQUESTS=20000 .venv/bin/pytest tests/soak -s
    SOAK_SECONDS=300 .venv/bin/pytest tests/soak -s    (until 300 s have passed)
SOAK_SEED picks the fault and workload sequence; SOAK_REPORT=path writes the figures as JSON;
SOAK_LOG_LEVEL sets the proxy's LOG_LEVEL (default info; its stderr is kept in tmp_path).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from .fault_upstream import FaultPlan, FaultUpstream, running_fault_upstream

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.soak,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>"),
]

COMMAND = Path(sys.executable).parent / "mcp-oauth2-proxy"
PROTOCOL_VERSION = "2025-11-25"
SHORT_REQUESTS = 2000
DEFAULT_SEED = 20251125
IN_FLIGHT = 16
WARM_UP_SHARE = 0.15
WARM_UP_MAX = 2000
FINAL_CALLS = IN_FLIGHT
# Open sockets the proxy may hold at once. Each request in flight holds one upstream
# connection (IN_FLIGHT); an answered request's connection may still be closing, or idle in
# the keep-alive pool, while the next request already holds a new one (another IN_FLIGHT at
# most, since the pool only grows when every pooled connection is busy); add the server
# stream's GET, one token request, a session renewal's initialize, the shutdown DELETE, and
# the asyncio loop's self-pipe socket pair: 16 + 16 + 1 + 1 + 1 + 1 + 2 = 38, rounded to 40.
# A leak (a connection never closed after a fault) grows past it within seconds.
SOCKET_BOUND = 2 * IN_FLIGHT + 8
# RSS growth allowed from after warm-up (idle, all answered) to the end (idle again). Measured
# on Linux/CPython 3.11: 0.6-0.9 MB in the short form and in 20,000 requests alike, so this is
# ten times that: a leak of 5 KB per request (a delivery's buffers, a task per fault) fails the
# short form, one of 0.5 KB per request the long form.
RSS_GROWTH_BOUND_KB = 10 * 1024
SAMPLE_SECONDS = 0.02
ANSWER_SECONDS = 60.0  # longest wait for one free slot, i.e. for some answer to arrive
STARTUP_SECONDS = 30.0
EXIT_SECONDS = 15.0  # the proxy's 1.5 s grace + 2 s DELETE + interpreter exit, with headroom
UPSTREAM_TIMEOUT_MS = 10_000
MAX_READS = 100_000_000
MAX_SAMPLES = 100_000_000
UNBOUNDED_REQUESTS = 10_000_000  # the count bound of a run limited by SOAK_SECONDS
# A run bounded by count goes on until the upstream's fault clock has both restarted it and
# expired a session: the clock ticks every 0.3-0.9 s, and a fast proxy can carry
# SHORT_REQUESTS before it has ticked twice. Checked every FAULT_CHECK_REQUESTS requests, for
# at most STORM_STRETCH times the requests asked for.
CLOCK_FAULTS = ("restart", "session_expired")
FAULT_CHECK_REQUESTS = 200
STORM_STRETCH = 10

JsonId = int | str
Document = dict[str, Any]

# The proxy's error messages (docs/bridge.md#errors-the-client-gets), by the kind reported.
# "could not reach the upstream" meant any failed exchange in older builds and means a refused
# connection in newer ones; the reason the proxy quotes tells them apart.
REFUSED = ("All connection attempts failed", "Connection refused", "could not connect")
ERROR_KINDS = (
    ("failed before it answered", "connection_closed_before_answer"),
    ("the upstream connection broke mid-response", "broke_mid_response"),
    ("the upstream ended its answer without a response", "ended_without_response"),
    ("the upstream's session expired and a new one could not be started", "session_not_renewed"),
    ("could not obtain an access token", "no_token"),
    ("the upstream rejected a freshly issued token", "token_rejected_twice"),
    ("upstream timed out", "timeout"),
    ("the proxy is shutting down", "shutdown"),
    ("internal error in the proxy", "internal"),
)


@dataclass(frozen=True)
class SoakSettings:
    requests: int
    seconds: float | None
    seed: int
    report: Path | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SoakSettings:
        seconds = float(env["SOAK_SECONDS"]) if env.get("SOAK_SECONDS") else None
        if env.get("SOAK_REQUESTS"):
            requests = int(env["SOAK_REQUESTS"])
        else:
            requests = UNBOUNDED_REQUESTS if seconds is not None else SHORT_REQUESTS
        return cls(
            requests=requests,
            seconds=seconds,
            seed=int(env.get("SOAK_SEED") or DEFAULT_SEED),
            report=Path(env["SOAK_REPORT"]) if env.get("SOAK_REPORT") else None,
        )

    @property
    def warm_up(self) -> int:
        """The request after which RSS is first measured."""
        return min(self.requests, max(200, min(WARM_UP_MAX, int(self.requests * WARM_UP_SHARE))))

    @property
    def bound_seconds(self) -> float:
        """The whole test's deadline: generous, since every wait inside has its own."""
        if self.seconds is None and self.requests == SHORT_REQUESTS:
            return 180.0
        counted = min(self.requests, 1_000_000) * 0.02
        return 180.0 + (self.seconds * 1.5 if self.seconds is not None else counted)


@dataclass(frozen=True)
class Sent:
    """A request the client wrote, and what its successful answer must contain."""

    kind: str  # initialize, echo, ping or list
    argument: str | None = None


@dataclass
class Ledger:
    """Everything that came back on stdout, checked against what was sent."""

    slots: anyio.Semaphore
    sent: dict[JsonId, Sent] = field(default_factory=dict)
    answers: dict[JsonId, list[Document]] = field(default_factory=dict)
    holding: set[JsonId] = field(default_factory=set)
    answered: list[JsonId] = field(default_factory=list)
    stray: list[Document] = field(default_factory=list)
    garbage: list[str] = field(default_factory=list)
    server_requests: list[Document] = field(default_factory=list)
    notifications: Counter[str] = field(default_factory=Counter)
    notification_keys: Counter[str] = field(default_factory=Counter)
    notifications_sent: int = 0

    def expect(self, request_id: JsonId, sent: Sent) -> None:
        assert request_id not in self.sent, f"id {request_id!r} used twice by the test"
        self.sent[request_id] = sent
        self.holding.add(request_id)

    def take(self, line: bytes) -> None:
        try:
            document = json.loads(line)
        except ValueError:
            self.garbage.append(line[:300].decode("utf-8", "replace"))
            return
        if not isinstance(document, dict) or document.get("jsonrpc") != "2.0":
            self.garbage.append(line[:300].decode("utf-8", "replace"))
            return
        if "method" in document:
            if "id" in document:
                self.server_requests.append(document)
            else:
                self.notifications[str(document["method"])] += 1
                self.notification_keys[_notification_key(document)] += 1
            return
        if "id" not in document or ("result" in document) == ("error" in document):
            self.garbage.append(line[:300].decode("utf-8", "replace"))
            return
        request_id = document["id"]
        # Exactly an int or a str: true or 5.0 would otherwise match a sent 1 or 5.
        if type(request_id) not in (int, str) or request_id not in self.sent:
            self.stray.append(document)
            return
        self.answers.setdefault(request_id, []).append(document)
        if request_id in self.holding:
            self.holding.discard(request_id)
            self.answered.append(request_id)
            self.slots.release()

    async def acquire(self) -> bool:
        """Take a slot for one more request; False if none came free in time (a stall)."""
        with anyio.move_on_after(ANSWER_SECONDS):
            await self.slots.acquire()
            return True
        return False

    async def wait_idle(self, seconds: float = ANSWER_SECONDS) -> bool:
        """Wait until every request sent has its answer; False on a stall."""
        taken = 0
        with anyio.move_on_after(seconds):
            for _ in range(IN_FLIGHT):
                await self.slots.acquire()
                taken += 1
        for _ in range(taken):
            self.slots.release()
        return taken == IN_FLIGHT


def _notification_key(document: Document) -> str:
    data = (document.get("params") or {}).get("data")
    if isinstance(data, dict) and "request" in data:
        return f"request:{json.dumps(data['request'])}"
    if isinstance(data, dict) and "server_seq" in data:
        return f"server:{data['server_seq']}"
    return f"other:{json.dumps(document, sort_keys=True)}"


class Workload:
    """The client's messages: mostly echo calls with a unique argument, some pings, tool
    lists and notifications (roots/list_changed, and late cancellations of answered
    requests, which must not produce another line)."""

    def __init__(self, seed: int, ledger: Ledger) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - a workload, not security
        self._ledger = ledger

    def message(self, n: int) -> tuple[JsonId | None, Sent | None, Document]:
        roll = self._rng.random()
        if roll < 0.1:
            if roll < 0.05 and self._ledger.answered:
                late = self._rng.choice(self._ledger.answered[-64:])
                params = {"requestId": late, "reason": "soak: cancelled after its answer"}
                return None, None, _notification("notifications/cancelled", params)
            return None, None, _notification("notifications/roots/list_changed", {})
        request_id: JsonId = n if n % 5 else f"s-{n}"
        if roll < 0.22:
            return request_id, Sent("ping"), _request(request_id, "ping", {})
        if roll < 0.30:
            return request_id, Sent("list"), _request(request_id, "tools/list", {})
        salt = self._rng.getrandbits(40)
        return echo(request_id, f"echo-{n}-{salt:010x}" + ("-é✓" if n % 3 == 0 else ""))


def echo(request_id: JsonId, argument: str) -> tuple[JsonId, Sent, Document]:
    """A call of the echo tool; the argument must be unique in the run (the server counts a
    second run of one argument as a tool call run twice)."""
    params = {"name": "echo", "arguments": {"text": argument}}
    return request_id, Sent("echo", argument), _request(request_id, "tools/call", params)


def _request(request_id: JsonId, method: str, params: Document) -> Document:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def _notification(method: str, params: Document) -> Document:
    return {"jsonrpc": "2.0", "method": method, "params": params}


INITIALIZE = _request(
    0,
    "initialize",
    {
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {"roots": {"listChanged": True}},
        "clientInfo": {"name": "soak", "version": "1"},
    },
)


@dataclass
class Samples:
    """What /proc showed of the proxy while it ran."""

    peak_sockets: int = 0
    peak_fds: int = 0
    peak_rss_kb: int = 0
    count: int = 0

    def take(self, pid: int) -> None:
        sockets = fds = 0
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return
        for name in names:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue  # closed between the listing and the look
            fds += 1
            sockets += target.startswith("socket:")
        self.peak_sockets = max(self.peak_sockets, sockets)
        self.peak_fds = max(self.peak_fds, fds)
        self.peak_rss_kb = max(self.peak_rss_kb, rss_kb(pid))
        self.count += 1


def rss_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


async def sample(pid: int, samples: Samples, stop: anyio.Event) -> None:
    for _ in range(MAX_SAMPLES):
        samples.take(pid)
        with anyio.move_on_after(SAMPLE_SECONDS):
            await stop.wait()
        if stop.is_set():
            return


async def read_stdout(stdout: anyio.abc.ByteReceiveStream, ledger: Ledger) -> None:
    pending = b""
    for _ in range(MAX_READS):
        try:
            chunk = await stdout.receive(1 << 16)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            if pending:
                ledger.garbage.append("(unterminated) " + pending[:300].decode("utf-8", "replace"))
            return
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            ledger.take(line)
    raise AssertionError("stdout never ended")


def error_kind(error: Document) -> str:
    message = str(error.get("message", ""))
    if message.startswith("upstream answered HTTP"):
        data = error.get("data")
        status = data.get("status") if isinstance(data, dict) else None
        return f"http_{status}"
    if message.startswith(("could not reach the upstream", "could not connect to the upstream")):
        refused = any(reason in message for reason in REFUSED)
        return "connect_refused" if refused else "connection_closed_before_answer"
    for part, kind in ERROR_KINDS:
        if part in message:
            return kind
    return f"other {error.get('code')}: {message[:80]}"


def wrong_result(sent: Sent, result: object) -> bool:
    if not isinstance(result, dict):
        return True
    if sent.kind == "echo":
        return result.get("content") != [{"type": "text", "text": sent.argument}]
    if sent.kind == "list":
        tools = result.get("tools")
        return not isinstance(tools, list) or [t.get("name") for t in tools] != ["echo"]
    if sent.kind == "initialize":
        return result.get("protocolVersion") != PROTOCOL_VERSION
    return result != {}


@dataclass
class SoakRun:
    """The figures of one run."""

    settings: SoakSettings
    ledger: Ledger
    samples: Samples
    faults: dict[str, dict[str, int]]
    crashes: list[str]
    stderr: Path
    rss_start_kb: int = 0
    rss_end_kb: int = 0
    duration_s: float = 0.0
    exit_code: int | None = None
    stalled: list[JsonId] = field(default_factory=list)
    final_ids: list[JsonId] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        ledger = self.ledger
        errors = Counter[str]()
        successes = wrong = 0
        for request_id, answers in ledger.answers.items():
            first = answers[0]
            if "error" in first:
                errors[error_kind(first["error"])] += 1
            elif wrong_result(ledger.sent[request_id], first["result"]):
                wrong += 1
            else:
                successes += 1
        final_ok = sum(
            1
            for request_id in self.final_ids
            if "result" in ledger.answers.get(request_id, [{}])[0]
        )
        requests = len(ledger.sent)
        return {
            "seed": self.settings.seed,
            "requests": requests,
            "notifications_sent": ledger.notifications_sent,
            "responses": successes,
            "errors": sum(errors.values()),
            "errors_by_kind": dict(errors.most_common()),
            "wrong_answers": wrong,
            "lost": len(self.lost()),
            "duplicated": len(self.duplicated()),
            "answers_to_unknown_ids": len(ledger.stray),
            "non_jsonrpc_lines": len(ledger.garbage),
            "server_requests_on_stdout": len(ledger.server_requests),
            "stalled": len(self.stalled),
            "final_calls_ok": f"{final_ok}/{len(self.final_ids)}",
            "notifications_received": dict(ledger.notifications),
            "notifications_received_by_origin": dict(
                Counter(key.split(":")[0] for key in ledger.notification_keys.elements())
            ),
            "duplicated_notifications": sum(
                1 for count in ledger.notification_keys.values() if count > 1
            ),
            "faults_by_kind": self.faults["faults"],
            "server_stats": self.faults["stats"],
            "server_anomalies": self.faults["anomalies"],
            "server_crashes": len(self.crashes),
            "peak_sockets": self.samples.peak_sockets,
            "socket_bound": SOCKET_BOUND,
            "peak_fds": self.samples.peak_fds,
            "samples": self.samples.count,
            "rss_start_kb": self.rss_start_kb,
            "rss_end_kb": self.rss_end_kb,
            "rss_growth_kb": self.rss_end_kb - self.rss_start_kb,
            "rss_peak_kb": self.samples.peak_rss_kb,
            "duration_s": round(self.duration_s, 2),
            "requests_per_s": round(requests / self.duration_s, 1) if self.duration_s else 0,
            "exit_code": self.exit_code,
            "proxy_log": proxy_log_counts(self.stderr),
            "proxy_stderr": str(self.stderr),
        }

    def lost(self) -> list[JsonId]:
        return [
            request_id for request_id in self.ledger.sent if request_id not in self.ledger.answers
        ]

    def duplicated(self) -> dict[JsonId, int]:
        return {
            request_id: len(answers)
            for request_id, answers in self.ledger.answers.items()
            if len(answers) > 1
        }

    def wrong(self) -> dict[JsonId, Document]:
        return {
            request_id: answers[0]
            for request_id, answers in self.ledger.answers.items()
            if "result" in answers[0]
            and wrong_result(self.ledger.sent[request_id], answers[0]["result"])
        }


def proxy_log_counts(stderr: Path) -> dict[str, int]:
    """How often the proxy logged each message, and each level (as `level=<name>`)."""
    counts = Counter[str]()
    with stderr.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            message = re.search(r'msg=("[^"]*"|\S+)', line)
            counts[message.group(1).strip('"') if message else "(unstructured)"] += 1
            level = re.search(r"level=(\S+)", line)
            counts[f"level={level.group(1) if level else '(none)'}"] += 1
    return dict(counts.most_common())


# Inherited settings that would change what is measured: the proxy's own (a developer's
# UPSTREAM_URL or OAUTH2_SCOPE) and HTTP proxies, which would take 127.0.0.1 elsewhere.
FOREIGN_PREFIXES = ("UPSTREAM_", "OAUTH2_", "MCP_PROXY_", "DISCOVERY_", "LOG_", "ALLOW_INSECURE")


def proxy_env(upstream: FaultUpstream, workdir: Path) -> dict[str, str]:
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(FOREIGN_PREFIXES) and not name.lower().endswith("_proxy")
    }
    return {
        **inherited,
        "UPSTREAM_URL": upstream.url,
        "UPSTREAM_TIMEOUT_MS": str(UPSTREAM_TIMEOUT_MS),
        "OAUTH2_GRANT": "client_credentials",
        "OAUTH2_TOKEN_URL": upstream.token_url,
        "OAUTH2_CLIENT_ID": upstream.plan.client_id,
        "OAUTH2_CLIENT_SECRET": upstream.plan.client_secret,
        # Renew just as the token expires, so that some requests meet the expiry (a 401).
        "OAUTH2_REFRESH_SKEW_SECONDS": "0",
        "OAUTH2_TOKEN_CACHE_DIR": str(workdir / "token-cache"),
        "DISCOVERY_ENABLED": "false",
        "LOG_LEVEL": os.environ.get("SOAK_LOG_LEVEL", "info"),
    }


async def send(process: anyio.abc.Process, document: Document) -> None:
    assert process.stdin is not None
    await process.stdin.send(json.dumps(document, ensure_ascii=False).encode() + b"\n")


async def drive(settings: SoakSettings, upstream: FaultUpstream, workdir: Path) -> SoakRun:
    """Run the proxy through the whole soak; return its figures (asserted by the caller)."""
    ledger = Ledger(anyio.Semaphore(IN_FLIGHT))
    samples = Samples()
    stderr = workdir / "proxy.stderr"
    run = SoakRun(settings, ledger, samples, {}, [], stderr)
    workload = Workload(settings.seed, ledger)
    started = anyio.current_time()
    with stderr.open("wb") as errlog:
        process = await anyio.open_process(
            [str(COMMAND)],
            env=proxy_env(upstream, workdir),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
        )
    try:
        assert process.stdout is not None
        assert process.stdin is not None
        stop_sampling = anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read_stdout, process.stdout, ledger)
            tasks.start_soon(sample, process.pid, samples, stop_sampling)
            await exercise(process, run, workload, upstream)
            await process.stdin.aclose()
            with anyio.fail_after(EXIT_SECONDS):
                run.exit_code = await process.wait()
            stop_sampling.set()
    except BaseException as error:
        error.add_note(f"the proxy's stderr: {stderr}")
        raise
    finally:
        if process.returncode is None:
            process.kill()
        with anyio.CancelScope(shield=True), anyio.move_on_after(EXIT_SECONDS):
            await process.aclose()
    run.duration_s = anyio.current_time() - started
    snapshot = await upstream.snapshot()
    run.faults = snapshot
    run.crashes = list(upstream.crashes)
    return run


async def exercise(
    process: anyio.abc.Process, run: SoakRun, workload: Workload, upstream: FaultUpstream
) -> None:
    """The client's side of the session: handshake, the storm, a calm ending."""
    ledger, settings = run.ledger, run.settings
    # The handshake, with faults off: a proxy that cannot start is another test's business.
    assert await ledger.acquire()
    ledger.expect(INITIALIZE["id"], Sent("initialize"))
    await send(process, INITIALIZE)
    if not await ledger.wait_idle(STARTUP_SECONDS):
        run.stalled = sorted(ledger.holding, key=str)
        return
    await send(process, _notification("notifications/initialized", {}))
    await upstream.set_faults(True)
    storm_started = anyio.current_time()
    requests = 0
    # Bounded by count: notifications are about a tenth of the messages.
    for n in range(1, 2 * settings.requests * STORM_STRETCH + 1):
        if await storm_over(requests, settings, upstream):
            break
        if settings.seconds is not None and anyio.current_time() - storm_started > settings.seconds:
            break
        request_id, sent, message = workload.message(n)
        if request_id is None or sent is None:
            ledger.notifications_sent += 1
            await send(process, message)
            continue
        requests += 1
        if requests == settings.warm_up:
            if not await ledger.wait_idle():
                run.stalled = sorted(ledger.holding, key=str)
                return
            run.rss_start_kb = rss_kb(process.pid)
        if not await ledger.acquire():
            run.stalled = sorted(ledger.holding, key=str)
            return
        ledger.expect(request_id, sent)
        await send(process, message)
    if not await ledger.wait_idle():
        run.stalled = sorted(ledger.holding, key=str)
        return
    if run.rss_start_kb == 0:
        run.rss_start_kb = rss_kb(process.pid)  # SOAK_SECONDS ran out before the warm-up
    # Calm: no more faults. The proxy must have come through it able to serve.
    await upstream.set_faults(False)
    for k in range(FINAL_CALLS):
        request_id, sent, message = echo(f"final-{k}", f"final-{k}")
        assert await ledger.acquire()
        ledger.expect(request_id, sent)
        run.final_ids.append(request_id)
        await send(process, message)
    if not await ledger.wait_idle():
        run.stalled = sorted(ledger.holding, key=str)
        return
    run.rss_end_kb = rss_kb(process.pid)


async def storm_over(requests: int, settings: SoakSettings, upstream: FaultUpstream) -> bool:
    if requests < settings.requests:
        return False
    if settings.seconds is not None or requests >= settings.requests * STORM_STRETCH:
        return True
    if requests % FAULT_CHECK_REQUESTS:
        return False
    faults = (await upstream.snapshot())["faults"]
    return all(faults.get(kind, 0) > 0 for kind in CLOCK_FAULTS)


def publish(report: dict[str, Any], settings: SoakSettings) -> None:
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(f"soak report:\n{text}")
    if settings.report is not None:
        settings.report.write_text(text + "\n", encoding="utf-8")


async def test_the_proxy_answers_every_request_once_through_upstream_faults(
    tmp_path: Path,
) -> None:
    settings = SoakSettings.from_env(os.environ)
    plan = FaultPlan(seed=settings.seed)
    with anyio.fail_after(settings.bound_seconds), running_fault_upstream(plan) as upstream:
        run = await drive(settings, upstream, tmp_path)
    report = run.report()
    publish(report, settings)

    tail = "\n".join(run.stderr.read_text(errors="replace").splitlines()[-30:])
    assert not run.stalled, f"no answer within {ANSWER_SECONDS} s for {run.stalled[:20]}\n{tail}"
    assert not run.lost(), f"requests never answered: {run.lost()[:20]}"
    assert not run.duplicated(), (
        f"requests answered more than once: {list(run.duplicated().items())[:20]}"
    )
    assert not run.ledger.stray, f"answers to ids never sent: {run.ledger.stray[:5]}"
    assert not run.wrong(), (
        f"results that do not match their request: {list(run.wrong().items())[:5]}"
    )
    assert not run.ledger.garbage, f"stdout lines that are not JSON-RPC: {run.ledger.garbage[:5]}"
    assert not run.ledger.server_requests, run.ledger.server_requests[:5]
    assert report["duplicated_notifications"] == 0, run.ledger.notification_keys.most_common(5)
    assert "internal" not in report["errors_by_kind"], tail
    failures = {k: n for k, n in report["proxy_log"].items() if k in ("level=error", "level=fatal")}
    assert not failures, f"the proxy logged failures of its own: {failures}\n{tail}"
    assert report["final_calls_ok"] == f"{FINAL_CALLS}/{FINAL_CALLS}", report["final_calls_ok"]
    assert not run.crashes, run.crashes[0]
    assert not report["server_anomalies"], report["server_anomalies"]
    for kind in ("restart", "session_expired", "stream_dropped", "body_reset"):
        assert report["faults_by_kind"].get(kind, 0) > 0, f"no {kind} fault was injected"
    assert run.samples.peak_sockets <= SOCKET_BOUND, report
    assert run.rss_start_kb > 0, report
    assert run.rss_end_kb - run.rss_start_kb <= RSS_GROWTH_BOUND_KB, report
    assert run.exit_code == 0, tail
