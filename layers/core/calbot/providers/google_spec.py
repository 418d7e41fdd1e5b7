"""Google in the registry: its connect fields and its webhook check.

A Google watch channel notifies with headers only: the channel id (our subscription id), the channel's
token (its secret), the watched resource's id and the resource state. `sync` (sent once when a channel
starts) needs no work and is answered 200. The implementation (calbot.providers.google) is imported
only when a service first uses the provider.
"""

from __future__ import annotations

from pydantic import Field

from calbot.providers import registry

MAX_CHANNEL_ID = 256


class GoogleFields(registry.CredentialFields):
    required = ("google_client_id", "google_client_secret", "google_refresh_token")

    google_client_id: str | None = Field(default=None, min_length=1, max_length=256)
    google_client_secret: str | None = Field(default=None, min_length=1, max_length=1024)
    google_refresh_token: str | None = Field(default=None, min_length=1, max_length=16384)

    def credentials(self) -> dict[str, str]:
        return {
            "client_id": self.google_client_id or "",
            "client_secret": self.google_client_secret or "",
            "refresh_token": self.google_refresh_token or "",
        }


def verify(notice: registry.Notice, lookup: registry.Lookup) -> registry.Verdict:
    """The channel must belong to the user and account in the path, carry that channel's own token, and
    name the resource it was created for (kept in the subscription's handle). Every outcome answers the
    same way per state, so the answer reveals nothing."""
    headers = notice.headers
    state = headers.get("x-goog-resource-state", "")
    channel_id = headers.get("x-goog-channel-id", "")[:MAX_CHANNEL_ID]
    sub = lookup([channel_id]).get(channel_id) if channel_id else None
    verdict = registry.Verdict(answer=200 if state == "sync" else 202)
    resource_id = sub.handle.get("resource_id") if sub is not None else None
    if (
        sub is None
        or not registry.owns(sub, notice, headers.get("x-goog-channel-token"))
        or (resource_id is not None and headers.get("x-goog-resource-id") != resource_id)
    ):
        verdict.dropped = 1
        return verdict
    verdict.accepted = 1
    if state == "sync":
        verdict.note = "channel started"
        return verdict
    number = headers.get("x-goog-message-number", "")[:32]
    verdict.changes.append(registry.Change(sub.account_id, dedup=registry.digest(sub.id, number, state)))
    return verdict


SPEC = registry.register(
    registry.ProviderSpec(
        name="google",
        credentials=GoogleFields,
        factory="calbot.providers.google:GoogleProvider",
        verify=verify,
    )
)
