"""Settings come from the environment once, through one pydantic model: a missing or invalid variable
fails with an error naming it, and no module reads os.environ on its own."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from calbot.config import Settings, SettingsError, get_settings, reset_settings
from calbot.models import ChangeMessage
from calbot.services import notifications

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Only the two required variables set; the cached settings forgotten before and after."""
    for field in Settings.model_fields.values():
        monkeypatch.delenv(str(field.alias), raising=False)
    monkeypatch.setenv("TABLE_NAME", "calbot-test")
    monkeypatch.setenv("SSM_PREFIX", "/calbot/test")
    reset_settings()
    yield monkeypatch
    reset_settings()


def test_each_setting_is_read_from_its_variable(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("RATE_LIMIT_BURST", "7")
    environment.setenv("SYNC_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/sync.fifo")
    environment.setenv("PUBLIC_BASE_URL", "")  # empty means unset: the default stands
    settings = get_settings()
    assert (settings.table_name, settings.rate_limit_burst, settings.public_base_url) == (
        "calbot-test",
        7,
        "",
    )
    assert settings.sync_queue_url == "https://sqs.us-east-1.amazonaws.com/1/sync.fifo"
    assert get_settings() is settings  # validated once


def test_a_missing_required_variable_is_named(environment: pytest.MonkeyPatch) -> None:
    environment.delenv("TABLE_NAME")
    with pytest.raises(SettingsError, match=r"TABLE_NAME is required but not set"):
        get_settings()


def test_an_invalid_variable_is_named_without_its_value(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("CONNECTION_LIMIT", "zero-please")
    with pytest.raises(SettingsError) as err:
        get_settings()
    assert "CONNECTION_LIMIT" in str(err.value) and "zero-please" not in str(err.value)


def test_a_queue_only_some_functions_have_is_named_when_missing() -> None:
    message = ChangeMessage(user_id="usr_a", provider="outlook", account_id="jane@example.com")
    with pytest.raises(SettingsError, match=r"SYNC_QUEUE_URL is not set"):
        notifications.enqueue(message, dedup="d1")
    with pytest.raises(SettingsError, match=r"AUTO_SCHEDULE_QUEUE_URL is not set"):
        get_settings().require("auto_schedule_queue_url")


def test_no_core_module_or_handler_reads_the_environment_itself() -> None:
    readers = [
        str(path.relative_to(ROOT))
        for folder in ("layers/core/calbot", "functions")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if re.search(r"os\.environ|os\.getenv", path.read_text()) and path.name != "config.py"
    ]
    assert readers == []
