"""The credential store (calbot.vault, both backends) and the access-token cache (calbot.tokencache):
what is stored where, how often SSM and KMS are called, isolation between users, and SSM throttling."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from calbot import aws, envelope, store, tokencache, tokens, vault
from calbot.models import Connection
from calbot.services.sync import sync_user
from calbot.store.secrets import ACCESS_TOKEN, CREDENTIALS
from calbot.timeutil import now
from local.aws_limits import SSM_QUOTA_OPERATIONS
from local.stack import LocalStack
from tests.conftest import AwsCalls, connect_new_account, secret_items

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

    # Near expiry (inside EARLY_REFRESH): one refresh reads the store once and keeps the rotated token.
    tokencache.put(conn.credential_path, "about-to-expire", now() + timedelta(minutes=1))
    aws_calls.reset()
    fresh = tokens.access_token(conn)
    assert fresh not in (token, "about-to-expire")
    if credential_backend == "ssm":
        assert aws_calls.of("ssm") == {"ssm:GetParameter": 1, "ssm:PutParameter": 1}
    else:
        assert aws_calls.of("ssm") == {}
        assert set(aws_calls.of("kms")) <= {"kms:Decrypt", "kms:GenerateDataKey"}
    stored = vault.secrets(conn.credential_path)
    issued = [t["refresh_token"] for t in stack.graph.refresh_tokens(acct["id"])]
    assert stored is not None and stored.refresh_token == issued[-1]  # the newest rotation is kept
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
