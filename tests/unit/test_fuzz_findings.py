"""What the Schemathesis run (tests/fuzz) found, pinned down without a stack: free-form JSON that a
user sends in bot_config / custom_attributes must either be stored or refused with a 400, never reach
DynamoDB in a shape it rejects (a 500); a provider that is not supported yet is a 400."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from calbot.errors import ApiError
from calbot.http import Request
from calbot.models import (
    BotConfig,
    EnableAutoScheduleRequest,
    PatchBotRequest,
    ScheduleRequest,
)
from calbot.store import from_item, to_item


def _request(body: str) -> Request:
    return Request({"headers": {"content-type": "application/json"}, "body": body})


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(literal: str) -> None:
    with pytest.raises(ApiError) as err:
        _request(f'{{"bot_config": {{"x": {literal}}}}}').json()
    assert (err.value.status, err.value.error) == (400, "invalid_json")


@pytest.mark.parametrize(
    "config",
    [
        {"": 1},  # DynamoDB: "Empty attribute name" at any depth (moto even stores a broken item)
        {"custom_attributes": {"a": {"": "x"}}},
        {"extra": [{"": None}]},
        {"x": 10**40},  # more than 38 digits
        {"x": 1e200},  # beyond 9.99E+125
        {"x": 1e-140},  # below 1E-130
        {"custom_attributes": {"n": -(10**39)}},
        {"deep": json.loads("[" * 40 + "]" * 40)},  # DynamoDB nests at most 32 levels
    ],
)
def test_bot_config_that_dynamodb_cannot_store_is_a_validation_error(config: dict[str, Any]) -> None:
    for model, body in (
        (ScheduleRequest, {"bot_config": config}),
        (EnableAutoScheduleRequest, {"default_bot_config": config}),
        (PatchBotRequest, {"bot_config": config}),
    ):
        with pytest.raises(ValidationError):
            model.model_validate(body)


def test_nan_passed_through_in_python_is_refused_too() -> None:
    with pytest.raises(ValidationError, match="finite"):
        BotConfig.model_validate({"score": float("nan")})


def test_patch_custom_attributes_are_checked_and_bounded() -> None:
    with pytest.raises(ValidationError):
        PatchBotRequest.model_validate({"custom_attributes": {"": 1}})
    with pytest.raises(ValidationError, match="16 KB"):
        PatchBotRequest.model_validate({"custom_attributes": {"k": "x" * 17_000}})
    assert PatchBotRequest.model_validate({"custom_attributes": {"k": 0.25}}).custom_attributes == {"k": 0.25}


def test_floats_in_bot_config_are_stored_and_read_back_unchanged() -> None:
    # boto3 refuses Python floats: this was a 500 for any fractional number in bot_config.
    config = BotConfig.model_validate(
        {"score": 0.1, "tiny": -4.3050267599787467e-54, "big": 63770464681459.0, "n": [1.5, {"m": 2.25}]}
    ).model_dump(mode="json")
    item = to_item({"bot_config": config})
    assert item["bot_config"]["M"]["score"] == {"N": "0.1"}
    assert from_item(item) == {"bot_config": config}
