"""The deployment's own invariants, checked on template.yaml as SAM's transform emits it.

Each check is a function returning the problems it finds, run on the real template (with both
samconfig.toml environments) and, to show it is not vacuous, on a copy with one defect put back.
"""

from __future__ import annotations

import copy
import functools
import re
import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from local.concurrency import DEFAULT_ACCOUNT_CONCURRENCY, reservation_refusal, reservations
from local.grants import grants
from local.iam import allowed
from local.template import Template, load_yaml, parse_overrides

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
SAMCONFIG = ROOT / "samconfig.toml"

# Properties that are a resource's physical name, unique per account and region (IAM: per account).
# A resource type the translated template gains must be listed here or in NAMELESS, so that nobody
# adds a fixed name without this test looking at it.
NAME_PROPERTIES: dict[str, tuple[str, ...]] = {
    "AWS::DynamoDB::Table": ("TableName",),
    "AWS::SQS::Queue": ("QueueName",),
    "AWS::Lambda::Function": ("FunctionName",),
    "AWS::Lambda::LayerVersion": ("LayerName",),
    "AWS::IAM::Role": ("RoleName",),
    "AWS::IAM::ManagedPolicy": ("ManagedPolicyName",),
    "AWS::Scheduler::Schedule": ("Name",),  # unique within its group
    "AWS::Scheduler::ScheduleGroup": ("Name",),
    "AWS::Logs::LogGroup": ("LogGroupName",),
    "AWS::SNS::Topic": ("TopicName",),
    "AWS::CloudWatch::Alarm": ("AlarmName",),
    "AWS::Events::Rule": ("Name",),
    "AWS::SSM::Parameter": ("Name",),
}
NAMELESS = {
    "AWS::Lambda::Permission",
    "AWS::Lambda::EventSourceMapping",
    "AWS::ApiGatewayV2::Api",  # API names need not be unique; the id is generated
    "AWS::ApiGatewayV2::Stage",  # StageName is per API
    "AWS::KMS::Key",  # keys have no name (an alias would); the key id is generated
}


def samconfig() -> dict[str, Any]:
    return tomllib.loads(SAMCONFIG.read_text())


def environment(name: str) -> tuple[str, dict[str, str]]:
    """(stack name, parameter overrides) of one samconfig.toml environment."""
    env = samconfig()[name]
    params = {**env.get("global", {}).get("parameters", {}), **env["deploy"]["parameters"]}
    return params["stack_name"], parse_overrides(shlex.split(params.get("parameter_overrides", "")))


def template(data: dict[str, Any] | None = None, env: str = "dev") -> Template:
    """template.yaml (or ``data``) as one samconfig environment deploys it (the real one is cached)."""
    if data is None:
        return _real(env)
    stack, overrides = environment(env)
    return Template(copy.deepcopy(data), path=TEMPLATE_PATH, parameter_overrides=overrides, stack_name=stack)


@functools.cache
def _real(env: str) -> Template:
    stack, overrides = environment(env)
    return Template(
        load_yaml(TEMPLATE_PATH), path=TEMPLATE_PATH, parameter_overrides=overrides, stack_name=stack
    )


def real_data() -> dict[str, Any]:
    return load_yaml(TEMPLATE_PATH)


# --------------------------------------------------------------------------------------------------
# The checks


def invoke_problems(t: Template) -> list[str]:
    """Every caller that invokes a function on AWS, and whether the translated template lets it."""
    g = grants(t)
    problems: list[str] = []
    api_ids = {lid: str(t.ref(lid)) for lid in {r.api for r in t.routes}}
    for route in t.routes:
        path = re.sub(r"\{[^}]+\+\}", "a/b", route.path)
        path = re.sub(r"\{[^}]+\}", "x", path)
        method = "GET" if route.method == "ANY" else route.method
        source = f"arn:aws:execute-api:{t.region}:{t.account_id}:{api_ids[route.api]}/$default/{method}{path}"
        refusal = g.api_route_refusal(route.function, source)
        if refusal:
            problems.append(f"route {route.route_key} -> {route.function}: {refusal}")
    for spec in t.authorizers.values():
        if spec.function is None:
            continue
        source = f"arn:aws:execute-api:{t.region}:{t.account_id}:{t.ref(spec.api)}/authorizers/abc123"
        refusal = g.api_authorizer_refusal(spec.function, source, spec.invoke_role)
        if refusal:
            problems.append(f"authorizer {spec.name} -> {spec.function}: {refusal}")
    for event_type in ("Schedule", "ScheduleV2"):
        for fn, event in t.functions_by_event_type(event_type):
            refusal = g.cron_refusal(fn.logical_id, event.name)
            if refusal:
                problems.append(f"cron {fn.logical_id}.{event.name}: {refusal}")
    for fn, event in t.functions_by_event_type("SQS"):
        refusal = g.event_source_mapping_refusal(fn.logical_id, str(event.properties["Queue"]))
        if refusal:
            problems.append(f"queue consumer {fn.logical_id}.{event.name}: {refusal}")
    # The one-time schedules the code creates at run time: every function ARN a function may name
    # as a schedule target, with the scheduler role it passes and the DLQ it names.
    function_arns = {spec.arn for spec in t.functions.values()}
    for fn in t.functions.values():
        env = fn.environment
        role, dlq = env.get("SCHEDULER_ROLE_ARN"), env.get("SCHEDULE_DLQ_ARN")
        if not role:
            continue
        schedule = f"arn:aws:scheduler:{t.region}:{t.account_id}:schedule/{env.get('SCHEDULE_GROUP')}/x"
        targets = sorted(v for v in env.values() if v in function_arns)
        if not targets:
            problems.append(f"{fn.logical_id}: no schedule target among its environment's function ARNs")
        for target in targets:
            refusal = g.scheduler_refusal(role, target, schedule)
            if refusal:
                problems.append(f"one-time schedule -> {target}: {refusal}")
        if dlq:
            refusal = g.scheduler_dead_letter_refusal(role, dlq, schedule)
            if refusal:
                problems.append(f"one-time schedule dead letters -> {dlq}: {refusal}")
        break  # every function carries the same Globals environment
    # Whoever creates those schedules must be allowed to pass the scheduler role to Scheduler.
    for fn in t.functions.values():
        role_arn = fn.environment.get("SCHEDULER_ROLE_ARN")
        policies = g.function_policies(fn.logical_id)
        group = fn.environment.get("SCHEDULE_GROUP")
        schedule = f"arn:aws:scheduler:{t.region}:{t.account_id}:schedule/{group}/x"
        creates = allowed(policies, "scheduler:CreateSchedule", schedule)
        # Scheduler is the service the role is passed to (SchedulesPolicy's iam:PassedToService).
        passes = allowed(
            policies, "iam:PassRole", role_arn or "", {"iam:PassedToService": "scheduler.amazonaws.com"}
        )
        if creates and role_arn and not passes:
            problems.append(f"{fn.logical_id} creates schedules but may not pass {role_arn}")
    return problems


def fixed_names(t: Template) -> tuple[dict[tuple[str, ...], str], list[str]]:
    """({(type, [group,] name): logical id} of explicitly named resources, types not classified)."""
    names: dict[tuple[str, ...], str] = {}
    unknown: list[str] = []
    for lid, res in t.translated_active().items():
        rtype = str(res["Type"])
        if rtype in NAMELESS:
            continue
        if rtype not in NAME_PROPERTIES:
            unknown.append(f"{lid} ({rtype})")
            continue
        props = t.resolve(res.get("Properties") or {}) or {}
        for prop in NAME_PROPERTIES[rtype]:
            if props.get(prop):
                scope = (
                    (str(props.get("GroupName") or "default"),) if rtype == "AWS::Scheduler::Schedule" else ()
                )
                names[(rtype, *scope, str(props[prop]))] = lid
    return names, unknown


def name_collisions(first: Template, second: Template) -> list[str]:
    one, _ = fixed_names(first)
    two, _ = fixed_names(second)
    return sorted(f"{one[key]}: {key[-1]!r} ({key[0]})" for key in set(one) & set(two))


NOTIFICATION_PATH = "/api/v1/admin/schedule/users/{user_id}/{provider}/{account_id}"
NOTIFICATION_BURST = 1000  # notifications in one second the route must take (issue 18)


def throttling_problems(t: Template) -> list[str]:
    problems = []
    stages = t.translated_resources("AWS::ApiGatewayV2::Stage")
    if not stages:
        problems.append("no HttpApi stage")
    for lid, props in stages.items():
        settings = props.get("DefaultRouteSettings") or {}
        for key in ("ThrottlingBurstLimit", "ThrottlingRateLimit"):
            value = settings.get(key)
            if value is None or float(value) <= 0:
                problems.append(f"{lid}: DefaultRouteSettings.{key} is {value!r}")
        # The provider notification route takes the burst (1,000 in one second) on its own
        # limit: under the stage's default most of it would be answered 429.
        route = (props.get("RouteSettings") or {}).get(f"POST {NOTIFICATION_PATH}") or {}
        for key in ("ThrottlingBurstLimit", "ThrottlingRateLimit"):
            value = route.get(key)
            if value is None or float(value) < NOTIFICATION_BURST:
                problems.append(f"{lid}: the notification route's {key} is {value!r}")
    return problems


def retention_problems(t: Template) -> list[str]:
    groups = {
        str(props.get("LogGroupName")): props.get("RetentionInDays")
        for props in t.translated_resources("AWS::Logs::LogGroup").values()
    }
    problems = []
    for lid, props in t.translated_resources("AWS::Lambda::Function").items():
        name = str(props.get("FunctionName") or t.physical_name(lid))
        group = (props.get("LoggingConfig") or {}).get("LogGroup") or f"/aws/lambda/{name}"
        if not groups.get(group):
            problems.append(f"{lid} logs to {group}, which has no RetentionInDays in the template")
    return problems


def dead_letter_queues(t: Template) -> set[str]:
    """Queues that hold what failed elsewhere: redrive targets, Scheduler/Lambda dead-letter targets."""
    queues = t.translated_resources("AWS::SQS::Queue")
    arns = {t.arn(lid): lid for lid in queues}
    found = set()
    for props in queues.values():
        target = (props.get("RedrivePolicy") or {}).get("deadLetterTargetArn")
        if target in arns:
            found.add(arns[target])
    for fn in t.functions.values():
        for key, value in fn.environment.items():
            if value in arns and ("DLQ" in key or "DEAD_LETTER" in key):
                found.add(arns[value])
    for res in t.translated_active().values():
        text = str(t.resolve(res.get("Properties") or {}))
        for arn, lid in arns.items():
            if f"'DeadLetterConfig': {{'Arn': '{arn}'}}" in text or f"'TargetArn': '{arn}'" in text:
                found.add(lid)
    return found


def alarm_problems(t: Template) -> list[str]:
    topic = t.parameters.get("AlarmTopicArn") or None
    if topic is None:
        topics = t.translated_resources("AWS::SNS::Topic")
        topic = next((str(t.ref(lid)) for lid in topics), None)
    problems = [] if topic else ["no alarm topic: AlarmTopicArn is empty and the stack creates none"]
    alarms = list(t.translated_resources("AWS::CloudWatch::Alarm").values())

    def alarmed(namespace: str, metric: str, dimension: str, value: str) -> bool:
        for alarm in alarms:
            dims = {d["Name"]: d["Value"] for d in alarm.get("Dimensions") or []}
            fires_on_one = (
                alarm.get("ComparisonOperator") == "GreaterThanOrEqualToThreshold"
                and float(alarm["Threshold"]) <= 1
            ) or (alarm.get("ComparisonOperator") == "GreaterThanThreshold" and float(alarm["Threshold"]) < 1)
            if (
                alarm.get("Namespace") == namespace
                and alarm.get("MetricName") == metric
                and dims.get(dimension) == value
                and fires_on_one
                and topic in (alarm.get("AlarmActions") or [])
            ):
                return True
        return False

    for lid in sorted(dead_letter_queues(t)):
        name = t.physical_name(lid)
        if not alarmed("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", name):
            problems.append(f"dead-letter queue {lid} has no alarm to {topic}")
    launcher = t.functions["BotLauncherFunction"].function_name
    if not alarmed("AWS/Lambda", "Errors", "FunctionName", launcher):
        problems.append(f"BotLauncherFunction errors raise no alarm to {topic}")
    return problems


# What a new account's Lambda "Concurrent executions" quota may start at (issue threads quote Lambda's
# "...below its minimum value of [10]" on first deploys); 1,000 is the default of an established one.
NEW_ACCOUNT_CONCURRENCY = 10


def reservation_problems(*templates: Template, account_limit: int) -> list[str]:
    """What Lambda refuses when these stacks are deployed into one account and region: reservations
    leaving under 100 unreserved (local/concurrency.py), and a function reserved at 0, which Lambda
    takes as "never run"."""
    reserved = {f"{t.stack_name}/{fid}": n for t in templates for fid, n in reservations(t).items()}
    problems = [f"{fn} reserves 0: every invocation is throttled" for fn, n in reserved.items() if n == 0]
    refusal = reservation_refusal(reserved, account_limit)
    return problems + ([refusal] if refusal else [])


# --------------------------------------------------------------------------------------------------
# The real template


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_every_invoke_path_has_its_permission(env: str) -> None:
    assert invoke_problems(template(env=env)) == []


def test_a_second_stage_in_the_same_account_collides_with_no_name() -> None:
    dev, prod = template(env="dev"), template(env="prod")
    assert fixed_names(dev)[1] == [], "classify these resource types in NAME_PROPERTIES or NAMELESS"
    assert name_collisions(dev, prod) == []
    # And named resources do carry the stage (the check compares something).
    assert any("dev" in key[-1] for key in fixed_names(dev)[0])


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_the_http_api_stage_throttles(env: str) -> None:
    assert throttling_problems(template(env=env)) == []


def test_dev_deploys_on_a_new_account_and_both_stages_fit_one_default_account() -> None:
    dev, prod = template(env="dev"), template(env="prod")
    assert reservation_problems(dev, account_limit=NEW_ACCOUNT_CONCURRENCY) == []
    assert reservation_problems(dev, prod, account_limit=DEFAULT_ACCOUNT_CONCURRENCY) == []
    # prod reserves its launcher's 400: on a new account the quota is raised first (README says so),
    # and the check does see a reservation there.
    (problem,) = reservation_problems(prod, account_limit=NEW_ACCOUNT_CONCURRENCY)
    assert "below its minimum value of [10]" in problem and "to at least 500" in problem
    assert reservation_problems(prod, account_limit=499) and not reservation_problems(prod, account_limit=500)


def test_every_functions_logs_have_a_retention() -> None:
    assert retention_problems(template()) == []


def test_dead_letter_queues_and_launcher_failures_alarm_to_the_topic() -> None:
    t = template()
    assert dead_letter_queues(t) == {
        "ScheduleDeadLetterQueue",
        "SyncDeadLetterQueue",
        "AutoScheduleDeadLetterQueue",
        "RenewalDeadLetterQueue",
        "LaunchDeadLetterQueue",
        "WebhookDeadLetterQueue",  # customer-webhook deliveries that failed every attempt
    }
    assert alarm_problems(t) == []
    # Given a topic, the alarms notify it and the stack creates none of its own.
    data = real_data()
    given = Template(
        data,
        path=TEMPLATE_PATH,
        parameter_overrides={"AlarmTopicArn": "arn:aws:sns:us-east-1:123456789012:ops"},
    )
    assert alarm_problems(given) == []
    assert given.translated_resources("AWS::SNS::Topic") == {}


def test_samconfig_has_dev_and_prod_environments() -> None:
    config = samconfig()
    assert config["version"] == 0.1
    stacks = set()
    for env in ("dev", "prod"):
        deploy = config[env]["deploy"]["parameters"]
        stack, overrides = environment(env)
        stacks.add(stack)
        assert overrides["Stage"] == env
        assert "CAPABILITY_IAM" in deploy["capabilities"].split()
        template(env=env)  # every override is a declared parameter with an allowed value
    assert len(stacks) == 2
    assert config["prod"]["deploy"]["parameters"]["confirm_changeset"] is True
    # CAPABILITY_IAM covers IAM resources without explicit names only.
    for res in template().translated_active().values():
        if res["Type"].startswith("AWS::IAM::"):
            props = res.get("Properties") or {}
            assert not ({"RoleName", "ManagedPolicyName", "UserName", "GroupName"} & set(props))


def test_the_readme_deploys_with_both_environments() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Deploy", 1)[1].split("\n## ", 1)[0]
    for env in ("dev", "prod"):
        assert f"sam deploy --config-env {env}" in section


# --------------------------------------------------------------------------------------------------
# Each check finds the defect it is about


def _without(path: list[str]) -> dict[str, Any]:
    data = real_data()
    node = data
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return data


def _with_queue_visibility(queue: str, seconds: int) -> dict[str, Any]:
    """A queue whose VisibilityTimeout is under its consumer's Timeout: Lambda refuses the mapping."""
    data = real_data()
    data["Resources"][queue]["Properties"]["VisibilityTimeout"] = seconds
    return data


def _launcher_reservation_unconditional() -> dict[str, Any]:
    """The launcher's reservation passed as given: dev's LauncherReservedConcurrency=0 would be Lambda's
    0 (no launch ever runs) instead of no reservation."""
    data = real_data()
    data["Resources"]["BotLauncherFunction"]["Properties"]["ReservedConcurrentExecutions"] = {
        "Ref": "LauncherReservedConcurrency"
    }
    return data


AUTHORIZER = ["Resources", "HttpApi", "Properties", "Auth", "Authorizers", "ApiKeyAuthorizer"]
DEFECTS: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[Template], list[str]], str]] = {
    "authorizer permission": (
        lambda: _without([*AUTHORIZER, "EnableFunctionDefaultPermissions"]),
        invoke_problems,
        "authorizer ApiKeyAuthorizer -> AuthorizerFunction",
    ),
    "throttling": (
        lambda: _without(["Resources", "HttpApi", "Properties", "DefaultRouteSettings"]),
        throttling_problems,
        "ThrottlingBurstLimit",
    ),
    "notification route throttling": (
        lambda: _without(
            [
                "Resources",
                "WebhookFunction",
                "Properties",
                "Events",
                "Notification",
                "Properties",
                "RouteSettings",
            ]
        ),
        throttling_problems,
        "the notification route's ThrottlingBurstLimit",
    ),
    "launcher reserved at 0": (
        lambda: _launcher_reservation_unconditional(),
        lambda t: reservation_problems(t, account_limit=NEW_ACCOUNT_CONCURRENCY),
        "calbot-dev/BotLauncherFunction reserves 0",
    ),
    "queue visibility under its consumer's timeout": (
        lambda: _with_queue_visibility("WebhookQueue", 30),
        invoke_problems,
        "queue consumer WebhookDeliveryFunction.Deliveries: Queue visibility timeout: 30 seconds is less "
        "than Function timeout: 60 seconds",
    ),
    "log retention": (
        lambda: _without(["Globals", "Function", "LoggingConfig"]),
        retention_problems,
        "BotLauncherFunction logs to /aws/lambda/calbot-dev-bot-launcher",
    ),
    "launcher alarm": (
        lambda: _without(["Resources", "BotLauncherErrorsAlarm"]),
        alarm_problems,
        "BotLauncherFunction errors raise no alarm",
    ),
    "dlq alarm": (
        lambda: _without(["Resources", "SyncDeadLetterAlarm"]),
        alarm_problems,
        "dead-letter queue SyncDeadLetterQueue has no alarm",
    ),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_check_finds_its_defect(defect: str) -> None:
    make, check, expected = DEFECTS[defect]
    problems = check(template(make()))
    assert any(expected in p for p in problems), problems


def test_fixed_cron_schedule_names_collide_across_stages() -> None:
    data = real_data()
    for fn, event in (("AutoScheduleJobFunction", "Midnight"), ("RenewalJobFunction", "Nightly")):
        del data["Resources"][fn]["Properties"]["Events"][event]["Properties"]["OmitName"]
    collisions = name_collisions(template(data, "dev"), template(data, "prod"))
    assert collisions == [
        "AutoScheduleJobFunctionMidnight: 'AutoScheduleJobFunctionMidnight' (AWS::Scheduler::Schedule)",
        "RenewalJobFunctionNightly: 'RenewalJobFunctionNightly' (AWS::Scheduler::Schedule)",
    ]


def test_a_consumer_role_without_receive_is_an_invoke_problem() -> None:
    data = real_data()
    data["Resources"]["SyncWorkerFunction"]["Properties"]["Role"] = {"Fn::GetAtt": ["SchedulerRole", "Arn"]}
    problems = invoke_problems(template(data))
    assert any("queue consumer SyncWorkerFunction.Changes" in p and "ReceiveMessage" in p for p in problems)
