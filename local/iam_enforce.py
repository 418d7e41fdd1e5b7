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
  whose documents come from moto's copy of AWS's (``local.iam.managed_policy``).
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

The evaluator is ``local.iam``'s (the one the gateway and clock use for invoke permissions), run
over the condition keys this module can compute for a request (``dynamodb:LeadingKeys``,
``dynamodb:EnclosingOperation``, ``iam:PassedToService``, ``aws:RequestedRegion``,
``aws:PrincipalAccount``) and in its conservative mode: a condition it cannot evaluate (another key, a
value it could not work out, an unknown operator) makes an Allow statement carrying it grant nothing,
and a Deny statement carrying it deny. Its decision is reported as ``ExplicitDeny`` or
``ImplicitDeny`` for the denial messages.
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

from local import iam
from local.iam import UNKNOWN
from local.template import Template, _ref_target

# --------------------------------------------------------------------------------------------------
# Policy evaluation (local.iam's evaluator, with the keys this module computes and conservatively)

ALLOW = "Allow"
IMPLICIT_DENY = "ImplicitDeny"
EXPLICIT_DENY = "ExplicitDeny"

# Keys this module computes. A key listed here but missing from a request's context is *absent*
# (IAM's semantics for absent keys apply); any other key is unknown and makes its condition
# unevaluable, as does a value of ``UNKNOWN``.
KNOWN_KEYS = frozenset(
    {
        "dynamodb:leadingkeys",
        "dynamodb:enclosingoperation",
        "iam:passedtoservice",
        "aws:requestedregion",
        "aws:principalaccount",
    }
)


def evaluate(
    policies: Iterable[Mapping[str, Any]],
    action: str,
    resource: str,
    context: Mapping[str, Any] | None = None,
) -> str:
    """``Allow``, ``ImplicitDeny`` or ``ExplicitDeny`` for one action on one resource ARN."""
    verdict = iam.evaluate(
        policies, action, resource, context=context, known_keys=KNOWN_KEYS, conservative=True
    )
    return {"Allow": ALLOW, "Deny": EXPLICIT_DENY}.get(verdict.decision, IMPLICIT_DENY)


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


def _kms(op: str, params: Mapping[str, Any], env: AwsEnv) -> list[Requirement]:
    """Key operations are authorized on the key's ARN (an alias is not resolved locally)."""
    base: dict[str, Any] = {"aws:requestedregion": env.region}
    key = str(params.get("KeyId") or "")
    if not key:
        return [Requirement(f"kms:{op}", "*", base)]
    if not key.startswith("arn:"):
        key = f"arn:{env.partition}:kms:{env.region}:{env.account_id}:key/{key}"
    context = params.get("EncryptionContext") or {}
    for name, value in context.items():
        base[f"kms:encryptioncontext:{name.lower()}"] = value
    return [Requirement(f"kms:{op}", key, base)]


_MAPPERS = {"dynamodb": _dynamodb, "ssm": _ssm, "sqs": _sqs, "scheduler": _scheduler, "kms": _kms}


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
                        managed.get(target or "") or managed.get(resolved) or iam.managed_policy(resolved)
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
        for s in iam.statements(policy)
        if s.get("Effect") == "Allow"
        for a in iam._as_list(s.get("Action"))
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
    "allowed_action_patterns",
    "check",
    "current",
    "evaluate",
    "install",
    "requirements",
]
