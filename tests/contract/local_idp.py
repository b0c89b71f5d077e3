"""A minimal OAuth2 token endpoint on 127.0.0.1 for driving the installed command.

It checks client credentials the way an IdP does (RFC 6749 §5.2 errors) and nothing else;
the browser-login and discovery suites use a real authorization-server library instead.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl


@dataclass
class LocalIdp:
    client_id: str
    client_secret: str
    url: str = ""
    forms: list[dict[str, str]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)


@contextmanager
def local_idp(
    client_id: str = "app",
    client_secret: str = "right-secret",
    *,
    echo: bool = False,
    clock_offset_seconds: float = 0.0,
    tls: ssl.SSLContext | None = None,
) -> Iterator[LocalIdp]:
    """Serve a token endpoint; with `echo`, its errors repeat what was sent, as some do; its
    `Date` header is `clock_offset_seconds` off the real time; over https with `tls`."""
    idp = LocalIdp(client_id, client_secret)

    class Handler(BaseHTTPRequestHandler):
        def date_time_string(self, timestamp: float | None = None) -> str:
            now = time.time() if timestamp is None else timestamp
            return formatdate(now + clock_offset_seconds, usegmt=True)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = dict(parse_qsl(self.rfile.read(length).decode()))
            idp.forms.append(form)
            if (form.get("client_id"), form.get("client_secret")) != (client_id, client_secret):
                said = f" (got {form.get('client_secret')})" if echo else ""
                self._answer(
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": "Client authentication failed" + said,
                    },
                )
            else:
                token = f"local-access-token-{len(idp.issued) + 1}"
                idp.issued.append(token)
                self._answer(
                    200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600}
                )

        def _answer(self, status: int, document: dict[str, object]) -> None:
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test reads the proxy's stderr, not the server's."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    idp.url = f"{scheme}://127.0.0.1:{server.server_address[1]}/oauth/token"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield idp
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
