"""The insecure-URL guard: tokens and secrets never cross a network in cleartext.

https always passes; http only to a loopback host (127.0.0.0/8, ::1, localhost), where the
traffic never leaves the machine; any other scheme is refused even with the override, since
the proxy speaks nothing else. `ALLOW_INSECURE_HTTP=true` permits http elsewhere, for trusted
local testing only.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from .config_merge import LoadedConfig
from .errors import ConfigProblem, InsecureUrlError
from .settings import SETTINGS_BY_PATH

GUARDED_SETTINGS = (
    "upstream.url",
    "oauth2.tokenUrl",
    "oauth2.deviceAuthorizationUrl",
    "oauth2.authorizationUrl",
    "oauth2.redirectUri",
)


def is_loopback_host(host: str) -> bool:
    """True for names and addresses that cannot leave this machine."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def url_problem(url: str, *, allow_insecure_http: bool) -> str | None:
    """Why `url` may not carry tokens, and what to do about a URL you set, or None when it
    may."""
    host = _cleartext_host(url, allow_insecure_http=allow_insecure_http)
    if host is None:
        return _scheme_problem(url)
    return (
        f"is cleartext http:// to {host!r}, which is not loopback; switch to https://, use a "
        "loopback tunnel, or (trusted testing only) set security.allowInsecureHttp / "
        "ALLOW_INSECURE_HTTP=true"
    )


def insecure_reason(url: str, *, allow_insecure_http: bool) -> str | None:
    """Why `url` may not carry tokens, without the advice (a discovered URL is fixed by its
    server's operator, not in this configuration), or None when it may."""
    host = _cleartext_host(url, allow_insecure_http=allow_insecure_http)
    if host is None:
        return _scheme_problem(url)
    return f"is cleartext http:// to {host!r}, which is not loopback"


def _scheme_problem(url: str) -> str | None:
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("https", "http"):
        return None
    return f"uses scheme {scheme or '(none)'!r}; only https:// (or http:// on loopback) works"


def _cleartext_host(url: str, *, allow_insecure_http: bool) -> str | None:
    """The host of an http:// URL that would leave this machine unless allowed, else None."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http" or allow_insecure_http:
        return None
    host = parts.hostname or ""
    return None if is_loopback_host(host) else host


def check_url(url: str, setting_path: str, source: str, *, allow_insecure_http: bool) -> None:
    """Raise InsecureUrlError naming the setting (or discovery source) that holds `url`."""
    problem = url_problem(url, allow_insecure_http=allow_insecure_http)
    if problem is not None:
        setting = SETTINGS_BY_PATH.get(setting_path)
        label = setting.names() if setting else setting_path
        raise InsecureUrlError([ConfigProblem(label, source, f"{url} {problem}")])


def check_config_urls(loaded: LoadedConfig) -> None:
    """Apply the guard to every URL setting that is set."""
    config = loaded.config
    allow = config.security.allow_insecure_http
    problems: list[ConfigProblem] = []
    for path in GUARDED_SETTINGS:
        url = config.value(path)
        if not isinstance(url, str):
            continue  # not set
        problem = url_problem(url, allow_insecure_http=allow)
        if problem is not None:
            source = loaded.source_of(path).describe()
            problems.append(
                ConfigProblem(SETTINGS_BY_PATH[path].names(), source, f"{url} {problem}")
            )
    if problems:
        raise InsecureUrlError(problems)
