"""template.yaml's function roles are least privilege, read from SAM's own translation of the template
and evaluated the way the local stack enforces them (local/iam_enforce.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from local import iam_enforce
from local.iam_enforce import ALLOW, FunctionPolicies, Principal, acting_as, allowed_action_patterns, evaluate
from local.template import load_template

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
TABLE = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/calbot-local-Table"
CREDENTIAL = f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/calbot/dev/users/usr_1/outlook/a-1234"
CURSOR_KEY = f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/calbot/dev/internal/cursor-signing-key"
SCHEDULE = f"arn:aws:scheduler:us-east-1:{ACCOUNT}:schedule/calbot-bots-dev/bot-1"
SCHEDULER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/calbot-local-SchedulerRole"


def _credential_key() -> str:
    return str(load_template(ROOT / "template.yaml").get_att("CredentialKey", "Arn"))


CREDENTIAL_KEY = _credential_key()


@pytest.fixture(scope="module")
def roles() -> FunctionPolicies:
    return FunctionPolicies(load_template(ROOT / "template.yaml"))


def _decide(p: Principal, action: str, resource: str, **context: object) -> str:
    return evaluate(p.policies, action, resource, context)


# Every function's allowed actions (logs:* and xray:* come with every SAM function role and are left
# out). Granting a function anything more is a visible change to this table.
ALLOWED_ACTIONS: dict[str, list[str]] = {
    "AuthorizerFunction": ["dynamodb:GetItem"],
    "OpenApiFunction": [],
    "WebhookFunction": ["dynamodb:BatchGetItem", "dynamodb:GetItem", "sqs:SendMessage"],
    "ListConnectionsFunction": [
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
    ],
    "GetConnectionFunction": [
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
    ],
    "AutoScheduleSettingsFunction": [
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
    ],
    "AutoSchedulePreviewFunction": [
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
    ],
    "GetEventsFunction": [
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
        "ssm:GetParameter",
        "ssm:PutParameter",
    ],
    "ListScheduledBotsFunction": [
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
        "ssm:GetParameter",
        "ssm:PutParameter",
    ],
    "AutoScheduleJobFunction": ["dynamodb:Query", "sqs:SendMessage"],
    "RenewalJobFunction": ["dynamodb:Query", "sqs:SendMessage"],  # fans out only: the expiry index's ids
    "ArmingJobFunction": [
        "dynamodb:Query",
        "sqs:SendMessage",
    ],  # the arming index's keys, to the launch queue
}
_READ = ["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:Query"]
_WRITE = [
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
]
# The credential store (SSM, or the dynamodb backend's items under USER#, which _WRITE covers) and the
# KMS envelope key of the access-token cache and the dynamodb backend (calbot.envelope).
_CREDS = ["ssm:GetParameter", "ssm:PutParameter", "kms:Decrypt", "kms:GenerateDataKey"]
_SCHEDULES = [
    "iam:PassRole",
    "scheduler:CreateSchedule",
    "scheduler:DeleteSchedule",
    "scheduler:UpdateSchedule",
    "sqs:SendMessage",  # a launch due within the delay horizon is armed on the launch queue
]
for _fn, _extra in {
    "CreateConnectionFunction": [*_CREDS, "ssm:DeleteParameter"],
    "DisconnectConnectionFunction": [*_CREDS, "ssm:DeleteParameter", "scheduler:DeleteSchedule"],
    "DisconnectFunction": [*_CREDS, "ssm:DeleteParameter", "scheduler:DeleteSchedule"],
    "ListEventsFunction": [*_CREDS, *_SCHEDULES, "sqs:SendMessage"],
    "ListCalendarsFunction": _CREDS,
    "ScheduleEventFunction": _SCHEDULES,
    "UnscheduleEventFunction": ["scheduler:DeleteSchedule"],
    "UpdateScheduledBotFunction": _SCHEDULES,
    "DeleteScheduledBotFunction": ["scheduler:DeleteSchedule"],
    "ToggleRecurrenceFunction": _SCHEDULES,
    "AutoRescheduleFunction": _SCHEDULES,
    "BotLauncherFunction": [
        *_SCHEDULES,
        "ssm:GetParameter",
        "sqs:DeleteMessage",  # the launch queue's consumer
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ],
    "RecurrenceRescheduleFunction": _SCHEDULES,
    "AutoScheduleEnableFunction": [*_CREDS, *_SCHEDULES],
    "AutoScheduleDisableFunction": [],
    "AutoScheduleWorkerFunction": [
        *_CREDS,
        *_SCHEDULES,
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
        "sqs:SendMessage",  # a failed user goes back to the queue alone
    ],
    "SyncWorkerFunction": [
        *_CREDS,
        *_SCHEDULES,
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ],
    "RenewalWorkerFunction": [
        *_CREDS,
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
        "sqs:SendMessage",  # a failed subscription back to the renewal queue; a recreated one's resync
    ],
    "WebhookDeliveryFunction": [
        "kms:Decrypt",  # signing secrets under the dynamodb credential backend
        "kms:GenerateDataKey",
        "ssm:GetParameter",  # signing secrets under the ssm backend (read only)
        "sqs:DeleteMessage",  # the webhook queue's consumer
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ],
    "RetryWebhookDeliveryFunction": [],
    "TestWebhookFunction": [],
}.items():
    # Every function that writes user data may emit customer-webhook events (WebhookEventsPolicy:
    # sqs:SendMessage on the webhook queue only).
    ALLOWED_ACTIONS[_fn] = sorted({*_READ, *_WRITE, *_extra, "sqs:SendMessage"})
ALLOWED_ACTIONS["ListWebhookDeliveriesFunction"] = ALLOWED_ACTIONS["ListScheduledBotsFunction"]

# Customer webhook endpoints (issue 19): their signing secrets live under the SSM webhooks/ prefix, or,
# with CredentialBackend=dynamodb, in WHSEC# items (USER#, _WRITE) encrypted with the credential key.
_WEBHOOK_SECRETS = ["ssm:GetParameter", "ssm:PutParameter", "kms:Decrypt", "kms:GenerateDataKey"]
_RATE_COUNTED_READS = sorted({*_READ, "dynamodb:UpdateItem"})
ALLOWED_ACTIONS |= {
    "CreateWebhookFunction": sorted({*_READ, *_WRITE, *_WEBHOOK_SECRETS, "ssm:DeleteParameter"}),
    "ListWebhooksFunction": _RATE_COUNTED_READS,
    "GetWebhookFunction": _RATE_COUNTED_READS,
    "UpdateWebhookFunction": sorted({*_READ, *_WRITE}),
    # the rules, and the auto bots they now leave out cancelled (their schedules deleted, bot.cancelled)
    "AutoScheduleRulesFunction": sorted({*_READ, *_WRITE, "scheduler:DeleteSchedule", "sqs:SendMessage"}),
    "DeleteWebhookFunction": sorted({*_READ, *_WRITE, "ssm:DeleteParameter"}),
    "RotateWebhookSecretFunction": sorted({*_READ, *_WRITE, *_WEBHOOK_SECRETS, "ssm:DeleteParameter"}),
}
WEBHOOK_SECRET = f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/calbot/dev/webhooks/usr_1/wh_1"

# The functions whose code creates or updates schedules (calbot.scheduler.put_launch/put_reschedule).
SCHEDULE_CREATORS = {
    "ListEventsFunction",  # its sync reconciles: bots follow moved meetings (calbot.services.reconcile)
    "ScheduleEventFunction",
    "UpdateScheduledBotFunction",
    "ToggleRecurrenceFunction",
    "AutoRescheduleFunction",
    "BotLauncherFunction",
    "RecurrenceRescheduleFunction",
    "AutoScheduleEnableFunction",
    "AutoScheduleWorkerFunction",
    "SyncWorkerFunction",
}
# Routes that only read (besides counting the caller's requests and creating the cursor key once).
READ_ONLY_ROUTES = {
    "ListConnectionsFunction",
    "GetConnectionFunction",
    "GetEventsFunction",
    "ListScheduledBotsFunction",
    "AutoScheduleSettingsFunction",
    "AutoSchedulePreviewFunction",
    "ListWebhookDeliveriesFunction",
    "ListWebhooksFunction",
    "GetWebhookFunction",
}


def test_each_functions_allowed_actions(roles: FunctionPolicies) -> None:
    actual = {
        p.function: [a for a in allowed_action_patterns(p) if not a.startswith(("logs:", "xray:"))]
        for p in roles
    }
    assert actual == ALLOWED_ACTIONS
    assert roles.unknown_managed == {}  # every attached policy's document is known, none skipped


def test_no_function_can_scan_or_describe(roles: FunctionPolicies) -> None:
    for p in roles:
        for action in ("dynamodb:Scan", "dynamodb:DescribeTable", "dynamodb:*"):
            assert _decide(p, action, TABLE) != ALLOW, (p.function, action)
            assert _decide(p, action, f"{TABLE}/index/GSI1") != ALLOW, (p.function, action)


def test_authorizer_and_webhook_read_only_their_own_items(roles: FunctionPolicies) -> None:
    authorizer = roles.principal("AuthorizerFunction")
    assert _decide(authorizer, "dynamodb:GetItem", TABLE, **{"dynamodb:LeadingKeys": ["APIKEY#abc"]}) == ALLOW
    assert _decide(authorizer, "dynamodb:GetItem", TABLE, **{"dynamodb:LeadingKeys": ["USER#u"]}) != ALLOW
    assert _decide(authorizer, "dynamodb:Query", f"{TABLE}/index/GSI1") != ALLOW
    webhook = roles.principal("WebhookFunction")
    assert _decide(webhook, "dynamodb:GetItem", TABLE, **{"dynamodb:LeadingKeys": ["SUB#s1"]}) == ALLOW
    assert _decide(webhook, "dynamodb:GetItem", TABLE, **{"dynamodb:LeadingKeys": ["USER#u"]}) != ALLOW
    # one BatchGetItem per request (a forged 1,000-item body stays cheap), still only SUB# items
    assert (
        _decide(webhook, "dynamodb:BatchGetItem", TABLE, **{"dynamodb:LeadingKeys": ["SUB#a", "SUB#b"]})
        == ALLOW
    )
    assert (
        _decide(webhook, "dynamodb:BatchGetItem", TABLE, **{"dynamodb:LeadingKeys": ["SUB#a", "USER#u"]})
        != ALLOW
    )
    sync_queue = f"arn:aws:sqs:us-east-1:{ACCOUNT}:calbot-local-SyncQueue.fifo"
    assert _decide(webhook, "sqs:SendMessage", sync_queue) == ALLOW
    assert _decide(webhook, "sqs:SendMessage", sync_queue.replace("SyncQueue", "AutoScheduleQueue")) != ALLOW


def test_read_only_routes_cannot_write_credentials_or_items(roles: FunctionPolicies) -> None:
    for name in READ_ONLY_ROUTES:
        p = roles.principal(name)
        for action in ("ssm:PutParameter", "ssm:DeleteParameter", "ssm:GetParameter"):
            assert _decide(p, action, CREDENTIAL) != ALLOW, (name, action)
        for action in ("dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"):
            assert _decide(p, action, TABLE) != ALLOW, (name, action)
        user_item = {"dynamodb:LeadingKeys": ["USER#u"]}
        assert _decide(p, "dynamodb:UpdateItem", TABLE, **user_item) != ALLOW, name
        # Nor decrypt what the credential key protects (TOKEN#/CRED# items they can read as ciphertext).
        for action in ("kms:Decrypt", "kms:GenerateDataKey"):
            assert _decide(p, action, CREDENTIAL_KEY) != ALLOW, (name, action)
        # The one write they make: their caller's request counter.
        assert _decide(p, "dynamodb:UpdateItem", TABLE, **{"dynamodb:LeadingKeys": ["RATE#k"]}) == ALLOW


def test_no_function_can_write_an_api_key(roles: FunctionPolicies) -> None:
    api_key = {"dynamodb:LeadingKeys": ["APIKEY#0123abcd"]}
    writes = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem")
    for p in roles:
        for action in writes:
            assert _decide(p, action, TABLE, **api_key) != ALLOW, (p.function, action)
    # What write-capable functions do write is still granted.
    writer = roles.principal("ScheduleEventFunction")
    for prefix in ("USER#u", "SUB#s", "DEDUP#d", "LOCK#l", "RATE#r"):
        assert _decide(writer, "dynamodb:PutItem", TABLE, **{"dynamodb:LeadingKeys": [prefix]}) == ALLOW


def test_only_schedule_creators_may_pass_the_scheduler_role(roles: FunctionPolicies) -> None:
    to_scheduler = {"iam:PassedToService": "scheduler.amazonaws.com"}
    for p in roles:
        may_pass = _decide(p, "iam:PassRole", SCHEDULER_ROLE, **to_scheduler) == ALLOW
        may_create = _decide(p, "scheduler:CreateSchedule", SCHEDULE) == ALLOW
        assert may_pass == (p.function in SCHEDULE_CREATORS), p.function
        assert may_create == (p.function in SCHEDULE_CREATORS), p.function
        # Nobody may pass it to another service, nor pass any other role.
        assert (
            _decide(p, "iam:PassRole", SCHEDULER_ROLE, **{"iam:PassedToService": "lambda.amazonaws.com"})
            != ALLOW
        )
        other_role = SCHEDULER_ROLE.replace("SchedulerRole", "AuthorizerFunctionRole")
        assert _decide(p, "iam:PassRole", other_role, **to_scheduler) != ALLOW


def test_credentials_are_deleted_only_by_connect_and_disconnect(roles: FunctionPolicies) -> None:
    deleters = {p.function for p in roles if _decide(p, "ssm:DeleteParameter", CREDENTIAL) == ALLOW}
    assert deleters == {"CreateConnectionFunction", "DisconnectConnectionFunction", "DisconnectFunction"}
    launcher = roles.principal("BotLauncherFunction")
    bot_key = CURSOR_KEY.replace("internal/cursor-signing-key", "bot-api-key")
    assert _decide(launcher, "ssm:GetParameter", bot_key) == ALLOW
    assert _decide(launcher, "ssm:GetParameter", CREDENTIAL) != ALLOW


def test_paginating_routes_can_read_and_create_the_cursor_key(roles: FunctionPolicies) -> None:
    key = CURSOR_KEY
    for name in ("ListEventsFunction", "GetEventsFunction", "ListScheduledBotsFunction"):
        p = roles.principal(name)
        assert _decide(p, "ssm:GetParameter", key) == ALLOW and _decide(p, "ssm:PutParameter", key) == ALLOW


def test_roles_stay_within_the_managed_policy_quota() -> None:
    # IAM attaches at most 10 managed policies to a role by default (SAM's two AWS ones included).
    resources = load_template(ROOT / "template.yaml").translated["Resources"]
    for logical_id, res in resources.items():
        if res["Type"] == "AWS::IAM::Role":
            assert len(res["Properties"].get("ManagedPolicyArns") or []) <= 10, logical_id


# -- the real authorizer's role, enforced on a real client -----------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    mock = mock_aws()
    mock.start(reset=False)
    try:
        yield
    finally:
        mock.stop(remove_data=False)


def test_the_authorizer_is_refused_a_scan(aws: None, roles: FunctionPolicies) -> None:
    iam_enforce.install()
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    with acting_as(roles.principal("AuthorizerFunction")), pytest.raises(ClientError) as denied:
        ddb.scan(TableName="calbot-local-Table")
    error = denied.value.response["Error"]
    assert error["Code"] == "AccessDeniedException"
    assert error["Message"] == (
        f"User: arn:aws:sts::{ACCOUNT}:assumed-role/calbot-local-AuthorizerFunctionRole/"
        f"calbot-local-AuthorizerFunction is not authorized to perform: dynamodb:Scan on resource: {TABLE} "
        "because no identity-based policy allows the dynamodb:Scan action"
    )


def test_the_credential_key_is_usable_only_by_credential_users_and_only_that_key(
    roles: FunctionPolicies,
) -> None:
    users = {name for name, actions in ALLOWED_ACTIONS.items() if "kms:Decrypt" in actions}
    assert users == {name for name, actions in ALLOWED_ACTIONS.items() if "ssm:GetParameter" in actions} - {
        "BotLauncherFunction",  # reads the Create Bot API key, no account credentials
        "GetEventsFunction",  # the cursor key only
        "ListScheduledBotsFunction",
        "ListWebhookDeliveriesFunction",  # the cursor key only
    }
    other_key = CREDENTIAL_KEY.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    for p in roles:
        for action in ("kms:Decrypt", "kms:GenerateDataKey"):
            assert (_decide(p, action, CREDENTIAL_KEY) == ALLOW) == (p.function in users), (
                p.function,
                action,
            )
            assert _decide(p, action, other_key) != ALLOW, (p.function, action)


def test_webhook_secrets_are_reachable_only_by_the_webhook_routes(roles: FunctionPolicies) -> None:
    writers = {p.function for p in roles if _decide(p, "ssm:PutParameter", WEBHOOK_SECRET) == ALLOW}
    assert writers == {"CreateWebhookFunction", "RotateWebhookSecretFunction"}
    deleters = {p.function for p in roles if _decide(p, "ssm:DeleteParameter", WEBHOOK_SECRET) == ALLOW}
    assert deleters == {"CreateWebhookFunction", "RotateWebhookSecretFunction", "DeleteWebhookFunction"}
    for name in ("CreateWebhookFunction", "RotateWebhookSecretFunction", "DeleteWebhookFunction"):
        p = roles.principal(name)  # the webhook prefix only: never an account's OAuth credentials
        for action in ("ssm:GetParameter", "ssm:PutParameter", "ssm:DeleteParameter"):
            assert _decide(p, action, CREDENTIAL) != ALLOW, (name, action)
    for p in roles:  # and the OAuth credential users never reach the webhook secrets
        if _decide(p, "ssm:GetParameter", CREDENTIAL) == ALLOW:
            assert _decide(p, "ssm:GetParameter", WEBHOOK_SECRET) != ALLOW, p.function
