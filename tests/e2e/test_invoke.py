"""1/8 addendum: every function in template.yaml invoked once through the Docker-free stand-in
(`python -m local.invoke`, what `make invoke` runs) with its sample event, against the running stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from local.template import load_template
from tests.e2e.conftest import E2EStack

ROOT = Path(__file__).resolve().parents[2]
EVENTS = sorted((ROOT / "events").glob("*.json"))


def expected(name: str, result: Any) -> None:
    """What each sample event implies. A new sample event must say what it expects here."""
    checks = {
        "AuthorizerFunction": lambda r: (
            r["isAuthorized"] is True
            and r["context"]["user_id"] == "usr_demo"
            and set(r["context"]) == {"user_id", "key_id"}  # the key's handle, never the key
        ),
        # The seed leaves sample.user@fabrikam.example unconnected at the emulator: the create_calendar
        # route's sample (first by file name) connects it, the create_outlook_calendar one then meets the
        # same operation's 409 for the same account.
        "CreateConnectionFunction.CreateCalendar": lambda r: (
            r["statusCode"] == 201 and json.loads(r["body"])["account_id"] == "sample.user@fabrikam.example"
        ),
        "CreateConnectionFunction": lambda r: (
            r["statusCode"] == 409
            and json.loads(r["body"])["error"] == "already_connected"
            and json.loads(r["body"])["account_id"] == "sample.user@fabrikam.example"
        ),
        "GetConnectionFunction": lambda r: (
            r["statusCode"] == 200 and json.loads(r["body"])["account_id"] == "jane@contoso.example"
        ),
        # Disconnects the account CreateConnectionFunction's sample connected (files run in name order).
        "DisconnectConnectionFunction": lambda r: (
            r["statusCode"] == 200
            and json.loads(r["body"])["disconnected"]
            == {"provider": "outlook", "account_id": "sample.user@fabrikam.example"}
            and json.loads(r["body"])["subscriptions_stopped"] >= 1
        ),
        # The demo user has several connections: the legacy endpoint (POST and DELETE) refuses to guess.
        "DisconnectFunction": lambda r: (
            r["statusCode"] == 400
            and json.loads(r["body"])["error"] == "ambiguous_disconnect"
            and json.loads(r["body"])["connection_count"] >= 2
        ),
        "DisconnectFunction.DisconnectDelete": lambda r: (
            r["statusCode"] == 400 and json.loads(r["body"])["error"] == "ambiguous_disconnect"
        ),
        "ListConnectionsFunction": lambda r: r["statusCode"] == 200 and json.loads(r["body"])["total"] >= 2,
        "ListConnectionsFunction.no_api_key": lambda r: (
            r["statusCode"] == 401 and json.loads(r["body"])["error"] == "unauthorized"
        ),
        "ListEventsFunction": lambda r: (
            r["statusCode"] == 200
            and json.loads(r["body"])["partial_errors"] == {}
            and all(e["account_id"] == "jane@contoso.example" for e in json.loads(r["body"])["results"])
            and len(json.loads(r["body"])["results"]) > 0
        ),
        "GetEventsFunction": lambda r: r["statusCode"] == 200 and len(json.loads(r["body"])["results"]) > 0,
        "ListCalendarsFunction": lambda r: (
            r["statusCode"] == 200 and len(json.loads(r["body"])["calendars"]) >= 3
        ),
        "ListCalendarsFunction.CalendarAlias": lambda r: (
            r["statusCode"] == 200 and len(json.loads(r["body"])["connections"]) >= 2
        ),
        # The demo Teams meeting: scheduled by one sample, cancelled by the next (files run in name order).
        "ScheduleEventFunction": lambda r: (
            r["statusCode"] == 201 and json.loads(r["body"])["status"] == "Scheduled"
        ),
        "UnscheduleEventFunction": lambda r: (
            r["statusCode"] == 200 and json.loads(r["body"])["cancelled"] == 1
        ),
        "ListScheduledBotsFunction": lambda r: r["statusCode"] == 200 and "results" in json.loads(r["body"]),
        # The samples name a bot that does not exist, or a single (not recurring) meeting: clear 4xx answers.
        "UpdateScheduledBotFunction": lambda r: (
            r["statusCode"] == 404 and json.loads(r["body"])["error"] == "bot_not_found"
        ),
        "DeleteScheduledBotFunction": lambda r: r["statusCode"] == 404,
        "ToggleRecurrenceFunction": lambda r: (
            r["statusCode"] == 400 and json.loads(r["body"])["error"] == "not_recurring"
        ),
        "AutoRescheduleFunction": lambda r: (
            r["statusCode"] == 400 and json.loads(r["body"])["error"] == "not_recurring"
        ),
        "BotLauncherFunction": lambda r: r == {"bot_id": "sb_sample_missing", "skipped": "missing"},
        "RecurrenceRescheduleFunction": lambda r: r == {"bot_id": "sb_sample_missing", "skipped": "missing"},
        "AutoScheduleEnableFunction": lambda r: (
            r["statusCode"] == 200
            and json.loads(r["body"])["enabled"] is True
            and json.loads(r["body"])["last_run"]["scheduled"] >= 1
        ),
        "AutoScheduleDisableFunction": lambda r: (
            r["statusCode"] == 200 and json.loads(r["body"])["enabled"] is False
        ),
        "AutoScheduleSettingsFunction": lambda r: (
            r["statusCode"] == 200 and "last_run" in json.loads(r["body"])
        ),
        "AutoScheduleRulesFunction": lambda r: (
            r["statusCode"] == 200 and json.loads(r["body"])["rules"]["title_exclude"] == ["do not record"]
        ),
        "AutoSchedulePreviewFunction": lambda r: (
            r["statusCode"] == 200
            and any(x["reason"] in ("matched", "has_bot") for x in json.loads(r["body"])["results"])
        ),
        "AutoScheduleJobFunction": lambda r: r["failed"] == 0 and r["users_enqueued"] >= 0,
        "AutoScheduleWorkerFunction": lambda r: r == {"batchItemFailures": []},
        "SyncWorkerFunction": lambda r: r == {"batchItemFailures": []},
        "RenewalJobFunction": lambda r: r["failed"] == 0 and r["subscriptions_enqueued"] >= 0,
        "RenewalWorkerFunction": lambda r: r == {"batchItemFailures": []},
        "ArmingJobFunction": lambda r: r["failed"] == 0 and r["bots_enqueued"] >= 0,
        "OpenApiFunction": lambda r: (
            r["statusCode"] == 200
            and json.loads(r["body"])["openapi"] == "3.1.0"
            and "/api/v1/openapi.json" in json.loads(r["body"])["paths"]
        ),
        # Customer-webhook deliveries: the samples name an endpoint and a delivery that do not exist
        # (404); the worker drops an attempt of a missing delivery.
        "ListWebhookDeliveriesFunction": lambda r: (
            r["statusCode"] == 404 and json.loads(r["body"])["error"] == "webhook_not_found"
        ),
        "RetryWebhookDeliveryFunction": lambda r: r["statusCode"] == 404,
        "TestWebhookFunction": lambda r: r["statusCode"] == 404,
        "WebhookDeliveryFunction": lambda r: r == {"batchItemFailures": []},
        # Customer webhooks: the samples name an endpoint that does not exist (404), and register a
        # URL that is not https (400).
        "CreateWebhookFunction": lambda r: (
            r["statusCode"] == 400 and json.loads(r["body"])["error"] == "invalid_webhook_url"
        ),
        "GetWebhookFunction": lambda r: r["statusCode"] == 404,
        "UpdateWebhookFunction": lambda r: r["statusCode"] == 404,
        "DeleteWebhookFunction": lambda r: r["statusCode"] == 404,
        "RotateWebhookSecretFunction": lambda r: r["statusCode"] == 404,
        "ListWebhooksFunction": lambda r: r["statusCode"] == 200 and "webhooks" in json.loads(r["body"]),
        "WebhookFunction": lambda r: (
            r["statusCode"] == 200
            and r["body"].startswith("Validation: Testing")
            and r["headers"]["content-type"].startswith("text/plain")
        ),
    }
    assert name in checks, f"events/{name}.json has no expectation in {__file__}"
    assert checks[name](result), f"{name}: unexpected result {result}"


@pytest.mark.parametrize("event_file", EVENTS, ids=[p.stem for p in EVENTS])
def test_invoke_each_function_with_its_sample_event(e2e: E2EStack, event_file: Path) -> None:
    function = event_file.stem.split(".")[0]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "local.invoke",
            function,
            "-e",
            str(event_file),
            "--state-dir",
            str(e2e.state_dir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "START RequestId:" in proc.stderr and "REPORT RequestId:" in proc.stderr
    expected(event_file.stem, json.loads(proc.stdout.strip().splitlines()[-1]))


def test_every_function_has_a_sample_event_that_is_invoked() -> None:
    functions = set(load_template(ROOT / "template.yaml").functions)
    assert functions == {p.stem.split(".")[0] for p in EVENTS}


def test_invoke_without_a_running_stack_says_so(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "local.invoke", "ListConnectionsFunction", "--state-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "make dev" in proc.stderr + proc.stdout
