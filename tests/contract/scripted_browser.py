"""A stand-in for the user's browser, run by Python's `webbrowser` through the BROWSER
environment variable: it loads the authorize URL, follows the redirect to the proxy's
callback, and appends the URL it was given to $SCRIPTED_BROWSER_LOG."""

from __future__ import annotations

import http.client
import os
import sys
from urllib.parse import urlsplit


def get(url: str) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    connection.request("GET", parts.path + ("?" + parts.query if parts.query else ""))
    return connection.getresponse()


def main() -> None:
    url = sys.argv[1]
    with open(os.environ["SCRIPTED_BROWSER_LOG"], "a", encoding="utf-8") as log:
        log.write(url + "\n")
    consent = get(url)
    callback = get(consent.headers["location"])
    callback.read()


if __name__ == "__main__":
    main()
