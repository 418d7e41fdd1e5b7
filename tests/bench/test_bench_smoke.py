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
    "auto_schedule": [
        "--users",
        "3",
        "--accounts",
        "1",
        "--meetings",
        "2",
        "--fan-out-users",
        "50",
        "--invite-body",
    ],
    "notify_latency": ["--changes", "3"],
    "read_latency": ["--connections", "3", "--events", "60", "--bots", "5", "--requests", "3"],
    "renewal": ["--subscriptions", "3", "--index", "50"],
    "events_many": ["--accounts", "6", "--slow", "2", "--delay", "0.5"],
    "notify_burst": ["--burst", "--accounts", "4", "--per-account", "1"],
    "credentials": ["--syncs", "20", "--hours", "3"],
    "launch": ["--bots", "20"],
    "day": ["--users", "1", "--accounts", "2", "--meetings", "3"],
    "webhooks": ["--events", "10", "--changes", "2"],
}
SCRIPTS = {"notify_burst": "notify_latency"}  # a figure set written by another script's mode


@pytest.mark.slow
def test_every_bench_script_runs_and_the_report_assembles(tmp_path: Path) -> None:
    for name, args in RUNS.items():
        out = tmp_path / f"{name}.json"
        proc = subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / f"{SCRIPTS.get(name, name)}.py"),
                *args,
                "--json-out",
                str(out),
            ],
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
        "## Subscription renewal fan-out and the 300,000 projection",
        "## GET /calendar/events with 200 accounts, many slow",
        "## Notification burst: 1,000 notifications across 500 accounts",
        "## Credentials: value sizes, SSM and KMS calls per backend",
        "## Bot launches at the top of the hour",
        "## One day at 100,000 users: requests, Lambda, peaks, quotas, cost",
        "## Customer webhooks: one worker's throughput, bot change -> delivery latency",
    ):
        assert section in text
    assert "_Not run in this report._" not in text  # every section came from a script's figures
    assert "provider syncs (sync worker)" in text  # the burst says how many syncs its notifications cost
    # write units are the billed ones, split by target (issue 18): the table and each index
    assert "every global secondary index" in text and "- of which index GSI1" in text
    # the midnight run's meetings carry the invitation body a real one does (its write units depend on it)
    assert "-character Zoom invitation, as Outlook holds it" in text
