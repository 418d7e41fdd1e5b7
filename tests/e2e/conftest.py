"""End-to-end fixtures: the local stack as a separate process, driven over HTTP like a user's curl.

Everything the stack process prints (handler logs included) is captured to a file, and every response
the tests receive is recorded, so a test can grep both for token material.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from local.gateway import overrun_failure

ROOT = Path(__file__).resolve().parents[2]


class E2EStack:
    def __init__(self, state_dir: Path, log_path: Path, proc: subprocess.Popen[bytes], info: dict[str, Any]):
        self.state_dir = state_dir
        self.log_path = log_path
        self.proc = proc
        self.info = info
        self.api_url: str = info["api_url"]
        self.graph_url: str = info["graph_url"]
        self.google_url: str = info["google_url"]
        self.responses: list[str] = []  # every response body seen, for the secret grep
        self.http = requests.Session()
        # Token material the emulators issued on this stack, read before it stops (see `stop_stack`).
        self.token_material: set[str] = set()
        self.collect_error: str | None = None
        self.overruns: list[dict[str, Any]] = []  # read from /_local/overruns when the stack stops

    @property
    def demo_key(self) -> str:
        return self.info["demo"]["api_key"]

    def api(self, method: str, path: str, *, key: str | None = None, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if key is not None:
            headers["Authorization"] = f"Token {key}"
        resp = self.http.request(method, f"{self.api_url}{path}", headers=headers, timeout=60, **kwargs)
        self.responses.append(resp.text)
        return resp

    def graph(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        resp = self.http.request(method, f"{self.graph_url}/_control{path}", timeout=30, **kwargs)
        assert resp.status_code < 400, f"emulator control {method} {path}: {resp.status_code} {resp.text}"
        return resp

    def google(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """The Google emulator's control API (/_control/...), like `graph`."""
        resp = self.http.request(method, f"{self.google_url}/_control{path}", timeout=30, **kwargs)
        assert resp.status_code < 400, (
            f"google emulator control {method} {path}: {resp.status_code} {resp.text}"
        )
        return resp

    def control(self, method: str, path: str, **kwargs: Any) -> Any:
        """The stack's own control API (/_local/...: clock, schedules, cron jobs, queues)."""
        resp = self.http.request(method, f"{self.info['gateway_url']}/_local{path}", timeout=300, **kwargs)
        assert resp.status_code < 400, resp.text
        return resp.json()

    def clock_now(self) -> datetime:
        return datetime.fromisoformat(self.control("GET", "/clock")["now"].replace("Z", "+00:00"))

    def advance(self, to: datetime) -> dict[str, Any]:
        """Move the virtual clock, firing every schedule and cron job that becomes due on the way."""
        return self.control("POST", "/clock/advance", json={"to": to.isoformat()})

    def settle(self) -> None:
        """Let every change notification reach the webhook, then let the worker drain the queue."""
        self.graph("POST", "/notifications/flush")
        self.google("POST", "/notifications/flush")
        self.control("POST", "/queues/drain")

    def connected_user(self, client_id: str, client_secret: str, mails: list[str]) -> dict[str, Any]:
        """A new user (via the admin CLI) with these emulator accounts connected over the API."""
        made = self.admin("create-user", "--with-key")
        accounts = []
        for mail in mails:
            acct = self.graph(
                "POST", "/accounts", json={"client_id": client_id, "mail": mail, "user_principal_name": mail}
            ).json()
            resp = self.api(
                "POST",
                "/calendar/create_outlook_calendar",
                key=made["api_key"],
                json={
                    "microsoft_client_id": client_id,
                    "microsoft_client_secret": client_secret,
                    "microsoft_refresh_token": acct["refresh_token"],
                },
            )
            assert resp.status_code == 201, resp.text
            accounts.append({**acct, "mail": mail})
        return {"key": made["api_key"], "user_id": made["user_id"], "accounts": accounts}

    def env(self) -> dict[str, str]:
        """The environment the handlers get (for the admin CLI and direct AWS checks)."""
        out = subprocess.run(
            [sys.executable, "-m", "local.env", str(self.state_dir)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        env = {}
        for line in out.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip("'")
        return env

    def admin(self, *args: str) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "calbot.admin", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, **self.env(), "PYTHONPATH": str(ROOT / "layers/core")},
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def boto(self, service: str) -> Any:
        import boto3

        env = self.info["aws_env"]
        return boto3.client(
            service,
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def collect_token_material(self) -> set[str]:
        """Every token the emulators issued on this stack (refresh, access, Google channel tokens), every
        subscription clientState and the Create Bot API key in SSM, kept on the stack so the secrets
        check can still use them once the stack has stopped."""
        issued = self.graph("GET", "/issued-tokens").json()
        found = {*issued["refresh_tokens"], *issued["access_tokens"]}
        subscriptions = self.graph("GET", "/subscriptions").json()["value"]
        found |= {s["client_state"] for s in subscriptions if s.get("client_state")}
        google = self.google("GET", "/issued-tokens").json()
        found |= {*google["refresh_tokens"], *google["access_tokens"], *google["channel_tokens"]}
        bot_key = self.boto("ssm").get_parameter(Name=self.info["bot_api_key_param"], WithDecryption=True)
        found.add(bot_key["Parameter"]["Value"])  # the Create Bot API credential
        self.token_material |= found
        return self.token_material


# Every stack this session started, in order: the secrets check reads all their logs and responses.
STARTED_STACKS: list[E2EStack] = []


def start_stack(state_dir: Path, *extra: str) -> E2EStack:
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "stack.log"
    log = log_path.open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for var in ("AWS_ENDPOINT_URL", "TABLE_NAME", "SSM_PREFIX"):  # the stack sets its own
        env.pop(var, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.stack", "--state-dir", str(state_dir), "--port", "0", *extra],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    state = state_dir / "stack.json"
    deadline = time.time() + 90
    while not state.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"local stack did not start:\n{log_path.read_text(errors='replace')[-4000:]}")
        time.sleep(0.2)
    stack = E2EStack(state_dir, log_path, proc, json.loads(state.read_text()))
    STARTED_STACKS.append(stack)
    return stack


def stop_stack(stack: E2EStack) -> None:
    try:
        if stack.proc.poll() is None:
            stack.collect_token_material()
    except Exception as exc:  # requests, botocore, an assertion: whatever stopped the collection
        # The secrets check refuses to pass over a stack whose tokens it could not learn.
        stack.collect_error = f"{type(exc).__name__}: {str(exc)[:200]}"
    try:
        if stack.proc.poll() is None:
            stack.overruns = stack.control("GET", "/overruns")["value"]
    except Exception as exc:
        stack.overruns = [{"function": "?", "kind": f"overruns unreadable: {type(exc).__name__}: {exc}"}]
    stack.proc.terminate()
    try:
        stack.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        stack.proc.kill()


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EStack]:
    # Virtual time: the clock moves only when a test advances it, so nothing ever sleeps. Lambda's
    # account pool is 1,000 at once: tests that fire 50 concurrent calls must not meet the local
    # stand-in's smaller default (local/concurrency.py), which is sized for a burst in one process.
    stack = start_stack(tmp_path_factory.mktemp("e2e-stack"), "--virtual-time", "--lambda-concurrency", "100")
    try:
        yield stack
    finally:
        stop_stack(stack)
    # The session fails if any route or function ever ran past its limit, or any call was refused by
    # its function's IAM role: on AWS either would have failed.
    violations = aws_limit_violations(stack)
    assert violations == [], "what AWS would have refused:\n" + "\n".join(violations[:20])


def aws_limit_violations(stack: E2EStack) -> list[str]:
    """What AWS would have refused on a stopped stack: a route or function past its time limit
    (503 at API Gateway's 30 s, killed at its Timeout), or a call its function's IAM role does not
    grant (local/iam_enforce.py) that some handler swallowed (a partial error, a retry)."""
    overran = overrun_failure(stack.overruns)
    found = [overran] if overran else []
    found += re.findall(r"^.*\[iam\] \S+ denied .*$", stack.log_text(), re.MULTILINE)
    return found


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)
