"""The whole service on one machine with no cloud: `python -m local.stack` (what `make dev` runs).

Starts, in one process: moto in server mode as the embedded AWS (with template.yaml's resources created
from template.yaml itself), the Microsoft identity + Graph emulator, the Google OAuth + Calendar emulator,
the Create Bot API sink, the gateway that serves template.yaml's HttpApi routes through the real Lambda
handlers, and the clock that fires due EventBridge Scheduler schedules, runs the cron jobs and feeds the
SQS consumers (local/clock/), with its control API under /_local/ on the gateway's port
(local/control.py). Then it seeds a demo user with two Outlook accounts (plus a Google account it can
connect) and prints the demo API key and the curls to try. The handlers run
unchanged: only endpoints and credentials differ, supplied as template parameter overrides, standard
AWS variables and the SSM parameters the template names. `--virtual-time` makes the clock virtual:
time jumps only with POST /_local/clock/advance (and the handlers' own sleeps, which return at once).
State for other tools (`make invoke`, tests) is written to <state-dir>/stack.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from local.demo import (  # shared with the sample events
    DEMO_API_KEY,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_GOOGLE_ACCOUNT,
    DEMO_GOOGLE_CLIENT_ID,
    DEMO_GOOGLE_CLIENT_SECRET,
    DEMO_USER_ID,
    STANDUP_SERIES_ID,
    TEAMS_MEETING_ID,
)

ROOT = Path(__file__).resolve().parent.parent

SAMPLE_REFRESH_TOKEN = "M.C5_sample_event_refresh_token"  # used by events/CreateConnectionFunction.json
AWS_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalStack:
    state_dir: Path = ROOT / ".local"
    host: str = "127.0.0.1"
    port: int = 0  # the gateway's; 0 picks a free one
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    seed: bool = True
    virtual_time: bool = False  # the clock moves only when told to (tests); else real time (make dev)
    # Invocations of one function at once unless template.yaml reserves concurrency for it: the local
    # stand-in for the account's unreserved pool (None: LOCAL_LAMBDA_CONCURRENCY or its default).
    lambda_concurrency: int | None = None
    # The account's Lambda concurrency limit that the template's reservations must fit (leaving 100
    # unreserved), as on deploy (None: LOCAL_ACCOUNT_CONCURRENCY or 1,000).
    account_concurrency: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    _servers: list[Any] = field(default_factory=list)
    _clocks: list[Any] = field(default_factory=list)

    def start(self) -> dict[str, Any]:
        from moto.server import DomainDispatcherApplication, create_backend_app

        from local.aws_bootstrap import create_resources
        from local.aws_limits import (
            LOCAL_USER_AGENT,
            AwsFaultInjector,
            AwsFaults,
            install_limits,
            scheduler_changes,
        )
        from local.clock import LocalClock
        from local.control import ControlApp, with_control
        from local.egress import keep_webhooks_local
        from local.emulators.bots import BotSink
        from local.emulators.google import GoogleEmulator
        from local.emulators.graph import GraphEmulator
        from local.emulators.webhook_sink import WebhookSink
        from local.gateway import Gateway
        from local.moto_speed import install_speedups
        from local.servers import serve
        from local.template import load_template

        sys.path.insert(0, str(ROOT / "layers" / "core"))
        if os.environ.get("LOCAL_HTTP_LOG") != "1":
            logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log
        _copy_each_table_once_per_transaction()
        install_limits()  # what AWS refuses, the local moto refuses too (local/aws_limits.py)
        install_speedups()  # SQS sends in O(1), not O(messages queued) (local/moto_speed.py)
        self.aws_faults = AwsFaults()  # AWS errors on demand: /_local/aws/faults
        moto_server = serve(
            AwsFaultInjector(
                AtomicDynamoDB(DomainDispatcherApplication(create_backend_app)), self.aws_faults
            ),
            host=self.host,
            port=0,
            name="moto",
        )
        moto_port = moto_server.port
        self._servers.append(moto_server)
        aws_env = {**AWS_ENV, "AWS_ENDPOINT_URL": f"http://{self.host}:{moto_port}"}
        os.environ.update(aws_env)

        self.graph = GraphEmulator()
        graph_server = serve(self.graph, host=self.host, port=0, name="graph")
        self._servers.append(graph_server)

        self.google = GoogleEmulator()
        google_server = serve(self.google, host=self.host, port=0, name="google")
        self._servers.append(google_server)

        # A fresh key per run, known only to the sink and (below) the SSM parameter the launcher reads.
        bot_api_key = f"local-bot-{secrets.token_hex(16)}"
        self.bots = BotSink(bot_api_key)
        bots_server = serve(self.bots, host=self.host, port=0, name="bots")
        self._servers.append(bots_server)

        # A customer's webhook receiver: the one non-https, loopback origin the stack lets webhooks
        # target (WEBHOOK_ALLOWED_TEST_ORIGINS, below); a deployed stack allows none.
        self.webhooks = WebhookSink(host=self.host)
        self.webhooks.start()
        self._servers.append(self.webhooks)
        keep_webhooks_local()  # a registered public URL is never reached from here (local/egress.py)

        gateway_port = self.port or free_port(self.host)
        gateway_url = f"http://{self.host}:{gateway_port}"
        # Customer webhooks (calbot.netguard) go only to public https URLs, except the exact origins of
        # WebhookAllowedTestOrigins: the stack's own receiver sink, and nothing else
        # (--parameter-overrides can still name another).
        webhook_test_origins = self.webhooks.url
        overrides = {
            "Stage": "local",
            "PublicBaseUrl": gateway_url,
            "GraphBaseUrl": f"{graph_server.url}/v1.0",
            "MicrosoftLoginBaseUrl": graph_server.url,
            "GoogleOAuthBaseUrl": google_server.url,
            "GoogleUserinfoUrl": f"{google_server.url}/v1/userinfo",
            "GoogleCalendarBaseUrl": f"{google_server.url}/calendar/v3",
            "BotApiUrl": f"{bots_server.url}/api/v1",
            "WebhookAllowedTestOrigins": webhook_test_origins,
            **self.parameter_overrides,
        }
        template = load_template(
            ROOT / "template.yaml", parameter_overrides=overrides, stack_name="calbot-local"
        )

        import boto3
        from botocore.config import Config

        session = boto3.session.Session(region_name=aws_env["AWS_DEFAULT_REGION"])
        # The stack's own calls (bootstrap, the clock standing in for Scheduler and Lambda's SQS
        # polling) are marked so AWS fault rules only ever hit the code under test.
        session._session.set_default_client_config(Config(user_agent_extra=LOCAL_USER_AGENT))
        create_resources(template, session)
        self.gateway = Gateway(
            template, concurrency=self.lambda_concurrency, account_concurrency=self.account_concurrency
        )
        environment = self.gateway.required_environment()
        os.environ.update(environment)
        bot_api_key_param = environment.get("BOT_API_KEY_PARAM")
        if bot_api_key_param:
            session.client("ssm").put_parameter(
                Name=bot_api_key_param, Value=bot_api_key, Type="SecureString", Overwrite=True
            )
        _reset_calbot_caches()
        # The clock invokes handlers through the gateway and installs itself as calbot's time source.
        # moto runs in this process: the clock follows its schedule changes instead of relisting each tick.
        self.clock = LocalClock(
            template, self.gateway, session, virtual=self.virtual_time, scheduler_changes=scheduler_changes
        )
        self._clocks.append(self.clock)
        # One time for the whole stack: when the clock jumps, tokens and subscriptions at the Graph
        # emulator age with it (else calbot's "7 days from now" is past the emulator's limit).
        self.clock.on_move(self.graph.advance_clock)
        self.clock.on_move(self.google.advance_clock)
        self.clock.on_move(self.webhooks.tick)  # an outage of the receiver ends on the stack's clock
        gateway_server = serve(
            with_control(self.gateway, ControlApp(self.clock, self.aws_faults)),
            host=self.host,
            port=gateway_port,
            name="gateway",
        )
        self._servers.append(gateway_server)

        self.info = {
            "gateway_url": gateway_url,
            "api_url": f"{gateway_url}/api/v1",
            "graph_url": graph_server.url,
            "google_url": google_server.url,
            "bots_url": bots_server.url,
            "webhook_sink_url": self.webhooks.url,
            "webhook_sink_control_url": self.webhooks.control_url,
            "bot_api_key_param": bot_api_key_param,
            "control_url": f"{gateway_url}/_local",
            "virtual_time": self.virtual_time,
            "lambda_concurrency": self.gateway.concurrency.local_limit,
            "moto_url": aws_env["AWS_ENDPOINT_URL"],
            "aws_env": aws_env,
            "parameter_overrides": overrides,
            "stack_name": "calbot-local",
            "pid": os.getpid(),
        }
        self.clock.start()
        if self.seed:
            self.info["demo"] = seed_demo(self)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / "stack.json.tmp"
        tmp.write_text(json.dumps(self.info, indent=2))
        tmp.replace(self.state_dir / "stack.json")  # atomic: readers never see half a file
        return self.info

    def stop(self) -> None:
        for clock in self._clocks:  # first: its loop invokes handlers that need the servers
            try:
                clock.close()
            except Exception:
                pass
        self._clocks.clear()
        for server in reversed(self._servers):
            try:
                if hasattr(server, "shutdown"):
                    server.shutdown()
                else:
                    server.stop()
            except Exception:
                pass
        try:
            (self.state_dir / "stack.json").unlink()
        except FileNotFoundError:
            pass


class AtomicDynamoDB:
    """WSGI middleware: one DynamoDB request at a time inside moto.

    Real DynamoDB makes each conditional write and each transaction atomic (a concurrent transaction on
    the same item is cancelled with TransactionConflict). moto's backend has no locking, so under a
    threaded server two transactions can interleave and both pass their conditions. Serialising
    DynamoDB calls restores the guarantee our code relies on (e.g. the connection limit).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self.lock:
            return list(self.app(environ, start_response))


def _copy_each_table_once_per_transaction() -> None:
    """moto backs up the whole table before a TransactWriteItems (a deep copy of every item, once per
    item of the transaction) and restores it if the transaction fails. A table holding a burst's 500
    accounts made every transaction cost a second of CPU behind AtomicDynamoDB's lock, which real
    DynamoDB never charges. Keep the same rollback at the cost of the transaction's own items: copy
    only the (at most 100) items it names before it runs, and put exactly those back when it fails."""
    import copy

    import moto.dynamodb.models as moto_ddb

    from local.moto_speed import reindex_item

    backend = moto_ddb.DynamoDBBackend
    if getattr(backend, "_calbot_one_backup", False):
        return
    state = threading.local()

    class _NoTableCopy:
        """moto's `copy` inside a transaction: a table "backup" is the table itself (restoring it is a
        no-op); the items the transaction touches are put back by `transact_write_items` below."""

        @staticmethod
        def deepcopy(value: Any) -> Any:
            if getattr(state, "active", False) and isinstance(value, moto_ddb.Table):
                return value
            return copy.deepcopy(value)

    original = backend.transact_write_items

    def _touched(self: Any, transact_items: list[dict[str, Any]]) -> list[tuple[Any, Any, Any, Any]]:
        """(table, hash key, range key, a copy of the item or None) for every item the transaction names."""
        from moto.dynamodb.models.dynamo_type import DynamoType

        out = []
        for entry in transact_items:
            try:
                op_type, op = next(iter(entry.items()))
                table = self.get_table(op["TableName"])
                key = op["Item"] if op_type == "Put" else op["Key"]
                hash_key = DynamoType(key[table.hash_key_attr])
                range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
            except Exception:
                continue  # malformed: moto refuses it before writing anything
            out.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
        return out

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        touched = _touched(self, transact_items)
        state.active = True
        try:
            return original(self, transact_items)
        except BaseException:
            for table, hash_key, range_key, item in reversed(touched):
                table.delete_item(hash_key, range_key)
                if item is not None:
                    if range_key is not None:
                        table.items[hash_key][range_key] = item
                    else:
                        table.items[hash_key] = item
                reindex_item(table, hash_key, range_key)  # local/moto_speed.py's index-query map
            raise
        finally:
            state.active = False

    moto_ddb.copy = _NoTableCopy  # type: ignore[assignment]
    backend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    backend._calbot_one_backup = True  # type: ignore[attr-defined]


def _reset_calbot_caches() -> None:
    from calbot.aws import reset_clients
    from calbot.config import reset_settings
    from calbot.providers import reset_providers

    reset_settings()
    reset_clients()
    reset_providers()


def seed_demo(stack: LocalStack) -> dict[str, Any]:
    """A demo user with a known key, two connected Outlook accounts (one personal, mail null), and a
    third account at the emulator that is not connected yet (for the sample event and for trying)."""
    from calbot import auth, store
    from calbot.admin import create_user

    if store.get_user(DEMO_USER_ID) is None:
        create_user("demo@calbot.local", DEMO_USER_ID)
        auth.issue_api_key(DEMO_USER_ID, DEMO_API_KEY)
    graph = stack.graph
    graph.add_app(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
    jane = graph.add_account(
        client_id=DEMO_CLIENT_ID,
        mail="jane@contoso.example",
        user_principal_name="jane@contoso.example",
        display_name="Jane Doe",
        calendars=[
            {"name": "Calendar", "is_default": True, "can_edit": True},
            {"name": "Team events", "can_edit": False},
        ],
    )
    alex = graph.add_account(
        client_id=DEMO_CLIENT_ID,
        mail=None,
        user_principal_name="alex.personal@outlook.example",
        display_name="Alex Personal",
    )
    graph.add_account(
        client_id=DEMO_CLIENT_ID,
        mail="sample.user@fabrikam.example",
        user_principal_name="sample.user@fabrikam.example",
        display_name="Sample User",
        refresh_token=SAMPLE_REFRESH_TOKEN,
    )
    seed_demo_meetings(graph, jane, alex)
    google = seed_google_demo(stack)
    connected = []
    for account in (jane, alex):
        resp = requests.post(
            f"{stack.info['api_url']}/calendar/create_outlook_calendar",
            headers={"Authorization": f"Token {DEMO_API_KEY}"},
            json={
                "microsoft_client_id": DEMO_CLIENT_ID,
                "microsoft_client_secret": DEMO_CLIENT_SECRET,
                "microsoft_refresh_token": account["refresh_token"],
            },
            timeout=30,
        )
        if resp.status_code not in (200, 201):
            raise RuntimeError(f"demo seed: connecting an account failed: {resp.status_code} {resp.text}")
        connected.append(resp.json()["account_id"])
    # A first sync, as a user's first GET /calendar/events would do, so get_events has data at once.
    synced = requests.get(
        f"{stack.info['api_url']}/calendar/events",
        headers={"Authorization": f"Token {DEMO_API_KEY}"},
        timeout=60,
    )
    if synced.status_code != 200 or synced.json()["partial_errors"]:
        raise RuntimeError(f"demo seed: first sync failed: {synced.status_code} {synced.text}")
    return {
        "user_id": DEMO_USER_ID,
        "api_key": DEMO_API_KEY,
        "accounts": connected,
        "client_id": DEMO_CLIENT_ID,
        "google": google,
    }


def seed_google_demo(stack: LocalStack) -> dict[str, Any]:
    """A Google OAuth client and an account at the Google emulator, not connected (the user connects it
    with the banner's curl): a Meet meeting tomorrow and a weekly series with a Zoom link in its
    description. The connect body (with the refresh token and client secret) goes to a file in the
    state dir, so the banner, which lands in logs, never carries token material."""
    from datetime import UTC, datetime, timedelta

    google = stack.google
    google.add_app(DEMO_GOOGLE_CLIENT_ID, DEMO_GOOGLE_CLIENT_SECRET)
    sam = google.add_account(
        DEMO_GOOGLE_ACCOUNT, name="Sam Rivera", time_zone="America/New_York", client_id=DEMO_GOOGLE_CLIENT_ID
    )
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1, hours=1)
    google.add_event(
        DEMO_GOOGLE_ACCOUNT,
        "primary",
        summary="Design review (Meet)",
        start=base,
        end=base + timedelta(minutes=45),
        meet="https://meet.google.com/kzq-demo-rvw",
        attendees=[DEMO_GOOGLE_ACCOUNT, "jane@contoso.example"],
    )
    first_day = (base + timedelta(days=1)).astimezone(UTC).date().isoformat()
    google.add_event(
        DEMO_GOOGLE_ACCOUNT,
        "primary",
        summary="Weekly 1:1 (Zoom)",
        start=f"{first_day}T10:00:00",
        end=f"{first_day}T10:30:00",
        time_zone="America/New_York",
        description="Join Zoom Meeting\nhttps://acme.zoom.us/j/85551234567?pwd=demoWeekly\n",
        recurrence=["RRULE:FREQ=WEEKLY;COUNT=12"],
    )
    connect_file = stack.state_dir / "google-connect.json"
    stack.state_dir.mkdir(parents=True, exist_ok=True)
    connect_file.write_text(
        json.dumps(
            {
                "google_client_id": DEMO_GOOGLE_CLIENT_ID,
                "google_client_secret": DEMO_GOOGLE_CLIENT_SECRET,
                "google_refresh_token": sam["refresh_token"],
            }
        )
    )
    connect_file.chmod(0o600)
    return {
        "account": DEMO_GOOGLE_ACCOUNT,
        "client_id": DEMO_GOOGLE_CLIENT_ID,
        "connect_body": str(connect_file),
    }


def seed_demo_meetings(graph: Any, jane: dict[str, Any], alex: dict[str, Any]) -> None:
    """A realistic week: links of several platforms, a weekly series, an all-day event, one meeting
    without a link, and two accounts with overlapping meetings."""
    from datetime import UTC, datetime, timedelta

    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)

    def at(hours: float) -> str:
        return (base + timedelta(hours=hours)).isoformat()

    jane_cal, alex_cal = jane["calendars"][0]["id"], alex["calendars"][0]["id"]
    graph.add_event(
        jane["id"],
        jane_cal,
        subject="Quarterly planning (Teams)",
        event_id=TEAMS_MEETING_ID,
        start=at(0),
        end=at(1),
        online_meeting_url="https://teams.microsoft.com/l/meetup-join/19%3ameeting_demo%40thread.v2/0",
    )
    graph.add_event(
        jane["id"],
        jane_cal,
        subject="Customer call (Zoom)",
        start=at(24),
        end=at(24.5),
        location="Zoom: https://acme.zoom.us/j/81234567890?pwd=demo",
    )
    graph.add_event(
        jane["id"], jane_cal, subject="Lunch (no link)", start=at(26), end=at(27), location="Cafe"
    )
    graph.add_event(
        jane["id"],
        jane_cal,
        subject="Company holiday",
        start=at(72)[:10] + "T00:00:00",
        end=(base + timedelta(hours=96)).isoformat()[:10] + "T00:00:00",
        is_all_day=True,
    )
    start_day = (base + timedelta(days=1)).date().isoformat()
    graph.add_event(
        jane["id"],
        jane_cal,
        subject="Team standup",
        event_id=STANDUP_SERIES_ID,
        start=f"{start_day}T09:00:00",
        end=f"{start_day}T09:15:00",
        time_zone="W. Europe Standard Time",
        body_html='<p>Join: <a href="https://meet.google.com/abc-defg-hij">'
        "meet.google.com/abc-defg-hij</a></p>",
        recurrence={
            "pattern": {
                "type": "weekly",
                "interval": 1,
                "daysOfWeek": ["monday", "wednesday", "friday"],
                "firstDayOfWeek": "monday",
            },
            "range": {
                "type": "noEnd",
                "startDate": start_day,
                "recurrenceTimeZone": "W. Europe Standard Time",
            },
        },
    )
    graph.add_event(
        alex["id"],
        alex_cal,
        subject="Book club (Whereby)",
        start=at(24),
        end=at(25),
        body_html="<p>https://whereby.com/book-club</p>",
    )
    graph.add_event(alex["id"], alex_cal, subject="Dentist", start=at(30), end=at(31))


def banner(info: dict[str, Any]) -> str:
    demo = info.get("demo") or {}
    virtual = info.get("virtual_time")
    lines = [
        "",
        "calbot local stack is up (no cloud: moto + Graph and Google emulators + bot sink + gateway + clock)",
        f"  API:            {info['api_url']}",
        f"  Graph emulator: {info['graph_url']}   (control API under /_control)",
        f"  Google:         {info['google_url']}   (OAuth + Calendar emulator, control API under /_control)",
        f"  Bot API sink:   {info['bots_url']}   (recorded calls: /_control/calls)",
        f"  Webhook sink:   {info['webhook_sink_url']}   (a customer's receiver; deliveries and faults:"
        f" {info['webhook_sink_control_url']}/_control/deliveries, /_control/faults)",
        f"  Stack control:  {info['control_url']}   (clock, crons, schedules, queues)",
        f"  Clock:          {'virtual (moves on POST /_local/clock/advance)' if virtual else 'real time'}",
        f"  AWS (moto):     {info['moto_url']}",
        '  For the README\'s curls: eval "$(.venv/bin/python -m local.env --urls)"'
        "   (sets API, STACK_URL, GRAPH_URL, GOOGLE_URL, BOTS_URL, WEBHOOK_SINK_URL, WEBHOOK_SINK_CONTROL)",
    ]
    if demo:
        lines += [
            f"  Demo user:      {demo['user_id']}   accounts: {', '.join(demo['accounts'])}",
            f"  Demo API key:   {demo['api_key']}",
            "",
            "Try:",
            f"  curl -s -H 'Authorization: Token {demo['api_key']}' {info['api_url']}/calendar/connections",
            "",
            "Register the webhook sink as your endpoint (the answer shows its signing secret once); every",
            "bot and connection event then reaches it (POST .../webhooks/<id>/test sends a webhook.test):",
            f"  curl -s -X POST -H 'Authorization: Token {demo['api_key']}'"
            " -H 'Content-Type: application/json' \\",
            f"    {info['api_url']}/webhooks"
            f' -d \'{{"url": "{info["webhook_sink_url"]}/hooks", "event_types": ["*"]}}\'',
            f"  curl -s {info['webhook_sink_control_url']}/_control/deliveries",
        ]
        google = demo.get("google")
        if google:
            lines += [
                "",
                f"Connect the Google sample account {google['account']} (the body file holds its client id,",
                "secret and refresh token):",
                f"  curl -s -X POST -H 'Authorization: Token {demo['api_key']}'"
                f" -H 'Content-Type: application/json' {info['api_url']}/calendar/create_calendar"
                f" -d @{google['connect_body']}",
            ]
    lines += ["", "Ctrl-C stops it."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run calbot locally with no cloud.")
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".local")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("CALBOT_PORT", "8000")))
    parser.add_argument("--no-seed", action="store_true")
    parser.add_argument("--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--virtual-time",
        action="store_true",
        help="time moves only via POST /_local/clock/advance (and handler sleeps return at once)",
    )
    parser.add_argument(
        "--lambda-concurrency",
        type=int,
        default=None,
        help="invocations of one function at once where template.yaml reserves none (the local stand-in "
        "for the account's pool; default: $LOCAL_LAMBDA_CONCURRENCY or 32); more are throttled",
    )
    parser.add_argument(
        "--account-concurrency",
        type=int,
        default=None,
        help="the account's Lambda concurrency limit the template's reservations must fit, leaving 100 "
        "unreserved, or the stack refuses to start as a deploy would fail (default: "
        "$LOCAL_ACCOUNT_CONCURRENCY or 1000; new AWS accounts may start at 10)",
    )
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.parameter_overrides)
    stack = LocalStack(
        state_dir=args.state_dir,
        host=args.host,
        port=args.port,
        seed=not args.no_seed,
        parameter_overrides=overrides,
        virtual_time=args.virtual_time,
        lambda_concurrency=args.lambda_concurrency,
        account_concurrency=args.account_concurrency,
    )
    from local.concurrency import ReservationRefused  # with the stack's other imports: after parsing

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        info = stack.start()
        print(banner(info), flush=True)
        while not stopping.is_set():
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except ReservationRefused as refused:  # what `sam deploy` would fail on: said plainly, no traceback
        print(f"the stack cannot start: {refused}", file=sys.stderr, flush=True)
        return 2
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
