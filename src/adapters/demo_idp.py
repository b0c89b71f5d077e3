"""The demo's identity provider: just enough of a real OAuth 2.1 authorization server for the
proxy to find it and log in, on 127.0.0.1 only.

It publishes RFC 8414 metadata, serves an authorize page with Approve and Deny buttons (the
`--interactive` demo shows it in the real browser), checks PKCE S256 and the redirect URI at
the token endpoint, rotates refresh tokens, and issues client-credentials tokens to the
demo's confidential client. It tells the demo what happens (`Report`), so the user sees the
proxy's side of the path: discovery, the login, the token.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote_plus, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ..domain.url_guard import is_loopback_host

DEMO_CLIENT_ID = "demo-client"
Report = Callable[[str, str], None]


@dataclass
class _Login:
    redirect_uri: str
    state: str
    challenge: str
    scope: str


@dataclass
class DemoIdp:
    """One IdP: `issued` holds the access tokens the MCP server accepts."""

    issuer: str
    secret: str
    report: Report
    issued: set[str] = field(default_factory=set)
    _waiting: dict[str, _Login] = field(default_factory=dict)
    _codes: dict[str, _Login] = field(default_factory=dict)
    _refresh_tokens: set[str] = field(default_factory=set)
    _found: bool = False

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/oauth/token"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/oauth-authorization-server", self._metadata),
                Route("/authorize", self._authorize, methods=["GET"]),
                Route("/authorize/decision", self._decision, methods=["POST"]),
                Route("/oauth/token", self._token, methods=["POST"]),
            ]
        )

    async def _metadata(self, request: Request) -> JSONResponse:
        if not self._found:
            self._found = True
            self.report("discovery", f"the proxy found this IdP ({self.issuer}) from the server")
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": self.token_url,
                "response_types_supported": ["code"],
                "grant_types_supported": [
                    "authorization_code",
                    "refresh_token",
                    "client_credentials",
                ],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "none"],
                "authorization_response_iss_parameter_supported": True,
            }
        )

    async def _authorize(self, request: Request) -> Response:
        query = request.query_params
        redirect_uri = query.get("redirect_uri", "")
        parts = urlsplit(redirect_uri)
        problem = None
        if query.get("client_id") != DEMO_CLIENT_ID:
            problem = "unknown client_id"
        elif parts.scheme != "http" or not is_loopback_host(parts.hostname or ""):
            problem = "the redirect_uri must be http:// on loopback"
        elif query.get("response_type") != "code":
            problem = "response_type must be code"
        elif query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            problem = "PKCE S256 is required"
        if problem is not None:
            return HTMLResponse(_page(f"<p>Refused: {html.escape(problem)}.</p>"), 400)
        request_id = secrets.token_urlsafe(16)
        self._waiting[request_id] = _Login(
            redirect_uri,
            query.get("state", ""),
            query["code_challenge"],
            query.get("scope", ""),
        )
        self.report("login", "the browser shows the demo IdP's login page; approve it there")
        return HTMLResponse(
            _page(
                "<p>mcp-oauth2-proxy asks to act for you at the demo MCP server.</p>"
                '<form method="post" action="/authorize/decision">'
                f'<input type="hidden" name="request" value="{request_id}">'
                '<button name="decision" value="approve">Approve</button> '
                '<button name="decision" value="deny">Deny</button></form>'
            )
        )

    async def _decision(self, request: Request) -> Response:
        form = await request.form()
        login = self._waiting.pop(str(form.get("request", "")), None)
        if login is None:
            return HTMLResponse(_page("<p>This login request is unknown or was used.</p>"), 400)
        answer = {"state": login.state, "iss": self.issuer}
        if form.get("decision") == "approve":
            code = secrets.token_urlsafe(24)
            self._codes[code] = login
            answer["code"] = code
            self.report("login", "approved; the IdP sent the browser back to the proxy")
        else:
            answer["error"] = "access_denied"
            self.report("login", "denied in the browser")
        return RedirectResponse(f"{login.redirect_uri}?{urlencode(answer)}", status_code=303)

    async def _token(self, request: Request) -> JSONResponse:
        form = await request.form()
        grant = form.get("grant_type")
        if grant == "client_credentials":
            if not self._confidential_client(request, form):
                return _error("invalid_client", "unknown client or wrong secret", 401)
        elif grant == "authorization_code":
            login = self._codes.pop(str(form.get("code", "")), None)
            if login is None or form.get("redirect_uri") != login.redirect_uri:
                return _error("invalid_grant", "unknown code, or another redirect_uri")
            if _s256(str(form.get("code_verifier", ""))) != login.challenge:
                return _error("invalid_grant", "the PKCE code_verifier does not match")
        elif grant == "refresh_token":
            token = str(form.get("refresh_token", ""))
            if token not in self._refresh_tokens:
                return _error("invalid_grant", "unknown or already used refresh token")
            self._refresh_tokens.discard(token)
        else:
            return _error("unsupported_grant_type", f"grant {grant} is not offered")
        access = secrets.token_urlsafe(32)
        self.issued.add(access)
        answer: dict[str, object] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": 3600,
        }
        if grant != "client_credentials":
            refresh = secrets.token_urlsafe(32)
            self._refresh_tokens.add(refresh)
            answer["refresh_token"] = refresh
        how = "authorization_code with PKCE" if grant == "authorization_code" else grant
        self.report("token", f"the IdP issued an access token to the proxy ({how})")
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})

    def _confidential_client(self, request: Request, form: FormData) -> bool:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = request.headers.get("authorization", "")
        if basic.startswith("Basic "):
            pair = base64.b64decode(basic[6:]).decode()
            client_id, _, secret = (unquote_plus(part) for part in pair.partition(":"))
        return client_id == DEMO_CLIENT_ID and secrets.compare_digest(
            str(secret or ""), self.secret
        )


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _error(code: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": code, "error_description": description}, status_code=status)


def _page(body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Demo IdP</title></head>"
        f"<body><h1>Demo IdP (mcp-oauth2-proxy demo)</h1>{body}</body></html>"
    )
