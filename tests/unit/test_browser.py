"""Only https URLs, or http on loopback, ever reach the browser (CVE-2025-6514), and a browser
that cannot be opened is a warning, not a failure."""

from __future__ import annotations

import webbrowser

import pytest

from mcp_oauth2_proxy.adapters.browser import SystemBrowser, safe_to_open
from mcp_oauth2_proxy.domain.ports import BrowserOpener

from ..conftest import warnings

LOGIN_URL = "https://idp.example/authorize?client_id=app&state=s"


@pytest.mark.parametrize(
    "url",
    [
        LOGIN_URL,
        "https://idp.example",
        "https://idp.example:8443/oauth2/authorize",
        "HTTPS://IDP.EXAMPLE/authorize",
        "https://user@idp.example/authorize",
        "http://127.0.0.1:53682/callback",
        "http://127.0.0.2/",
        "http://localhost/",
        "http://localhost:8080/authorize",
        "http://[::1]/",
        "http://[::1]:8080/authorize",
    ],
)
def test_safe_urls(url: str) -> None:
    assert safe_to_open(url) is True


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/authorize",
        "http://10.0.0.1/authorize",
        "http://127.0.0.1.evil.example/",
        "http://127.0.0.1@evil.example/",
        "javascript:alert(1)",
        "JavaScript:alert(document.cookie)",
        "file:///etc/passwd",
        "file://localhost/etc/passwd",
        "data:text/html,<script>alert(1)</script>",
        "ftp://example.com/file",
        "mailto:someone@example.com",
        "vbscript:msgbox(1)",
        "ms-msdt:/id PCWDiagnostic",
        "https://",
        "https:///path-only",
        "https:idp.example",
        "//idp.example/authorize",
        "idp.example/authorize",
        "",
        "https://idp.example/a b",
        "https://idp.example/a\nb",
        "https://idp.example/a\r\nSet-Cookie: x",
        "https://idp.example/a\tb",
        "https://idp.example/\x00",
        "https://idp.example/\x1b[31m",
        "https://idp.example/\x7f",
        " https://idp.example/",
        "\x01https://idp.example/",
        'https://idp.example/" & calc.exe',
    ],
)
def test_refused_urls(url: str) -> None:
    assert safe_to_open(url) is False


@pytest.mark.parametrize("char", ["\x85", "\x9b"])
def test_c1_control_characters_are_refused(char: str) -> None:
    assert safe_to_open(f"https://idp.example/a{char}b") is False


class Recorder:
    """Stands in for webbrowser.open: records calls, answers `result` or raises `error`."""

    def __init__(self, result: bool = True, error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.result = result
        self.error = error

    def __call__(self, url: str, new: int = 0, autoraise: bool = True) -> bool:
        self.calls.append(url)
        if self.error is not None:
            raise self.error
        return self.result


def install(monkeypatch: pytest.MonkeyPatch, recorder: Recorder) -> None:
    # The module under test's own reference to webbrowser.open.
    monkeypatch.setattr("mcp_oauth2_proxy.adapters.browser.webbrowser.open", recorder)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "file:///etc/passwd",
        "http://example.com/authorize",
        "https://idp.example/a b",
        "https://",
    ],
)
async def test_unsafe_urls_never_reach_webbrowser(
    url: str, monkeypatch: pytest.MonkeyPatch, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    install(monkeypatch, recorder)
    opener: BrowserOpener = SystemBrowser()
    assert await opener.show(url) is False
    assert recorder.calls == []
    assert len(warnings(caplog_warnings)) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("url", [LOGIN_URL, "http://127.0.0.1:53682/authorize?x=1"])
async def test_safe_url_is_opened_once_as_given(
    url: str, monkeypatch: pytest.MonkeyPatch, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    install(monkeypatch, recorder)
    assert await SystemBrowser().show(url) is True
    assert recorder.calls == [url]
    assert warnings(caplog_warnings) == []


@pytest.mark.anyio
async def test_no_browser_is_a_warning_and_false(
    monkeypatch: pytest.MonkeyPatch, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(result=False)
    install(monkeypatch, recorder)
    assert await SystemBrowser().show(LOGIN_URL) is False
    assert recorder.calls == [LOGIN_URL]
    (record,) = warnings(caplog_warnings)
    assert "browser" in record.getMessage()


@pytest.mark.anyio
async def test_webbrowser_error_is_a_warning_and_false(
    monkeypatch: pytest.MonkeyPatch, caplog_warnings: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(error=webbrowser.Error("could not locate runnable browser"))
    install(monkeypatch, recorder)
    assert await SystemBrowser().show(LOGIN_URL) is False
    assert recorder.calls == [LOGIN_URL]
    (record,) = warnings(caplog_warnings)
    assert "browser" in record.getMessage()
