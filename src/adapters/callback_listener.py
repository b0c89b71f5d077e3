"""The loopback listener that receives the IdP's redirect after a browser login.

HTTP is parsed by h11 (a well-kept, sans-I/O HTTP/1.1 library) rather than by hand; every
decision about a request is `domain.authorization.judge_callback`'s. The listener binds to
loopback only, answers each request with one small page, and keeps the first acceptable
callback; its owner closes it as soon as that arrived.
"""

from __future__ import annotations

import errno
import html
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import h11
from anyio.abc import SocketAttribute, SocketStream

from ..domain.authorization import (
    Denied,
    Granted,
    RedirectTarget,
    Refused,
    judge_callback,
)
from ..domain.errors import ConfigError, ConfigProblem
from ..domain.pkce import LoginSecrets
from .stderr_log import package_logger

log = package_logger()

# A browser's request arrives at once; a connection that dawdles is not a browser.
REQUEST_SECONDS = 10
MAX_REQUEST_BYTES = 64 * 1024


class _Pending:
    def __init__(self, redirect_uri: str) -> None:
        self.redirect_uri = redirect_uri
        self._outcome: Granted | Denied | None = None
        self._arrived = anyio.Event()

    def settle(self, outcome: Granted | Denied) -> bool:
        """Keep the first outcome; False when one was already kept."""
        if self._outcome is not None:
            return False
        self._outcome = outcome
        self._arrived.set()
        return True

    async def result(self) -> Granted | Denied:
        await self._arrived.wait()
        assert self._outcome is not None
        return self._outcome


class LoopbackCallbackListener:
    """The CallbackListener port: an h11 server on 127.0.0.1 (or the configured loopback)."""

    @asynccontextmanager
    async def listening(
        self, target: RedirectTarget, secrets: LoginSecrets
    ) -> AsyncIterator[_Pending]:
        try:
            listener = await anyio.create_tcp_listener(
                local_host=target.host, local_port=target.port
            )
        except OSError as error:
            raise _bind_error(target, error) from None
        port = listener.extra(SocketAttribute.local_port)
        pending = _Pending(target.uri(port))
        expected_host = _authority(target.host, port)

        async def serve(stream: SocketStream) -> None:
            async with stream:
                with anyio.move_on_after(REQUEST_SECONDS):
                    try:
                        await _answer(stream, expected_host, target.path, secrets, pending)
                    except h11.ProtocolError as error:
                        # Not HTTP we understand (or a stray local client): drop the
                        # connection; the login keeps waiting for the real callback.
                        log.debug(
                            "dropped a malformed request to the login listener",
                            extra={"reason": str(error)},
                        )

        failure: BaseException | None = None
        async with listener, anyio.create_task_group() as tasks:
            tasks.start_soon(listener.serve, serve)
            try:
                yield pending
            except BaseException as error:
                # Raised out of the task group it would come wrapped in an ExceptionGroup;
                # the caller's own error (a timeout, say) must reach it as itself.
                failure = error
            finally:
                tasks.cancel_scope.cancel()
        if failure is not None:
            raise failure


async def _answer(
    stream: SocketStream, expected_host: str, path: str, secrets: LoginSecrets, pending: _Pending
) -> None:
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            try:
                connection.receive_data(await stream.receive(MAX_REQUEST_BYTES))
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            continue
        if isinstance(event, h11.Request):
            break
        return
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in event.headers
    }
    outcome = judge_callback(
        method=event.method.decode("latin-1"),
        target=event.target.decode("latin-1"),
        host_header=_with_port(headers.get("host")),
        expected_host=expected_host,
        expected_path=path,
        secrets=secrets,
    )
    if isinstance(outcome, Refused):
        log.debug(
            "refused a request to the login listener",
            extra={"status": outcome.status, "reason": outcome.reason},
        )
        status, page = outcome.status, _page("Not a login callback", outcome.reason)
    elif not pending.settle(outcome):
        status, page = (
            409,
            _page(
                "Login already finished",
                "This login has already been completed. You can close this tab.",
            ),
        )
    elif isinstance(outcome, Granted):
        status, page = (
            200,
            _page(
                "Logged in",
                "mcp-oauth2-proxy received your login. You can close this tab and "
                "return to your MCP client.",
            ),
        )
    else:
        explained = outcome.explain(pending.redirect_uri)
        status, page = 400, _page("Login failed", f"{explained[:1].upper()}{explained[1:]}.")
    body = page.encode()
    response = h11.Response(
        status_code=status,
        headers=[
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
        ],
    )
    parts: tuple[h11.Response | h11.Data | h11.EndOfMessage, ...] = (
        (response, h11.EndOfMessage())
        if event.method == b"HEAD"
        else (response, h11.Data(data=body), h11.EndOfMessage())
    )
    try:
        for part in parts:
            await stream.send(connection.send(part) or b"")
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        return


def _page(title: str, text: str) -> str:
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{html.escape(title)} · mcp-oauth2-proxy</title>"
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:4em auto;"
        "padding:0 1em;color:#222}h1{font-size:1.4em}</style>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></html>"
    )


def _with_port(host_header: str | None) -> str | None:
    """A Host header without a port means port 80 (RFC 9110 §7.2)."""
    if host_header is None or ":" in host_header.rsplit("]", 1)[-1]:
        return host_header
    return f"{host_header}:80"


def _authority(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}"


def _bind_error(target: RedirectTarget, error: OSError) -> ConfigError:
    # The port comes from the redirect URI when one is configured, else from the callback
    # port (set or default: the listener cannot tell, so no source is claimed).
    if target.configured is not None:
        setting, source = "oauth2.redirectUri / OAUTH2_REDIRECT_URI", "set"
        another_port = f"choose another port in {setting} and register it with your IdP"
    else:
        setting, source = "oauth2.callbackPort / OAUTH2_CALLBACK_PORT", ""
        another_port = (
            f"choose another port with {setting} and register the new redirect URI with your IdP"
        )
    if error.errno == errno.EADDRINUSE:
        message = (
            f"port {target.port} on {target.host} is already in use, so the login callback "
            "cannot be received. Stop what holds it (often another proxy's login), or "
            f"{another_port}"
        )
    else:
        message = (
            f"cannot listen on {target.host}:{target.port} for the login callback: {error}; "
            f"{another_port}"
        )
    return ConfigError([ConfigProblem(setting, source, message)])
