"""Runs last in the e2e session (pytest collects files in name order): every response any e2e test
received, and every line the stack process logged, are grepped for token material."""

from __future__ import annotations

import re

from local.demo import DEMO_GOOGLE_CLIENT_SECRET
from tests.e2e.conftest import STARTED_STACKS, E2EStack, aws_limit_violations
from tests.e2e.leaks import decoded_variants, find_leaks, table_text

# Every API key calbot issues (calbot.auth.new_api_key), whoever it belongs to: found by shape, so a key
# some test made without telling anyone is covered too.
API_KEY = re.compile(r"cbk_[A-Za-z0-9_\-]{20,}")
# The local stack's start-up banner prints the demo user's key on purpose (make dev); nothing else may.
BANNER_LINE = re.compile(r"^\s*(Demo API key:|curl -s (-X POST )?-H 'Authorization: Token )")

CLIENT_SECRETS = [
    "e2e-client-secret-5f1c9b7e0d",
    "events-e2e-secret-31ab",
    "demo-client-secret-value",
    DEMO_GOOGLE_CLIENT_SECRET,
]


def test_no_token_material_in_any_response_or_log_line(e2e: E2EStack) -> None:
    """Every stack this session started (the shared one, and the fault, Google, security ... stacks
    that modules start for themselves): every token any of them issued, and every client secret, is
    looked for in every stack's log and every response, raw, URL-encoded, JSON-escaped or base64."""
    e2e.collect_token_material()
    assert e2e in STARTED_STACKS
    unreadable = {
        str(stack.state_dir): stack.collect_error for stack in STARTED_STACKS if stack.collect_error
    }
    assert unreadable == {}, f"could not read the issued tokens of {unreadable}"
    secrets = set(CLIENT_SECRETS)
    for stack in STARTED_STACKS:
        secrets |= stack.token_material
    assert len(secrets) >= 10 + len(CLIENT_SECRETS)  # the suite made them
    assert e2e.google("GET", "/issued-tokens").json()["refresh_tokens"]  # at least the demo account's
    haystacks: dict[str, str] = {}
    for number, stack in enumerate(STARTED_STACKS):
        name = f"stack {number} ({stack.state_dir.name})"
        haystacks[f"{name} log"] = stack.log_text()
        haystacks[f"{name} responses"] = "\n".join(stack.responses)
    assert len("\n".join(e2e.responses)) > 10_000  # the suite ran against the shared stack
    assert all(text for name, text in haystacks.items() if name.endswith(" log"))
    leaks = find_leaks(secrets, haystacks)
    assert leaks == {}, f"token material in {leaks}"


def test_no_token_material_at_rest_in_the_table_and_no_access_token_in_ssm(e2e: E2EStack) -> None:
    """The shared stack's table (connections, the encrypted TOKEN# cache items, everything) holds no
    issued token or client secret in any form; SSM holds refresh tokens and client secrets only, never
    an access token (calbot.vault). The dynamodb-backend stack checks its own table
    (test_credential_backend.py)."""
    issued = e2e.graph("GET", "/issued-tokens").json()
    google = e2e.google("GET", "/issued-tokens").json()
    secrets = e2e.collect_token_material() | set(CLIENT_SECRETS)
    table = e2e.env()["TABLE_NAME"]
    pages = e2e.boto("dynamodb").get_paginator("scan").paginate(TableName=table)  # test-side scan
    items = [item for page in pages for item in page["Items"]]
    assert any(item["SK"]["S"].startswith("TOKEN#") for item in items)  # the cache is there, sealed
    assert find_leaks(secrets, {"table": table_text(items)}) == {}
    params = e2e.boto("ssm").get_paginator("get_parameters_by_path")
    values = [
        p["Value"]
        for page in params.paginate(Path="/calbot/local/users", Recursive=True, WithDecryption=True)
        for p in page["Parameters"]
    ]
    assert values  # the demo accounts' credentials
    access_tokens = {*issued["access_tokens"], *google["access_tokens"]}
    assert len(access_tokens) >= 3
    assert find_leaks(access_tokens, {"ssm": "\n".join(values)}) == {}


def test_no_api_key_or_service_credential_in_any_response_or_log_line(e2e: E2EStack) -> None:
    table = e2e.env()["TABLE_NAME"]
    ddb = e2e.boto("dynamodb")
    issued = ddb.query(
        TableName=table,
        IndexName="GSI1",
        KeyConditionExpression="GSI1PK = :pk",
        ExpressionAttributeValues={":pk": {"S": f"USER#{e2e.info['demo']['user_id']}#APIKEYS"}},
    )["Items"]
    assert issued  # the demo key at least; the suite issued many more through the admin CLI
    # The pattern does find keys: the banner's demo key.
    assert e2e.demo_key in API_KEY.findall(e2e.log_text())
    # The Create Bot API credential the launcher reads from SSM.
    bot_key = e2e.boto("ssm").get_parameter(Name=e2e.info["bot_api_key_param"], WithDecryption=True)
    bot_key_value = bot_key["Parameter"]["Value"]
    assert len(bot_key_value) >= 16
    for stack in STARTED_STACKS:  # every stack the session started, not only the shared one
        log = stack.log_text()
        in_log = [
            line[:80]
            for variant in decoded_variants(log)  # raw, URL-encoded, JSON-escaped, base64
            for line in variant.splitlines()
            if API_KEY.search(line) and not BANNER_LINE.match(line)
        ]
        assert in_log == [], f"API keys in the log of {stack.state_dir}: {in_log}"
        responses = "\n".join(stack.responses)
        sent_back = [key for variant in decoded_variants(responses) for key in API_KEY.findall(variant)]
        assert sent_back == [], f"an API key was sent back in a response ({stack.state_dir})"
        # Authorization headers are never logged, whatever scheme a client used.
        headers = [
            line[:80]
            for line in log.splitlines()
            if re.search(r"(?i)authorization\W{0,4}(token|bearer|basic)\s", line)
            and not BANNER_LINE.match(line)
        ]
        assert headers == [], headers
        leaks = find_leaks([bot_key_value], {"responses": responses, "stack log": log})
        assert leaks == {}, f"the bot API key is in {leaks} of {stack.state_dir}"


def test_every_stack_the_session_stopped_stayed_within_aws_limits(e2e: E2EStack) -> None:
    """The shared stack is checked when the session ends (conftest's `e2e` fixture); the fault, Google,
    security, readme, 90-day ... stacks that modules start for themselves are checked here: no
    overrun and no call an IAM role does not grant, on any of them."""
    stopped = [s for s in STARTED_STACKS if s is not e2e and s.proc.poll() is not None]
    violations = {str(s.state_dir): aws_limit_violations(s) for s in stopped}
    assert {k: v[:10] for k, v in violations.items() if v} == {}
