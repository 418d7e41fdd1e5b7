"""Customer webhook endpoints: POST/GET/PATCH/DELETE /webhooks and POST /webhooks/{id}/rotate-secret
(API.md "Customer webhooks"). Deliveries, retries and the test event are
calbot.services.webhook_delivery's.

A URL is accepted only when calbot.netguard finds it https and public (after DNS resolution); the
sender checks it again at every delivery. The signing secret is shown only in the answers to
registration and rotation; it lives in the credential backend (calbot.webhook_secrets), never in the
endpoint's record. Another user's endpoint answers 404, as a missing one does.
"""

from __future__ import annotations

import secrets as random
from typing import Any

from calbot import netguard, store, webhook_secrets
from calbot.errors import Invalid, NotFound
from calbot.models import (
    WEBHOOK_LIMIT,
    CreateWebhookRequest,
    PatchWebhookRequest,
    WebhookCreated,
    WebhookDeleted,
    WebhookEndpoint,
    WebhookList,
    WebhookSecretRotated,
    WebhookView,
)
from calbot.timeutil import now


def new_webhook_id() -> str:
    return "wh_" + random.token_hex(12)


def _safe_url(url: str) -> str:
    """The URL, if we may send to it (400 invalid_webhook_url saying why, if not)."""
    try:
        netguard.check_url(url)
    except netguard.UnsafeUrl as err:
        raise Invalid("invalid_webhook_url", err.message) from None
    return url


def _not_found(webhook_id: str) -> NotFound:
    return NotFound("webhook_not_found", f"No webhook endpoint {webhook_id}.", webhook_id=webhook_id)


def _endpoint(user_id: str, webhook_id: str) -> WebhookEndpoint:
    endpoint = store.get_webhook(user_id, webhook_id)
    if endpoint is None:
        raise _not_found(webhook_id)
    return endpoint


def create_webhook(user_id: str, body: CreateWebhookRequest) -> WebhookCreated:
    """Register an endpoint (at most WEBHOOK_LIMIT per user); the answer shows its secret, once."""
    url = _safe_url(body.url)
    at = now()
    endpoint = WebhookEndpoint(
        webhook_id=new_webhook_id(),
        user_id=user_id,
        url=url,
        event_types=list(body.event_types),
        description=body.description,
        created_at=at,
        updated_at=at,
    )
    secret = webhook_secrets.new_secret()
    # The secret first: an endpoint is never on record (and delivered to) without one.
    webhook_secrets.store_secret(user_id, endpoint.webhook_id, secret)
    try:
        store.create_webhook(endpoint, limit=WEBHOOK_LIMIT)
    except BaseException as err:
        webhook_secrets.delete_secrets(user_id, endpoint.webhook_id)
        if isinstance(err, store.WebhookLimitReached):
            raise Invalid(
                "webhook_limit_reached",
                f"Maximum of {WEBHOOK_LIMIT} webhook endpoints per user reached; delete one first.",
                limit=WEBHOOK_LIMIT,
            ) from None
        raise
    return WebhookCreated(**WebhookView.of(endpoint).model_dump(), secret=secret)


def list_webhooks(user_id: str) -> WebhookList:
    endpoints = store.list_webhooks(user_id)
    return WebhookList(
        webhooks=[WebhookView.of(e) for e in endpoints], total=len(endpoints), limit=WEBHOOK_LIMIT
    )


def get_webhook(user_id: str, webhook_id: str) -> WebhookView:
    return WebhookView.of(_endpoint(user_id, webhook_id))


def update_webhook(user_id: str, webhook_id: str, body: PatchWebhookRequest) -> WebhookView:
    """Change url (checked again), event_types, description or enabled. Enabling an endpoint gives it a
    fresh start: its failure streak and the reason it was disabled are cleared."""
    _endpoint(user_id, webhook_id)  # 404 before the URL is judged
    sent = body.model_fields_set
    changes: dict[str, Any] = {"updated_at": now()}
    if "url" in sent and body.url is not None:
        changes["url"] = _safe_url(body.url)
    if "event_types" in sent and body.event_types is not None:
        changes["event_types"] = list(body.event_types)
    if "description" in sent:
        changes["description"] = body.description
    if "enabled" in sent and body.enabled is not None:
        changes |= {"enabled": body.enabled, "disabled_reason": None}
        if body.enabled:
            changes["failing_since"] = None
    updated = store.update_webhook(user_id, webhook_id, changes)
    if updated is None:  # deleted meanwhile
        raise _not_found(webhook_id)
    return WebhookView.of(updated)


def delete_webhook(user_id: str, webhook_id: str) -> WebhookDeleted:
    """Delete an endpoint and its secrets. The secrets go first: a call cut off in between leaves an
    endpoint that a retried DELETE finds and finishes, never a secret nobody can reach."""
    _endpoint(user_id, webhook_id)
    webhook_secrets.delete_secrets(user_id, webhook_id)
    if not store.delete_webhook(user_id, webhook_id):
        raise _not_found(webhook_id)
    return WebhookDeleted(deleted=True, id=webhook_id)


def rotate_secret(user_id: str, webhook_id: str) -> WebhookSecretRotated:
    """A new secret, shown once; the previous one keeps signing beside it for 24 hours."""
    _endpoint(user_id, webhook_id)
    secret = webhook_secrets.new_secret()
    stored = webhook_secrets.store_secret(user_id, webhook_id, secret)
    changes = {
        "secret_version": stored.version,
        "previous_secret_expires_at": stored.previous_expires_at,
        "updated_at": now(),
    }
    if store.update_webhook(user_id, webhook_id, changes) is None:  # deleted meanwhile
        webhook_secrets.delete_secrets(user_id, webhook_id)
        raise _not_found(webhook_id)
    return WebhookSecretRotated(
        id=webhook_id, secret=secret, previous_secret_expires_at=stored.previous_expires_at
    )
