"""The README as a newcomer uses it: every curl of its walkthrough, pasted in order into bash against a
stack of its own, answers 2xx; `make admin` works as shown."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, E2EStack, start_stack, stop_stack

README = ROOT / "README.md"
# A curl wrapper: the body goes to stdout as usual (so `$(curl ...)` captures keep working) and the
# HTTP status of every call to $CURL_STATUS_LOG, with the method and URL.
PRELUDE = r"""
set -euo pipefail
curl() {
  local out
  out=$(command curl -w '\n__STATUS__%{http_code}' "$@")
  printf '%s %s\n' "${out##*__STATUS__}" "$*" >> "$CURL_STATUS_LOG"
  printf '%s\n' "${out%$'\n'__STATUS__*}"
}
"""


def walkthrough_blocks() -> list[str]:
    """The README's ```bash blocks from "Try it" up to "Users and API keys"."""
    text = README.read_text()
    section = text[text.index("Try it") : text.index("### Users and API keys")]
    return re.findall(r"```bash\n(.*?)```", section, re.DOTALL)


@pytest.fixture(scope="module")
def readme_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EStack]:
    """A seeded stack of its own: the walkthrough schedules, enables auto-schedule and disconnects."""
    stack = start_stack(tmp_path_factory.mktemp("readme-stack"), "--virtual-time")
    yield stack
    stop_stack(stack)


def test_every_readme_curl_works_when_pasted(readme_stack: E2EStack, tmp_path: Path) -> None:
    blocks = walkthrough_blocks()
    script = "\n".join(blocks)
    assert "3000" not in script and "GRAPH_PORT" not in script and "<" not in script.replace("<<", "")
    curls = len(re.findall(r"(?m)(?:^|\$\(|\|)\s*curl ", script))
    assert curls >= 20
    gateway = readme_stack.info["api_url"].removesuffix("/api/v1")
    script = script.replace("http://127.0.0.1:8000", gateway)
    status_log = tmp_path / "statuses.txt"
    status_log.touch()
    proc = subprocess.run(
        ["bash", "-c", PRELUDE + script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "CALBOT_STATE_DIR": str(readme_stack.state_dir),
            "CURL_STATUS_LOG": str(status_log),
        },
    )
    statuses = status_log.read_text().splitlines()
    assert proc.returncode == 0, (proc.stderr[-2000:], statuses)
    assert len(statuses) == curls, statuses
    failed = [line for line in statuses if not line.startswith("2")]
    assert failed == [], failed
    # What the walkthrough did is really there: the renamed meeting, a cancelled bot, the new account
    # disconnected, auto-schedule on.
    assert "Moved and renamed" in proc.stdout
    settings = readme_stack.api("GET", "/calendar/auto-schedule/settings", key=readme_stack.demo_key).json()
    assert settings["enabled"] is True
    connections = readme_stack.api("GET", "/calendar/connections", key=readme_stack.demo_key).json()
    assert "new.person@contoso.example" not in json.dumps(connections)


def test_make_admin_works_as_the_readme_shows(readme_stack: E2EStack) -> None:
    text = README.read_text()
    shown = re.findall(r'^make admin ARGS="([^"]+)"', text, re.MULTILINE)
    assert [args.split()[0] for args in shown] == ["create-user", "create-api-key", "revoke-api-key"]

    def make_admin(args: str) -> dict[str, object]:
        # -o: the stamp of `make install` counts as fresh (the suite runs after `make test` installed).
        proc = subprocess.run(
            [
                "make",
                "-s",
                "-o",
                ".venv/.installed",
                "admin",
                f"STATE_DIR={readme_stack.state_dir}",
                f"ARGS={args}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    made = make_admin(shown[0])
    assert str(made["user_id"]).startswith("usr_") and str(made["api_key"]).startswith("cbk_")
    user = str(made["user_id"])
    second = make_admin(shown[1].replace("usr_...", user))
    assert second["user_id"] == user and second["api_key"] != made["api_key"]
    revoked = make_admin(shown[2].replace("key_...", str(second["key_id"])).replace("usr_...", user))
    assert revoked == {"revoked": True}
    assert readme_stack.api("GET", "/calendar/connections", key=str(second["api_key"])).status_code == 401
    assert readme_stack.api("GET", "/calendar/connections", key=str(made["api_key"])).status_code == 200
