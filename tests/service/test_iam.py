"""The local stack runs each function as its role: a call the role does not grant is refused with AWS's
AccessDenied inside the function, and the route answers the handler's JSON error, not success."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from calbot.auth import issue_api_key
from local.gateway import Gateway
from local.stack import LocalStack
from local.template import Template, load_yaml

ROOT = Path(__file__).resolve().parents[2]


def _template_without(stack: LocalStack, function: str, policy: str) -> Template:
    """template.yaml as the stack runs it, minus one policy of one function."""
    data: dict[str, Any] = load_yaml(ROOT / "template.yaml")
    policies = data["Resources"][function]["Properties"]["Policies"]
    data["Resources"][function]["Properties"]["Policies"] = [p for p in policies if p != {"Ref": policy}]
    assert len(data["Resources"][function]["Properties"]["Policies"]) == len(policies) - 1
    return Template(
        data,
        path=ROOT / "template.yaml",
        parameter_overrides=stack.info["parameter_overrides"],
        stack_name=stack.info["stack_name"],
    )


def test_a_call_the_role_does_not_grant_is_refused_in_the_stack(
    inproc_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    key, _ = issue_api_key(f"usr_iam{uuid.uuid4().hex[:12]}")
    headers = {"Authorization": f"Token {key}"}
    path = "/api/v1/calendar/get_events"

    # The stack's own gateway: the function's role grants what it calls.
    assert inproc_stack.gateway.iam is not None
    ok = Client(inproc_stack.gateway).get(path, headers=headers)
    assert ok.status_code == 200, ok.get_data(as_text=True)

    # The same function without its table reads: its Query is refused like AWS would refuse it.
    log = io.StringIO()
    strict = Gateway(_template_without(inproc_stack, "GetEventsFunction", "TableReadPolicy"), log=log)
    denied = Client(strict).get(path, headers=headers)
    assert denied.status_code == 500
    assert denied.json == {"error": "internal_error", "message": "An unexpected error occurred."}
    account = inproc_stack.gateway.template.account_id
    assert (
        f"[iam] GetEventsFunction denied Query: User: arn:aws:sts::{account}:assumed-role/"
        "calbot-local-GetEventsFunctionRole/calbot-local-GetEventsFunction is not authorized to perform: "
        f"dynamodb:Query on resource: arn:aws:dynamodb:us-east-1:{account}:table/calbot-local-Table/index/"
    ) in capsys.readouterr().err
