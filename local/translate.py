"""template.yaml as CloudFormation would receive it: SAM's own translator, run locally.

``sam deploy`` hands the template to the ``AWS::Serverless-2016-10-31`` transform, which is the
``aws-sam-translator`` library. What SAM *generates* (execution roles and their policies, the
``AWS::Lambda::Permission`` that lets API Gateway invoke a function, the Scheduler schedules and
roles of ``ScheduleV2`` events, SQS event source mappings) exists only after that step, so the
local stack reads grants and invoke permissions from here rather than guessing them from the SAM
shorthand. Intrinsics in the output resolve through the same ``Template`` (``resolve``).
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

from local.template import Template, TemplateError

# The managed policies SAM attaches by name; the translator asks a loader for their ARNs.
_MANAGED_POLICIES = {
    name: f"arn:aws:iam::aws:policy/{path}{name}"
    for name, path in {
        "AWSLambdaBasicExecutionRole": "service-role/",
        "AWSLambdaSQSQueueExecutionRole": "service-role/",
        "AWSXrayWriteOnlyAccess": "",
        "AWSLambdaRole": "service-role/",
    }.items()
}


# The transform records usage metrics for SAM's own telemetry and warns, when they are garbage
# collected, that nobody published them: noise in every local stack log.
logging.getLogger("samtranslator.metrics.metrics").setLevel(logging.ERROR)


class _ManagedPolicyLoader:
    def load(self) -> dict[str, str]:
        return dict(_MANAGED_POLICIES)


def translate(template: Template) -> dict[str, Any]:
    """The CloudFormation template SAM's transform would produce (intrinsics left in place)."""
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.translator.transform import transform

    data = copy.deepcopy(template.data)
    # `sam package` rewrites local code paths to S3 URIs before the transform sees them.
    function_globals = (data.get("Globals") or {}).get("Function") or {}
    function_globals.pop("CodeUri", None)
    for resource in (data.get("Resources") or {}).values():
        props = resource.setdefault("Properties", {}) or {}
        resource["Properties"] = props
        if resource.get("Type") == "AWS::Serverless::Function" and "InlineCode" not in props:
            props["CodeUri"] = "s3://local-artifacts/function.zip"
        if resource.get("Type") == "AWS::Serverless::LayerVersion":
            props["ContentUri"] = "s3://local-artifacts/layer.zip"
    parameters = {
        k: str(v) if not isinstance(v, list) else ",".join(map(str, v))
        for k, v in template.parameters.items()
    }
    parameters.setdefault("AWS::Region", template.region)
    previous = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = template.region  # the translator reads the pseudo-region here
    try:
        return transform(data, parameters, _ManagedPolicyLoader())
    except InvalidDocumentException as exc:
        raise TemplateError(f"SAM's transform rejects template.yaml: {exc}") from exc
    finally:
        if previous is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = previous
