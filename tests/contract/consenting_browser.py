"""A user at the browser, run by Python's `webbrowser` through the BROWSER environment
variable: it loads the login page, presses the button named by $CONSENT (approve or deny),
and follows the IdP's redirect to the proxy's callback."""

from __future__ import annotations

import http.client
import os
import re
import sys
from urllib.parse import urlencode, urljoin, urlsplit


def request(method: str, url: str, body: str | None = None) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    target = parts.path + ("?" + parts.query if parts.query else "")
    connection.request(method, target, body=body, headers=headers)
    return connection.getresponse()


def main() -> None:
    url = sys.argv[1]
    page = request("GET", url).read().decode()
    action = re.search(r'<form method="post" action="([^"]+)"', page)
    hidden = re.search(r'name="request" value="([^"]+)"', page)
    if action is None or hidden is None:
        raise SystemExit(f"no login form on {url}")
    decision = os.environ.get("CONSENT", "approve")
    form = urlencode({"request": hidden.group(1), "decision": decision})
    redirect = request("POST", urljoin(url, action.group(1)), form)
    request("GET", redirect.headers["location"]).read()


if __name__ == "__main__":
    main()
