"""Read template.yaml the way the local stack needs it: functions, routes, authorizers, resources.

The local stack (gateway, clock, bootstrap, invoke, sample events) derives everything from
template.yaml so that a route, an environment variable or a table added there shows up locally with
no second copy to keep in sync. This module knows CloudFormation's short-form tags, evaluates the
intrinsic functions the template uses against parameter values (defaults overridden like
``sam deploy --parameter-overrides``) and pseudo-parameters, applies SAM ``Globals`` and gives each
resource a deterministic *local* physical id.

How ``!Ref`` resolves locally (real CloudFormation appends random suffixes; locally names are
deterministic so every process of the stack computes the same ones):

* ``AWS::DynamoDB::Table`` / ``AWS::Serverless::SimpleTable`` -> ``TableName`` or ``{stack}-{LogicalId}``
* ``AWS::SQS::Queue`` -> the queue URL, as in CloudFormation. The queue name is ``QueueName`` or
  ``{stack}-{LogicalId}`` (+ ``.fifo`` for FIFO queues). The URL is ``{endpoint_url}/{account}/{name}``
  when ``load_template(endpoint_url=...)`` is given (exactly the URL moto hands out for that endpoint),
  else the AWS form ``https://sqs.{region}.amazonaws.com/{account}/{name}``; moto accepts either since
  it only reads the queue name from the URL's last segment.
* ``AWS::Scheduler::ScheduleGroup`` / ``AWS::Scheduler::Schedule`` -> ``Name`` or ``{stack}-{LogicalId}``
* ``AWS::Serverless::Function`` / ``AWS::Lambda::Function`` -> ``FunctionName`` or ``{stack}-{LogicalId}``
* ``AWS::Serverless::HttpApi`` / ``AWS::ApiGatewayV2::Api`` -> a 10-character id hashed from stack + id
* ``AWS::Serverless::LayerVersion`` -> a layer version ARN; ``AWS::SNS::Topic`` -> its ARN
* anything else -> its name property if it has a well-known one, else ``{stack}-{LogicalId}``

``!GetAtt X.Arn`` builds the ARN a resource of that type would have (``Queue.QueueName``,
``Queue.QueueUrl``, ``Table.StreamArn``, ``HttpApi.ApiEndpoint`` are supported too).
Nothing here imports the application (``calbot``): the stack must work whatever state the app is in.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
DEFAULT_STACK_NAME = "calbot-local"
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"

# SAM's implicit HttpApi, used by HttpApi events that name no ApiId.
IMPLICIT_HTTP_API = "ServerlessHttpApi"

# Lambda's own defaults when neither the function nor Globals set them.
LAMBDA_DEFAULT_TIMEOUT = 3
LAMBDA_DEFAULT_MEMORY = 128

_SHORT_TAGS = {
    "Ref": "Ref",
    "Condition": "Condition",
    "GetAtt": "Fn::GetAtt",
}
_FN_TAGS = {
    "Sub",
    "If",
    "Join",
    "Select",
    "Split",
    "Equals",
    "Not",
    "And",
    "Or",
    "FindInMap",
    "Base64",
    "ImportValue",
    "GetAZs",
    "Cidr",
    "Transform",
    "ToJsonString",
    "Length",
}


class TemplateError(Exception):
    """The template (or an override) cannot be read or resolved locally."""


# --------------------------------------------------------------------------------------------------
# YAML loading


class CfnLoader(yaml.SafeLoader):
    """SafeLoader turning CloudFormation short-form tags into long form (``!Ref X`` -> ``{"Ref": X}``)."""


def _construct_cfn_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if tag_suffix == "GetAtt" and isinstance(value, str):
        # The short form "Res.Attr" splits at the first dot only: attributes may contain dots.
        resource, _, attribute = value.partition(".")
        value = [resource, attribute]
    if tag_suffix in _SHORT_TAGS:
        return {_SHORT_TAGS[tag_suffix]: value}
    if tag_suffix in _FN_TAGS:
        return {f"Fn::{tag_suffix}": value}
    raise yaml.constructor.ConstructorError(
        None, None, f"unknown CloudFormation tag !{tag_suffix}", node.start_mark
    )


CfnLoader.add_multi_constructor("!", _construct_cfn_tag)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML file into plain long-form data."""
    with open(path, encoding="utf-8") as fh:
        data = yaml.load(fh, Loader=CfnLoader)  # CfnLoader is a SafeLoader subclass
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: not a template (top level is {type(data).__name__})")
    return data


# --------------------------------------------------------------------------------------------------
# Public data model


@dataclass(frozen=True)
class EventSource:
    """One entry of a function's ``Events``: ``properties`` resolved, ``raw_properties`` as written."""

    name: str
    type: str
    properties: dict[str, Any]
    raw_properties: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    function_name: str  # local physical name (what Lambda's context.function_name would say)
    arn: str
    code_uri: Path
    handler: str  # as written, e.g. "app.handler"
    module_path: Path  # the file the handler lives in
    handler_name: str  # the callable's name inside that module
    environment: dict[str, str]
    timeout: int
    memory_size: int
    runtime: str | None
    layer_dirs: list[Path]  # local source dirs of the template's layers this function uses
    events: list[EventSource]
    # ReservedConcurrentExecutions: at most this many invocations at once (None: the account's pool)
    reserved_concurrency: int | None = None


@dataclass(frozen=True)
class Route:
    method: str  # upper case; "ANY" matches every method
    path: str  # as declared, e.g. /api/v1/calendar/connections/{provider}/{account_id}; "$default"
    function: str  # logical id of the integration function
    authorizer: str | None  # authorizer name, None when the route is open
    api: str  # logical id of the HttpApi
    event_name: str
    payload_format_version: str = "2.0"

    @property
    def route_key(self) -> str:
        return "$default" if self.path == "$default" else f"{self.method} {self.path}"


@dataclass(frozen=True)
class AuthorizerSpec:
    name: str
    function: str | None  # logical id of the authorizer Lambda (None for JWT authorizers)
    payload_format_version: str
    simple_responses: bool
    identity_headers: list[str]
    ttl: int  # seconds; 0 disables caching (also the local default when the template is silent)
    api: str
    identity_query_strings: list[str] = field(default_factory=list)
    kind: str = "REQUEST"  # "REQUEST" (Lambda) or "JWT"
    invoke_role: str | None = None  # FunctionInvokeRole (resolved ARN): API Gateway invokes as this role


# --------------------------------------------------------------------------------------------------
# Helpers


_NO_VALUE = object()  # AWS::NoValue: removes the enclosing key / list item


def cfn_str(value: Any) -> str:
    """Stringify a scalar the way CloudFormation does for string-typed properties (true, not True)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise TemplateError(f"expected a scalar, got {type(value).__name__}: {value!r}")


def _optional_int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _merge_globals(global_props: Mapping[str, Any], props: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals merge: maps merge recursively, lists concatenate (globals first), scalars override."""
    merged: dict[str, Any] = copy.deepcopy(dict(global_props))
    for key, value in props.items():
        base = merged.get(key)
        if isinstance(base, dict) and isinstance(value, dict) and not _is_intrinsic(value):
            merged[key] = _merge_globals(base, value)
        elif isinstance(base, list) and isinstance(value, list):
            merged[key] = base + copy.deepcopy(value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _is_intrinsic(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    (key,) = value
    return key == "Ref" or key.startswith("Fn::")


def _ref_target(value: Any) -> str | None:
    """The logical id a raw ``{"Ref": X}`` / ``!GetAtt X.Arn`` / ``!Sub ${X.Arn}`` points at, if any."""
    if isinstance(value, dict) and len(value) == 1:
        (key, arg), *_ = value.items()
        if key == "Ref" and isinstance(arg, str):
            return arg
        if key == "Fn::GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else arg
            return str(parts[0])
        if key == "Fn::Sub" and isinstance(arg, str):
            match = re.fullmatch(r"\$\{([A-Za-z0-9]+)(\.[A-Za-z0-9.]+)?\}", arg)
            if match:
                return match.group(1)
    return None


def _api_id(stack_name: str, logical_id: str) -> str:
    # API Gateway ids are 10 lower-case alphanumerics; hash so every process agrees on it.
    return hashlib.sha256(f"{stack_name}/{logical_id}".encode()).hexdigest()[:10]


_SUB_VAR = re.compile(r"\$\{([^}]*)\}")

# Name properties that are a resource's physical id (and Ref value) when set.
_NAME_PROPERTIES = {
    "AWS::DynamoDB::Table": "TableName",
    "AWS::Serverless::SimpleTable": "TableName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::Scheduler::ScheduleGroup": "Name",
    "AWS::Scheduler::Schedule": "Name",
    "AWS::Serverless::Function": "FunctionName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::IAM::Role": "RoleName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::SSM::Parameter": "Name",
    "AWS::S3::Bucket": "BucketName",
    "AWS::Events::Rule": "Name",
    "AWS::Events::EventBus": "Name",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::Serverless::LayerVersion": "LayerName",
    "AWS::Lambda::LayerVersion": "LayerName",
    "AWS::Serverless::StateMachine": "Name",
    "AWS::StepFunctions::StateMachine": "StateMachineName",
}


# --------------------------------------------------------------------------------------------------
# Template


class Template:
    """A loaded template with intrinsics resolved against one set of parameter values."""

    def __init__(
        self,
        data: dict[str, Any],
        *,
        path: Path,
        parameter_overrides: Mapping[str, str] | None = None,
        stack_name: str = DEFAULT_STACK_NAME,
        region: str = DEFAULT_REGION,
        account_id: str = DEFAULT_ACCOUNT_ID,
        endpoint_url: str | None = None,
    ) -> None:
        self.path = path
        self.root = path.parent
        self.data = data
        self.stack_name = stack_name
        self.region = region
        self.account_id = account_id
        self.partition = PARTITION
        self.url_suffix = URL_SUFFIX
        self.endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        self.parameters: dict[str, Any] = self._resolve_parameters(dict(parameter_overrides or {}))
        self._globals: dict[str, Any] = data.get("Globals") or {}
        self._raw_resources: dict[str, dict[str, Any]] = {}
        self._condition_cache: dict[str, bool] = {}
        self._condition_stack: set[str] = set()
        self._name_stack: set[str] = set()
        for logical_id, resource in (data.get("Resources") or {}).items():
            if not isinstance(resource, dict) or "Type" not in resource:
                raise TemplateError(f"resource {logical_id} has no Type")
            self._raw_resources[logical_id] = resource
        # Resources whose Condition is false do not exist in the stack.
        self.resources: dict[str, dict[str, Any]] = {
            lid: res
            for lid, res in self._raw_resources.items()
            if "Condition" not in res or self.condition(res["Condition"])
        }
        self.functions: dict[str, FunctionSpec] = {
            lid: self._function_spec(lid)
            for lid, res in self.resources.items()
            if res["Type"] in ("AWS::Serverless::Function", "AWS::Lambda::Function")
        }
        self.authorizers: dict[str, AuthorizerSpec] = self._read_authorizers()
        self.routes: list[Route] = self._read_routes()
        # What SAM's transform generates (roles, permissions, schedules...), filled by `translated`.
        self._generated: dict[str, dict[str, Any]] = {}
        self._translated: dict[str, Any] | None = None

    # -- SAM's transform -----------------------------------------------------------------------------

    @property
    def translated(self) -> dict[str, Any]:
        """The template after SAM's transform (``local.translate``); its resources resolve here too."""
        if self._translated is None:
            from local.translate import translate

            out = translate(self)
            self._generated = {
                lid: res
                for lid, res in (out.get("Resources") or {}).items()
                if lid not in self._raw_resources or res.get("Type") != self._raw_resources[lid]["Type"]
            }
            self._translated = out
        return self._translated

    def translated_resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        """Resolved ``Properties`` of each translated resource of that type (whose ``Condition``, if
        any, holds: CloudFormation creates no other), by logical id."""
        return {
            lid: self.resolve(res.get("Properties") or {}) or {}
            for lid, res in self.translated_active().items()
            if res.get("Type") == resource_type
        }

    def translated_active(self) -> dict[str, dict[str, Any]]:
        """The translated resources CloudFormation would create (their ``Condition`` holds), raw."""
        return {
            lid: res
            for lid, res in (self.translated.get("Resources") or {}).items()
            if "Condition" not in res or self.condition(str(res["Condition"]))
        }

    # -- parameters and conditions -----------------------------------------------------------------

    def _resolve_parameters(self, overrides: dict[str, str]) -> dict[str, Any]:
        declared: dict[str, Any] = self.data.get("Parameters") or {}
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            # CloudFormation rejects a deploy that passes parameters the template does not declare.
            raise TemplateError(f"parameter overrides not declared in the template: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            spec = spec or {}
            if name in overrides:
                raw = overrides[name]
            elif "Default" in spec:
                raw = spec["Default"]
            else:
                raise TemplateError(f"parameter {name} has no Default and no override")
            values[name] = self._check_parameter(name, spec, raw)
        return values

    @staticmethod
    def _check_parameter(name: str, spec: Mapping[str, Any], raw: Any) -> Any:
        ptype = str(spec.get("Type", "String"))
        if ptype in ("CommaDelimitedList", "List<Number>") or ptype.startswith("List<"):
            items = raw if isinstance(raw, list) else [s.strip() for s in cfn_str(raw).split(",")]
            return [cfn_str(i) for i in items]
        value = cfn_str(raw)
        allowed = spec.get("AllowedValues")
        if allowed is not None and value not in [cfn_str(a) for a in allowed]:
            raise TemplateError(f"parameter {name}={value!r} is not one of {allowed}")
        pattern = spec.get("AllowedPattern")
        if pattern is not None and not re.fullmatch(str(pattern), value):
            raise TemplateError(f"parameter {name}={value!r} does not match {pattern!r}")
        if ptype == "Number":
            try:
                number = float(value)
            except ValueError as exc:
                raise TemplateError(f"parameter {name}={value!r} is not a number") from exc
            if "MinValue" in spec and number < float(spec["MinValue"]):
                raise TemplateError(f"parameter {name}={value} is below MinValue {spec['MinValue']}")
            if "MaxValue" in spec and number > float(spec["MaxValue"]):
                raise TemplateError(f"parameter {name}={value} is above MaxValue {spec['MaxValue']}")
        return value

    def condition(self, name: str) -> bool:
        """Evaluate a named entry of the template's ``Conditions``."""
        if name in self._condition_cache:
            return self._condition_cache[name]
        # The template's own conditions, and any SAM's transform added.
        translated = getattr(self, "_translated", None) or {}
        conditions = {**(translated.get("Conditions") or {}), **(self.data.get("Conditions") or {})}
        if name not in conditions:
            raise TemplateError(f"unknown condition {name}")
        if name in self._condition_stack:
            raise TemplateError(f"condition {name} refers to itself")
        self._condition_stack.add(name)
        try:
            result = self._eval_condition(conditions[name])
        finally:
            self._condition_stack.discard(name)
        self._condition_cache[name] = result
        return result

    def _eval_condition(self, expr: Any) -> bool:
        if isinstance(expr, dict) and len(expr) == 1 and "Condition" in expr:
            return self.condition(str(expr["Condition"]))
        value = self.resolve(expr)
        if not isinstance(value, bool):
            raise TemplateError(f"condition expression did not evaluate to a boolean: {expr!r}")
        return value

    # -- intrinsic resolution ----------------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        """Resolve every intrinsic function inside ``value`` (which is not modified)."""
        result = self._resolve(value)
        return None if result is _NO_VALUE else result

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, dict):
            if _is_intrinsic(value):
                (key, arg), *_ = value.items()
                return self._intrinsic(key, arg)
            out: dict[str, Any] = {}
            for key, item in value.items():
                resolved = self._resolve(item)
                if resolved is not _NO_VALUE:
                    out[key] = resolved
            return out
        if isinstance(value, list):
            return [r for r in (self._resolve(v) for v in value) if r is not _NO_VALUE]
        return value

    def _intrinsic(self, key: str, arg: Any) -> Any:
        if key == "Ref":
            return self.ref(str(arg))
        if key == "Fn::GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else [self._resolve(a) for a in arg]
            if len(parts) != 2:
                raise TemplateError(f"Fn::GetAtt needs [resource, attribute], got {arg!r}")
            return self.get_att(str(parts[0]), str(parts[1]))
        if key == "Fn::Sub":
            return self._sub(arg)
        if key == "Fn::Join":
            delimiter, items = arg
            resolved = self._resolve(items)
            return cfn_str(delimiter).join(cfn_str(i) for i in resolved)
        if key == "Fn::Select":
            index, items = arg
            resolved = self._resolve(items)
            return resolved[int(self._resolve(index))]
        if key == "Fn::Split":
            delimiter, text = arg
            return cfn_str(self._resolve(text)).split(cfn_str(delimiter))
        if key == "Fn::If":
            cond, when_true, when_false = arg
            return self._resolve(when_true if self.condition(str(cond)) else when_false)
        if key == "Fn::Equals":
            left, right = (self._resolve(a) for a in arg)
            return cfn_str(left) == cfn_str(right)
        if key == "Fn::Not":
            (expr,) = arg
            return not self._eval_condition(expr)
        if key == "Fn::And":
            return all(self._eval_condition(e) for e in arg)
        if key == "Fn::Or":
            return any(self._eval_condition(e) for e in arg)
        if key == "Fn::FindInMap":
            map_name, top, second = (self._resolve(a) for a in arg[:3])
            try:
                return copy.deepcopy(self.data["Mappings"][map_name][top][second])
            except KeyError as exc:
                raise TemplateError(f"Fn::FindInMap: no {map_name}.{top}.{second}") from exc
        if key == "Fn::Base64":
            return base64.b64encode(cfn_str(self._resolve(arg)).encode()).decode()
        if key == "Fn::GetAZs":
            return [f"{self.region}{z}" for z in "abc"]
        if key == "Fn::ToJsonString":
            return json.dumps(self._resolve(arg), separators=(",", ":"))
        if key == "Fn::Length":
            return len(self._resolve(arg))
        if key == "Fn::ImportValue":
            # Exports of other stacks do not exist locally; fail loudly rather than invent a value.
            raise TemplateError(f"Fn::ImportValue {arg!r}: cross-stack imports cannot be resolved locally")
        raise TemplateError(f"{key} is not supported by the local resolver")

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], {k: self._resolve(v) for k, v in (arg[1] or {}).items()}
        else:
            text, variables = arg, {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} is an escaped literal ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                return cfn_str(variables[name])
            if "." in name and name not in self.parameters and not name.startswith("AWS::"):
                resource, attribute = name.split(".", 1)
                return cfn_str(self.get_att(resource, attribute))
            return cfn_str(self.ref(name))

        return _SUB_VAR.sub(replace, str(arg if isinstance(arg, str) else text))

    # -- physical ids ------------------------------------------------------------------------------

    def _pseudo(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::StackName": self.stack_name,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": self.url_suffix,
            "AWS::StackId": (
                f"arn:{self.partition}:cloudformation:{self.region}:{self.account_id}:stack/"
                f"{self.stack_name}/00000000-0000-0000-0000-000000000000"
            ),
            "AWS::NotificationARNs": [],
            "AWS::NoValue": _NO_VALUE,
        }
        if name not in pseudo:
            raise TemplateError(f"unknown pseudo parameter {name}")
        return pseudo[name]

    def _type_of(self, logical_id: str) -> str:
        if logical_id in self._raw_resources:
            return str(self._raw_resources[logical_id]["Type"])
        if logical_id in self._generated:
            return str(self._generated[logical_id]["Type"])
        # Resources SAM generates implicitly that templates commonly reference.
        if logical_id == IMPLICIT_HTTP_API:
            return "AWS::Serverless::HttpApi"
        if logical_id.endswith("Role") and self._is_function(logical_id[: -len("Role")]):
            return "AWS::IAM::Role"
        raise TemplateError(f"unknown parameter or resource {logical_id!r}")

    def _is_function(self, logical_id: str) -> bool:
        res = self._raw_resources.get(logical_id)
        return res is not None and res["Type"] in ("AWS::Serverless::Function", "AWS::Lambda::Function")

    def physical_name(self, logical_id: str) -> str:
        """The resource's local name: its name property when the template sets one, else ``{stack}-{id}``."""
        rtype = self._type_of(logical_id)
        prop = _NAME_PROPERTIES.get(rtype)
        name: str | None = None
        raw = self._raw_resources.get(logical_id) or self._generated.get(logical_id) or {}
        raw_props = raw.get("Properties") or {}
        if prop and prop in raw_props:
            if logical_id in self._name_stack:
                raise TemplateError(f"the name of {logical_id} depends on itself")
            self._name_stack.add(logical_id)
            try:
                name = cfn_str(self.resolve(raw_props[prop]))
            finally:
                self._name_stack.discard(logical_id)
        if name is None:
            name = f"{self.stack_name}-{logical_id}"
            if rtype == "AWS::S3::Bucket":
                name = name.lower()
            if rtype == "AWS::SQS::Queue" and _is_true(self.resolve(raw_props.get("FifoQueue"))):
                name += ".fifo"  # CloudFormation appends it to generated FIFO queue names too
        return name

    def ref(self, logical_id: str) -> Any:
        """``!Ref``: a parameter's value, a pseudo-parameter, or a resource's local physical id."""
        if logical_id.startswith("AWS::"):
            return self._pseudo(logical_id)
        if logical_id in self.parameters:
            return self.parameters[logical_id]
        rtype = self._type_of(logical_id)
        if rtype == "AWS::SQS::Queue":
            return self.queue_url(self.physical_name(logical_id))
        if rtype in ("AWS::Serverless::HttpApi", "AWS::ApiGatewayV2::Api", "AWS::Serverless::Api"):
            return _api_id(self.stack_name, logical_id)
        if rtype in ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion"):
            return f"{self._arn('lambda', 'layer:' + self.physical_name(logical_id))}:1"
        if rtype == "AWS::SNS::Topic":
            return self._arn("sns", self.physical_name(logical_id))
        if rtype == "AWS::IAM::ManagedPolicy":
            return self.arn(logical_id)  # CloudFormation's Ref of a managed policy is its ARN
        if rtype == "AWS::KMS::Key":  # a key id is a UUID (moto's ciphertexts hold exactly 36 characters)
            digest = hashlib.sha256(f"{self.stack_name}/{logical_id}".encode()).hexdigest()[:32]
            return str(uuid.UUID(hex=digest))
        return self.physical_name(logical_id)

    def queue_url(self, queue_name: str) -> str:
        if self.endpoint_url:
            return f"{self.endpoint_url}/{self.account_id}/{queue_name}"
        return f"https://sqs.{self.region}.{self.url_suffix}/{self.account_id}/{queue_name}"

    def _arn(self, service: str, resource: str, *, region: bool = True, account: bool = True) -> str:
        return (
            f"arn:{self.partition}:{service}:{self.region if region else ''}:"
            f"{self.account_id if account else ''}:{resource}"
        )

    def get_att(self, logical_id: str, attribute: str) -> Any:
        """``!GetAtt``: the ARN (or other attribute) the resource would have."""
        rtype = self._type_of(logical_id)
        name = self.physical_name(logical_id)
        if rtype in ("AWS::Serverless::HttpApi", "AWS::ApiGatewayV2::Api") and attribute == "ApiEndpoint":
            return f"https://{self.ref(logical_id)}.execute-api.{self.region}.{self.url_suffix}"
        if rtype == "AWS::SQS::Queue":
            if attribute == "QueueName":
                return name
            if attribute == "QueueUrl":
                return self.queue_url(name)
        if rtype in ("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable") and attribute == "StreamArn":
            return f"{self._arn('dynamodb', 'table/' + name)}/stream/1970-01-01T00:00:00.000"
        if rtype == "AWS::SNS::Topic" and attribute == "TopicName":
            return name
        if attribute != "Arn" and not (rtype == "AWS::SNS::Topic" and attribute == "TopicArn"):
            raise TemplateError(f"!GetAtt {logical_id}.{attribute} ({rtype}) is not supported locally")
        return self.arn(logical_id)

    def arn(self, logical_id: str) -> str:
        rtype = self._type_of(logical_id)
        name = self.physical_name(logical_id)
        if rtype in ("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable"):
            return self._arn("dynamodb", f"table/{name}")
        if rtype == "AWS::SQS::Queue":
            return self._arn("sqs", name)
        if rtype in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            return self._arn("lambda", f"function:{name}")
        if rtype == "AWS::Scheduler::ScheduleGroup":
            return self._arn("scheduler", f"schedule-group/{name}")
        if rtype == "AWS::Scheduler::Schedule":
            raw = self._raw_resources.get(logical_id) or self._generated[logical_id]
            props = raw.get("Properties") or {}
            group = cfn_str(self.resolve(props.get("GroupName", "default")))
            return self._arn("scheduler", f"schedule/{group}/{name}")
        if rtype == "AWS::IAM::Role":
            return self._arn("iam", f"role/{name}", region=False)
        if rtype == "AWS::IAM::ManagedPolicy":
            return self._arn("iam", f"policy/{name}", region=False)
        if rtype == "AWS::S3::Bucket":
            return self._arn("s3", name, region=False, account=False)
        if rtype == "AWS::Events::Rule":
            return self._arn("events", f"rule/{name}")
        if rtype == "AWS::Events::EventBus":
            return self._arn("events", f"event-bus/{name}")
        if rtype == "AWS::Logs::LogGroup":
            return self._arn("logs", f"log-group:{name}:*")
        if rtype == "AWS::KMS::Key":
            return self._arn("kms", f"key/{self.ref(logical_id)}")
        if rtype in ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine"):
            return self._arn("states", f"stateMachine:{name}")
        if rtype in ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion", "AWS::SNS::Topic"):
            return str(self.ref(logical_id))
        service = rtype.split("::")[1].lower() if rtype.count("::") == 2 else "unknown"
        return self._arn(service, name)

    def resource_for_arn(self, arn: str) -> str | None:
        """The logical id whose ``Arn`` is ``arn`` (e.g. an SQS event's Queue), if any."""
        for logical_id in self.resources:
            try:
                if self.arn(logical_id) == arn:
                    return logical_id
            except TemplateError:
                continue
        return None

    # -- resources ---------------------------------------------------------------------------------

    def resources_of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        """Resolved ``Properties`` of each (condition-enabled) resource of that type, by logical id."""
        return {
            lid: self.resolve(self._properties(lid)) or {}
            for lid, res in self.resources.items()
            if res["Type"] == resource_type
        }

    def _properties(self, logical_id: str) -> dict[str, Any]:
        """Raw properties with the matching SAM Globals section merged in."""
        res = self.resources[logical_id]
        props = res.get("Properties") or {}
        section = {
            "AWS::Serverless::Function": "Function",
            "AWS::Serverless::HttpApi": "HttpApi",
            "AWS::Serverless::Api": "Api",
            "AWS::Serverless::SimpleTable": "SimpleTable",
            "AWS::Serverless::LayerVersion": "LayerVersion",
            "AWS::Serverless::StateMachine": "StateMachine",
        }.get(res["Type"])
        if section and section in self._globals:
            return _merge_globals(self._globals[section] or {}, props)
        return props

    # -- functions ---------------------------------------------------------------------------------

    def _function_spec(self, logical_id: str) -> FunctionSpec:
        props = self._properties(logical_id)
        code_uri_raw = props.get("CodeUri") if "CodeUri" in props else props.get("Code")
        if not isinstance(code_uri_raw, str):
            raise TemplateError(
                f"{logical_id}: only a local CodeUri directory is supported, got {code_uri_raw!r}"
            )
        handler = cfn_str(self.resolve(props.get("Handler")))
        module, _, handler_name = handler.rpartition(".")
        if not module or not handler_name:
            raise TemplateError(f"{logical_id}: Handler {handler!r} is not <module>.<function>")
        code_uri = (self.root / code_uri_raw).resolve()
        variables = self.resolve(((props.get("Environment") or {}).get("Variables")) or {})
        environment = {str(k): cfn_str(v) for k, v in variables.items()}
        events = [
            EventSource(
                name=name,
                type=str(ev.get("Type")),
                properties=self.resolve(ev.get("Properties") or {}) or {},
                raw_properties=copy.deepcopy(ev.get("Properties") or {}),
            )
            for name, ev in (props.get("Events") or {}).items()
        ]
        layer_dirs: list[Path] = []
        for layer in props.get("Layers") or []:
            target = _ref_target(layer)
            res = self._raw_resources.get(target or "")
            if res and res["Type"] in ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion"):
                content = (res.get("Properties") or {}).get("ContentUri") or (
                    res.get("Properties") or {}
                ).get("Content")
                if isinstance(content, str):
                    layer_dir = (self.root / content).resolve()
                    # A prebuilt layer keeps its packages under python/ (Lambda's /opt/python);
                    # a SAM-built source layer (BuildMethod python3.x) is the package root itself.
                    layer_dirs.append(layer_dir / "python" if (layer_dir / "python").is_dir() else layer_dir)
        return FunctionSpec(
            logical_id=logical_id,
            function_name=self.physical_name(logical_id),
            arn=self.arn(logical_id),
            code_uri=code_uri,
            handler=handler,
            module_path=code_uri / (module.replace(".", "/") + ".py"),
            handler_name=handler_name,
            environment=environment,
            timeout=int(self.resolve(props.get("Timeout", LAMBDA_DEFAULT_TIMEOUT))),
            memory_size=int(self.resolve(props.get("MemorySize", LAMBDA_DEFAULT_MEMORY))),
            runtime=self.resolve(props.get("Runtime")),
            layer_dirs=layer_dirs,
            events=events,
            reserved_concurrency=_optional_int(self.resolve(props.get("ReservedConcurrentExecutions"))),
        )

    def function(self, logical_id: str) -> FunctionSpec:
        try:
            return self.functions[logical_id]
        except KeyError:
            known = ", ".join(sorted(self.functions))
            raise TemplateError(
                f"no function {logical_id!r} in {self.path.name} (functions: {known})"
            ) from None

    def functions_by_event_type(self, event_type: str) -> list[tuple[FunctionSpec, EventSource]]:
        """Every (function, event source) pair whose event has ``Type: event_type``, in template order."""
        return [(fn, ev) for fn in self.functions.values() for ev in fn.events if ev.type == event_type]

    def authorizer_functions(self) -> set[str]:
        """Logical ids of functions used as HttpApi Lambda authorizers."""
        return {a.function for a in self.authorizers.values() if a.function}

    # -- HTTP APIs ---------------------------------------------------------------------------------

    def _http_api_ids(self) -> list[str]:
        ids = [lid for lid, res in self.resources.items() if res["Type"] == "AWS::Serverless::HttpApi"]
        uses_implicit = any(
            ev.type == "HttpApi" and _ref_target(ev.raw_properties.get("ApiId")) is None
            for fn in self.functions.values()
            for ev in fn.events
        )
        return ids + [IMPLICIT_HTTP_API] if uses_implicit else ids

    def _http_api_auth(self, api: str) -> dict[str, Any]:
        if api == IMPLICIT_HTTP_API:
            return (self._globals.get("HttpApi") or {}).get("Auth") or {}
        return self._properties(api).get("Auth") or {}

    def _read_authorizers(self) -> dict[str, AuthorizerSpec]:
        specs: dict[str, AuthorizerSpec] = {}
        for api in self._http_api_ids():
            for name, raw in (self._http_api_auth(api).get("Authorizers") or {}).items():
                identity = raw.get("Identity") or {}
                if "JwtConfiguration" in raw:
                    function, kind = None, "JWT"
                else:
                    function, kind = _ref_target(raw.get("FunctionArn")), "REQUEST"
                    if function is None or function not in self.functions:
                        raise TemplateError(
                            f"authorizer {name}: FunctionArn must reference a function of this template "
                            f"(!GetAtt <Function>.Arn), got {raw.get('FunctionArn')!r}"
                        )
                if name in specs:
                    raise TemplateError(f"authorizer name {name} is defined by two HttpApis")
                specs[name] = AuthorizerSpec(
                    name=name,
                    function=function,
                    payload_format_version=cfn_str(
                        self.resolve(raw.get("AuthorizerPayloadFormatVersion", "2.0"))
                    ),
                    simple_responses=_is_true(self.resolve(raw.get("EnableSimpleResponses", False))),
                    identity_headers=[cfn_str(h) for h in self.resolve(identity.get("Headers") or [])],
                    identity_query_strings=[
                        cfn_str(q) for q in self.resolve(identity.get("QueryStrings") or [])
                    ],
                    ttl=int(self.resolve(identity.get("ReauthorizeEvery", 0))),
                    api=api,
                    kind=kind,
                    invoke_role=(
                        cfn_str(self.resolve(raw["FunctionInvokeRole"]))
                        if raw.get("FunctionInvokeRole") is not None
                        else None
                    ),
                )
        return specs

    def _read_routes(self) -> list[Route]:
        routes: list[Route] = []
        for fn in self.functions.values():
            for ev in fn.events:
                if ev.type != "HttpApi":
                    continue
                api = _ref_target(ev.raw_properties.get("ApiId")) or IMPLICIT_HTTP_API
                if api != IMPLICIT_HTTP_API and api not in self.resources:
                    raise TemplateError(f"{fn.logical_id}.{ev.name}: ApiId {api} is not a resource here")
                props = ev.properties
                path = str(props.get("Path", "$default"))
                method = str(props.get("Method", "ANY")).upper()
                auth = self._http_api_auth(api)
                authorizer = (props.get("Auth") or {}).get("Authorizer", auth.get("DefaultAuthorizer"))
                if authorizer == "NONE":
                    authorizer = None
                if authorizer is not None and authorizer not in self.authorizers:
                    raise TemplateError(f"{fn.logical_id}.{ev.name}: unknown authorizer {authorizer!r}")
                routes.append(
                    Route(
                        method=method,
                        path=path,
                        function=fn.logical_id,
                        authorizer=authorizer,
                        api=api,
                        event_name=ev.name,
                        payload_format_version=cfn_str(props.get("PayloadFormatVersion", "2.0")),
                    )
                )
        seen: dict[tuple[str, str], str] = {}
        for route in routes:
            key = (route.api, route.route_key)
            if key in seen:
                raise TemplateError(
                    f"route {route.route_key} is declared by {seen[key]} and {route.function}"
                )
            seen[key] = route.function
        return routes

    def routes_for(self, logical_id: str) -> list[Route]:
        return [r for r in self.routes if r.function == logical_id]


def load_template(
    path: str | Path = "template.yaml",
    parameter_overrides: Mapping[str, str] | None = None,
    stack_name: str = DEFAULT_STACK_NAME,
    *,
    region: str = DEFAULT_REGION,
    account_id: str = DEFAULT_ACCOUNT_ID,
    endpoint_url: str | None = None,
) -> Template:
    """Load and resolve a SAM template; ``endpoint_url`` (the local AWS endpoint) only shapes queue URLs."""
    template_path = Path(path).resolve()
    if not template_path.is_file():
        raise TemplateError(f"no template at {template_path}")
    return Template(
        load_yaml(template_path),
        path=template_path,
        parameter_overrides=parameter_overrides,
        stack_name=stack_name,
        region=region,
        account_id=account_id,
        endpoint_url=endpoint_url,
    )


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["K=V", "K2=V2"]`` (sam's --parameter-overrides syntax, also ``ParameterKey=K,ParameterValue=V``)."""
    overrides: dict[str, str] = {}
    for item in items:
        match = re.fullmatch(r"ParameterKey=([^,]+),ParameterValue=(.*)", item)
        if match:
            overrides[match.group(1)] = match.group(2)
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TemplateError(f"parameter override {item!r} is not KEY=VALUE")
        overrides[key] = value
    return overrides
