"""Every AWS call a handler makes on the local stack is checked against that function's IAM role.

On AWS each function runs with its own execution role, and DynamoDB, SSM, SQS and Scheduler refuse a
call that role does not grant (action AND resource). The local stack runs every handler in one process
with one set of credentials, so nothing refused anything: a policy missing a right, or a right granted
on the wrong ARN, only showed up after a deploy. This module closes that gap.

How (and why this way rather than moto's own IAM enforcement): moto's server can authenticate requests
against IAM users, but it checks resources only for S3, SQS and IAM (DynamoDB, SSM and Scheduler are
checked against ``*``), it does not expand TransactWriteItems into its contained actions, and
per-function credentials cannot work when calbot caches one boto3 client per service for the whole
process. So the check runs on the client side instead, where the call's parameters are still plain:

* ``FunctionPolicies(template)`` reads each function's role from SAM's translation of template.yaml
  (``local.translate``): the generated ``<Fn>Role`` with its inline ``Policies`` (SAM policy templates
  such as ``DynamoDBCrudPolicy`` already expanded), the ``AWS::IAM::ManagedPolicy`` resources it
  attaches (and any ``AWS::IAM::Policy``/``ManagedPolicy`` naming it in ``Roles``), plus the AWS managed
  policies SAM adds (AWSLambdaBasicExecutionRole, AWSXrayWriteOnlyAccess, AWSLambdaSQSQueueExecutionRole),
  whose documents are below.
* ``acting_as(principal)`` sets a context variable around a handler invocation (and its cold import);
  ``install()`` wraps ``botocore.client.BaseClient._make_api_call`` once, for every client whatever
  session created it and whenever (at import too). A call made while a principal is set is mapped to
  the IAM actions and resource ARNs AWS authorizes it as (``requirements``), evaluated (``evaluate``),
  and refused before anything is sent with the error the real service answers (``AccessDeniedException``
  for DynamoDB, SSM and Scheduler, ``AccessDenied`` for SQS), raised the way botocore raises it.
* Calls with no principal (the stack's bootstrap, the clock's own SQS polling, tests' setup, service
  tests calling services directly) are not checked: they are not a function's calls.
* Handlers that fan out with ``ThreadPoolExecutor`` keep their principal: ``install()`` makes
  ``submit`` run each task in a copy of the submitter's context, as one Lambda invocation would.

The evaluator: Allow/Deny statements, Action/NotAction, Resource/NotResource, ``*`` and ``?``
wildcards, explicit Deny wins, no Allow means implicit deny. Conditions: the operators of the String,
Arn, Bool and Null families (with ``ForAllValues:``/``ForAnyValue:`` and ``...IfExists``) over the
keys this module can compute for a request (``dynamodb:LeadingKeys``, ``dynamodb:EnclosingOperation``,
``iam:PassedToService``, ``aws:RequestedRegion``, ``aws:PrincipalAccount``). A condition it cannot
evaluate (unknown key or operator) is treated conservatively: an Allow statement carrying it grants
nothing, a Deny statement carrying it denies.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import sys
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from local.template import Template, _ref_target

# -- AWS managed policies SAM attaches to every function role (their documents, as AWS publishes them)

AWS_MANAGED_POLICIES: dict[str, dict[str, Any]] = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole": {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": "*",
            }
        ],
    },
    "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole": {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                ],
                "Resource": "*",
            }
        ],
    },
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess": {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "xray:PutTraceSegments",
                    "xray:PutTelemetryRecords",
                    "xray:GetSamplingRules",
                    "xray:GetSamplingTargets",
                    "xray:GetSamplingStatisticSummaries",
                ],
                "Resource": "*",
            }
        ],
    },
}


# --------------------------------------------------------------------------------------------------
# Policy evaluation

ALLOW = "Allow"
IMPLICIT_DENY = "ImplicitDeny"
EXPLICIT_DENY = "ExplicitDeny"


class _Unknown:
    """A condition key whose value this module cannot know for the request."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()

# Keys this module computes. A key listed here but missing from a request's context is *absent*
# (IAM's semantics for absent keys apply); any other key is unknown and makes its condition
# unevaluable.
KNOWN_KEYS = frozenset(
    {
        "dynamodb:leadingkeys",
        "dynamodb:enclosingoperation",
        "iam:passedtoservice",
        "aws:requestedregion",
        "aws:principalaccount",
    }
)


class _Unevaluable(Exception):
    pass


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _glob(pattern: str, text: str, *, case_sensitive: bool = True) -> bool:
    """IAM wildcards: ``*`` any run of characters (``/`` and ``:`` included), ``?`` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.fullmatch(regex, text, flags | re.DOTALL) is not None


def _action_matches(patterns: Iterable[Any], action: str) -> bool:
    # Action names are case-insensitive in IAM.
    return any(_glob(str(p), action, case_sensitive=False) for p in patterns)


def _resource_matches(patterns: Iterable[Any], resource: str) -> bool:
    return any(_glob(str(p), resource) for p in patterns)


def _compare(op: str, policy_value: str, value: str) -> bool:
    if op in ("StringEquals", "ArnEquals"):
        return value == policy_value
    if op == "StringEqualsIgnoreCase":
        return value.lower() == policy_value.lower()
    if op in ("StringLike", "ArnLike"):
        return _glob(policy_value, value)
    if op == "Bool":
        return value.lower() == policy_value.lower()
    raise _Unevaluable(op)


_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}
_POSITIVE = {"StringEquals", "StringEqualsIgnoreCase", "StringLike", "ArnEquals", "ArnLike", "Bool"}


def _condition_holds(operator: str, key: str, policy_values: list[Any], context: Mapping[str, Any]) -> bool:
    lkey = key.lower()
    if lkey not in KNOWN_KEYS:
        raise _Unevaluable(key)
    present = lkey in context
    value = context.get(lkey)
    if value is UNKNOWN:
        raise _Unevaluable(key)
    values = [str(v) for v in _as_list(value)] if present else []
    pvals = [str(v).lower() if isinstance(v, bool) else str(v) for v in policy_values]
    qualifier, _, op = operator.rpartition(":")
    if_exists = op.endswith("IfExists")
    if if_exists:
        op = op[: -len("IfExists")]
    if op == "Null":
        want_absent = pvals[0].lower() == "true"
        return (not present or not values) == want_absent
    negated = op in _NEGATED
    base = _NEGATED.get(op, op)
    if base not in _POSITIVE:
        raise _Unevaluable(operator)

    def matches(v: str) -> bool:
        hit = any(_compare(base, p, v) for p in pvals)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(matches(v) for v in values)  # vacuously true when the key is absent
    if qualifier == "ForAnyValue":
        return any(matches(v) for v in values)
    if qualifier:
        raise _Unevaluable(operator)
    if not present or not values:
        # Absent key: a negated operator holds, a positive one does not (IfExists: both hold).
        return if_exists or negated
    return any(matches(v) for v in values)


def _conditions_hold(condition: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    for operator, body in condition.items():
        if not isinstance(body, Mapping):
            raise _Unevaluable(operator)
        for key, pvalues in body.items():
            if not _condition_holds(operator, key, _as_list(pvalues), context):
                return False
    return True


def _statements(policy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [s for s in _as_list(policy.get("Statement")) if isinstance(s, Mapping)]


def _statement_applies(
    statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, Any]
) -> bool:
    if "Action" in statement:
        if not _action_matches(_as_list(statement["Action"]), action):
            return False
    elif "NotAction" in statement:
        if _action_matches(_as_list(statement["NotAction"]), action):
            return False
    else:
        return False
    if "Resource" in statement:
        if not _resource_matches(_as_list(statement["Resource"]), resource):
            return False
    elif "NotResource" in statement:
        if _resource_matches(_as_list(statement["NotResource"]), resource):
            return False
    else:
        return False
    condition = statement.get("Condition")
    if not condition:
        return True
    try:
        return _conditions_hold(condition, context)
    except _Unevaluable:
        # Conservative: an Allow we cannot prove grants nothing; a Deny we cannot rule out denies.
        return statement.get("Effect") == "Deny"


def evaluate(
    policies: Iterable[Mapping[str, Any]],
    action: str,
    resource: str,
    context: Mapping[str, Any] | None = None,
) -> str:
    """``Allow``, ``ImplicitDeny`` or ``ExplicitDeny`` for one action on one resource ARN."""
    ctx = {k.lower(): v for k, v in (context or {}).items()}
    allowed = False
    for policy in policies:
        for statement in _statements(policy):
            if not _statement_applies(statement, action, resource, ctx):
                continue
            if statement.get("Effect") == "Deny":
                return EXPLICIT_DENY
            if statement.get("Effect") == "Allow":
                allowed = True
    return ALLOW if allowed else IMPLICIT_DENY


def allowed(
    policies: Iterable[Mapping[str, Any]],
    action: str,
    resource: str,
    context: Mapping[str, Any] | None = None,
) -> bool:
    return evaluate(policies, action, resource, context) == ALLOW


# --------------------------------------------------------------------------------------------------
# What AWS authorizes a call as


@dataclass(frozen=True)
class Requirement:
    """One (action, resource) pair the call needs, with the condition keys AWS would supply."""

    action: str
    resource: str
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AwsEnv:
    """Where the call goes: region and account, and each table's partition key attribute name."""

    region: str
    account_id: str
    partition: str = "aws"
    table_hash_keys: Mapping[str, str] = field(default_factory=dict)


_SERVICE_PREFIX = {"dynamodb": "dynamodb", "ssm": "ssm", "sqs": "sqs", "scheduler": "scheduler"}


def _attr_scalar(value: Any) -> str | None:
    if isinstance(value, Mapping) and len(value) == 1:
        (kind, raw), *_ = value.items()
        if kind in ("S", "N"):
            return str(raw)
        if kind == "B":
            return raw.decode() if isinstance(raw, bytes) else str(raw)
    return None


def _table_arn(env: AwsEnv, table: str) -> str:
    if table.startswith("arn:"):
        return table
    return f"arn:{env.partition}:dynamodb:{env.region}:{env.account_id}:table/{table}"


def _table_name(table: str) -> str:
    return table.split(":table/", 1)[1].split("/", 1)[0] if table.startswith("arn:") else table


def _leading_keys(env: AwsEnv, table: str, item_or_key: Any) -> Any:
    hash_key = env.table_hash_keys.get(_table_name(table))
    if hash_key is None or not isinstance(item_or_key, Mapping):
        return UNKNOWN
    value = _attr_scalar(item_or_key.get(hash_key))
    return [value] if value is not None else UNKNOWN


def _query_leading_keys(env: AwsEnv, params: Mapping[str, Any]) -> Any:
    """The partition key value of a table Query's ``KeyConditionExpression`` (``pk = :v``)."""
    table = str(params.get("TableName", ""))
    hash_key = env.table_hash_keys.get(_table_name(table))
    expression = params.get("KeyConditionExpression")
    if params.get("IndexName") or hash_key is None or not isinstance(expression, str):
        return UNKNOWN
    names = params.get("ExpressionAttributeNames") or {}
    values = params.get("ExpressionAttributeValues") or {}
    for left, right in re.findall(r"([#\w.]+)\s*=\s*(:[\w]+)", expression):
        if names.get(left, left) == hash_key:
            value = _attr_scalar(values.get(right))
            return [value] if value is not None else UNKNOWN
    return UNKNOWN


def _dynamodb(op: str, params: Mapping[str, Any], env: AwsEnv) -> list[Requirement]:
    base: dict[str, Any] = {"aws:requestedregion": env.region}  # values: strings or lists of keys
    if op in ("BatchGetItem", "BatchWriteItem"):
        out = []
        for table, body in (params.get("RequestItems") or {}).items():
            ctx = dict(base)
            if op == "BatchWriteItem":
                keys: list[str] = []
                for request in body or []:
                    key = (request.get("PutRequest") or {}).get("Item") or (
                        request.get("DeleteRequest") or {}
                    ).get("Key")
                    found = _leading_keys(env, table, key)
                    if found is UNKNOWN:
                        keys = []
                        ctx["dynamodb:leadingkeys"] = UNKNOWN
                        break
                    keys.extend(found)
                else:
                    ctx["dynamodb:leadingkeys"] = sorted(set(keys))
            else:
                keys = []
                for key in (body or {}).get("Keys") or []:
                    found = _leading_keys(env, table, key)
                    if found is UNKNOWN:
                        ctx["dynamodb:leadingkeys"] = UNKNOWN
                        break
                    keys.extend(found)
                else:
                    ctx["dynamodb:leadingkeys"] = sorted(set(keys))
            out.append(Requirement(f"dynamodb:{op}", _table_arn(env, table), ctx))
        return out
    if op in ("TransactWriteItems", "TransactGetItems"):
        kinds = {
            "Put": "PutItem",
            "Update": "UpdateItem",
            "Delete": "DeleteItem",
            "ConditionCheck": "ConditionCheckItem",
            "Get": "GetItem",
        }
        out = []
        for entry in params.get("TransactItems") or []:
            for kind, body in entry.items():
                table = str(body.get("TableName", ""))
                ctx = {
                    **base,
                    "dynamodb:enclosingoperation": op,
                    "dynamodb:leadingkeys": _leading_keys(env, table, body.get("Item") or body.get("Key")),
                }
                out.append(Requirement(f"dynamodb:{kinds.get(kind, kind)}", _table_arn(env, table), ctx))
        return out
    table = params.get("TableName")
    if not table:
        return [Requirement(f"dynamodb:{op}", "*", base)]
    resource = _table_arn(env, str(table))
    ctx = dict(base)
    if op in ("Query", "Scan") and params.get("IndexName"):
        resource += f"/index/{params['IndexName']}"
    if op in ("GetItem", "DeleteItem", "UpdateItem"):
        ctx["dynamodb:leadingkeys"] = _leading_keys(env, str(table), params.get("Key"))
    elif op == "PutItem":
        ctx["dynamodb:leadingkeys"] = _leading_keys(env, str(table), params.get("Item"))
    elif op == "Query":
        ctx["dynamodb:leadingkeys"] = _query_leading_keys(env, params)
    return [Requirement(f"dynamodb:{op}", resource, ctx)]


def ssm_parameter_arn(env: AwsEnv, name: str) -> str:
    if name.startswith("arn:"):
        return name
    return f"arn:{env.partition}:ssm:{env.region}:{env.account_id}:parameter/{name.lstrip('/')}"


def _ssm_name(name: str) -> str:
    """A parameter name without its ``:version`` / ``:label`` selector (ARNs kept whole)."""
    return name if name.startswith("arn:") else name.split(":", 1)[0]


def _ssm(op: str, params: Mapping[str, Any], env: AwsEnv) -> list[Requirement]:
    base = {"aws:requestedregion": env.region}
    if op in ("GetParameters", "DeleteParameters"):
        return [
            Requirement(f"ssm:{op}", ssm_parameter_arn(env, _ssm_name(str(n))), base)
            for n in params.get("Names") or []
        ]
    if op == "GetParametersByPath":
        return [Requirement(f"ssm:{op}", ssm_parameter_arn(env, str(params.get("Path", "/"))), base)]
    name = params.get("Name")
    if isinstance(name, str):
        return [Requirement(f"ssm:{op}", ssm_parameter_arn(env, _ssm_name(name)), base)]
    return [Requirement(f"ssm:{op}", "*", base)]


_SQS_BATCH = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}


def _sqs(op: str, params: Mapping[str, Any], env: AwsEnv) -> list[Requirement]:
    base = {"aws:requestedregion": env.region}
    action = f"sqs:{_SQS_BATCH.get(op, op)}"
    url = params.get("QueueUrl")
    if isinstance(url, str) and url:
        parts = url.rstrip("/").split("/")
        account = parts[-2] if len(parts) >= 2 and parts[-2].isdigit() else env.account_id
        return [Requirement(action, f"arn:{env.partition}:sqs:{env.region}:{account}:{parts[-1]}", base)]
    name = params.get("QueueName")
    if isinstance(name, str) and name:
        account = str(params.get("QueueOwnerAWSAccountId") or env.account_id)
        return [Requirement(action, f"arn:{env.partition}:sqs:{env.region}:{account}:{name}", base)]
    return [Requirement(action, "*", base)]


def _scheduler(op: str, params: Mapping[str, Any], env: AwsEnv) -> list[Requirement]:
    base = {"aws:requestedregion": env.region}
    prefix = f"arn:{env.partition}:scheduler:{env.region}:{env.account_id}"
    if op in ("CreateSchedule", "UpdateSchedule", "DeleteSchedule", "GetSchedule"):
        group = params.get("GroupName") or "default"
        out = [Requirement(f"scheduler:{op}", f"{prefix}:schedule/{group}/{params.get('Name', '')}", base)]
        role = (params.get("Target") or {}).get("RoleArn")
        if op in ("CreateSchedule", "UpdateSchedule") and role:
            # The caller must be allowed to pass the target's execution role to Scheduler.
            out.append(
                Requirement(
                    "iam:PassRole", str(role), {**base, "iam:passedtoservice": "scheduler.amazonaws.com"}
                )
            )
        return out
    if op in ("CreateScheduleGroup", "DeleteScheduleGroup", "GetScheduleGroup"):
        return [Requirement(f"scheduler:{op}", f"{prefix}:schedule-group/{params.get('Name', '')}", base)]
    return [Requirement(f"scheduler:{op}", "*", base)]


_MAPPERS = {"dynamodb": _dynamodb, "ssm": _ssm, "sqs": _sqs, "scheduler": _scheduler}


def requirements(service: str, operation: str, params: Mapping[str, Any], env: AwsEnv) -> list[Requirement]:
    """The (action, resource) pairs AWS authorizes ``service``'s ``operation`` with ``params`` against.

    Services without a mapping here are authorized as ``<prefix>:<Operation>`` on ``*`` (what AWS does
    for actions without resource-level permissions): a grant scoped to a resource will not match it.
    """
    mapper = _MAPPERS.get(service)
    if mapper is not None:
        return mapper(operation, params, env)
    return [
        Requirement(
            f"{_SERVICE_PREFIX.get(service, service)}:{operation}", "*", {"aws:requestedregion": env.region}
        )
    ]


# --------------------------------------------------------------------------------------------------
# Principals: each function's role, as SAM translates template.yaml


@dataclass(frozen=True)
class Principal:
    function: str  # logical id
    function_name: str
    role_name: str
    account_id: str
    policies: tuple[Mapping[str, Any], ...]
    table_hash_keys: Mapping[str, str] = field(default_factory=dict)
    partition: str = "aws"

    @property
    def arn(self) -> str:
        """What AWS names the caller in an AccessDenied message (the role session is the function)."""
        return (
            f"arn:{self.partition}:sts::{self.account_id}:assumed-role/{self.role_name}/{self.function_name}"
        )

    def decide(self, requirement: Requirement) -> str:
        context = {"aws:principalaccount": self.account_id, **requirement.context}
        return evaluate(self.policies, requirement.action, requirement.resource, context)


class FunctionPolicies:
    """Each function's effective identity policies, read from SAM's translation of the template."""

    def __init__(self, template: Template) -> None:
        self.template = template
        translated = template.translated.get("Resources") or {}
        managed: dict[str, Mapping[str, Any]] = {}  # resolved ARN/Ref value -> document
        by_role: dict[str, list[Mapping[str, Any]]] = {}
        for lid, res in translated.items():
            if res.get("Type") not in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
                continue
            props = template.resolve(res.get("Properties") or {}) or {}
            document = props.get("PolicyDocument") or {}
            if res["Type"] == "AWS::IAM::ManagedPolicy":
                managed[lid] = document
                managed[str(template.ref(lid))] = document
            for role in (res.get("Properties") or {}).get("Roles") or []:
                target = _ref_target(role)
                if target:
                    by_role.setdefault(target, []).append(document)
        self.table_hash_keys = {
            str(template.ref(lid)): next(
                (k["AttributeName"] for k in props.get("KeySchema") or [] if k.get("KeyType") == "HASH"), ""
            )
            for lid, props in template.resources_of_type("AWS::DynamoDB::Table").items()
        }
        self.unknown_managed: dict[str, list[str]] = {}
        self._principals: dict[str, Principal] = {}
        for lid, fn in template.functions.items():
            res = translated.get(lid) or {}
            role_lid = _ref_target((res.get("Properties") or {}).get("Role"))
            documents: list[Mapping[str, Any]] = []
            role_name = f"{template.stack_name}-{lid}Role"
            if role_lid and (translated.get(role_lid) or {}).get("Type") == "AWS::IAM::Role":
                raw_role = translated[role_lid].get("Properties") or {}
                role = template.resolve(raw_role) or {}
                role_name = str(role.get("RoleName") or f"{template.stack_name}-{role_lid}")
                for inline in role.get("Policies") or []:
                    documents.append(inline.get("PolicyDocument") or {})
                for raw_arn in raw_role.get("ManagedPolicyArns") or []:
                    target = _ref_target(raw_arn)
                    resolved = str(template.resolve(raw_arn))
                    document = (
                        managed.get(target or "")
                        or managed.get(resolved)
                        or AWS_MANAGED_POLICIES.get(resolved)
                    )
                    if document is None:
                        self.unknown_managed.setdefault(lid, []).append(resolved)
                        continue
                    documents.append(document)
                documents.extend(by_role.get(role_lid, []))
            self._principals[lid] = Principal(
                function=lid,
                function_name=fn.function_name,
                role_name=role_name,
                account_id=template.account_id,
                policies=tuple(documents),
                table_hash_keys=self.table_hash_keys,
                partition=template.partition,
            )

    def principal(self, logical_id: str) -> Principal:
        return self._principals[logical_id]

    def __iter__(self) -> Iterator[Principal]:
        return iter(self._principals.values())


# --------------------------------------------------------------------------------------------------
# Enforcement on botocore clients

_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "calbot_iam_principal", default=None
)
_install_lock = threading.Lock()
_installed = False


def current() -> Principal | None:
    return _current.get()


@contextmanager
def acting_as(principal: Principal | None) -> Iterator[None]:
    """AWS calls made inside (in this thread, or tasks it submits to a thread pool) are ``principal``'s."""
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)


# The error each service answers, as botocore parses it: (code, HTTP status, extra Error fields).
_DENIAL_SHAPES: dict[str, tuple[str, int, dict[str, str]]] = {
    "dynamodb": ("AccessDeniedException", 400, {}),
    "ssm": ("AccessDeniedException", 400, {}),
    "sqs": ("AccessDenied", 403, {"Type": "Sender"}),
    "scheduler": ("AccessDeniedException", 403, {}),
}


def denial_message(principal: Principal, requirement: Requirement, decision: str, service: str) -> str:
    action = (
        requirement.action.lower() if service == "sqs" else requirement.action
    )  # SQS says sqs:sendmessage
    reason = (
        "with an explicit deny in an identity-based policy"
        if decision == EXPLICIT_DENY
        else f"because no identity-based policy allows the {action} action"
    )
    return (
        f"User: {principal.arn} is not authorized to perform: {action} "
        f"on resource: {requirement.resource} {reason}"
    )


def denial_response(service: str, message: str) -> dict[str, Any]:
    code, status, extra = _DENIAL_SHAPES.get(service, ("AccessDeniedException", 400, {}))
    request_id = str(uuid.uuid4())
    return {
        "Error": {"Code": code, "Message": message, **extra},
        "ResponseMetadata": {
            "RequestId": request_id,
            "HTTPStatusCode": status,
            "HTTPHeaders": {"x-amzn-requestid": request_id},
            "RetryAttempts": 0,
        },
        "message": message,
    }


def check(client: Any, operation_name: str, api_params: Mapping[str, Any]) -> None:
    """Raise what the service would if the current principal may not make this call."""
    principal = _current.get()
    if principal is None:
        return
    service = client.meta.service_model.service_name
    env = AwsEnv(
        region=client.meta.region_name or "us-east-1",
        account_id=principal.account_id,
        partition=principal.partition,
        table_hash_keys=principal.table_hash_keys,
    )
    for requirement in requirements(service, operation_name, api_params, env):
        decision = principal.decide(requirement)
        _audit(principal, service, operation_name, requirement, decision)
        if decision != ALLOW:
            message = denial_message(principal, requirement, decision, service)
            print(
                f"[iam] {principal.function} denied {operation_name}: {message}", file=sys.stderr, flush=True
            )
            response = denial_response(service, message)
            error_class = client.exceptions.from_code(response["Error"]["Code"])
            raise error_class(response, operation_name)


_audit_lock = threading.Lock()


def _audit(
    principal: Principal, service: str, operation: str, requirement: Requirement, decision: str
) -> None:
    """With ``CALBOT_IAM_AUDIT=<file>``, append each checked call as a JSON line (what a role really uses)."""
    path = os.environ.get("CALBOT_IAM_AUDIT")
    if not path:
        return
    line = json.dumps(
        {
            "function": principal.function,
            "operation": f"{service}:{operation}",
            "action": requirement.action,
            "resource": requirement.resource,
            "context": {k: (v if v is not UNKNOWN else "?") for k, v in requirement.context.items()},
            "decision": decision,
        },
        sort_keys=True,
    )
    with _audit_lock, open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def install() -> None:
    """Wrap every botocore client's calls with ``check`` (once per process; idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from botocore.client import BaseClient

        original_call = BaseClient._make_api_call

        def _make_api_call(self: Any, operation_name: str, api_params: Any) -> Any:
            check(self, operation_name, api_params)
            return original_call(self, operation_name, api_params)

        original_submit = ThreadPoolExecutor.submit

        def submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            if _current.get() is None:
                return original_submit(self, fn, *args, **kwargs)
            ctx = contextvars.copy_context()
            return original_submit(self, ctx.run, fn, *args, **kwargs)

        BaseClient._make_api_call = _make_api_call
        ThreadPoolExecutor.submit = submit  # type: ignore[method-assign]
        _installed = True


# --------------------------------------------------------------------------------------------------
# Reporting


def allowed_action_patterns(principal: Principal) -> list[str]:
    """Every action pattern an Allow statement of ``principal`` names, sorted (logs and X-Ray included)."""
    names = {
        str(a)
        for policy in principal.policies
        for s in _statements(policy)
        if s.get("Effect") == "Allow"
        for a in _as_list(s.get("Action"))
    }
    return sorted(names)


__all__ = [
    "ALLOW",
    "EXPLICIT_DENY",
    "IMPLICIT_DENY",
    "AwsEnv",
    "FunctionPolicies",
    "Principal",
    "Requirement",
    "acting_as",
    "allowed",
    "allowed_action_patterns",
    "check",
    "current",
    "evaluate",
    "install",
    "requirements",
]
