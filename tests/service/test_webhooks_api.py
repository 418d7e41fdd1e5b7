"""calbot.services.webhooks (the endpoints' routes) against the local moto: registration with its
secret shown once, the 10-per-user limit, URL checks on create and on PATCH, isolation between users,
rotation with the 24 h overlap, and deletion taking the secrets with it."""

from __future__ import annotations

import functools
import socket
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from calbot import netguard, store, webhook_secrets
from calbot.errors import DomainError
from calbot.http import status_of
from calbot.models import CreateWebhookRequest, PatchWebhookRequest
from calbot.services import webhooks as svc
from local.stack import LocalStack

PUBLIC = "https://93.184.215.14/calbot-hook"  # an address literal: nothing to resolve


@pytest.fixture(scope="module", autouse=True)
def stack(inproc_stack: LocalStack) -> Iterator[LocalStack]:
    yield inproc_stack


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Names resolve through this table (the sandbox has no DNS); a name not in it does not resolve."""
    table: dict[str, str] = {"hooks.example.com": "93.184.215.14", "rebind.example.com": "169.254.169.254"}

    def resolve(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], port))]

    monkeypatch.setattr(netguard, "check_url", functools.partial(netguard.check_url, resolve=resolve))
    return table


def new_user() -> str:
    return f"usr_whapi_{uuid.uuid4().hex[:10]}"


def refused(call: Any, *args: Any) -> tuple[int, str, dict[str, Any]]:
    with pytest.raises(DomainError) as err:
        call(*args)
    return status_of(err.value), err.value.code, err.value.details


def create(user: str, url: str = PUBLIC, **fields: Any) -> Any:
    return svc.create_webhook(user, CreateWebhookRequest.model_validate({"url": url, **fields}))


def test_register_shows_the_secret_once_and_get_and_list_never_do() -> None:
    user = new_user()
    made = create(user, "https://hooks.example.com/in", event_types=["bot.cancelled", "bot.updated"])
    assert made.id.startswith("wh_") and made.secret.startswith("whsec_")
    assert made.enabled and made.event_types == ["bot.cancelled", "bot.updated"]
    assert webhook_secrets.signing_secrets(user, made.id) == [made.secret]
    got = svc.get_webhook(user, made.id)
    assert "secret" not in got.model_dump() and made.secret not in got.model_dump_json()
    listed = svc.list_webhooks(user)
    assert listed.total == 1 and listed.limit == 10 and listed.webhooks[0] == got
    assert made.secret not in listed.model_dump_json()
    record = store.get_webhook(user, made.id)
    assert record is not None and made.secret not in record.model_dump_json()  # never on the record
    assert create(user).event_types == ["*"]  # the default: every type


def test_event_types_are_the_contracts_list_or_star() -> None:
    for bad in (["bot.exploded"], [], ["*", "bot.failed"], "bot.failed"):
        with pytest.raises(ValidationError):
            CreateWebhookRequest.model_validate({"url": PUBLIC, "event_types": bad})
    with pytest.raises(ValidationError):
        CreateWebhookRequest.model_validate({"url": PUBLIC, "secret": "whsec_mine"})  # unknown field
    with pytest.raises(ValidationError):
        PatchWebhookRequest.model_validate({"event_types": ["connection.exploded"]})
    with pytest.raises(ValidationError):
        PatchWebhookRequest.model_validate({})
    with pytest.raises(ValidationError):
        PatchWebhookRequest.model_validate({"enabled": None})


def test_at_most_ten_endpoints_per_user_and_a_refused_one_leaves_no_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = new_user()
    for _ in range(10):
        create(user)
    made_ids: list[str] = []
    real = svc.new_webhook_id
    monkeypatch.setattr(svc, "new_webhook_id", lambda: made_ids.append(real()) or made_ids[-1])
    status, code, details = refused(create, user)
    assert (status, code, details) == (400, "webhook_limit_reached", {"limit": 10})
    assert webhook_secrets.signing_secrets(user, made_ids[0]) == []  # its secret was deleted again
    assert svc.list_webhooks(user).total == 10
    create(new_user())  # another user's limit is their own


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/in",
        "https://127.0.0.1/in",
        "https://10.0.0.7/in",
        "https://172.16.3.4/in",
        "https://192.168.0.10/in",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fd00:ec2::254]/latest/meta-data/",
        "https://[::1]/in",
        "https://[::ffff:10.0.0.1]/in",
        "https://rebind.example.com/in",  # a name resolving to the metadata address
        "https://nowhere.example.com/in",  # a name that does not resolve
        "https://user:pw@hooks.example.com/in",
    ],
)
def test_forged_urls_are_refused_on_create_and_on_patch(url: str) -> None:
    user = new_user()
    status, code, _ = refused(create, user, url)
    assert (status, code) == (400, "invalid_webhook_url")
    assert svc.list_webhooks(user).total == 0
    made = create(user)
    status, code, _ = refused(svc.update_webhook, user, made.id, PatchWebhookRequest(url=url))
    assert (status, code) == (400, "invalid_webhook_url")
    assert svc.get_webhook(user, made.id).url == PUBLIC


def test_patch_changes_what_was_sent() -> None:
    user = new_user()
    made = create(user, description="first")
    changed = svc.update_webhook(
        user,
        made.id,
        PatchWebhookRequest.model_validate(
            {"url": "https://hooks.example.com/v2", "event_types": ["connection.needs_reauth"]}
        ),
    )
    assert changed.url == "https://hooks.example.com/v2" and changed.event_types == [
        "connection.needs_reauth"
    ]
    assert changed.description == "first" and changed.updated_at >= made.created_at
    cleared = svc.update_webhook(user, made.id, PatchWebhookRequest.model_validate({"description": None}))
    assert cleared.description is None
    off = svc.update_webhook(user, made.id, PatchWebhookRequest(enabled=False))
    assert not off.enabled and off.disabled_reason is None


def test_enabling_an_endpoint_disabled_by_failures_gives_it_a_fresh_start() -> None:
    user = new_user()
    made = create(user)
    start = made.created_at
    store.mark_webhook_delivery_result(user, made.id, ok=False, at=start)
    off = store.mark_webhook_delivery_result(user, made.id, ok=False, at=start + timedelta(days=5))
    assert off is not None and not off.enabled and off.disabled_reason == "failing_5_days"
    assert svc.get_webhook(user, made.id).disabled_reason == "failing_5_days"
    on = svc.update_webhook(user, made.id, PatchWebhookRequest(enabled=True))
    assert on.enabled and on.disabled_reason is None
    record = store.get_webhook(user, made.id)
    assert record is not None and record.failing_since is None


def test_another_users_ids_are_404() -> None:
    owner, other = new_user(), new_user()
    made = create(owner)
    for call, args in (
        (svc.get_webhook, (other, made.id)),
        (svc.update_webhook, (other, made.id, PatchWebhookRequest(enabled=False))),
        (svc.rotate_secret, (other, made.id)),
        (svc.delete_webhook, (other, made.id)),
        (svc.get_webhook, (owner, "wh_doesnotexist")),
    ):
        status, code, _ = refused(call, *args)
        assert (status, code) == (404, "webhook_not_found")
    assert svc.get_webhook(owner, made.id).enabled  # untouched
    assert webhook_secrets.signing_secrets(owner, made.id) == [made.secret]
    assert svc.list_webhooks(other).total == 0


def test_rotation_shows_the_new_secret_once_and_the_old_one_signs_beside_it() -> None:
    user = new_user()
    made = create(user)
    rotated = svc.rotate_secret(user, made.id)
    assert rotated.secret != made.secret and rotated.secret.startswith("whsec_")
    assert rotated.previous_secret_expires_at is not None
    assert (
        timedelta(hours=23, minutes=59)
        < rotated.previous_secret_expires_at - made.created_at
        <= timedelta(hours=24, minutes=5)
    )
    webhook_secrets.clear_cache()  # as the delivery worker's container sees it
    assert webhook_secrets.signing_secrets(user, made.id) == [rotated.secret, made.secret]
    record = store.get_webhook(user, made.id)
    assert record is not None and record.secret_version == 2
    assert record.previous_secret_expires_at == rotated.previous_secret_expires_at
    assert rotated.secret not in svc.get_webhook(user, made.id).model_dump_json()


def test_delete_takes_the_secrets_and_the_place_under_the_limit() -> None:
    user = new_user()
    made = [create(user) for _ in range(10)]
    deleted = svc.delete_webhook(user, made[0].id)
    assert deleted.deleted and deleted.id == made[0].id
    assert webhook_secrets.signing_secrets(user, made[0].id) == []
    assert store.get_webhook(user, made[0].id) is None
    status, code, _ = refused(svc.delete_webhook, user, made[0].id)
    assert (status, code) == (404, "webhook_not_found")
    create(user)  # its place is free again
