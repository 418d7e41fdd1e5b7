"""Create template.yaml's stateful AWS resources in a local AWS endpoint (moto).

Deployed, CloudFormation creates these; locally this module does, reading the same template so the
local tables, queues and schedule groups can never drift from the deployed ones. It is idempotent:
running it against an endpoint that already has the resources changes nothing.

Handled: ``AWS::DynamoDB::Table`` (keys, indexes, billing, streams, SSE, then TTL and PITR),
``AWS::SQS::Queue`` (FIFO and redrive attributes; dead-letter queues are created first),
``AWS::Scheduler::ScheduleGroup``, ``AWS::SSM::Parameter`` and ``AWS::KMS::Key`` (symmetric, under
the key id the template resolves ``!Ref``/``!GetAtt ...Arn`` to, so the functions' environment names
it). Every other type (functions, layers,
APIs, roles) has no local AWS counterpart: the gateway and the clock stand in for them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from local.template import Template, cfn_str

SERVICES = ("dynamodb", "sqs", "scheduler", "ssm", "kms")

# CloudFormation's AWS::SQS::Queue properties that are SetQueueAttributes attributes of the same name.
_SQS_ATTRIBUTES = (
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
)
_SQS_JSON_ATTRIBUTES = ("RedrivePolicy", "RedriveAllowPolicy")
# Keys of a CloudFormation GSI/LSI that CreateTable accepts as they are.
_INDEX_KEYS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput", "OnDemandThroughput")


@dataclass
class BootstrapReport:
    """What ``create_resources`` did: physical ids by logical id, and which ones were new."""

    physical_ids: dict[str, str] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def _clients(session_or_clients: Any, endpoint_url: str | None) -> dict[str, Any]:
    if isinstance(session_or_clients, Mapping):
        return dict(session_or_clients)
    # A boto3 Session (or the boto3 module itself): build one client per service we need.
    kwargs = {"endpoint_url": endpoint_url} if endpoint_url else {}
    return {svc: session_or_clients.client(svc, **kwargs) for svc in SERVICES}


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _found(lookup: Any, missing: str, **params: Any) -> bool:
    """True when `lookup(**params)` finds the resource, False when AWS answers the `missing` error code."""
    try:
        lookup(**params)
    except ClientError as exc:
        if _error_code(exc) != missing:
            raise
        return False
    return True


def create_resources(
    template: Template,
    session_or_clients: Any,
    *,
    endpoint_url: str | None = None,
) -> BootstrapReport:
    """Create the template's tables, queues, schedule groups and SSM parameters.

    ``session_or_clients`` is a ``boto3.Session`` (clients get ``endpoint_url``, or rely on
    ``AWS_ENDPOINT_URL``) or a mapping ``{"dynamodb": client, "sqs": client, ...}``; a service whose
    client is missing from the mapping is only an error if the template has resources for it.
    """
    clients = _clients(session_or_clients, endpoint_url)
    report = BootstrapReport()
    steps = (
        ("AWS::DynamoDB::Table", "dynamodb", _create_tables),
        ("AWS::SQS::Queue", "sqs", _create_queues),
        ("AWS::Scheduler::ScheduleGroup", "scheduler", _create_schedule_groups),
        ("AWS::SSM::Parameter", "ssm", _create_parameters),
        ("AWS::KMS::Key", "kms", _create_keys),
    )
    for resource_type, service, step in steps:
        resources = template.resources_of_type(resource_type)
        if not resources:
            continue
        if service not in clients:
            raise ValueError(f"the template has {resource_type} resources but no {service} client was given")
        step(template, clients[service], resources, report)
    return report


# -- DynamoDB --------------------------------------------------------------------------------------


def table_request(name: str, props: Mapping[str, Any]) -> dict[str, Any]:
    """The CreateTable request for a resolved AWS::DynamoDB::Table's properties."""
    request: dict[str, Any] = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PROVISIONED"),
    }
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if props.get(key):
            request[key] = [{k: v for k, v in index.items() if k in _INDEX_KEYS} for index in props[key]]
    for key in ("ProvisionedThroughput", "TableClass", "DeletionProtectionEnabled", "Tags"):
        if key in props:
            request[key] = props[key]
    if "StreamSpecification" in props:
        # CloudFormation has only StreamViewType; the API also wants StreamEnabled.
        request["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": props["StreamSpecification"]["StreamViewType"],
        }
    sse = props.get("SSESpecification")
    if sse:
        # CloudFormation spells it SSEEnabled, the API Enabled.
        request["SSESpecification"] = {
            "Enabled": bool(sse.get("SSEEnabled", False)),
            **{k: sse[k] for k in ("SSEType", "KMSMasterKeyId") if k in sse},
        }
    return request


def _create_tables(
    template: Template, client: Any, resources: dict[str, dict[str, Any]], report: BootstrapReport
) -> None:
    for logical_id, props in resources.items():
        name = str(template.ref(logical_id))
        report.physical_ids[logical_id] = name
        try:
            client.create_table(**table_request(name, props))
            report.created.append(logical_id)
        except ClientError as exc:
            if _error_code(exc) != "ResourceInUseException":
                raise
            report.existing.append(logical_id)
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            current = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            # Enabling TTL twice is a ValidationException on AWS, so only do it when it is off.
            if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
                client.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
                )
        pitr = props.get("PointInTimeRecoverySpecification") or {}
        if pitr.get("PointInTimeRecoveryEnabled"):
            client.update_continuous_backups(
                TableName=name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )


# -- SQS -------------------------------------------------------------------------------------------


def queue_attributes(props: Mapping[str, Any]) -> dict[str, str]:
    """CreateQueue ``Attributes`` for a resolved AWS::SQS::Queue's properties (all values strings)."""
    attributes = {key: cfn_str(props[key]) for key in _SQS_ATTRIBUTES if key in props}
    for key in _SQS_JSON_ATTRIBUTES:
        if key in props:
            value = props[key]
            attributes[key] = value if isinstance(value, str) else json.dumps(value)
    if attributes.get("FifoQueue") == "false":
        del attributes["FifoQueue"]  # SQS rejects FifoQueue=false on create
    return attributes


def _create_queues(
    template: Template, client: Any, resources: dict[str, dict[str, Any]], report: BootstrapReport
) -> None:
    # A redrive policy names its dead-letter queue by ARN, which must exist first.
    arn_to_id = {template.arn(lid): lid for lid in resources}
    ordered: list[str] = []

    def visit(logical_id: str, trail: tuple[str, ...] = ()) -> None:
        if logical_id in ordered:
            return
        if logical_id in trail:
            raise ValueError(f"queues redrive into each other: {' -> '.join(trail + (logical_id,))}")
        redrive = resources[logical_id].get("RedrivePolicy") or {}
        if isinstance(redrive, str):
            redrive = json.loads(redrive)
        dlq = arn_to_id.get(str(redrive.get("deadLetterTargetArn", "")))
        if dlq:
            visit(dlq, trail + (logical_id,))
        ordered.append(logical_id)

    for logical_id in resources:
        visit(logical_id)
    for logical_id in ordered:
        name = template.physical_name(logical_id)
        attributes = queue_attributes(resources[logical_id])
        try:
            existing_url = client.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            if _error_code(exc) not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                raise
            existing_url = None
        if existing_url:
            report.physical_ids[logical_id] = existing_url
            report.existing.append(logical_id)
            continue
        report.physical_ids[logical_id] = client.create_queue(QueueName=name, Attributes=attributes)[
            "QueueUrl"
        ]
        report.created.append(logical_id)


# -- EventBridge Scheduler -------------------------------------------------------------------------


def _create_schedule_groups(
    template: Template, client: Any, resources: dict[str, dict[str, Any]], report: BootstrapReport
) -> None:
    for logical_id in resources:
        name = str(template.ref(logical_id))
        report.physical_ids[logical_id] = name
        # moto's CreateScheduleGroup silently replaces an existing group; look first so a
        # re-run never touches a group that already holds schedules.
        if _found(client.get_schedule_group, "ResourceNotFoundException", Name=name):
            report.existing.append(logical_id)
            continue
        try:
            client.create_schedule_group(Name=name)
            report.created.append(logical_id)
        except ClientError as exc:
            if _error_code(exc) != "ConflictException":
                raise
            report.existing.append(logical_id)


# -- SSM -------------------------------------------------------------------------------------------


def _create_parameters(
    template: Template, client: Any, resources: dict[str, dict[str, Any]], report: BootstrapReport
) -> None:
    for logical_id, props in resources.items():
        name = str(template.ref(logical_id))
        report.physical_ids[logical_id] = name
        request: dict[str, Any] = {"Name": name, "Value": cfn_str(props["Value"]), "Type": props["Type"]}
        for key in ("Description", "AllowedPattern", "Tier", "DataType"):
            if key in props:
                request[key] = props[key]
        try:
            client.put_parameter(**request, Overwrite=False)
            report.created.append(logical_id)
        except ClientError as exc:
            if _error_code(exc) != "ParameterAlreadyExists":
                raise
            report.existing.append(logical_id)


# -- KMS -------------------------------------------------------------------------------------------


def _create_keys(
    template: Template, client: Any, resources: dict[str, dict[str, Any]], report: BootstrapReport
) -> None:
    """Each key under the id the template gives it. CreateKey picks its own id, so the new key is moved
    to the template's id inside moto's (in-process) backend: the local stack runs moto in this process."""
    for logical_id, props in resources.items():
        key_id = str(template.ref(logical_id))
        report.physical_ids[logical_id] = key_id
        if _found(client.describe_key, "NotFoundException", KeyId=key_id):
            report.existing.append(logical_id)
            continue
        request: dict[str, Any] = {"KeyUsage": "ENCRYPT_DECRYPT", "KeySpec": "SYMMETRIC_DEFAULT"}
        if "Description" in props:
            request["Description"] = cfn_str(props["Description"])
        # The KeyPolicy is not passed: moto's partial evaluation of key policies refuses the test
        # credentials as the account root, and its default policy is that root-only policy already.
        made = client.create_key(**request)["KeyMetadata"]
        _move_moto_key(made["Arn"], key_id)
        report.created.append(logical_id)


def _move_moto_key(arn: str, key_id: str) -> None:
    from moto.kms.models import kms_backends

    _, _, _, region, account, resource = arn.split(":", 5)
    backend = kms_backends[account][region]
    key = backend.keys.pop(resource.split("/", 1)[1])
    key.id = key_id
    key.arn = f"arn:aws:kms:{region}:{account}:key/{key_id}"
    backend.keys[key_id] = key
