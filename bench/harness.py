"""What every in-process bench needs: moto (mocked in this process) with template.yaml's resources,
the Graph emulator on a real port (and the Google emulator, so nothing can reach the real Google), and the
environment the named functions get in the template. Also the shared bits of every bench script: the
moto transaction shim and `--json-out`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (str(ROOT), str(ROOT / "layers/core")):
    if _path not in sys.path:
        sys.path.insert(0, _path)


# Which records a scheduled bot's write units go to (bench/day.py's kinds: the key's first part, and
# "<kind> <index>" for an index entry).
BOT_RECORDS = ("DEDUP", "BOT", "BOT GSI1")
EVENT_RECORDS = ("EVENT", "EVENT GSI1", "EVENT GSI3")


def write_units_by_share(record_units: Mapping[str, float], bots: float) -> dict[str, float]:
    """Write units per bot: the bot's own records, its event's, and the rest (per-account work)."""
    bot = sum(record_units.get(k, 0) for k in BOT_RECORDS)
    event = sum(record_units.get(k, 0) for k in EVENT_RECORDS)
    rest = sum(record_units.values()) - bot - event
    shares = {"bot": bot, "event": event, "account": rest}
    return {name: round(n / max(bots, 1), 2) for name, n in shares.items()}


def add_json_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json-out", type=Path, help="also write the figures as JSON to this file (bench/report.py reads it)"
    )


def write_json(figures: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2) + "\n")


def skip_moto_table_backup() -> None:
    """moto backs up the WHOLE table (deepcopy) before every transaction, so a 100k-item table makes
    each TransactWriteItems cost O(table); real DynamoDB does not work that way. Benches that seed or
    write through transactions on a big table skip that rollback copy (for tables only). Only valid
    where no transaction is expected to fail: a failed one would then not be rolled back."""
    import copy

    import moto.dynamodb.models as moto_ddb

    class _NoTableBackup:
        @staticmethod
        def deepcopy(value: Any) -> Any:
            return value if isinstance(value, moto_ddb.Table) else copy.deepcopy(value)

    moto_ddb.copy = _NoTableBackup  # type: ignore[assignment]


def speed_up_moto_queries() -> None:
    """moto answers a Query by sorting every item of the index, comparing through
    DynamoType.cast_value, which runs four type checks before returning a string as it is. Give string
    and binary values that answer first (the same value, so the same ordering and results): a read
    bench on a 12,000-item table then measures our code more than moto's sort."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    slow = DynamoType.cast_value.fget  # type: ignore[attr-defined]

    def cast_value(self: Any) -> Any:
        return self.value if self.type in ("S", "B") else slow(self)

    DynamoType.cast_value = property(cast_value)  # type: ignore[method-assign,assignment]


def outlook_connection(user_id: str, acct: dict[str, Any], mail: str) -> Any:
    """A stored Outlook connection of an emulator account (app bench-client) with its credentials, as
    connecting it would leave it, for benches that sync in-process; returns the Connection."""
    from datetime import UTC, datetime

    from calbot import store, vault
    from calbot.models import CalendarInfo, Connection, Credentials
    from calbot.providers import get_provider

    creds = Credentials(
        provider="outlook",
        client_id="bench-client",
        client_secret="bench-secret",
        refresh_token=acct["refresh_token"],
        scopes=get_provider("outlook").scopes,
    )
    path = vault.credential_path(user_id, "outlook", mail)
    vault.put(path, creds)
    at = datetime.now(UTC)
    conn = Connection(
        user_id=user_id,
        provider="outlook",
        account_id=mail,
        calendars=[CalendarInfo(id=acct["calendars"][0]["id"], name="Calendar", is_primary=True)],
        webhook_url="-",
        credential_path=path,
        created_at=at,
        updated_at=at,
    )
    store.create_connection(conn, limit=200)
    return conn


@contextmanager
def in_process_stack(*functions: str) -> Iterator[Any]:
    """Yields the Graph emulator; calbot then talks to moto and to it exactly as the functions would."""
    with _stack(functions) as (graph, _):
        yield graph


@contextmanager
def in_process_gateway() -> Iterator[tuple[Any, Any]]:
    """Yields (Graph emulator, local API gateway WSGI app) with every function's environment set: requests
    go through template.yaml's routes, the Lambda authorizer and the real handlers, all in-process."""
    from local.gateway import Gateway

    with _stack(()) as (graph, template):
        gateway = Gateway(template)
        os.environ.update(gateway.required_environment())
        yield graph, gateway


@contextmanager
def _stack(functions: tuple[str, ...]) -> Iterator[tuple[Any, Any]]:
    os.environ.update(
        {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)
    import boto3
    from moto import mock_aws

    from local.aws_bootstrap import create_resources
    from local.emulators.google import GoogleEmulator
    from local.emulators.graph import GraphEmulator
    from local.moto_speed import install_speedups
    from local.servers import serve
    from local.template import load_template

    install_speedups()  # as the local stack: SQS sends that do not slow down as the queue fills
    graph = GraphEmulator()
    server = serve(graph, name="graph")
    google_server = serve(GoogleEmulator(), name="google")
    try:
        with mock_aws():
            template = load_template(
                ROOT / "template.yaml",
                parameter_overrides={
                    "Stage": "bench",
                    "GraphBaseUrl": f"{server.url}/v1.0",
                    "MicrosoftLoginBaseUrl": server.url,
                    "GoogleOAuthBaseUrl": google_server.url,
                    "GoogleUserinfoUrl": f"{google_server.url}/v1/userinfo",
                    "GoogleCalendarBaseUrl": f"{google_server.url}/calendar/v3",
                },
            )
            create_resources(template, boto3.session.Session())
            for name in functions:
                os.environ.update(template.functions[name].environment)
            yield graph, template
    finally:
        server.shutdown()
        google_server.shutdown()
