"""IAM policy evaluation as AWS does it, for the local stack's permission checks.

``evaluate(policies, action, resource)`` decides one request against a list of policy documents the
way IAM's evaluation logic does within one account: an explicit ``Deny`` in any matching statement
wins, else an ``Allow`` in any matching statement grants, else the request is implicitly denied.
A statement matches when its ``Action``/``NotAction``, ``Resource``/``NotResource``, ``Principal``
(resource-based and trust policies only) and every ``Condition`` match.

* Actions match case-insensitively (``sqs:receivemessage`` is ``sqs:ReceiveMessage``), with ``*``
  and ``?`` wildcards; ``*`` alone is every action.
* Resources match case-sensitively; an ARN pattern is compared component by component (the six
  colon-separated parts, the last one keeping its own colons), each with ``*``/``?`` wildcards, as
  ``ArnLike`` does; ``*`` alone is every resource. A statement without ``Resource``/``NotResource``
  (trust and resource-based policies) applies to the resource it is attached to.
* Conditions: the ``String*``, ``Arn*``, ``Numeric*``, ``Bool`` and ``Null`` operators with the
  ``ForAllValues:``/``ForAnyValue:`` prefixes and the ``IfExists`` suffix, keys matched
  case-insensitively, AND across operators and keys, OR across a key's values. A key missing from
  the request context fails a positive operator and passes a negated one (``StringNotEquals``...),
  as IAM documents; so does a key whose value is an empty set. An operator this module does not know
  raises ``PolicyError`` rather than guess.
* Unevaluable conditions: a caller that computes only some condition keys names them
  (``known_keys``) and may mark a key's value ``UNKNOWN`` for one request. A condition on any other
  key, on an ``UNKNOWN`` value, or with an operator this module does not know is unevaluable: by
  default that raises ``Unevaluable`` (a ``PolicyError``); with ``conservative=True`` the statement
  is decided as safely as it can be: an ``Allow`` carrying it grants nothing, a ``Deny`` denies.
* Principals: ``*``, ``{"AWS": ...}`` and ``{"Service": ...}``; ``NotPrincipal`` likewise.

No library on PyPI evaluates a request against IAM documents with this much of the grammar (moto's
``IAMPolicy`` ignores ``NotResource`` and most operators, and treats a Deny whose condition does not
match as a denial), so this module is small and hand-written; AWS managed policy documents come from
moto's copy of them (``managed_policy``). Nothing here knows the template: ``local.grants`` reads
the translated template's roles and permissions into the documents evaluated here.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class _Unknown:
    """A condition key whose value the caller cannot work out for the request."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()

ContextValue = str | Sequence[str] | _Unknown
_Context = Mapping[str, "list[str] | _Unknown"]  # normalised: lower-case keys, lists of strings


class PolicyError(ValueError):
    """A policy this module cannot evaluate faithfully (an unknown operator, a malformed element)."""


class Unevaluable(PolicyError):
    """A condition this module cannot decide for this request (see ``conservative``)."""


@dataclass(frozen=True)
class Evaluation:
    """The outcome of one request: ``Allow``, ``Deny`` (explicit) or ``ImplicitDeny``."""

    decision: str
    statement: Mapping[str, Any] | None = None  # the statement that decided (None when implicit)

    @property
    def allowed(self) -> bool:
        return self.decision == "Allow"

    def __bool__(self) -> bool:
        return self.allowed


# --------------------------------------------------------------------------------------------------
# Wildcards


@functools.lru_cache(maxsize=4096)
def _glob_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def glob_match(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    """IAM's ``*`` (any run of characters) and ``?`` (one character) over the whole text."""
    return _glob_regex(pattern, ignore_case).fullmatch(text) is not None


def action_matches(pattern: str, action: str) -> bool:
    return glob_match(pattern, action, ignore_case=True)


def arn_matches(pattern: str, arn: str) -> bool:
    """``ArnLike``: each of the six ARN components matched on its own (wildcards stay inside one)."""
    if pattern == "*":
        return True
    pattern_parts = pattern.split(":", 5)
    arn_parts = arn.split(":", 5)
    if len(pattern_parts) != 6 or len(arn_parts) != 6 or pattern_parts[0] != "arn":
        return glob_match(pattern, arn)
    return all(glob_match(p, a) for p, a in zip(pattern_parts, arn_parts, strict=True))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


# --------------------------------------------------------------------------------------------------
# Conditions


def _string_ops() -> dict[str, Any]:
    return {
        "StringEquals": (lambda want, have: want == have, False),
        "StringNotEquals": (lambda want, have: want == have, True),
        "StringEqualsIgnoreCase": (lambda want, have: want.lower() == have.lower(), False),
        "StringNotEqualsIgnoreCase": (lambda want, have: want.lower() == have.lower(), True),
        "StringLike": (lambda want, have: glob_match(want, have), False),
        "StringNotLike": (lambda want, have: glob_match(want, have), True),
        "ArnEquals": (lambda want, have: want == have, False),
        "ArnNotEquals": (lambda want, have: want == have, True),
        "ArnLike": (lambda want, have: arn_matches(want, have), False),
        "ArnNotLike": (lambda want, have: arn_matches(want, have), True),
        "Bool": (lambda want, have: want.lower() == have.lower(), False),
        "NumericEquals": (lambda want, have: float(have) == float(want), False),
        "NumericNotEquals": (lambda want, have: float(have) == float(want), True),
        "NumericLessThan": (lambda want, have: float(have) < float(want), False),
        "NumericLessThanEquals": (lambda want, have: float(have) <= float(want), False),
        "NumericGreaterThan": (lambda want, have: float(have) > float(want), False),
        "NumericGreaterThanEquals": (lambda want, have: float(have) >= float(want), False),
    }


_OPERATORS = _string_ops()


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _condition_holds(
    operator: str, key: str, wanted: Any, context: _Context, known_keys: Collection[str] | None
) -> bool:
    qualifier, _, base = operator.rpartition(":")
    if qualifier not in ("", "ForAllValues", "ForAnyValue"):
        raise Unevaluable(f"unknown condition set operator {qualifier!r}")
    if_exists = base.endswith("IfExists") and base != "IfExists"
    if if_exists:
        base = base[: -len("IfExists")]
    values = [_scalar(v) for v in _as_list(wanted)]
    if known_keys is not None and key.lower() not in known_keys:
        raise Unevaluable(f"condition key {key!r} is not known for this request")
    have = context.get(key.lower(), [])
    if isinstance(have, _Unknown):
        raise Unevaluable(f"the value of condition key {key!r} is unknown for this request")
    present = bool(have)  # an empty set counts as absent
    if base == "Null":
        # {"Null": {"key": "true"}}: the key is absent; "false": it is present.
        return any((v.lower() == "true") != present for v in values)
    if base not in _OPERATORS:
        raise Unevaluable(f"condition operator {operator!r} is not supported locally")
    compare, negated = _OPERATORS[base]

    def one(actual: str) -> bool:
        try:
            hit = any(compare(w, actual) for w in values)
        except ValueError:  # a Numeric operator over a non-number: no match
            hit = False
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(one(a) for a in have)  # an absent key or an empty set: true
    if qualifier == "ForAnyValue":
        return any(one(a) for a in have)
    if not present:
        return if_exists or negated
    return any(one(a) for a in have) if not negated else all(one(a) for a in have)


def conditions_hold(
    condition: Mapping[str, Any] | None,
    context: _Context,
    known_keys: Collection[str] | None = None,
) -> bool:
    """Whether every condition holds; ``Unevaluable`` when one cannot be decided."""
    for operator, block in (condition or {}).items():
        if not isinstance(block, Mapping):
            raise Unevaluable(f"condition {operator!r} must map keys to values")
        for key, wanted in block.items():
            if not _condition_holds(str(operator), str(key), wanted, context, known_keys):
                return False
    return True


def _normalise_context(context: Mapping[str, ContextValue] | None) -> dict[str, list[str] | _Unknown]:
    out: dict[str, list[str] | _Unknown] = {}
    for key, value in (context or {}).items():
        out[key.lower()] = value if isinstance(value, _Unknown) else [_scalar(v) for v in _as_list(value)]
    return out


# --------------------------------------------------------------------------------------------------
# Principals


Principal = tuple[str, str]  # ("Service", "scheduler.amazonaws.com") or ("AWS", "arn:aws:iam::1:root")


def _principal_in(element: Any, principal: Principal) -> bool:
    if element == "*":
        return True
    if not isinstance(element, Mapping):
        raise PolicyError(f"Principal must be '*' or a map, got {element!r}")
    kind, name = principal
    for key, listed in element.items():
        for entry in _as_list(listed):
            if entry == "*" and key == "AWS":
                return True
            if key == kind and str(entry) == name:
                return True
            # An account id stands for the account's root, i.e. any principal of the account.
            if (
                key == kind == "AWS"
                and re.fullmatch(r"\d{12}", str(entry))
                and (name.startswith(f"arn:aws:iam::{entry}:") or name == str(entry))
            ):
                return True
    return False


# --------------------------------------------------------------------------------------------------
# Evaluation


def statements(policy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A policy document's statements (a lone statement map counts as a list of one)."""
    statements = policy.get("Statement", [])
    if isinstance(statements, Mapping):
        return [statements]
    if not isinstance(statements, list):
        raise PolicyError(f"Statement must be a list or a map, got {type(statements).__name__}")
    return statements


def statement_matches(
    statement: Mapping[str, Any],
    action: str,
    resource: str,
    context: _Context,
    principal: Principal | None = None,
    *,
    known_keys: Collection[str] | None = None,
    conservative: bool = False,
) -> bool:
    """Whether one statement applies to the request (its Effect aside, but for an unevaluable
    condition under ``conservative``: then a Deny applies and an Allow does not)."""
    if "NotAction" in statement:
        if any(action_matches(str(p), action) for p in _as_list(statement["NotAction"])):
            return False
    elif not any(action_matches(str(p), action) for p in _as_list(statement.get("Action"))):
        return False
    if "NotResource" in statement:
        if any(arn_matches(str(p), resource) for p in _as_list(statement["NotResource"])):
            return False
    elif "Resource" in statement:
        if not any(arn_matches(str(p), resource) for p in _as_list(statement["Resource"])):
            return False
    elif principal is None:
        return False  # IAM refuses an identity-based statement without a resource: it grants nothing
    if principal is not None:
        if "NotPrincipal" in statement:
            if _principal_in(statement["NotPrincipal"], principal):
                return False
        elif "Principal" in statement and not _principal_in(statement["Principal"], principal):
            return False
        elif "Principal" not in statement:
            return False  # a resource-based statement names who it is for
    try:
        return conditions_hold(statement.get("Condition"), context, known_keys)
    except Unevaluable:
        if not conservative:
            raise
        # An Allow that cannot be proven grants nothing; a Deny that cannot be ruled out denies.
        return statement.get("Effect") == "Deny"


def evaluate(
    policies: Iterable[Mapping[str, Any]],
    action: str,
    resource: str,
    *,
    context: Mapping[str, ContextValue] | None = None,
    principal: Principal | None = None,
    known_keys: Collection[str] | None = None,
    conservative: bool = False,
) -> Evaluation:
    """Decide ``action`` on ``resource`` against ``policies`` (policy documents).

    Identity-based policies: leave ``principal`` out. Resource-based and trust policies: give the
    caller as ``("Service", "scheduler.amazonaws.com")`` or ``("AWS", arn)``; statements without a
    matching ``Principal`` then do not apply. ``context`` holds the request's condition keys
    (``aws:SourceArn``, ``aws:SourceAccount``, ``dynamodb:LeadingKeys``...), values str, lists or
    ``UNKNOWN``. ``known_keys`` (lower-case), when given, are the only keys the caller computes: a
    condition on another key is unevaluable rather than absent. ``conservative`` decides statements
    with an unevaluable condition (see the module docstring) instead of raising ``Unevaluable``.
    """
    known = None if known_keys is None else frozenset(k.lower() for k in known_keys)
    normalised = _normalise_context(context)
    allow: Mapping[str, Any] | None = None
    for policy in policies:
        for statement in statements(policy):
            effect = statement.get("Effect")
            if effect not in ("Allow", "Deny"):
                raise PolicyError(f"Effect must be Allow or Deny, got {effect!r}")
            if not statement_matches(
                statement,
                action,
                resource,
                normalised,
                principal,
                known_keys=known,
                conservative=conservative,
            ):
                continue
            if effect == "Deny":
                return Evaluation("Deny", statement)
            allow = allow or statement
    return Evaluation("Allow", allow) if allow is not None else Evaluation("ImplicitDeny")


def allowed(
    policies: Iterable[Mapping[str, Any]],
    action: str,
    resource: str,
    context: Mapping[str, ContextValue] | None = None,
    *,
    principal: Principal | None = None,
) -> bool:
    """``evaluate(...).allowed``: True only when some statement allows and none denies."""
    return evaluate(policies, action, resource, context=context, principal=principal).allowed


# --------------------------------------------------------------------------------------------------
# AWS managed policies


@functools.lru_cache(maxsize=1)
def _managed_documents() -> dict[str, dict[str, Any]]:
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    data: dict[str, dict[str, Any]] = json.loads(aws_managed_policies_data)
    return {
        f"arn:aws:iam::aws:policy{entry.get('Path', '/')}{name}": entry["Document"]
        for name, entry in data.items()
    }


def managed_policy(arn: str) -> dict[str, Any] | None:
    """The document of an AWS managed policy (``arn:aws:iam::aws:policy/...``), None if unknown."""
    return _managed_documents().get(re.sub(r"^arn:aws[a-z-]*:", "arn:aws:", arn))
