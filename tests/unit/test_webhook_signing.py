"""Our Standard Webhooks signatures, verified by the `standardwebhooks` library as a receiver would."""

from __future__ import annotations

import base64
import json
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from calbot.webhook_signing import headers, secret_key, signature

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OTHER = "whsec_" + base64.b64encode(b"o" * 24).decode()
BODY = json.dumps(
    {"id": "evt_1", "type": "bot.updated", "timestamp": "2026-12-06T10:00:00Z", "data": {}}
).encode()


def test_the_library_verifies_our_signature() -> None:
    now = int(time.time())
    signed = headers([SECRET], "evt_1", now, BODY)
    assert set(signed) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert signed["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(BODY, signed) == json.loads(BODY)


def test_a_tampered_body_or_another_secret_fails() -> None:
    signed = headers([SECRET], "evt_1", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY + b" ", signed)
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER).verify(BODY, signed)


def test_two_secrets_sign_side_by_side_and_either_verifies() -> None:
    signed = headers([SECRET, OTHER], "evt_1", int(time.time()), BODY)
    assert len(signed["webhook-signature"].split(" ")) == 2
    assert Webhook(SECRET).verify(BODY, signed) == json.loads(BODY)
    assert Webhook(OTHER).verify(BODY, signed) == json.loads(BODY)


def test_the_key_is_the_decoded_secret_and_the_signed_text_is_id_dot_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    assert secret_key(SECRET) == b"k" * 32
    expected = base64.b64encode(hmac.new(b"k" * 32, b"evt_1.1700000000." + BODY, hashlib.sha256).digest())
    assert signature(SECRET, "evt_1", 1700000000, BODY) == "v1," + expected.decode()
    with pytest.raises(ValueError):
        headers([], "evt_1", 1, BODY)
