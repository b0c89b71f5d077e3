"""The benchmark keeps working: its short form runs end to end and reports every figure.
(Speed itself is never asserted in tests; docs/performance.md holds the measurements.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the benchmark spawns POSIX pipes")


def test_the_quick_benchmark_runs_and_reports_every_figure(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    for mode in ("json", "sse"):
        results = report["results"][mode]
        assert results["exit_status"]["median"] == 0
        assert results["head_of_line"]["slow_still_running"] is True
        assert set(results["throughput"]) == {"1", "8", "64"}
        assert results["cpu_s_per_1k"]["median"] > 0
        assert results["peak_rss_mb"]["median"] > 0
    assert "| **added p50 latency** |" in done.stdout
