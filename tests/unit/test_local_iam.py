"""local.iam: IAM's evaluation logic (explicit deny, allow, implicit deny) over policy documents."""

from __future__ import annotations

from typing import Any

import pytest

from local.iam import UNKNOWN, PolicyError, Unevaluable, allowed, arn_matches, evaluate, managed_policy

TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/calbot-dev-Table"


def _doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def test_nothing_is_allowed_without_an_allow() -> None:
    assert not allowed([], "dynamodb:GetItem", TABLE)
    verdict = evaluate(
        [_doc({"Effect": "Allow", "Action": "dynamodb:Query", "Resource": TABLE})], "dynamodb:GetItem", TABLE
    )
    assert verdict.decision == "ImplicitDeny"


def test_actions_match_case_insensitively_with_wildcards() -> None:
    policy = [_doc({"Effect": "Allow", "Action": ["dynamodb:Get*", "sqs:?eceiveMessage"], "Resource": "*"})]
    assert allowed(policy, "dynamodb:GetItem", TABLE)
    assert allowed(policy, "DynamoDB:getitem", TABLE)
    assert allowed(policy, "sqs:ReceiveMessage", "arn:aws:sqs:us-east-1:123456789012:q")
    assert not allowed(policy, "dynamodb:PutItem", TABLE)
    assert not allowed(policy, "sqs:ReceiveMessages", "arn:aws:sqs:us-east-1:123456789012:q")


def test_resources_match_component_wise_and_case_sensitively() -> None:
    assert arn_matches("arn:aws:dynamodb:*:*:table/calbot-*", TABLE)
    assert arn_matches(f"{TABLE}/index/*", f"{TABLE}/index/GSI1")
    assert not arn_matches(f"{TABLE}/index/*", TABLE)
    assert not arn_matches(TABLE.upper(), TABLE)
    # A wildcard in the region component stays in that component.
    assert not arn_matches("arn:aws:sqs:us-*:123456789012:q", "arn:aws:sqs:eu-west-1:123456789012:q")
    assert arn_matches(
        "arn:aws:lambda:us-east-1:123456789012:function:calbot-*",
        "arn:aws:lambda:us-east-1:123456789012:function:calbot-dev-x:live",
    )


def test_an_explicit_deny_beats_any_allow() -> None:
    policies = [
        _doc({"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}),
        _doc({"Effect": "Deny", "Action": "dynamodb:Scan", "Resource": TABLE}),
    ]
    assert allowed(policies, "dynamodb:Query", TABLE)
    verdict = evaluate(policies, "dynamodb:Scan", TABLE)
    assert verdict.decision == "Deny" and not verdict


def test_not_action_and_not_resource() -> None:
    policy = [
        _doc(
            {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"},
            {
                "Effect": "Deny",
                "Action": "ssm:*",
                "NotResource": "arn:aws:ssm:us-east-1:123456789012:parameter/calbot/dev/*",
            },
        )
    ]
    assert allowed(policy, "sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:q")
    assert not allowed(policy, "iam:PassRole", "arn:aws:iam::123456789012:role/r")
    assert allowed(policy, "ssm:GetParameter", "arn:aws:ssm:us-east-1:123456789012:parameter/calbot/dev/k")
    assert not allowed(
        policy, "ssm:GetParameter", "arn:aws:ssm:us-east-1:123456789012:parameter/calbot/prod/k"
    )


def test_conditions() -> None:
    rate_only = [
        _doc(
            {
                "Effect": "Allow",
                "Action": "dynamodb:UpdateItem",
                "Resource": TABLE,
                "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["RATE#*"]}},
            }
        )
    ]
    assert allowed(rate_only, "dynamodb:UpdateItem", TABLE, {"dynamodb:LeadingKeys": ["RATE#k1"]})
    assert not allowed(rate_only, "dynamodb:UpdateItem", TABLE, {"dynamodb:LeadingKeys": ["USER#u1"]})
    assert not allowed(
        rate_only, "dynamodb:UpdateItem", TABLE, {"dynamodb:LeadingKeys": ["RATE#k", "USER#u"]}
    )

    source = [
        _doc(
            {
                "Effect": "Allow",
                "Action": "sqs:SendMessage",
                "Resource": "*",
                "Condition": {"ArnLike": {"aws:SourceArn": "arn:aws:scheduler:*:123456789012:schedule/*"}},
            }
        )
    ]
    queue = "arn:aws:sqs:us-east-1:123456789012:dlq"
    assert allowed(
        source,
        "sqs:SendMessage",
        queue,
        {"AWS:SourceArn": "arn:aws:scheduler:us-east-1:123456789012:schedule/g/n"},
    )
    assert not allowed(
        source, "sqs:SendMessage", queue, {"aws:SourceArn": "arn:aws:events:us-east-1:123456789012:rule/r"}
    )
    assert not allowed(source, "sqs:SendMessage", queue)  # a missing key fails a positive operator

    negated = [
        _doc(
            {
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"StringNotEquals": {"aws:SourceAccount": "123456789012"}},
            }
        ),
        _doc({"Effect": "Allow", "Action": "*", "Resource": "*"}),
    ]
    assert allowed(negated, "s3:GetObject", "arn:aws:s3:::b/k", {"aws:SourceAccount": "123456789012"})
    assert not allowed(negated, "s3:GetObject", "arn:aws:s3:::b/k", {"aws:SourceAccount": "999999999999"})
    assert not allowed(negated, "s3:GetObject", "arn:aws:s3:::b/k")  # absent key: a negated operator holds

    if_exists = [
        _doc(
            {
                "Effect": "Allow",
                "Action": "*",
                "Resource": "*",
                "Condition": {"StringEqualsIfExists": {"aws:SourceAccount": "1"}},
            }
        )
    ]
    assert allowed(if_exists, "s3:GetObject", "arn:aws:s3:::b/k")
    assert not allowed(if_exists, "s3:GetObject", "arn:aws:s3:::b/k", {"aws:SourceAccount": "2"})

    null = [
        _doc(
            {
                "Effect": "Allow",
                "Action": "*",
                "Resource": "*",
                "Condition": {"Null": {"aws:SourceArn": "false"}},
            }
        )
    ]
    assert allowed(null, "s3:GetObject", "arn:aws:s3:::b/k", {"aws:SourceArn": "x"})
    assert not allowed(null, "s3:GetObject", "arn:aws:s3:::b/k")


def test_an_unknown_condition_operator_is_an_error_not_a_guess() -> None:
    policy = [
        _doc(
            {
                "Effect": "Allow",
                "Action": "*",
                "Resource": "*",
                "Condition": {"DateLessThan": {"aws:CurrentTime": "2030-01-01"}},
            }
        )
    ]
    with pytest.raises(PolicyError):
        allowed(policy, "s3:GetObject", "arn:aws:s3:::b/k")


def test_unevaluable_conditions_raise_or_are_decided_conservatively() -> None:
    # A caller that computes only some keys names them; another key, or a value it marks UNKNOWN,
    # cannot be decided. By default that is an error; conservatively an Allow grants nothing and a
    # Deny denies.
    known = {"dynamodb:LeadingKeys"}
    on_vpce = {"StringEquals": {"aws:SourceVpce": "vpce-1"}}
    on_keys = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["RATE#*"]}}
    everything = _doc({"Effect": "Allow", "Action": "*", "Resource": "*"})
    for condition, context in ((on_vpce, {}), (on_keys, {"dynamodb:LeadingKeys": UNKNOWN})):
        allow = _doc(
            {"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "*", "Condition": condition}
        )
        deny = _doc({"Effect": "Deny", "Action": "ssm:*", "Resource": "*", "Condition": condition})
        with pytest.raises(Unevaluable):
            evaluate([allow], "ssm:GetParameter", TABLE, context=context, known_keys=known)
        conservative = {"context": context, "known_keys": known, "conservative": True}
        assert evaluate([allow], "ssm:GetParameter", TABLE, **conservative).decision == "ImplicitDeny"
        assert evaluate([everything, deny], "ssm:GetParameter", TABLE, **conservative).decision == "Deny"
        assert evaluate([everything, deny], "sqs:SendMessage", TABLE, **conservative).decision == "Allow"
    # Without known_keys an uncomputed key is simply absent (IAM's rule for a missing key).
    allow = _doc({"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "*", "Condition": on_vpce})
    assert evaluate([allow], "ssm:GetParameter", TABLE).decision == "ImplicitDeny"
    # A known key's computed value is decided as usual.
    allow = _doc({"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "*", "Condition": on_keys})
    good = {"dynamodb:LeadingKeys": ["RATE#k"]}
    assert evaluate([allow], "ssm:GetParameter", TABLE, context=good, known_keys=known, conservative=True)


def test_an_empty_set_is_an_absent_key() -> None:
    def grant(condition: dict[str, Any]) -> dict[str, Any]:
        return _doc({"Effect": "Allow", "Action": "dynamodb:Query", "Resource": "*", "Condition": condition})

    empty = {"dynamodb:LeadingKeys": []}
    assert allowed([grant({"Null": {"dynamodb:LeadingKeys": "true"}})], "dynamodb:Query", TABLE, empty)
    assert allowed(
        [grant({"StringLikeIfExists": {"dynamodb:LeadingKeys": "RATE#*"}})], "dynamodb:Query", TABLE, empty
    )


def test_an_identity_statement_without_a_resource_grants_nothing() -> None:
    # IAM refuses such an identity-based policy; as a trust/resource policy it means its own resource.
    statement = {
        "Effect": "Allow",
        "Principal": {"Service": "scheduler.amazonaws.com"},
        "Action": "sts:AssumeRole",
    }
    assert not allowed([_doc(statement)], "sts:AssumeRole", "arn:aws:iam::123456789012:role/r")
    assert allowed(
        [_doc(statement)],
        "sts:AssumeRole",
        "arn:aws:iam::123456789012:role/r",
        principal=("Service", "scheduler.amazonaws.com"),
    )


def test_trust_and_resource_policies_check_the_principal() -> None:
    trust = [
        _doc(
            {
                "Effect": "Allow",
                "Principal": {"Service": ["scheduler.amazonaws.com"]},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": "123456789012"}},
            }
        )
    ]
    role = "arn:aws:iam::123456789012:role/r"
    context = {"aws:SourceAccount": "123456789012"}
    assert allowed(trust, "sts:AssumeRole", role, context, principal=("Service", "scheduler.amazonaws.com"))
    assert not allowed(trust, "sts:AssumeRole", role, context, principal=("Service", "lambda.amazonaws.com"))
    assert not allowed(
        trust,
        "sts:AssumeRole",
        role,
        {"aws:SourceAccount": "1"},
        principal=("Service", "scheduler.amazonaws.com"),
    )
    anyone = [_doc({"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "lambda:InvokeFunction"})]
    assert allowed(
        anyone,
        "lambda:InvokeFunction",
        "arn:aws:lambda:us-east-1:1:function:f",
        principal=("Service", "apigateway.amazonaws.com"),
    )
    account = [_doc({"Effect": "Allow", "Principal": {"AWS": "123456789012"}, "Action": "sqs:*"})]
    assert allowed(account, "sqs:SendMessage", "q", principal=("AWS", "arn:aws:iam::123456789012:role/x"))
    assert not allowed(account, "sqs:SendMessage", "q", principal=("AWS", "arn:aws:iam::999999999999:role/x"))


def test_aws_managed_policies_come_with_their_real_documents() -> None:
    sqs = managed_policy("arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole")
    assert sqs is not None
    queue = "arn:aws:sqs:us-east-1:123456789012:q"
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
        assert allowed([sqs], action, queue)
    assert not allowed([sqs], "sqs:SendMessage", queue)
    basic = managed_policy("arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole")
    assert basic is not None and allowed([basic], "logs:PutLogEvents", "arn:aws:logs:us-east-1:1:log-group:x")
    assert not allowed([basic], "dynamodb:GetItem", TABLE)
    assert managed_policy("arn:aws:iam::aws:policy/NoSuchPolicy") is None
