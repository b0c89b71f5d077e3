"""`mcp-oauth2-proxy doctor`: the proxy's own start, made step by step and reported.

It builds the proxy exactly as the command would (same environment, same file, same
container) and then, instead of serving, checks each step the first tool call depends on:
the configuration and where each value came from, the insecure-URL policy, discovery (and
which URLs answered what), a token (never a browser: an interactive grant needs a cached
login), the IdP's clock, the upstream (reachable, TLS, `initialize` with the token), the
server's event stream and the login's callback port. A step that cannot run because an
earlier one failed is reported as skipped, so the first ✗ is the one to fix.

Every text shown passes the proxy's redactor; no secret or token is ever part of a result.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import anyio
from dependency_injector import providers

from .._version import __version__
from ..adapters.cache_keys import key_location
from ..domain.authorization import redirect_target
from ..domain.config import OAuth2Config, ProxyConfig
from ..domain.config_merge import LoadedConfig, merge_config
from ..domain.config_report import config_report
from ..domain.diagnosis import (
    MAX_CLOCK_SKEW_SECONDS,
    MODERN_VERSIONS,
    PROBE_ID,
    Check,
    Outcome,
    clock_skew_seconds,
    describe_server,
    describe_skew,
    failed,
    initialized_notification,
    passed,
    probe_message,
    skipped,
)
from ..domain.discovery import DiscoveryError
from ..domain.errors import (
    ConfigError,
    IdpUnreachableError,
    InsecureUrlError,
    OAuthError,
    ProxyError,
    TokenEndpointError,
)
from ..domain.grant_requirements import check_grant_requirements
from ..domain.jsonrpc import Message, parse_upstream_body
from ..domain.ports import (
    DiscoveryTransport,
    MetadataReply,
    TokenEndpoint,
    UpstreamReply,
    UpstreamTransport,
)
from ..domain.redaction import Redactor
from ..domain.settings import CONFIG_FILE_ENV
from ..domain.sse import SseDecoder, SseEvent
from ..domain.token_command import command_words
from ..domain.token_exchange import TokenReply, TokenRequest
from ..domain.token_lifecycle import AccessToken
from ..domain.url_guard import check_config_urls
from ..domain.wire import EVENT_STREAM, WireState
from .container import Container, cache_directory, caches_logins
from .discovery import needs_discovery
from .proxy import Proxy

STEPS = (
    "configuration",
    "security",
    "discovery",
    "token",
    "clock",
    "upstream",
    "server stream",
    "callback port",
)
LOGIN_GRANTS = {
    "authorization_code": "a browser login",
    "device_code": "a device login (a code to enter on another device)",
}
STEP_SECONDS = 15.0
DISCOVERY_SECONDS = 45.0  # discovery's own 30 s limit, plus a client registration
MAX_ANSWER_BYTES = 1 << 20

_T = TypeVar("_T")
_NETWORK_FIX = (
    "check that this machine reaches it (VPN, firewall), the proxy settings HTTPS_PROXY / "
    "NO_PROXY, and, if TLS failed, the trust settings (the operating system's store, or "
    "SSL_CERT_FILE)"
)
_DISCOVERY_OFF_FIX = (
    "or turn discovery off (discovery.enabled / DISCOVERY_ENABLED=false) and set "
    "oauth2.tokenUrl / OAUTH2_TOKEN_URL and oauth2.clientId / OAUTH2_CLIENT_ID yourself "
    "(and oauth2.authorizationUrl / OAUTH2_AUTHORIZATION_URL for the browser login)"
)
_TOKEN_FIXES = {
    "invalid_client": "check oauth2.clientId / OAUTH2_CLIENT_ID and oauth2.clientSecret / "
    "OAUTH2_CLIENT_SECRET, and how the secret is sent (oauth2.authStyle / OAUTH2_AUTH_STYLE)",
    "unauthorized_client": "allow this client the grant at the IdP, or choose the grant it "
    "has with oauth2.grant / OAUTH2_GRANT",
    "invalid_scope": "ask for scopes the IdP knows and grants this client: oauth2.scope / "
    "OAUTH2_SCOPE",
    "invalid_grant": "the refresh token or password was refused: for the browser login run "
    "`mcp-oauth2-proxy logout` and `mcp-oauth2-proxy login`; otherwise update "
    "oauth2.refreshToken / OAUTH2_REFRESH_TOKEN or oauth2.password / OAUTH2_PASSWORD",
    "invalid_target": "the IdP refused the resource indicator: check oauth2.resource / "
    "OAUTH2_RESOURCE",
}
_REFUSED_ACCESS_FIX = (
    "the server refused the token: check that it asks for what the server needs "
    "(oauth2.scope / OAUTH2_SCOPE, oauth2.audience / OAUTH2_AUDIENCE, oauth2.resource / "
    "OAUTH2_RESOURCE) and that the server admits this client or user"
)


async def diagnose(env: Mapping[str, str]) -> list[Check]:
    """Every step's result, in the order of STEPS."""
    doctor = _Doctor()
    loaded = doctor.configuration(env)
    if loaded is not None:
        await doctor.through_the_proxy(loaded)
    return doctor.results()


@dataclass
class _Doctor:
    checks: dict[str, Check] = field(default_factory=dict)
    redactor: Redactor = field(default_factory=Redactor)
    idp_dates: list[str] = field(default_factory=list)
    upstream_date: str | None = None

    def results(self) -> list[Check]:
        """In order, with every step not reached marked skipped, and every text redacted."""
        shown: list[Check] = []
        for index, name in enumerate(STEPS):
            earlier = [step for step in STEPS[:index] if self._outcome(step) is Outcome.FAILED]
            blocker = earlier[-1] if earlier else "an earlier step"
            check = self.checks.get(name) or skipped(name, f"not checked: {blocker} failed")
            shown.append(
                Check(
                    check.name,
                    check.outcome,
                    self.redactor.redact(check.detail),
                    None if check.fix is None else self.redactor.redact(check.fix),
                    tuple(self.redactor.redact(fact) for fact in check.facts),
                )
            )
        return shown

    def _outcome(self, name: str) -> Outcome | None:
        check = self.checks.get(name)
        return None if check is None else check.outcome

    def add(self, check: Check) -> None:
        self.checks[check.name] = check

    # -- without the network -------------------------------------------------------------

    def configuration(self, env: Mapping[str, str]) -> LoadedConfig | None:
        """The merged configuration, or None when it is not usable (the ✗ says why)."""
        container = Container(env=dict(env))
        path = env.get(CONFIG_FILE_ENV) or None
        try:
            document = container.config_file_reader().read(path) if path else None
            loaded = merge_config(env, document, path)
            self.redactor.register(*loaded.config.secrets())
            check_grant_requirements(loaded, discovery_pending=True)
        except ConfigError as error:
            self.add(
                failed(
                    "configuration",
                    "the configuration is not usable",
                    "set or correct each setting named above, in the environment or in the "
                    f"JSON file {CONFIG_FILE_ENV} names (docs/configuration.md)",
                    tuple(str(problem) for problem in error.problems),
                )
            )
            return None
        self.add(_configuration_passed(loaded, path))
        self.add(self._callback_port(loaded.config, container))
        try:
            check_config_urls(loaded)
        except InsecureUrlError as error:
            self.add(
                failed(
                    "security",
                    "a URL would carry tokens or secrets in cleartext",
                    "switch it to https://, or reach the service through a loopback tunnel "
                    "(ssh -L); only for trusted testing set security.allowInsecureHttp / "
                    "ALLOW_INSECURE_HTTP=true",
                    tuple(str(problem) for problem in error.problems),
                )
            )
            return None
        if loaded.config.security.allow_insecure_http:
            self.add(
                Check(
                    "security",
                    Outcome.WARNING,
                    "security.allowInsecureHttp / ALLOW_INSECURE_HTTP is true: cleartext "
                    "http:// is allowed to any host; use it for trusted testing only",
                )
            )
        else:
            self.add(passed("security", "every URL is https://, or http:// on loopback"))
        return loaded

    def _callback_port(self, config: ProxyConfig, container: Container) -> Check:
        oauth = config.oauth2
        if oauth.token_command is not None:
            return skipped("callback port", "the token command needs no browser login")
        if oauth.grant != "authorization_code":
            return skipped("callback port", f"grant {oauth.grant} has no browser login")
        try:
            target = redirect_target(oauth)
        except ConfigError as error:
            return failed(
                "callback port",
                str(error),
                "use a loopback http:// redirect URI such as http://127.0.0.1:53682/callback "
                "in oauth2.redirectUri / OAUTH2_REDIRECT_URI, and register it with the IdP",
            )
        if target.port == 0:
            return passed(
                "callback port",
                "a free port is chosen at each login (oauth2.callbackPort / "
                "OAUTH2_CALLBACK_PORT is 0); the IdP must accept any loopback port",
            )
        setting = (
            "oauth2.redirectUri / OAUTH2_REDIRECT_URI"
            if target.configured is not None
            else "oauth2.callbackPort / OAUTH2_CALLBACK_PORT"
        )
        if container.port_checker().is_free(target.host, target.port):
            return passed(
                "callback port",
                f"{target.host}:{target.port} is free for the login's callback",
                (f"the redirect URI to register with the IdP, exactly: {target.uri()}",),
            )
        return failed(
            "callback port",
            f"{target.host}:{target.port} is in use by another program, so the browser "
            "login cannot receive the IdP's redirect",
            "stop the program holding it (another proxy's login, an SSH forward), or choose "
            f"another port in {setting} and register the new redirect URI with the IdP",
        )

    # -- through the proxy ---------------------------------------------------------------

    async def through_the_proxy(self, loaded: LoadedConfig) -> None:
        proxy = Proxy(loaded)
        container = proxy.container
        discovery = _RecordingDiscovery(container.discovery_transport())
        container.discovery_transport.override(providers.Object(discovery))
        token_endpoint = _RecordingTokenEndpoint(container.token_endpoint(), self.idp_dates)
        container.token_endpoint.override(providers.Object(token_endpoint))
        async with AsyncExitStack() as stack:
            try:
                with anyio.fail_after(DISCOVERY_SECONDS):
                    await stack.enter_async_context(proxy)
            except (ProxyError, TimeoutError) as error:
                self.add(_discovery_failed(error, discovery.calls))
                return
            self.redactor.register(*proxy.config.secrets())
            self.add(_discovery_passed(loaded.config, proxy.config, discovery.calls))
            # Never a browser from here: the doctor may run where nobody can log in.
            oauth = proxy.config.oauth2.model_copy(update={"interactive": False})
            quiet = proxy.config.model_copy(update={"oauth2": oauth})
            sources = container.loaded_config().sources
            container.loaded_config.override(providers.Object(LoadedConfig(quiet, sources)))
            token = await self._token(proxy)
            auth = {"Authorization": token.authorization} if token is not None else {}
            upstream = container.upstream()
            state = await self._guarded(
                "upstream", self._upstream(upstream, proxy.config, auth, token)
            )
            if state is not None:
                await self._guarded(
                    "server stream", self._server_stream(upstream, proxy.config, state, auth)
                )
                await _end_session(upstream, state, auth)
            self.add(self._clock(container))

    async def _guarded(self, name: str, step: Awaitable[_T]) -> _T | None:
        """A network step whose failure to get any answer is the step's ✗."""
        try:
            with anyio.fail_after(STEP_SECONDS):
                return await step
        except ProxyError as error:
            fix = f"check upstream.url / UPSTREAM_URL and that the server is up; {_NETWORK_FIX}"
            self.add(failed(name, str(error), fix))
        except TimeoutError:
            self.add(
                failed(
                    name,
                    f"no answer within {STEP_SECONDS:g} s",
                    f"check that the server is up and not overloaded; {_NETWORK_FIX}",
                )
            )
        return None

    async def _token(self, proxy: Proxy) -> AccessToken | None:
        oauth = proxy.config.oauth2
        where = f"client {oauth.client_id} at {oauth.token_url}"
        if oauth.token_command is not None:
            where = f"the token command {command_words(oauth.token_command)[0]}"
        cached = proxy.cached_login() if caches_logins(oauth) else None
        if oauth.grant in LOGIN_GRANTS and oauth.token_command is None and cached is None:
            self.add(
                failed(
                    "token",
                    f"no cached login for {where} in {cache_directory(oauth)}, so the proxy "
                    f"would start {LOGIN_GRANTS[oauth.grant]} at its start",
                    "run `mcp-oauth2-proxy login` once (on a remote host, see "
                    "docs/remote-hosts.md); later starts need no login",
                )
            )
            return None
        try:
            with anyio.fail_after(STEP_SECONDS * 2):
                token = await proxy.access_token()
        except OAuthError as error:
            self.add(failed("token", str(error), _token_fix(error)))
            return None
        except TimeoutError:
            self.add(
                failed(
                    "token",
                    f"no token from {oauth.token_url} within {STEP_SECONDS * 2:g} s",
                    f"check oauth2.tokenUrl / OAUTH2_TOKEN_URL; {_NETWORK_FIX}",
                )
            )
            return None
        self.redactor.register(token.value)
        how = "the cached login, refreshed" if cached is not None else f"grant {oauth.grant}"
        if oauth.token_command is not None:
            how = "what it printed"
        detail = f"a {token.token_type} token for {where}, from {how}"
        if token.scope:
            detail += f"; scope {token.scope}"
        facts = (_cache_fact(oauth),) if caches_logins(oauth) else ()
        self.add(passed("token", detail, facts))
        return token

    def _clock(self, container: Container) -> Check:
        said = self.idp_dates[-1] if self.idp_dates else None
        whose = "the IdP's"
        if said is None:
            said, whose = self.upstream_date, "the upstream's"
        if said is None:
            return skipped("clock", "no answer carried a Date header to compare with")
        skew = clock_skew_seconds(said, container.clock().now())
        if skew is None:
            return skipped("clock", f"{whose} Date header is not a date: {said!r}")
        text = describe_skew(skew, whose)
        if abs(skew) <= MAX_CLOCK_SKEW_SECONDS:
            return passed("clock", f"{text} (within {MAX_CLOCK_SKEW_SECONDS:g} s)")
        return failed(
            "clock",
            f"{text}: tokens may be refused as not yet valid, or renewed too late",
            "set the clock right and keep it synchronised (NTP: `timedatectl set-ntp true` "
            "on Linux; Settings, Time, Sync now on Windows; Date & Time, set automatically "
            "on macOS)",
        )

    async def _upstream(
        self,
        upstream: UpstreamTransport,
        config: ProxyConfig,
        auth: dict[str, str],
        token: AccessToken | None,
    ) -> WireState | None:
        """The first exchange the proxy's client would make, with the token: the session it
        opened (for the stream check), or None when there is nothing more to check."""
        if config.upstream.transport == "sse":
            await self._legacy(upstream, config.upstream.url, auth, token)
            return None
        url = config.upstream.url
        state = WireState(configured_version=config.upstream.protocol_version)
        probe = probe_message(config.upstream.protocol_version, __version__)
        headers = {**state.post_headers(probe), **auth}
        async with upstream.exchange("POST", headers, probe.raw) as reply:
            self.upstream_date = reply.headers.get("date")
            status = reply.status
            fallback = status in (400, 404, 405) and config.upstream.transport == "auto"
            answer = None if fallback else await self._initialized(reply, url, probe, token)
        if fallback:
            await self._legacy(upstream, url, auth, token, refused=status)
            return None
        if answer is None:
            return None
        result, session = answer
        state.learn(result if isinstance(result, dict) else {}, session)
        self.add(
            passed(
                "upstream",
                f"{url} answered {probe.method} with the token: {describe_server(result)}",
                (f"session: {'yes' if session else 'none (a stateless server)'}",),
            )
        )
        return state

    async def _initialized(
        self, reply: UpstreamReply, url: str, probe: Message, token: AccessToken | None
    ) -> tuple[object, str | None] | None:
        """The probe's result and the session id; None after adding the ✗ that says why."""
        status, method = reply.status, probe.method
        if status == 401:
            if token is None:
                self.add(
                    passed(
                        "upstream",
                        f"{url} is reachable and asks for a token (401), which the token "
                        "step could not get",
                    )
                )
            else:
                self.add(
                    failed("upstream", f"{url} refused the token (HTTP 401)", _REFUSED_ACCESS_FIX)
                )
            return None
        if status == 403:
            self.add(
                failed(
                    "upstream",
                    f"{url} accepted the token but refused access (HTTP 403)",
                    _REFUSED_ACCESS_FIX,
                )
            )
            return None
        if status >= 300:
            said = (await reply.read(300)).decode("utf-8", "replace").strip()
            self.add(
                failed(
                    "upstream",
                    f"{url} answered {method} with HTTP {status}: {said or '(no body)'}",
                    "check that upstream.url / UPSTREAM_URL is the server's MCP endpoint "
                    "(often ending in /mcp); a 5xx is the server's own failure, see its logs",
                )
            )
            return None
        kind = reply.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == EVENT_STREAM:
            answer = await _from_event_stream(reply)
        elif kind == "application/json":
            answer = await reply.read(MAX_ANSWER_BYTES)
        else:
            self.add(
                failed(
                    "upstream",
                    f"{url} answered with content type {kind or '(none)'}, not MCP",
                    "check that upstream.url / UPSTREAM_URL is the MCP endpoint, not a web "
                    "page or a sign-in portal",
                )
            )
            return None
        document = _response_to_probe(answer)
        if document is None or "result" not in document:
            error = document.get("error") if document is not None else None
            self.add(
                failed(
                    "upstream",
                    f"{url} did not answer {method} with a result: "
                    f"{json.dumps(error) if error else 'no JSON-RPC response to it'}",
                    "if the error is about the protocol version, unset or change "
                    "upstream.protocolVersion / UPSTREAM_PROTOCOL_VERSION; otherwise see the "
                    "server's logs",
                )
            )
            return None
        return document["result"], reply.headers.get("mcp-session-id")

    async def _server_stream(
        self,
        upstream: UpstreamTransport,
        config: ProxyConfig,
        state: WireState,
        auth: dict[str, str],
    ) -> None:
        if not config.upstream.open_server_stream:
            self.add(
                skipped(
                    "server stream",
                    "upstream.openServerStream / UPSTREAM_OPEN_SERVER_STREAM is false",
                )
            )
            return
        if (config.upstream.protocol_version or "") in MODERN_VERSIONS:
            self.add(skipped("server stream", "the 2026-07-28 wire has no session stream"))
            return
        initialized = initialized_notification()
        notify = {**state.post_headers(initialized), **auth}
        async with upstream.exchange("POST", notify, initialized.raw):
            pass
        async with upstream.exchange("GET", {**state.stream_headers(None), **auth}) as reply:
            kind = reply.headers.get("content-type", "").split(";")[0].strip().lower()
            status = reply.status
        if status == 200 and kind == EVENT_STREAM:
            self.add(passed("server stream", "the server's event stream opens (GET)"))
        elif status in (404, 405):
            self.add(
                Check(
                    "server stream",
                    Outcome.WARNING,
                    f"the server offers no event stream (HTTP {status} to GET): what it sends "
                    "on its own (list changes, log messages) will not arrive; answers to "
                    "requests are not affected",
                )
            )
        else:
            self.add(
                failed(
                    "server stream",
                    f"the GET for the server's event stream got HTTP {status} "
                    f"({kind or 'no body'})",
                    "turn the stream off with upstream.openServerStream / "
                    "UPSTREAM_OPEN_SERVER_STREAM=false if the server cannot offer it",
                )
            )

    async def _legacy(
        self,
        upstream: UpstreamTransport,
        url: str,
        auth: dict[str, str],
        token: AccessToken | None,
        refused: int | None = None,
    ) -> None:
        """The HTTP+SSE transport of MCP 2024-11-05: its stream must open with the token."""
        async with upstream.exchange("GET", {"Accept": EVENT_STREAM, **auth}) as reply:
            kind = reply.headers.get("content-type", "").split(";")[0].strip().lower()
            status = reply.status
        opened = status == 200 and kind == EVENT_STREAM
        before = f"refused the POST (HTTP {refused}); " if refused is not None else ""
        if opened:
            self.add(
                passed(
                    "upstream",
                    f"{url} {before}speaks the HTTP+SSE transport of MCP 2024-11-05, and its "
                    "stream opens with the token; the proxy uses that transport",
                )
            )
            self.add(skipped("server stream", "the HTTP+SSE transport always has its stream"))
        elif status == 401 and token is not None:
            self.add(failed("upstream", f"{url} refused the token (HTTP 401)", _REFUSED_ACCESS_FIX))
        else:
            self.add(
                failed(
                    "upstream",
                    f"{url} {before}and its GET got HTTP {status}: not an MCP endpoint",
                    "check that upstream.url / UPSTREAM_URL is the server's MCP endpoint "
                    "(often ending in /mcp, or /sse for the HTTP+SSE transport)",
                )
            )


def _configuration_passed(loaded: LoadedConfig, path: str | None) -> Check:
    lines = [line for line in config_report(loaded) if line.source != "default"]
    env = sum(line.source.startswith("env ") for line in lines)
    plural = "s" if env != 1 else ""
    oauth = loaded.config.oauth2
    source = "the token command" if oauth.token_command is not None else f"grant {oauth.grant}"
    detail = f"{source}; {env} setting{plural} from the environment"
    if path is not None:
        detail += f", {len(lines) - env} from {path}"
    facts = tuple(f"{line.env} = {line.value} ({line.source})" for line in lines)
    return passed("configuration", detail, facts)


def _discovery_passed(before: ProxyConfig, after: ProxyConfig, calls: list[str]) -> Check:
    if not before.discovery.enabled:
        return skipped("discovery", "off (discovery.enabled / DISCOVERY_ENABLED=false)")
    if before.oauth2.token_command is not None:
        return skipped("discovery", "not needed: the token command gives the tokens")
    if not needs_discovery(before):
        return skipped(
            "discovery", "not needed: the token URL and client id (and login URL) are set"
        )
    oauth = after.oauth2
    return passed(
        "discovery",
        f"token endpoint {oauth.token_url}, client {oauth.client_id}",
        tuple(calls),
    )


def _discovery_failed(error: ProxyError | TimeoutError, calls: list[str]) -> Check:
    if isinstance(error, TimeoutError):
        return failed(
            "discovery",
            f"discovery did not finish within {DISCOVERY_SECONDS:g} s",
            f"check that the upstream and its authorization server answer; {_DISCOVERY_OFF_FIX}",
            tuple(calls),
        )
    if isinstance(error, InsecureUrlError):
        fix = (
            "the server's metadata names a cleartext endpoint: ask its operator for https://, "
            + _DISCOVERY_OFF_FIX
        )
    elif isinstance(error, IdpUnreachableError):
        fix = f"{_NETWORK_FIX}; {_DISCOVERY_OFF_FIX}"
    elif isinstance(error, ConfigError):
        fix = "set what the message names; discovery did not find it"
    else:
        fix = (
            "check that upstream.url / UPSTREAM_URL is the MCP endpoint and that it serves "
            f"/.well-known/oauth-protected-resource; {_DISCOVERY_OFF_FIX}"
        )
    # A DiscoveryError's message lists what it tried already.
    facts = () if isinstance(error, DiscoveryError) else tuple(calls)
    return failed("discovery", str(error), fix, facts)


def _cache_fact(oauth: OAuth2Config) -> str:
    directory = cache_directory(oauth)
    return (
        f"login cached in {directory}, its key in {key_location(directory)} "
        f"(oauth2.tokenStore / OAUTH2_TOKEN_STORE={oauth.token_store})"
    )


def _token_fix(error: OAuthError) -> str:
    if isinstance(error, IdpUnreachableError):
        return f"check oauth2.tokenUrl / OAUTH2_TOKEN_URL; {_NETWORK_FIX}"
    if isinstance(error, TokenEndpointError) and error.error in _TOKEN_FIXES:
        return _TOKEN_FIXES[error.error]
    return "the IdP's words above say what it refused; check the OAUTH2_* settings of this grant"


async def _from_event_stream(reply: UpstreamReply) -> bytes:
    """The data of the first event that answers the probe (skipping notifications)."""
    decoder = SseDecoder(MAX_ANSWER_BYTES)
    async for chunk in reply.chunks():
        for event in decoder.feed(chunk):
            if isinstance(event, SseEvent) and PROBE_ID.encode() in event.data:
                return event.data
    return b""


def _response_to_probe(body: bytes) -> dict[str, object] | None:
    try:
        messages = parse_upstream_body(body)
    except ValueError:
        return None
    for message in messages:
        if message.id == PROBE_ID:
            return dict(message.document)
    return None


async def _end_session(upstream: UpstreamTransport, state: WireState, auth: dict[str, str]) -> None:
    """DELETE the session the probe opened, as the proxy does at its end. Whether the server
    ends sessions this way is its choice (405 is allowed), so nothing here is a finding."""
    if state.session_id is None:
        return
    with contextlib.suppress(ProxyError, TimeoutError), anyio.fail_after(STEP_SECONDS):
        async with upstream.exchange("DELETE", {"Mcp-Session-Id": state.session_id, **auth}):
            pass


class _RecordingDiscovery:
    """The discovery transport, noting which URL answered what (for the ✓ or ✗ line)."""

    def __init__(self, inner: DiscoveryTransport) -> None:
        self._inner = inner
        self.calls: list[str] = []

    async def probe(self, url: str) -> MetadataReply:
        return await self._noted("POST", url, self._inner.probe(url))

    async def get_json(self, url: str) -> MetadataReply:
        return await self._noted("GET", url, self._inner.get_json(url))

    async def post_json(self, url: str, document: Mapping[str, object]) -> MetadataReply:
        return await self._noted("POST", url, self._inner.post_json(url, document))

    async def _noted(
        self, method: Literal["GET", "POST"], url: str, pending: Awaitable[MetadataReply]
    ) -> MetadataReply:
        try:
            reply = await pending
        except ProxyError:
            self.calls.append(f"{method} {url} -> no answer")
            raise
        self.calls.append(f"{method} {url} -> HTTP {reply.status}")
        return reply


class _RecordingTokenEndpoint:
    """The token endpoint, keeping the IdP's Date headers for the clock check."""

    def __init__(self, inner: TokenEndpoint, dates: list[str]) -> None:
        self._inner = inner
        self._dates = dates

    async def post(self, request: TokenRequest) -> TokenReply:
        reply = await self._inner.post(request)
        if reply.date is not None:
            self._dates.append(reply.date)
        return reply
