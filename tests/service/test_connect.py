"""services.connect against moto (server mode) and the Graph emulator, without HTTP in front of it.

The emulator's validation handshake calls back into our real webhook handler through the gateway, so a
subscription here exists only because the handshake was answered with 200 text/plain.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from calbot import aws, store, vault
from calbot.errors import DomainError
from calbot.http import status_of
from calbot.models import CreateConnectionRequest
from calbot.services import connect as connect_service
from calbot.timeutil import parse_iso
from local.servers import serve
from local.stack import LocalStack
from tests.conftest import secret_items

# Every test runs once with each credential backend (ssm, dynamodb).
pytestmark = pytest.mark.usefixtures("credential_backend")

CLIENT_ID = "svc-client"
CLIENT_SECRET = "svc-client-secret-a81f"
_n = itertools.count()


@pytest.fixture(scope="module")
def stack(inproc_stack: LocalStack) -> Iterator[LocalStack]:
    inproc_stack.graph.add_app(CLIENT_ID, CLIENT_SECRET)
    yield inproc_stack
    inproc_stack.graph.clear_faults()


@pytest.fixture
def user_id(stack: LocalStack) -> str:
    from calbot.admin import create_user

    return create_user(f"u{next(_n)}@svc.example").user_id


def account(stack: LocalStack, **extra: Any) -> dict[str, Any]:
    n = next(_n)
    return stack.graph.add_account(
        client_id=CLIENT_ID,
        mail=f"svc{n}@contoso.example",
        user_principal_name=f"svc{n}@contoso.example",
        display_name=f"Svc {n}",
        **extra,
    )


def request(refresh_token: str, **extra: Any) -> CreateConnectionRequest:
    return CreateConnectionRequest(
        microsoft_client_id=CLIENT_ID,
        microsoft_client_secret=CLIENT_SECRET,
        microsoft_refresh_token=refresh_token,
        **extra,
    )


def base_url(stack: LocalStack) -> str:
    return stack.info["gateway_url"]


def emulator_subs(stack: LocalStack, account_id: str) -> list[dict[str, Any]]:
    return [s for s in stack.graph.subscriptions() if s["account_id"] == account_id]


def ssm_names(user_id: str) -> list[str]:
    from calbot.config import get_settings

    resp = aws.ssm().get_parameters_by_path(
        Path=f"{get_settings().ssm_prefix}/users/{user_id}", Recursive=True
    )
    return [p["Name"] for p in resp["Parameters"]]


def assert_nothing_left(stack: LocalStack, user_id: str, acct: dict[str, Any]) -> None:
    assert ssm_names(user_id) == []
    assert secret_items(user_id) == []
    assert emulator_subs(stack, acct["id"]) == []
    assert store.list_connections(user_id) == []
    assert store.count_connections(user_id) == 0


def test_connect_stores_secure_string_subscriptions_and_record(
    stack: LocalStack, user_id: str, credential_backend: str
) -> None:
    acct = account(stack, calendars=[{"name": "Calendar", "is_default": True}, {"name": "Second"}])
    status, created = connect_service.connect_account(
        user_id, request(acct["refresh_token"]), base_url=base_url(stack)
    )
    assert status == 201 and created.watch_setup.subscriptions == 2

    conn = store.get_connection(user_id, "outlook", created.account_id.upper())  # case-insensitive
    assert conn is not None and conn.credential_path.startswith(f"/calbot/local/users/{user_id}/outlook/")
    if credential_backend == "ssm":
        param = aws.ssm().get_parameter(Name=conn.credential_path, WithDecryption=True)["Parameter"]
        assert param["Type"] == "SecureString"
    else:
        assert ssm_names(user_id) == [] and len(secret_items(user_id)) == 2  # CRED# and TOKEN#
    creds = vault.get(conn.credential_path)
    assert creds is not None
    assert creds.refresh_token != acct["refresh_token"]  # rotated, and the new one is what we keep
    assert creds.refresh_token in [t["refresh_token"] for t in stack.graph.refresh_tokens(acct["id"])]

    # One SUB item per subscription with a hash of its secret (never the secret itself), and the
    # emulator's copy of the clientState hashes to it.
    for ref in conn.subscriptions:
        sub = store.get_subscription(ref.id)
        assert sub is not None and sub.user_id == user_id and len(sub.client_state_hash) == 64
        remote = next(s for s in emulator_subs(stack, acct["id"]) if s["id"] == ref.id)
        assert connect_service.hash_client_state(remote["client_state"]) == sub.client_state_hash
        assert remote["client_state"] not in conn.model_dump_json()

    # Proof we kept the rotated token, not the one we were sent: the emulator marks the submitted one
    # redeemed (superseded) and the stored one is the current, unredeemed one. (Rotation does not
    # revoke the old token, so "the old one fails" is no proof: it lives until its own 90 days end.)
    state = {t["refresh_token"]: t["superseded"] for t in stack.graph.refresh_tokens(acct["id"])}
    assert state[acct["refresh_token"]] is True and state[creds.refresh_token] is False


def test_handshake_must_be_answered_with_plain_text_or_nothing_is_made(
    stack: LocalStack, user_id: str
) -> None:
    """A webhook that answers the validation with 200 JSON (not text/plain) fails the handshake."""

    def json_echo(environ: dict, start_response: Any) -> list[bytes]:
        from urllib.parse import parse_qs

        token = parse_qs(environ.get("QUERY_STRING", "")).get("validationToken", [""])[0]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [token.encode()]

    bad_hook = serve(json_echo, port=0)
    try:
        acct = account(stack)
        with pytest.raises(DomainError) as err:
            connect_service.connect_account(user_id, request(acct["refresh_token"]), base_url=bad_hook.url)
        assert status_of(err.value) == 503 and err.value.code == "service_unavailable"
        assert_nothing_left(stack, user_id, acct)
    finally:
        bad_hook.shutdown()


def test_failure_after_credentials_stored_rolls_everything_back(
    stack: LocalStack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    acct = account(stack, calendars=[{"name": "Calendar", "is_default": True}, {"name": "Other"}])

    made: list[str] = []

    def boom(*args: Any, **kwargs: Any) -> None:
        # by now: credentials stored (SSM or CRED#), two subscriptions at the emulator, SUB items written
        made.extend(s["id"] for s in emulator_subs(stack, acct["id"]))
        assert ssm_names(user_id) or secret_items(user_id)
        assert len(made) == 2 and all(store.get_subscription(i) for i in made)
        raise RuntimeError("injected failure before the connection record is written")

    monkeypatch.setattr(store, "create_connection", boom)
    with pytest.raises(RuntimeError):
        connect_service.connect_account(user_id, request(acct["refresh_token"]), base_url=base_url(stack))
    assert_nothing_left(stack, user_id, acct)
    assert made and all(store.get_subscription(sub_id) is None for sub_id in made)


def test_subscription_503_after_credentials_stored_is_502_and_rolled_back(
    stack: LocalStack, user_id: str
) -> None:
    acct = account(stack)
    stack.graph.add_fault(path=r"^/v1\.0/subscriptions$", method="POST", status=503, times=-1)
    try:
        with pytest.raises(DomainError) as err:
            connect_service.connect_account(user_id, request(acct["refresh_token"]), base_url=base_url(stack))
    finally:
        stack.graph.clear_faults()
    assert status_of(err.value) == 502 and err.value.code == "provider_unavailable"
    assert_nothing_left(stack, user_id, acct)


def test_throttled_me_is_retried_after_retry_after(stack: LocalStack, user_id: str) -> None:
    acct = account(stack)
    stack.graph.clear_requests()
    stack.graph.add_fault(path=r"^/v1\.0/me$", status=429, retry_after=1, times=1)
    status, created = connect_service.connect_account(
        user_id, request(acct["refresh_token"]), base_url=base_url(stack)
    )
    assert status == 201
    me_calls = [r for r in stack.graph.requests() if r["path"] == "/v1.0/me"]
    assert [r["status"] for r in me_calls] == [429, 200]
    waited = parse_iso(me_calls[1]["timestamp"]) - parse_iso(me_calls[0]["timestamp"])
    assert waited.total_seconds() >= 0.9  # honoured Retry-After: 1


def test_auth_failures_are_invalid_credentials_and_transient_ones_are_not(
    stack: LocalStack, user_id: str
) -> None:
    acct = account(stack)
    stack.graph.add_fault(path=r"/oauth2/v2\.0/token$", status=400, error="invalid_grant", times=1)
    with pytest.raises(DomainError) as err:
        connect_service.connect_account(user_id, request(acct["refresh_token"]), base_url=base_url(stack))
    assert (status_of(err.value), err.value.code, err.value.details["reason"]) == (
        400,
        "invalid_credentials",
        "invalid_grant",
    )
    stack.graph.add_fault(path=r"/oauth2/v2\.0/token$", status=503, times=-1)
    try:
        with pytest.raises(DomainError) as err:
            connect_service.connect_account(user_id, request(acct["refresh_token"]), base_url=base_url(stack))
    finally:
        stack.graph.clear_faults()
    assert (status_of(err.value), err.value.code) == (502, "provider_unavailable")
    assert_nothing_left(stack, user_id, acct)


def test_replace_reregisters_only_missing_subscriptions(stack: LocalStack, user_id: str) -> None:
    acct = account(stack, calendars=[{"name": "Calendar", "is_default": True}, {"name": "B"}, {"name": "C"}])
    _, created = connect_service.connect_account(
        user_id, request(acct["refresh_token"]), base_url=base_url(stack)
    )
    before = {s["id"] for s in emulator_subs(stack, acct["id"])}
    gone = sorted(before)[0]
    stack.graph.delete_subscription(gone)  # deleted behind our back

    token2 = stack.graph.issue_refresh_token(acct["id"], CLIENT_ID)
    status, replaced = connect_service.connect_account(
        user_id, request(token2, replace=True), base_url=base_url(stack)
    )
    assert status == 200 and replaced.watch_setup.subscriptions == 3
    after = {s["id"] for s in emulator_subs(stack, acct["id"])}
    assert before - {gone} <= after and len(after - before) == 1
    assert store.get_subscription(gone) is None
    conn = store.get_connection(user_id, "outlook", created.account_id)
    assert conn is not None and {r.id for r in conn.subscriptions} == after


def test_concurrent_connects_never_exceed_the_limit(
    stack: LocalStack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from calbot.config import reset_settings

    monkeypatch.setenv("CONNECTION_LIMIT", "3")
    reset_settings()
    try:
        accts = [account(stack) for _ in range(6)]

        def attempt(acct: dict[str, Any]) -> int:
            try:
                return connect_service.connect_account(
                    user_id, request(acct["refresh_token"]), base_url=base_url(stack)
                )[0]
            except DomainError as err:
                assert err.code == "connection_limit_reached"
                assert err.message.startswith("Maximum of 3 outlook calendar connections per user reached")
                return status_of(err)

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(attempt, accts))
    finally:
        monkeypatch.delenv("CONNECTION_LIMIT")
        reset_settings()
    assert sorted(statuses) == [201, 201, 201, 400, 400, 400]
    assert store.count_connections(user_id) == 3 and len(store.list_connections(user_id)) == 3
    refused = [a for a, s in zip(accts, statuses, strict=True) if s == 400]
    assert all(emulator_subs(stack, a["id"]) == [] for a in refused)


def test_a_transaction_conflict_is_retried(
    stack: LocalStack, user_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two connects of one user update the same counter item; DynamoDB cancels one of the two
    transactions with TransactionConflict, which must be retried rather than surface as an error."""
    from botocore.exceptions import ClientError

    client = aws.dynamodb()
    real = client.transact_write_items
    calls = {"n": 0}

    def conflicting(**kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                    "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}],
                },
                "TransactWriteItems",
            )
        return real(**kwargs)

    monkeypatch.setattr(client, "transact_write_items", conflicting)
    acct = account(stack)
    status, _ = connect_service.connect_account(
        user_id, request(acct["refresh_token"]), base_url=base_url(stack)
    )
    assert status == 201 and calls["n"] == 2 and store.count_connections(user_id) == 1


# --------------------------------------------------------------------------------------------------
# Refresh-token rotation and what the vault stores
# --------------------------------------------------------------------------------------------------


def test_every_refresh_asks_for_offline_access_whatever_scopes_are_stored(
    stack: LocalStack, user_id: str
) -> None:
    """The token response's scope never lists offline_access: a refresh built from it (as connections
    made before the fix stored it) would stop rotating and the account would die after 90 days."""
    from calbot.providers import get_provider

    acct = account(stack)
    connect_service.connect_account(user_id, request(acct["refresh_token"]), base_url=base_url(stack))
    conn = store.list_connections(user_id)[0]
    creds = vault.get(conn.credential_path)
    assert creds is not None and "offline_access" in creds.scopes.split()  # what we requested, kept
    granted_only = creds.model_copy(update={"scopes": "User.Read Calendars.Read"})
    tokens = get_provider("outlook").refresh(granted_only)
    assert tokens.refresh_token and tokens.refresh_token != creds.refresh_token
    assert "offline_access" not in tokens.scope.split()


# SSM Standard tier: 4 KB per value (PROTOCOLS, AWS limits). Vault and token-cache tests of their own:
# tests/service/test_credentials.py.
SSM_STANDARD_MAX = 4096


def test_what_the_vault_stores_per_account_is_long_lived_only_with_real_token_sizes(
    stack: LocalStack, user_id: str, credential_backend: str
) -> None:
    """A Microsoft access token (~2.3 KB here, up to 2.5 KB and more) never goes to the credential
    store: one value of the refresh token (~1.6 KB) and the client secret, far under 4 KB."""
    acct = account(stack)
    connect_service.connect_account(user_id, request(acct["refresh_token"]), base_url=base_url(stack))
    conn = store.list_connections(user_id)[0]
    creds = vault.get(conn.credential_path)
    assert creds is not None and creds.access_token  # from the token cache
    assert len(creds.access_token) >= 1500 and len(creds.refresh_token) >= 1000  # real sizes
    stored = vault.secrets(conn.credential_path)
    assert stored is not None and stored.access_token is None
    if credential_backend == "ssm":
        assert ssm_names(user_id) == [conn.credential_path]  # no `<path>.access` parameter
        value = aws.ssm().get_parameter(Name=conn.credential_path, WithDecryption=True)["Parameter"]["Value"]
        assert len(value.encode()) <= SSM_STANDARD_MAX
        assert set(json.loads(value)) == set(vault.LONG_LIVED)  # a failure must not print a token
        (described,) = aws.ssm().describe_parameters(
            ParameterFilters=[{"Key": "Name", "Values": [conn.credential_path]}]
        )["Parameters"]
        assert described["Tier"] == "Standard"  # Intelligent-Tiering chose Standard: it fits
    else:
        assert ssm_names(user_id) == []


def test_connect_with_an_unknown_app_is_a_400_and_a_token_outage_is_not(
    stack: LocalStack, user_id: str
) -> None:
    """Token errors other than invalid_grant/invalid_client never mark an account needs_reauth; at
    connect time an unknown app is still bad input (400), an outage is not (502)."""
    acct = account(stack)
    with pytest.raises(DomainError) as unknown:
        connect_service.connect_account(
            user_id,
            request(acct["refresh_token"]).model_copy(update={"microsoft_client_id": "no-such-app"}),
            base_url=base_url(stack),
        )
    assert status_of(unknown.value) == 400 and unknown.value.code == "invalid_credentials"
    assert unknown.value.details["reason"] == "unauthorized_client"
    stack.graph.add_fault(path="oauth2/v2.0/token", account=acct["id"], error="temporarily_unavailable")
    try:
        with pytest.raises(DomainError) as outage:
            connect_service.connect_account(user_id, request(acct["refresh_token"]), base_url=base_url(stack))
    finally:
        stack.graph.clear_faults()
    assert status_of(outage.value) == 502 and outage.value.code == "provider_unavailable"
