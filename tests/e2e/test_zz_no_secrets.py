"""Runs last in the e2e session (pytest collects files in name order): every response any e2e test
received, and every line the stack process logged, are grepped for token material."""

from __future__ import annotations

from local.demo import DEMO_GOOGLE_CLIENT_SECRET
from tests.e2e.conftest import E2EStack

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
