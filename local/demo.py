"""Fixed identities of the local demo seed, shared by the stack (which creates them) and the sample
events (which refer to them), so `make invoke` works against a fresh `make dev` with no editing."""

from __future__ import annotations

DEMO_USER_ID = "usr_demo"
DEMO_API_KEY = "cbk_demo_local_key_0000000000000000"  # local stack only
DEMO_CLIENT_ID = "demo-client-id"
DEMO_CLIENT_SECRET = "demo-client-secret-value"
DEMO_ACCOUNT = "jane@contoso.example"
# Graph ids the seed gives the demo meetings (opaque, Graph-shaped), so our event ids are stable.
TEAMS_MEETING_ID = "AAMkAGI2demo-quarterly-planning-teams-0001AAA="
STANDUP_SERIES_ID = "AAMkAGI2demo-team-standup-series-0002AAA="
# The Google side of the demo: one OAuth client at the Google emulator and an account not yet connected.
DEMO_GOOGLE_CLIENT_ID = "100000000001-demo.apps.googleusercontent.com"
DEMO_GOOGLE_CLIENT_SECRET = "GOCSPX-demo-google-client-secret"  # local stack only
DEMO_GOOGLE_ACCOUNT = "sam.rivera@gmail.example"


def demo_event_id(platform_id: str) -> str:
    """Our id of a demo meeting, exactly as sync derives it."""
    from calbot.ids import event_id

    return event_id(DEMO_USER_ID, "outlook", DEMO_ACCOUNT, platform_id)
