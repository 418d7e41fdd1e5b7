"""The credential store (calbot.vault, both backends) and the access-token cache (calbot.tokencache):
what is stored where, how often SSM and KMS are called, isolation between users, and SSM throttling."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest

from calbot import aws, envelope, store, tokencache, tokens, vault
from calbot.config import get_settings
from calbot.models import Connection
from calbot.providers.base import ProviderUnavailable
from calbot.services.sync import sync_user
from calbot.store.secrets import ACCESS_TOKEN, CREDENTIALS
from calbot.timeutil import now
from local.aws_limits import SSM_QUOTA_OPERATIONS
from local.stack import LocalStack
from tests.conftest import AwsCalls, DynamoWrites, connect_new_account, secret_items, virtual_time

CLIENT_ID = "cred-client"
CLIENT_SECRET = "cred-client-secret-5e"
_n = itertools.count()


@pytest.fixture(scope="module")
def stack(inproc_stack: LocalStack) -> Iterator[LocalStack]:
    inproc_stack.graph.add_app(CLIENT_ID, CLIENT_SECRET)
    yield inproc_stack
    inproc_stack.aws_faults.clear()


def connected(stack: LocalStack, **account: Any) -> tuple[str, dict[str, Any], Connection]:
    user_id, acct = connect_new_account(stack, CLIENT_ID, CLIENT_SECRET, prefix=f"cred{next(_n)}-", **account)
    conn = store.get_connection(user_id, "outlook", acct["mail"])
    assert conn is not None
    return user_id, acct, conn


@contextmanager
def moved_clock(at: datetime) -> Iterator[list[datetime]]:
    """calbot's clock at `at` (a list the test may move on), the stack's own clock restored after."""
    with virtual_time(at, sleep_advances=False) as moment:
        yield moment


def new_container() -> None:
    tokencache.clear_memory()
    envelope.reset()


def test_a_sync_reads_the_credential_store_only_to_refresh(
    stack: LocalStack, credential_backend: str, aws_calls: AwsCalls
) -> None:
    _, acct, conn = connected(stack)
    new_container()
    aws_calls.reset()
    token = tokens.access_token(conn)  # a cold container: the shared cache, one KMS Decrypt
    assert aws_calls.of("ssm") == {} and aws_calls.of("kms") == {"kms:Decrypt": 1}
    assert aws_calls.counts["dynamodb:GetItem"] == 1
    aws_calls.reset()
    assert all(tokens.access_token(conn) == token for _ in range(50))  # warm: no AWS call at all
    assert aws_calls.counts == {}

    # Near expiry (inside EARLY_REFRESH): one refresh reads the store once. The rotated refresh token is
    # not written back: the stored one was issued at connect, well within PERSIST_ROTATED_AFTER.
    tokencache.put(conn.credential_path, "about-to-expire", now() + timedelta(minutes=1))
    before = vault.secrets(conn.credential_path)
    aws_calls.reset()
    fresh = tokens.access_token(conn)
    assert fresh not in (token, "about-to-expire")
    if credential_backend == "ssm":
        assert aws_calls.of("ssm") == {"ssm:GetParameter": 1}
    else:
        assert aws_calls.of("ssm") == {}
        assert set(aws_calls.of("kms")) <= {"kms:Decrypt", "kms:GenerateDataKey"}
    assert vault.secrets(conn.credential_path) == before
    valid = [t["refresh_token"] for t in stack.graph.refresh_tokens(acct["id"])]
    assert before is not None and before.refresh_token in valid[:-1]  # superseded, still valid

    # A day later the stored token is old enough: the next rotation replaces it (one PutParameter).
    stored_at = before.refresh_token_issued_at
    assert stored_at is not None
    with moved_clock(stored_at + tokens.PERSIST_ROTATED_AFTER + timedelta(minutes=1)):
        tokencache.put(conn.credential_path, "about-to-expire", now() + timedelta(minutes=1))
        aws_calls.reset()
        fresh = tokens.access_token(conn)
        if credential_backend == "ssm":
            assert aws_calls.of("ssm") == {"ssm:GetParameter": 1, "ssm:PutParameter": 1}
    after = vault.secrets(conn.credential_path)
    newest = [t["refresh_token"] for t in stack.graph.refresh_tokens(acct["id"])][-1]
    assert after is not None and after.refresh_token == newest  # the newest rotation is kept
    new_container()
    assert tokens.access_token(conn) == fresh  # another container gets it from the shared cache


@pytest.mark.parametrize("credential_backend", ["ssm"], indirect=True)
def test_a_legacy_value_holding_an_access_token_is_read_without_it_and_never_rewritten_with_it(
    stack: LocalStack, credential_backend: str
) -> None:
    _, _, conn = connected(stack)
    path = conn.credential_path
    legacy = json.loads(vault.stored_value(vault.secrets(path)))  # type: ignore[arg-type]
    legacy_token = "legacy-access-token-" + "x" * 1500
    legacy.pop("refresh_token_issued_at")  # values of the old scheme did not record it
    legacy.update(
        access_token=legacy_token,
        access_token_expires_at=(now() + timedelta(hours=1)).isoformat(),
        access_token_apart=True,
    )
    aws.ssm().put_parameter(Name=path, Value=json.dumps(legacy), Type="SecureString", Overwrite=True)
    aws.ssm().put_parameter(
        Name=path + vault.LEGACY_ACCESS_SUFFIX, Value=legacy_token, Type="SecureString", Overwrite=True
    )
    assert vault.secrets(path).access_token is None  # type: ignore[union-attr]
    tokens.forget_access_token(conn)
    assert tokens.access_token(conn) != legacy_token  # not used: refreshed
    value = aws.ssm().get_parameter(Name=path, WithDecryption=True)["Parameter"]["Value"]
    assert set(json.loads(value)) == set(vault.LONG_LIVED)  # rewritten (rotation) without it
    assert vault.delete(path)
    names = [path, path + vault.LEGACY_ACCESS_SUFFIX]
    assert (
        aws.ssm().describe_parameters(ParameterFilters=[{"Key": "Name", "Values": names}])["Parameters"] == []
    )


def test_forget_access_token_clears_both_caches(stack: LocalStack, credential_backend: str) -> None:
    user_id, _, conn = connected(stack)
    first = tokens.access_token(conn)
    rest = tokencache.owner_and_rest(conn.credential_path)[1]
    assert ACCESS_TOKEN + rest in secret_items(user_id)
    tokens.forget_access_token(conn)  # what a 401 does
    assert tokencache.remembered(conn.credential_path) is None
    assert tokencache.shared(conn.credential_path) is None
    assert ACCESS_TOKEN + rest not in secret_items(user_id)
    assert tokens.access_token(conn) != first  # refreshed


@pytest.mark.parametrize("credential_backend", ["dynamodb"], indirect=True)
def test_one_users_ciphertext_never_decrypts_as_anothers(stack: LocalStack, credential_backend: str) -> None:
    user_a, _, conn_a = connected(stack)
    user_b, _, conn_b = connected(stack)
    token_a = tokens.access_token(conn_a)
    tokens.access_token(conn_b)
    rest_a = tokencache.owner_and_rest(conn_a.credential_path)[1]
    rest_b = tokencache.owner_and_rest(conn_b.credential_path)[1]
    for prefix in (ACCESS_TOKEN, CREDENTIALS):
        blob = store.get_secret(user_a, prefix + rest_a)
        assert blob is not None and token_a.encode() not in blob  # encrypted at rest
        store.put_secret(user_b, prefix + rest_b, blob)  # A's ciphertext replayed under B's key
        store.put_secret(user_a, prefix + "outlook/other-account", blob)  # and under another item of A
    tokencache.clear_memory()
    assert tokencache.shared(conn_b.credential_path) is None  # not decrypted: ignored, B refreshes
    with pytest.raises(envelope.EnvelopeError):
        vault.secrets(conn_b.credential_path)
    with pytest.raises(envelope.EnvelopeError):
        vault.secrets(
            f"{conn_a.credential_path.rsplit('/users/', 1)[0]}/users/{user_a}/outlook/other-account"
        )
    assert tokens.access_token(conn_a) == token_a  # A's own items still decrypt


@pytest.mark.parametrize("credential_backend", ["ssm"], indirect=True)
def test_syncs_keep_working_while_ssm_throttles(
    stack: LocalStack, credential_backend: str, aws_calls: AwsCalls
) -> None:
    """SSM's one throughput quota (GetParameter, GetParameters, PutParameter) at 1 call a second: the
    syncs never meet it, because the access token comes from the cache."""
    user_id, _, conn = connected(stack)
    quota = stack.aws_faults.add(service="ssm", error="ThrottlingException", tps=1)
    try:
        aws_calls.reset()
        for _ in range(10):
            assert sync_user(user_id).partial_errors == {}
        assert aws_calls.of("ssm") == {} and quota.hits == 0
        # The same syncs without the cache would need SSM: with SSM refusing everything, a sync that
        # must refresh fails for that account.
        stack.aws_faults.clear()
        stack.aws_faults.add(service="ssm", error="ThrottlingException", operations=SSM_QUOTA_OPERATIONS)
        tokens.forget_access_token(conn)
        assert sync_user(user_id).partial_errors != {}
    finally:
        stack.aws_faults.clear()
    assert sync_user(user_id).partial_errors == {}


@pytest.mark.slow
@pytest.mark.parametrize("credential_backend", ["ssm"], indirect=True)
def test_an_account_refreshed_hourly_for_120_days_stays_alive_with_one_write_a_day(
    stack: LocalStack, credential_backend: str, aws_calls: AwsCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rotated refresh tokens are written back at most once a day (PERSIST_ROTATED_AFTER): each stored
    token is then at most a day old when replaced, far inside its 90 days, and the emulator (a Graph
    emulator of this test's own, so its clock can run 120 days ahead) refuses any token past 90 days
    from its issue, as Microsoft does."""
    from calbot.config import reset_settings
    from calbot.models import Credentials
    from calbot.providers import get_provider, reset_providers
    from calbot.providers.base import ProviderAuthError
    from local.emulators.graph import GraphEmulator
    from local.servers import serve

    graph = GraphEmulator()
    server = serve(graph, name="graph-120-days")
    monkeypatch.setenv("MS_LOGIN_BASE_URL", server.url)
    monkeypatch.setenv("GRAPH_BASE_URL", f"{server.url}/v1.0")
    reset_settings()
    reset_providers()
    try:
        graph.add_app(CLIENT_ID, CLIENT_SECRET)
        mail = f"hourly{next(_n)}@contoso.example"
        acct = graph.add_account(client_id=CLIENT_ID, mail=mail, user_principal_name=mail)
        first = Credentials(
            provider="outlook",
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            refresh_token=acct["refresh_token"],
            scopes="offline_access User.Read Calendars.Read",
        )
        path = vault.credential_path("usr_hourly", "outlook", mail)
        with moved_clock(now()) as clock:
            vault.put_secrets(path, first.model_copy(update={"refresh_token_issued_at": clock[0]}))
            conn = Connection(
                user_id="usr_hourly",
                provider="outlook",
                account_id=mail,
                webhook_url="https://x.example/hook",
                credential_path=path,
                created_at=clock[0],
                updated_at=clock[0],
            )
            hours = 120 * 24
            aws_calls.reset()
            for _ in range(hours):
                clock[0] += timedelta(hours=1)
                graph.advance_clock(3600)
                assert tokens.access_token(conn)  # refreshed: the last token expired an hour ago
            puts = aws_calls.counts["ssm:PutParameter"]
            reads = aws_calls.counts["ssm:GetParameter"]
            # The emulator does refuse a token 90 days after its issue: the one we started from.
            with pytest.raises(ProviderAuthError):
                get_provider("outlook").refresh(first)
        assert reads == hours  # one refresh an hour, each reading the store once
        assert 119 <= puts <= 121  # one write a day instead of 2,880 (one per refresh)
        stored = vault.secrets(path)
        assert stored is not None and get_provider("outlook").refresh(stored).access_token
    finally:
        vault.delete(path)
        server.shutdown()
        monkeypatch.undo()
        reset_settings()
        reset_providers()


def _refresh_lock(conn: Connection) -> dict[str, Any] | None:
    key = {"PK": {"S": f"LOCK#{tokens.refresh_lock_name(conn)}"}, "SK": {"S": "LOCK"}}
    return aws.dynamodb().get_item(TableName=get_settings().table_name, Key=key).get("Item")


def _expiring(conn: Connection) -> None:
    new_container()
    tokencache.put(conn.credential_path, "about-to-expire", now() + timedelta(minutes=1))


def test_a_good_refresh_leaves_its_lock_to_expire_and_a_refused_token_breaks_it(
    stack: LocalStack, credential_backend: str, ddb_writes: DynamoWrites
) -> None:
    _, _, conn = connected(stack)
    with moved_clock(now()) as clock:
        _expiring(conn)
        ddb_writes.reset()
        first = tokens.access_token(conn)
        # the lock and the shared token: no release (one write unit less on every refresh)
        assert ddb_writes.calls == ["PutItem", "PutItem"]
        assert _refresh_lock(conn) is not None
        # Whoever meets the standing lock finds the new token in the shared cache.
        new_container()
        assert tokens.access_token(conn) == first
        # A token the provider refused (401) is forgotten with the lock: the refresh it calls for does not
        # wait for a lock nobody holds (it would wait LOCK_WAIT_SECONDS, then give up).
        tokens.forget_access_token(conn)
        assert _refresh_lock(conn) is None
        second = tokens.access_token(conn)
        assert second != first
        # Past its TTL a standing lock is taken over by the next refresh.
        clock[0] += timedelta(seconds=tokens.LOCK_TTL_SECONDS + 1)
        _expiring(conn)
        assert tokens.access_token(conn) not in (second, "about-to-expire")


def test_a_failed_refresh_releases_its_lock(
    stack: LocalStack, credential_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, conn = connected(stack)

    class Down:
        def refresh(self, creds: Any) -> Any:
            raise ProviderUnavailable("the token endpoint is down")

    with moved_clock(now()):
        _expiring(conn)
        monkeypatch.setattr(tokens, "get_provider", lambda name: Down())
        with pytest.raises(ProviderUnavailable):
            tokens.access_token(conn)
        assert _refresh_lock(conn) is None  # released: the next attempt need not wait
        monkeypatch.undo()
        assert tokens.access_token(conn) != "about-to-expire"


def test_a_work_accounts_token_is_cached_in_two_write_units_where_its_json_took_three(
    stack: LocalStack, credential_backend: str, ddb_writes: DynamoWrites
) -> None:
    # The emulator issues a work account's token as Graph does: a JWT of ~2,300 characters (PROTOCOLS).
    user_id, _, conn = connected(stack)
    tokens.forget_access_token(conn)
    ddb_writes.reset()
    token = tokens.access_token(conn)  # a refresh writes the shared cache
    assert token.count(".") == 2 and len(token) > 2_000
    assert ddb_writes.kind_units["TOKEN"] == 2

    # The same token as the model's JSON (what items held before packing) is a unit more; it still reads.
    sk = ACCESS_TOKEN + tokencache.owner_and_rest(conn.credential_path)[1]
    cached = tokencache.CachedAccessToken(access_token=token, expires_at=now() + timedelta(hours=1))
    old = envelope.encrypt(cached.model_dump_json().encode(), tokencache.context(user_id, sk))
    store.delete_secret(user_id, sk)
    ddb_writes.reset()
    store.put_secret(user_id, sk, old)
    assert ddb_writes.kind_units["TOKEN"] == 3
    new_container()
    assert tokens.access_token(conn) == token  # read from the older item, not refreshed
