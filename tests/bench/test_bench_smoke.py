"""Every bench script still runs and the report still assembles from what they write (tiny sizes).

CI runs this so `make bench` cannot rot between the runs that produce bench/REPORT.md. It checks that
each script produced its figures and that the report carries every section; it never asserts on a
timing (the machine is shared and noisy).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

RUNS = {
    "cold_start": ["--repeat", "1"],
    "sync": ["--series", "2", "--per-series", "5"],
    "auto_schedule": ["--users", "3", "--accounts", "1", "--meetings", "2"],
    "notify_latency": ["--changes", "3"],
    "read_latency": ["--connections", "3", "--events", "60", "--bots", "5", "--requests", "3"],
    "credentials": ["--syncs", "20", "--hours", "3"],
    "launch": ["--bots", "20"],
}


@pytest.mark.slow
def test_every_bench_script_runs_and_the_report_assembles(tmp_path: Path) -> None:
    for name, args in RUNS.items():
        out = tmp_path / f"{name}.json"
        proc = subprocess.run(
            [sys.executable, str(ROOT / "bench" / f"{name}.py"), *args, "--json-out", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, f"{name}: {proc.stderr[-2000:]}"
        figures = json.loads(out.read_text())
        assert figures, f"{name} wrote no figures"
    report = tmp_path / "REPORT.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "report.py"), str(tmp_path), "-o", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    text = report.read_text()
    for section in (
        "## Machine",
        "## Cold import per handler vs boto3",
        "## Sync: requests per page, writes for an unchanged re-sync",
        "## Notification -> bot update latency",
        "## Auto-schedule throughput and the 100,000-user projection",
        "## Read endpoints: p50/p99 for a heavy user",
        "## Credentials: value sizes, SSM and KMS calls per backend",
        "## Bot launches at the top of the hour",
    ):
        assert section in text
    assert "_Not run in this report._" not in text  # every section came from a script's figures
    # write units are the billed ones, split by target (issue 18): the table and each index
    assert "every global secondary index" in text and "- of which index GSI1" in text
