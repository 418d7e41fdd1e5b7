"""The API-key authorizer (functions/authorizer): a store error is never taken for a bad key."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from calbot import store

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"authz_{name}", ROOT / "functions" / name / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


AUTHORIZER = _load("authorizer")
ROUTE = _load("list_connections")


def _authorize(header: str | None) -> dict[str, Any]:
    return AUTHORIZER({"headers": {"authorization": header} if header else {}}, None)


@pytest.mark.parametrize(
    "failure",
    [
        EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"),
        ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "GetItem"),
        ClientError({"Error": {"Code": "InternalServerError"}}, "GetItem"),
        ClientError({"Error": {"Code": "AccessDeniedException"}}, "GetItem"),
    ],
)
def test_a_store_error_answers_503_at_the_route_never_401(
    monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    def broken(key_hash: str) -> None:
        raise failure

    monkeypatch.setattr(store, "get_api_key", broken)
    verdict = _authorize("Token cbk_a_perfectly_valid_key")
    # HttpApi simple responses can only allow or deny (raising would be a bare 500 from API Gateway):
    # allowed, with the flag the route turns into the contract's 503.
    assert verdict["isAuthorized"] is True and verdict["context"]["unavailable"] is True
    assert verdict["context"]["user_id"] == ""
    answer = ROUTE(
        {
            "routeKey": "GET /api/v1/calendar/connections",
            "requestContext": {"http": {"method": "GET"}, "authorizer": {"lambda": verdict["context"]}},
            "headers": {},
        },
        None,
    )
    assert answer["statusCode"] == 503, answer
    assert json.loads(answer["body"])["error"] == "service_unavailable"
    assert answer["headers"]["retry-after"] == "2"


def test_no_key_or_an_unknown_key_is_still_401(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "get_api_key", lambda key_hash: None)
    for header in (None, "Token cbk_unknown", "Basic abc"):
        verdict = _authorize(header)
        assert "unavailable" not in verdict["context"]
        answer = ROUTE(
            {
                "routeKey": "GET /api/v1/calendar/connections",
                "requestContext": {"http": {"method": "GET"}, "authorizer": {"lambda": verdict["context"]}},
                "headers": {},
            },
            None,
        )
        assert answer["statusCode"] == 401 and json.loads(answer["body"])["error"] == "unauthorized"
