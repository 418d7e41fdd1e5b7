"""What each Lambda handler imports at cold start (bench/cold_start.py measures how long it takes).

A handler imports what it uses on every call; what only some functions or some paths use is imported
where it is used. This pins the heavy modules each handler must not load at import, so a top-level
import added to a shared module cannot quietly put them back on every function's cold start.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "app.py").exists())

# Heavy module -> the only handlers that may import it at cold start (they use it on every call).
ONLY_FOR: dict[str, set[str]] = {
    "requests": {"bot_launcher"},  # provider code and the Create Bot API client make their sessions lazily
    "aws_lambda_powertools.utilities.batch": {"sync_worker"},
    "aws_lambda_powertools.utilities.parameters": set(),  # SSM reads happen on first use
    "calbot.services.sync": {"list_events", "list_calendars", "auto_schedule_worker"},
    "calbot.providers.outlook": set(),
    "calbot.providers.google": set(),
    "calbot.providers.http": set(),
    "calbot.recurrence": set(),
    "calbot.links": set(),
    "calbot.timezones": set(),
    "calbot.openapi": {"openapi"},
    "dateutil.rrule": set(),
}

_PROBE = """
import json, sys
sys.path[:0] = [{core!r}, {fndir!r}]
import app
print(json.dumps([name for name in {watched!r} if name in sys.modules]))
"""


def _cold_imports(handler: str) -> set[str]:
    """The watched modules a fresh interpreter holds after importing the handler (as Lambda does)."""
    code = _PROBE.format(
        core=str(ROOT / "layers/core"), fndir=str(ROOT / "functions" / handler), watched=sorted(ONLY_FOR)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(json.loads(out.stdout))


def test_no_handler_imports_what_it_does_not_use_on_every_call() -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        loaded = dict(zip(HANDLERS, pool.map(_cold_imports, HANDLERS), strict=True))
    unexpected = {
        handler: sorted(name for name in names if handler not in ONLY_FOR[name])
        for handler, names in loaded.items()
    }
    assert {handler: names for handler, names in unexpected.items() if names} == {}
    # the probe sees imports at all: the allowed ones are really there
    assert "requests" in loaded["bot_launcher"]
    assert "aws_lambda_powertools.utilities.batch" in loaded["sync_worker"]
    assert "calbot.services.sync" in loaded["auto_schedule_worker"]
