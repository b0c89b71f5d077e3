"""Opening the login page in the user's default browser, safely.

Only `https://` URLs, or `http://` to loopback, are ever handed over, and never through a
shell: the lesson of CVE-2025-6514, where mcp-remote passed a server-supplied URL to a shell
command and a crafted one ran code on the user's machine. Python's `webbrowser` runs the
browser (or `xdg-open`, `open`, ShellExecute) with the URL as a single argument.
"""

from __future__ import annotations

import webbrowser
from urllib.parse import urlsplit

import anyio

from ..domain.url_guard import is_loopback_host
from .stderr_log import package_logger

log = package_logger()


def safe_to_open(url: str) -> bool:
    """True for https:// URLs and http:// URLs on loopback; nothing else is opened."""
    parts = urlsplit(url)
    if any(ord(char) < 0x21 or 0x7F <= ord(char) <= 0x9F for char in url):
        return False  # spaces and control characters (C0, DEL, C1) have no place in a URL
    if parts.scheme == "https":
        return bool(parts.hostname)
    return parts.scheme == "http" and is_loopback_host(parts.hostname or "")


class SystemBrowser:
    """The BrowserOpener port over the `webbrowser` module."""

    async def show(self, url: str) -> bool:
        if not safe_to_open(url):
            log.warning(
                "refused to open a login URL that is neither https nor loopback http",
                extra={"url": url[:200]},
            )
            return False
        try:
            opened = await anyio.to_thread.run_sync(webbrowser.open, url, 1)
        except webbrowser.Error as error:
            log.warning("could not open a browser", extra={"reason": str(error)})
            return False
        if not opened:
            log.warning("no browser could be opened; open the login URL printed above yourself")
        return bool(opened)
