"""The environment a test gives the installed command: this process's, without anything
that would change what is tested (the proxy's own settings, HTTP proxies, trust overrides),
plus the test's settings."""

from __future__ import annotations

import os

_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
_OTHER_SETTINGS = {"LOG_LEVEL", "DISCOVERY_ENABLED", "ALLOW_INSECURE_HTTP"}


def clean_env(**settings: str) -> dict[str, str]:
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OAUTH2_", "UPSTREAM_", "MCP_PROXY_", "SSL_CERT_"))
        and key.lower() not in _PROXY_VARIABLES
        and key not in _OTHER_SETTINGS
    }
    return {**clean, **settings}
