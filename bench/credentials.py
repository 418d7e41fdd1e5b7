"""Credentials: value sizes against SSM's 4 KB / 8 KB and the SSM and KMS calls a sync and a refresh
make, per credential backend (`ssm`, `dynamodb`), in-process against moto and the Graph emulator.

Prints, per provider and backend, the bytes stored for realistic tokens (PROTOCOLS: a Microsoft access
JWT of 1.5-2.5 KB and more, a refresh token of 1-2 KB; Google's are far smaller) next to SSM's limits,
what the old one-value scheme would have stored, and the encrypted DynamoDB items; then the SSM and KMS
calls of one sync (warm and cold container), one refresh, and 1,000 syncs of one account in one warm
container spread over `--hours` of clock time (a sync reads only the cache until the token is within
EARLY_REFRESH of its expiry). Figures, not assertions.

    python bench/credentials.py [--syncs 1000] [--hours 100] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SSM_STANDARD_MAX = 4096  # bytes per value (PROTOCOLS, AWS limits)
SSM_ADVANCED_MAX = 8192
SSM_DEFAULT_TPS = 40  # GetParameter/GetParameters/PutParameter, shared, per account and region
# Realistic sizes (PROTOCOLS): Microsoft access JWT 1.5-2.5 KB (3.9 KB for a user in many groups),
# refresh 1-2 KB; Google access ~250 characters, refresh ~100; client secrets 40 (Microsoft), 35 (Google).
SIZES = {
    "outlook": {"access": 2500, "access_worst": 3900, "refresh": 2048, "secret": 40},
    "google": {"access": 250, "access_worst": 250, "refresh": 103, "secret": 35},
}


class Calls:
    """AWS calls by `service:Operation`, whichever client makes them (the Encryption SDK has its own)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    @contextmanager
    def installed(self) -> Iterator[Calls]:
        from botocore.client import BaseClient

        original = BaseClient._make_api_call
        counts = self.counts

        def counted(client: Any, operation: str, params: Any) -> Any:
            counts[f"{client.meta.service_model.endpoint_prefix}:{operation}"] += 1
            return original(client, operation, params)

        BaseClient._make_api_call = counted  # type: ignore[method-assign]
        try:
            yield self
        finally:
            BaseClient._make_api_call = original  # type: ignore[method-assign]

    def take(self) -> dict[str, int]:
        """The SSM and KMS calls since the last take (DynamoDB's too, for the item reads)."""
        out = {k: v for k, v in sorted(self.counts.items()) if k.split(":")[0] in ("ssm", "kms", "dynamodb")}
        self.counts.clear()
        return out


def _random_text(n: int) -> str:
    """`n` characters of base64url, as random as a token's (a repeated letter would pack to nothing)."""
    import secrets

    return secrets.token_urlsafe(n)[:n]


def _access_token(provider: str, n: int) -> str:
    """An access token of about `n` characters made as the provider makes them: Microsoft's a JWT (the
    emulator's work-account token, its claims grown by a `groups` list as a user in many groups has),
    Google's opaque."""
    if provider != "outlook":
        return "ya29.a0" + _random_text(n - 7)
    import base64
    import json
    import uuid

    from local.emulators.graph import _new_access_token

    header, claims, signature = _new_access_token().split(".")
    body = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    while len(header) + len(signature) + 2 + len(claims) < n - 50:
        body.setdefault("groups", []).append(str(uuid.uuid4()))
        packed = json.dumps(body, separators=(",", ":")).encode()
        claims = base64.urlsafe_b64encode(packed).rstrip(b"=").decode()
    return ".".join((header, claims, signature))


def _creds(provider: str, access: int, refresh: int, secret: int) -> Any:
    from calbot.models import Credentials

    return Credentials(
        provider=provider,
        client_id="1" * 36,
        client_secret=_random_text(secret),
        refresh_token=_random_text(refresh),
        tenant="common",
        scopes="offline_access User.Read Calendars.Read"
        if provider == "outlook"
        else "https://www.googleapis.com/auth/calendar.readonly",
        access_token=_access_token(provider, access),
        access_token_expires_at=datetime(2030, 1, 1, tzinfo=UTC),
    )


def _item_units(user: str, sk: str, plaintext: bytes | None = None) -> int:
    """Write units of the stored item (as DynamoDB bills a put of it), or of the item this plaintext
    would make, encrypted under the same context."""
    import math

    from calbot import aws, envelope, store, tokencache
    from local.aws_limits import ddb_item_size

    key = {"PK": {"S": store.user_pk(user)}, "SK": {"S": sk}}
    item = aws.dynamodb().get_item(TableName=store._table(), Key=key)["Item"]
    if plaintext is not None:
        item["blob"] = {"B": envelope.encrypt(plaintext, tokencache.context(user, sk))}
    return max(1, math.ceil(ddb_item_size(item) / 1024))


def sizes(backend: str) -> dict[str, Any]:
    """Bytes stored per account for realistic and worst-case tokens, by provider."""
    from calbot import store, tokencache, vault
    from calbot.store.secrets import ACCESS_TOKEN, CREDENTIALS

    out: dict[str, Any] = {}
    for provider, s in SIZES.items():
        for case, access in (("typical", s["access"]), ("worst", s["access_worst"])):
            creds = _creds(provider, access, s["refresh"], s["secret"])
            path = vault.credential_path("usr_size", provider, f"{case}@sizes.example")
            vault.put(path, creds)
            user, rest = tokencache.owner_and_rest(path)
            token_blob = store.get_secret(user, ACCESS_TOKEN + rest) or b""
            row = {
                "access_token_chars": len(creds.access_token or ""),
                "old_one_value_bytes": len(creds.model_dump_json().encode()),
                "long_lived_value_bytes": len(vault.stored_value(creds).encode()),
                "token_cache_item_blob_bytes": len(token_blob),
                # what one refresh's write of the item costs (1 KB a unit), and what the token's JSON
                # cost there before it was packed (calbot.tokencache.pack)
                "token_cache_item_write_units": _item_units(user, ACCESS_TOKEN + rest),
                "token_cache_item_write_units_as_json": _item_units(
                    user,
                    ACCESS_TOKEN + rest,
                    tokencache.CachedAccessToken(
                        access_token=creds.access_token or "", expires_at=creds.access_token_expires_at
                    )
                    .model_dump_json()
                    .encode(),
                ),
            }
            if backend == "dynamodb":
                row["credential_item_blob_bytes"] = len(store.get_secret(user, CREDENTIALS + rest) or b"")
            else:
                from calbot import aws

                (param,) = aws.ssm().describe_parameters(
                    ParameterFilters=[{"Key": "Name", "Values": [path]}]
                )["Parameters"]
                row["ssm_tier"] = param["Tier"]
            out[f"{provider}/{case}"] = row
    return out


def calls(backend: str, syncs: int, hours: float, graph: Any) -> dict[str, Any]:
    """SSM/KMS calls of the token path of a sync: warm, cold, one refresh, and `syncs` syncs."""
    from calbot import envelope, timeutil, tokencache, tokens, vault
    from calbot.models import Connection, Credentials
    from calbot.providers import get_provider

    mail = f"calls-{backend}@contoso.example"
    acct = graph.add_account(client_id="bench-client", mail=mail, user_principal_name=mail)
    seed = Credentials(
        provider="outlook",
        client_id="bench-client",
        client_secret="bench-secret",
        refresh_token=acct["refresh_token"],
        scopes="offline_access User.Read Calendars.Read",
    )
    fresh = get_provider("outlook").refresh(seed)
    path = vault.credential_path("usr_bench", "outlook", mail)
    vault.put(
        path,
        seed.model_copy(
            update={
                "refresh_token": fresh.refresh_token or seed.refresh_token,
                "refresh_token_issued_at": timeutil.now(),
                "access_token": fresh.access_token,
                "access_token_expires_at": fresh.expires_at,
            }
        ),
    )
    conn = Connection(
        user_id="usr_bench",
        provider="outlook",
        account_id=mail,
        webhook_url="https://x.example/hook",
        credential_path=path,
        created_at=timeutil.now(),
        updated_at=timeutil.now(),
    )
    counter = Calls()
    out: dict[str, Any] = {}
    with counter.installed():
        tokencache.clear_memory()
        envelope.reset()
        counter.take()
        tokens.access_token(conn)
        out["sync_cold_container"] = counter.take()
        tokens.access_token(conn)
        out["sync_warm_container"] = counter.take()
        tokencache.put(path, "near-expiry", timeutil.now() + timedelta(minutes=1))
        counter.take()
        tokens.access_token(conn)
        out["refresh"] = counter.take()

        # `syncs` syncs of this account in one warm container over `hours` of clock time.
        start = timeutil.now()
        step = timedelta(hours=hours) / syncs
        moved = {"at": start}
        timeutil.set_clock(lambda: moved["at"])
        # The SDK drops a cached data key DATA_KEY_MAX_AGE seconds after it was made, on the real clock;
        # the syncs here run on a virtual one, so its cache is emptied as often as that would happen.
        keys_made = start
        try:
            for i in range(syncs):
                moved["at"] = start + step * i
                if i:
                    graph.advance_clock(step.total_seconds())  # the emulator's tokens age alike
                if (moved["at"] - keys_made).total_seconds() >= envelope.DATA_KEY_MAX_AGE:
                    envelope.reset()
                    keys_made = moved["at"]
                tokens.access_token(conn)
        finally:
            timeutil.set_clock(None)
        out["syncs"] = syncs
        out["hours"] = hours
        out["per_syncs"] = counter.take()
    return out


def projection(figures: dict[str, Any], accounts: int) -> dict[str, Any]:
    """What `accounts` accounts whose tokens are each refreshed once an hour (every account synced at
    least hourly: the most a token path can cost) need from SSM and KMS, per backend, from the counts
    measured above; and how many parameters the ssm backend would hold."""
    out: dict[str, Any] = {"accounts": accounts, "ssm_parameters_ssm_backend": accounts}
    for backend, result in figures["backends"].items():
        per = result["calls"]["per_syncs"]
        hours = result["calls"]["hours"]
        ssm = sum(v for k, v in per.items() if k.startswith("ssm:"))
        kms = sum(v for k, v in per.items() if k.startswith("kms:"))
        out[f"{backend}_ssm_calls_per_account_hour"] = round(ssm / hours, 3)
        out[f"{backend}_kms_calls_per_account_hour"] = round(kms / hours, 3)
        out[f"{backend}_ssm_tps"] = round(accounts * ssm / hours / 3600, 1)
        out[f"{backend}_kms_tps"] = round(accounts * kms / hours / 3600, 1)
    # What writing back the rotated refresh token at most once a day (calbot.tokens.PERSIST_ROTATED_AFTER)
    # saves: one PutParameter per refresh (each refresh reads the store once) against the measured ones.
    ssm = figures["backends"]["ssm"]["calls"]
    refreshes = ssm["per_syncs"].get("ssm:GetParameter", 0)
    puts = ssm["per_syncs"].get("ssm:PutParameter", 0)
    out["ssm_put_tps"] = round(accounts * puts / ssm["hours"] / 3600, 1)
    out["ssm_put_tps_if_every_rotation_were_written"] = round(accounts * refreshes / ssm["hours"] / 3600, 1)
    out["ssm_default_tps"] = SSM_DEFAULT_TPS
    return out


@contextmanager
def backend_env(backend: str) -> Iterator[None]:
    import os

    from calbot import envelope, tokencache
    from calbot.config import reset_settings

    os.environ["CREDENTIAL_BACKEND"] = backend
    reset_settings()
    tokencache.clear_memory()
    envelope.reset()
    try:
        yield
    finally:
        os.environ.pop("CREDENTIAL_BACKEND", None)
        reset_settings()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--syncs", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=100.0, help="clock time the syncs are spread over")
    parser.add_argument(
        "--accounts", type=int, default=300_000, help="accounts for the projection (100,000 users x 3)"
    )
    from bench.harness import add_json_out, in_process_stack, write_json

    add_json_out(parser)
    args = parser.parse_args()
    figures: dict[str, Any] = {
        "limits": {"ssm_standard_bytes": SSM_STANDARD_MAX, "ssm_advanced_bytes": SSM_ADVANCED_MAX},
        "ssm_default_tps": SSM_DEFAULT_TPS,
        "token_sizes": SIZES,
        "backends": {},
    }
    with in_process_stack("SyncWorkerFunction") as graph:
        from local.aws_limits import install_limits

        install_limits()  # SSM's tiers and sizes as AWS applies them (Intelligent-Tiering's choice)
        graph.add_app("bench-client", "bench-secret")
        for backend in ("ssm", "dynamodb"):
            with backend_env(backend):
                figures["backends"][backend] = {
                    "sizes": sizes(backend),
                    "calls": calls(backend, args.syncs, args.hours, graph),
                }
    figures["projection"] = projection(figures, args.accounts)
    for backend, result in figures["backends"].items():
        print(f"== {backend} backend")
        for case, row in result["sizes"].items():
            print(f"  {case:16} " + ", ".join(f"{k}={v}" for k, v in row.items()))
        for what, counted in result["calls"].items():
            print(f"  {what:22} {counted}")
    for key, value in figures["projection"].items():
        print(f"  {key}: {value}")
    write_json(figures, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
