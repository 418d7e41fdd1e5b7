"""Outlook (Microsoft Graph) in the registry: its connect fields, its webhook check, its default role.

Graph POSTs a JSON body whose `value` lists notifications, each naming its subscription and carrying
that subscription's `clientState`. Items are checked one by one; lifecycle items ask for a renewal or
a recreation of their subscription. The implementation (calbot.providers.outlook) is imported only when
a service first uses the provider.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from calbot.providers import registry

MAX_ITEMS = 1000
MAX_SUBSCRIPTION_ID = 256
LIFECYCLE_KINDS = {"reauthorizationRequired": "renew", "subscriptionRemoved": "recreate", "missed": "sync"}


class OutlookFields(registry.CredentialFields):
    required = ("microsoft_client_id", "microsoft_client_secret", "microsoft_refresh_token")

    microsoft_client_id: str | None = Field(default=None, min_length=1, max_length=256)
    microsoft_client_secret: str | None = Field(default=None, min_length=1, max_length=1024)
    microsoft_refresh_token: str | None = Field(default=None, min_length=1, max_length=16384)
    microsoft_tenant: str = Field(
        default="common", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9.\-]+$"
    )

    def credentials(self) -> dict[str, str]:
        return {
            "client_id": self.microsoft_client_id or "",
            "client_secret": self.microsoft_client_secret or "",
            "refresh_token": self.microsoft_refresh_token or "",
            "tenant": self.microsoft_tenant,
        }


def _sub_id(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    value = item.get("subscriptionId")
    if not isinstance(value, str) or not value or len(value) > MAX_SUBSCRIPTION_ID:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def verify(notice: registry.Notice, lookup: registry.Lookup) -> registry.Verdict:
    """Graph's notifications: each item must name a subscription of this user, provider and account,
    and carry its own clientState. One change per kind of work (one sync of the account, one renewal
    or recreation per subscription), whose dedup id is made only of the accepted items: junk added to
    a captured genuine body cannot mint a new id, and neither can repeating an accepted item."""
    if notice.body is None:
        return registry.Verdict(dropped=1, note="notification dropped")
    value = notice.body.get("value")
    items = value[:MAX_ITEMS] if isinstance(value, list) else []
    # Each subscription is read once per request, all in one batch.
    subs = lookup(list(dict.fromkeys(i for i in map(_sub_id, items) if i is not None)))
    accepted: dict[tuple[str, str], tuple[str, list[str]]] = {}
    verdict = registry.Verdict()
    for item in items:
        sub_id = _sub_id(item)
        sub = subs.get(sub_id) if sub_id is not None else None
        if sub is None or not registry.owns(sub, notice, item.get("clientState")):
            verdict.dropped += 1
            continue
        lifecycle = item.get("lifecycleEvent")
        kind = LIFECYCLE_KINDS.get(str(lifecycle), "sync") if "lifecycleEvent" in item else "sync"
        key = (kind, sub.id if kind != "sync" else "")
        data = item.get("resourceData")
        data = data if isinstance(data, dict) else {}
        part = registry.digest(
            sub.id, item.get("changeType"), data.get("id"), data.get("@odata.etag"), lifecycle
        )
        accepted.setdefault(key, (sub.account_id, []))[1].append(part)
    verdict.accepted = len(items) - verdict.dropped
    for (kind, sub_id), (account_id, parts) in accepted.items():
        dedup = registry.digest(
            notice.user_id, notice.provider, notice.account_id.lower(), kind, sub_id, *sorted(set(parts))
        )
        verdict.changes.append(registry.Change(account_id, kind, sub_id or None, dedup))
    return verdict


SPEC = registry.register(
    registry.ProviderSpec(
        name="outlook",
        aliases=("microsoft",),
        credentials=OutlookFields,
        factory="calbot.providers.outlook:OutlookProvider",
        verify=verify,
        default=True,
    )
)
