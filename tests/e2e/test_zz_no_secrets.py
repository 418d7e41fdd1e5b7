"""Runs last in the e2e session (pytest collects files in name order): every response any e2e test
received, and every line the stack process logged, are grepped for token material."""

from __future__ import annotations

import re

from local.demo import DEMO_GOOGLE_CLIENT_SECRET
from tests.e2e.conftest import E2EStack

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
    issued = e2e.graph("GET", "/issued-tokens").json()
    secrets = [*issued["refresh_tokens"], *issued["access_tokens"], *CLIENT_SECRETS]
    secrets += [
        s["client_state"] for s in e2e.graph("GET", "/subscriptions").json()["value"] if s.get("client_state")
    ]
    assert len(issued["refresh_tokens"]) >= 10 and len(issued["access_tokens"]) >= 10  # the suite made them
    google = e2e.google("GET", "/issued-tokens").json()  # refresh / access / channel tokens at Google
    assert google["refresh_tokens"]  # at least the demo account's
    secrets += [*google["refresh_tokens"], *google["access_tokens"], *google["channel_tokens"]]
    haystacks = {"responses": "\n".join(e2e.responses), "stack log": e2e.log_text()}
    assert len(haystacks["responses"]) > 10_000 and len(haystacks["stack log"]) > 0
    for name, text in haystacks.items():
        leaked = [s[:12] + "..." for s in secrets if s in text]
        assert leaked == [], f"token material in {name}: {leaked}"


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
    log = e2e.log_text()
    # The pattern does find keys: the banner's demo key.
    assert e2e.demo_key in API_KEY.findall(log)
    in_log = [line[:80] for line in log.splitlines() if API_KEY.search(line) and not BANNER_LINE.match(line)]
    assert in_log == [], f"API keys in the stack log: {in_log}"
    responses = "\n".join(e2e.responses)
    assert API_KEY.findall(responses) == [], "an API key was sent back in a response"
    # Authorization headers are never logged, whatever scheme a client used.
    headers = [
        line[:80]
        for line in log.splitlines()
        if re.search(r"(?i)authorization\W{0,4}(token|bearer|basic)\s", line) and not BANNER_LINE.match(line)
    ]
    assert headers == [], headers
    # The Create Bot API credential the launcher reads from SSM.
    bot_key = e2e.boto("ssm").get_parameter(Name=e2e.info["bot_api_key_param"], WithDecryption=True)
    bot_key_value = bot_key["Parameter"]["Value"]
    assert len(bot_key_value) >= 16
    for name, text in {"responses": responses, "stack log": log}.items():
        assert bot_key_value not in text, f"the bot API key is in the {name}"
