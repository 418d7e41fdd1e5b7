"""Who may invoke what, read from template.yaml as SAM's transform emits it (``Template.translated``).

On AWS nothing invokes a function for free. API Gateway needs the function's resource policy (an
``AWS::Lambda::Permission``) or an invoke role; EventBridge Scheduler assumes the schedule's role,
which must trust ``scheduler.amazonaws.com`` and allow ``lambda:InvokeFunction`` on the target; an
SQS event source mapping polls with the function's execution role, which must allow
``sqs:ReceiveMessage``, ``sqs:DeleteMessage`` and ``sqs:GetQueueAttributes`` on the queue (Lambda
refuses to create the mapping otherwise). ``Grants`` answers those questions for the local gateway
and clock with ``local.iam``; every ``*_refusal`` method returns ``None`` when the call is allowed,
else the reason, worded like the error AWS would log.

Role policies are the role's inline ``Policies``, its ``ManagedPolicyArns`` (the template's own
``AWS::IAM::ManagedPolicy`` documents, or AWS managed policies from moto's copy) and any
``AWS::IAM::Policy``/``ManagedPolicy`` that names the role in ``Roles``. Permission boundaries,
SCPs and session policies are not modelled (the template uses none).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from local.iam import Evaluation, evaluate, managed_policy
from local.template import Template, _ref_target

INVOKE = "lambda:InvokeFunction"
ESM_SQS_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
SQS_DEFAULT_VISIBILITY_TIMEOUT = 30  # a queue without VisibilityTimeout (CreateQueue's default)
_FUNCTION_TYPES = ("AWS::Lambda::Function", "AWS::Serverless::Function")


class Grants:
    """Invoke permissions and role policies of one (translated) template; cached per template."""

    def __init__(self, template: Template) -> None:
        self.template = template
        self._resources: dict[str, dict[str, Any]] = template.translated_active()
        self._policies: dict[str, list[dict[str, Any]]] = {}
        self._trusts: dict[str, dict[str, Any]] = {}
        self._function_roles: dict[str, str | None] = {}
        self._cron_targets: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._resource_policies: dict[str, dict[str, Any]] | None = None
        self._role_arns: dict[str, str] | None = None
        # Resolve everything now, in one thread: Template's name resolution is not re-entrant across
        # threads, and the gateway and clock ask from many. Afterwards only evaluation runs per call.
        for role in self._of_type("AWS::IAM::Role"):
            self.role_trust(role)
            self.role_policies(role)
        for function in template.functions:
            self.function_role(function)
            self.resource_policy(function)
        for event_type in ("Schedule", "ScheduleV2"):
            for fn, event in template.functions_by_event_type(event_type):
                self.cron_target(fn.logical_id, event.name)

    # -- roles -----------------------------------------------------------------------------------

    def _of_type(self, *types: str) -> dict[str, dict[str, Any]]:
        return {lid: res for lid, res in self._resources.items() if res.get("Type") in types}

    def function_role(self, function: str) -> str | None:
        """Logical id of the function's execution role (SAM's generated one unless ``Role`` is set)."""
        if function not in self._function_roles:
            resource = self._resources.get(function) or {}
            role = (resource.get("Properties") or {}).get("Role")
            target = _ref_target(role)
            if target in self._of_type("AWS::IAM::Role"):
                self._function_roles[function] = target
            else:
                resolved = str(self.template.resolve(role)) if role is not None else None
                self._function_roles[function] = self.role_for_arn(resolved) if resolved else None
        return self._function_roles[function]

    def role_for_arn(self, arn: str) -> str | None:
        """The template role whose ARN is ``arn`` (a role outside the template does not exist here)."""
        if self._role_arns is None:
            self._role_arns = {self.template.arn(lid): lid for lid in self._of_type("AWS::IAM::Role")}
        return self._role_arns.get(arn)

    def role_trust(self, role: str) -> dict[str, Any]:
        if role not in self._trusts:
            props = self._resources[role].get("Properties") or {}
            self._trusts[role] = self.template.resolve(props.get("AssumeRolePolicyDocument")) or {}
        return self._trusts[role]

    def role_policies(self, role: str) -> list[dict[str, Any]]:
        """Every identity-based policy document attached to the role, intrinsics resolved."""
        if role in self._policies:
            return self._policies[role]
        props = self._resources[role].get("Properties") or {}
        documents: list[dict[str, Any]] = []
        for inline in props.get("Policies") or []:
            document = self.template.resolve(inline.get("PolicyDocument"))
            if document:
                documents.append(document)
        for entry in props.get("ManagedPolicyArns") or []:
            document = self._managed_document(entry)
            if document:
                documents.append(document)
        role_name = self.template.physical_name(role)
        for res in self._of_type("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy").values():
            attached = (res.get("Properties") or {}).get("Roles") or []
            if any(_ref_target(r) == role or self.template.resolve(r) == role_name for r in attached):
                document = self.template.resolve((res.get("Properties") or {}).get("PolicyDocument"))
                if document and document not in documents:
                    documents.append(document)
        self._policies[role] = documents
        return documents

    def _managed_document(self, entry: Any) -> dict[str, Any] | None:
        target = _ref_target(entry)
        if target and (self._resources.get(target) or {}).get("Type") == "AWS::IAM::ManagedPolicy":
            props = self._resources[target].get("Properties") or {}
            return self.template.resolve(props.get("PolicyDocument"))
        return managed_policy(str(self.template.resolve(entry)))

    def function_policies(self, function: str) -> list[dict[str, Any]]:
        """The identity-based policies the function's code runs with (its execution role's)."""
        role = self.function_role(function)
        return self.role_policies(role) if role else []

    def role_refusal(
        self,
        role_arn: str,
        service: str,
        actions: list[tuple[str, str]],
        *,
        context: Mapping[str, str] | None = None,
    ) -> str | None:
        """Why ``service`` cannot assume ``role_arn`` and do each (action, resource), or None."""
        role = self.role_for_arn(role_arn)
        if role is None:
            return f"role {role_arn} does not exist in this stack"
        trust_context = {"aws:SourceAccount": self.template.account_id, **(context or {})}
        trust = evaluate(
            [self.role_trust(role)],
            "sts:AssumeRole",
            role_arn,
            context=trust_context,
            principal=("Service", service),
        )
        if not trust.allowed:
            return f"{service} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
        for action, resource in actions:
            if not self.role_allows(role, action, resource).allowed:
                return (
                    f"{role_arn} is not authorized to perform: {action} on resource: {resource} "
                    "because no identity-based policy allows the action"
                )
        return None

    def role_allows(self, role: str, action: str, resource: str) -> Evaluation:
        return evaluate(self.role_policies(role), action, resource)

    # -- the functions' resource policies (AWS::Lambda::Permission) ------------------------------

    def _function_for(self, raw: Any) -> str | None:
        target = _ref_target(raw)
        if target in self.template.functions:
            return target
        value = str(self.template.resolve(raw))
        name = value.split(":function:", 1)[1] if ":function:" in value else value
        for lid, spec in self.template.functions.items():
            if name == spec.function_name:  # a qualified name (name:alias) grants only that alias
                return lid
        return None

    def resource_policy(self, function: str) -> dict[str, Any]:
        """The function's resource policy, one statement per ``AWS::Lambda::Permission``, as Lambda
        builds it from AddPermission (SourceArn becomes ``ArnLike AWS:SourceArn``)."""
        if self._resource_policies is None:
            policies: dict[str, dict[str, Any]] = {}
            for lid, res in self._of_type("AWS::Lambda::Permission").items():
                raw = res.get("Properties") or {}
                owner = self._function_for(raw.get("FunctionName"))
                if owner is None:
                    continue
                props = self.template.resolve(raw)
                principal = str(props.get("Principal"))
                condition: dict[str, Any] = {}
                if props.get("SourceArn"):
                    condition["ArnLike"] = {"AWS:SourceArn": props["SourceArn"]}
                if props.get("SourceAccount"):
                    condition["StringEquals"] = {"AWS:SourceAccount": props["SourceAccount"]}
                statement = {
                    "Sid": lid,
                    "Effect": "Allow",
                    "Principal": {"Service": principal}
                    if principal.endswith(".amazonaws.com")
                    else {"AWS": principal},
                    "Action": props.get("Action"),
                    "Resource": self.template.functions[owner].arn,
                    **({"Condition": condition} if condition else {}),
                }
                policy = policies.setdefault(owner, {"Version": "2012-10-17", "Statement": []})
                policy["Statement"].append(statement)
            self._resource_policies = policies
        return self._resource_policies.get(function, {"Version": "2012-10-17", "Statement": []})

    def service_invoke_refusal(self, function: str, service: str, source_arn: str) -> str | None:
        """Why ``service`` (calling from ``source_arn``) may not invoke the function, or None."""
        arn = self.template.functions[function].arn
        verdict = evaluate(
            [self.resource_policy(function)],
            INVOKE,
            arn,
            context={"aws:SourceArn": source_arn, "aws:SourceAccount": self.template.account_id},
            principal=("Service", service),
        )
        if verdict.allowed:
            return None
        return (
            f"{service} is not authorized to perform: {INVOKE} on resource: {arn} from {source_arn} "
            "because no resource-based policy allows it"
        )

    # -- the callers ------------------------------------------------------------------------------

    def api_route_refusal(self, function: str, source_arn: str) -> str | None:
        """API Gateway invoking a route's integration function (``arn:...:{api}/{stage}/{METHOD}/path``)."""
        return self.service_invoke_refusal(function, "apigateway.amazonaws.com", source_arn)

    def api_authorizer_refusal(self, function: str, source_arn: str, invoke_role: str | None) -> str | None:
        """API Gateway invoking a Lambda authorizer: as its ``FunctionInvokeRole`` when it has one,
        else under the function's resource policy (``arn:...:{api}/authorizers/{id}``)."""
        if invoke_role:
            arn = self.template.functions[function].arn
            return self.role_refusal(
                invoke_role,
                "apigateway.amazonaws.com",
                [(INVOKE, arn)],
                context={"aws:SourceArn": source_arn},
            )
        return self.service_invoke_refusal(function, "apigateway.amazonaws.com", source_arn)

    def scheduler_refusal(self, role_arn: str, target_arn: str, schedule_arn: str) -> str | None:
        """EventBridge Scheduler assuming the schedule's role to invoke its Lambda target."""
        return self.role_refusal(
            role_arn,
            "scheduler.amazonaws.com",
            [(INVOKE, target_arn)],
            context={"aws:SourceArn": schedule_arn},
        )

    def scheduler_dead_letter_refusal(self, role_arn: str, queue_arn: str, schedule_arn: str) -> str | None:
        """EventBridge Scheduler sending a dead-letter event with the schedule's role."""
        return self.role_refusal(
            role_arn,
            "scheduler.amazonaws.com",
            [("sqs:SendMessage", queue_arn)],
            context={"aws:SourceArn": schedule_arn},
        )

    def event_source_mapping_refusal(self, function: str, queue_arn: str) -> str | None:
        """Lambda polling an SQS queue for the function with the function's execution role, which
        Lambda also refuses to create (CreateEventSourceMapping, so the deploy fails) for a queue whose
        visibility timeout is under the function's timeout."""
        queue = self.template.resource_for_arn(queue_arn)
        spec = self.template.functions.get(function)
        if queue is not None and spec is not None:
            props = self.template.resolve(self._resources.get(queue, {}).get("Properties") or {}) or {}
            visibility = int(props.get("VisibilityTimeout", SQS_DEFAULT_VISIBILITY_TIMEOUT))
            if visibility < spec.timeout:
                return (
                    f"Queue visibility timeout: {visibility} seconds is less than Function timeout: "
                    f"{spec.timeout} seconds"
                )
        role = self.function_role(function)
        if role is None:
            return f"{function} has no execution role in this stack"
        for action in ESM_SQS_ACTIONS:
            if not self.role_allows(role, action, queue_arn).allowed:
                short = action.split(":", 1)[1]
                return (
                    f"The provided execution role does not have permissions to call {short} on SQS "
                    f"({self.template.arn(role)} lacks {action} on {queue_arn})"
                )
        return None

    def cron_target(self, function: str, event_name: str) -> dict[str, Any] | None:
        """The translated schedule or rule of a function's ``ScheduleV2``/``Schedule`` event:
        ``{"kind", "logical_id", "arn", "role_arn", "target_arn", "retry_policy", "dead_letter_arn",
        "group", "name"}``; None when the translation has none (it always has, for those events)."""
        key = (function, event_name)
        if key not in self._cron_targets:
            self._cron_targets[key] = self._read_cron_target(function, event_name)
        return self._cron_targets[key]

    def _read_cron_target(self, function: str, event_name: str) -> dict[str, Any] | None:
        logical_id = f"{function}{event_name}"
        resource = self._resources.get(logical_id) or {}
        props = self.template.resolve(resource.get("Properties") or {}) or {}
        if resource.get("Type") == "AWS::Scheduler::Schedule":
            target = props.get("Target") or {}
            return {
                "kind": "scheduler",
                "logical_id": logical_id,
                "arn": self.template.arn(logical_id),
                "group": str(props.get("GroupName") or "default"),
                "name": self.template.physical_name(logical_id),
                "role_arn": target.get("RoleArn"),
                "target_arn": target.get("Arn"),
                "retry_policy": dict(target.get("RetryPolicy") or {}),
                "dead_letter_arn": (target.get("DeadLetterConfig") or {}).get("Arn"),
            }
        if resource.get("Type") == "AWS::Events::Rule":
            target = (props.get("Targets") or [{}])[0]
            return {
                "kind": "events",
                "logical_id": logical_id,
                "arn": self.template.arn(logical_id),
                "group": "rule",
                "name": self.template.physical_name(logical_id),
                "role_arn": target.get("RoleArn"),
                "target_arn": target.get("Arn"),
                "retry_policy": dict(target.get("RetryPolicy") or {}),
                "dead_letter_arn": (target.get("DeadLetterConfig") or {}).get("Arn"),
            }
        return None

    def cron_refusal(self, function: str, event_name: str) -> str | None:
        """A ``ScheduleV2`` event's schedule role (or a ``Schedule`` event's rule) invoking it."""
        target = self.cron_target(function, event_name)
        if target is None:
            return None
        if target["kind"] == "scheduler":
            if not target["role_arn"]:
                return f"schedule {target['name']} has no RoleArn"
            return self.scheduler_refusal(target["role_arn"], str(target["target_arn"]), target["arn"])
        return self.service_invoke_refusal(function, "events.amazonaws.com", target["arn"])


_CACHE: weakref.WeakKeyDictionary[Template, Grants] = weakref.WeakKeyDictionary()


def grants(template: Template) -> Grants:
    """The (cached) ``Grants`` of a template."""
    found = _CACHE.get(template)
    if found is None:
        found = Grants(template)
        _CACHE[template] = found
    return found
