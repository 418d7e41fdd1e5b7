"""Emulator of Google OAuth 2.0 (token + authorize + userinfo) and the Google Calendar API v3.

One WSGI app serves every path, so the local stack points `GOOGLE_OAUTH_BASE_URL=<url>` (token
endpoint `<url>/token`, consent page `<url>/o/oauth2/v2/auth`), `GOOGLE_USERINFO_URL=<url>/v1/userinfo`
and `GOOGLE_CALENDAR_BASE_URL=<url>/calendar/v3` at the same server. It follows
/work/shared/PROTOCOLS.md, including the unpleasant parts: refresh tokens never rotate (the token
answer has no `refresh_token`), a code exchange only returns one for `access_type=offline` on a first
consent (or with `prompt=consent`), apps in "testing" status get refresh tokens that die after 7 days,
token errors are the bare `{"error", "error_description"}` of oauth2.googleapis.com (401 for
`invalid_client`), Calendar errors are `{"error": {"errors": [{domain, reason, message, ...}], "code",
"message"}}`, calendar scopes are enforced (403 insufficientPermissions), ids carry `@`, `_` and
base32hex, and event times come back as RFC 3339 with the event's own offset.

Events: single events, recurring masters with RFC 5545 `recurrence` lines (RRULE / EXDATE / RDATE,
expanded with dateutil in the event's own zone, so 09:00 Berlin stays 09:00 across DST) and instance
exceptions (moved, edited or cancelled instances, keyed by their instance id
`<masterId>_<YYYYMMDDTHHMMSSZ>` or `<masterId>_<YYYYMMDD>` for all-day series). Deleting or cancelling
anything leaves a `status: "cancelled"` tombstone, as Google does.

Sync: the list's last page carries `nextSyncToken`; a later call with `syncToken` answers only what
changed since (cancelled items as bare `{kind, etag, id, status}` plus `recurringEventId` /
`originalStartTime` for instances), hands back the same token when nothing changed, rejects
timeMin/timeMax/orderBy/updatedMin/showDeleted=false (400 syncTokenWithRequestRestrictions) and
answers 410 fullSyncRequired (location syncToken) once the token is forgotten (`expire_sync_tokens`,
or older than `sync_token_max_age_seconds`). Expansion bounds, the choice this emulator makes:
without `timeMax`, recurring series expand up to now + `expansion_horizon_days` (default 365) of
emulator time; on an incremental call with `singleEvents=true`, a changed (or deleted) series lists
its instances from the first sync's `timeMin` (else the series start) up to the same horizon, so a
client must not expect cancelled instances beyond it (Google also bounds this, to months).

Push: `POST .../events/watch` creates a web_hook channel (default ttl 604800 s, silently capped at
`channel_max_ttl_seconds`, default 30 days) and sends a `sync` message at once; every later change to
that calendar sends `exists` (changes within `notification_coalesce_seconds` share one message), a
deleted calendar sends `not_exists`. Messages are body-less POSTs with the X-Goog-* headers, sent
from background threads (never under the lock), retried with backoff on 5xx / no answer like Google,
logged for tests (`notifications()`), and held / released / awaited with pause / resume / flush.

Faults, the request log, the clock (`advance_clock`: expires access tokens, auth codes, channels) and
the control API under `/_control` are the ones both emulators share (local/emulators/core).
Never import the production package (`calbot`) from here, and never the other way round.

The package follows moto's shape: `models` (state records), `errors` (Google's error shapes),
`events` (event values and recurrence), `backend` (state + the Python control API), `notifications`
(Google's channel messages on the shared delivery engine), `identity` and `responses` (the wire
protocols), `control` (the Google-only /_control routes); what both emulators share is
local/emulators/core.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from local.emulators.core.errors import EmulatorError
from local.emulators.google.control import GoogleControl
from local.emulators.google.models import (
    CHANNEL_MAX_TTL_SECONDS,
    DEFAULT_SCOPES,
    SCOPE_CALENDAR_READONLY,
    SCOPE_EMAIL,
    SCOPE_EVENTS_READONLY,
    SCOPE_PROFILE,
)
from local.emulators.google.notifications import NOTIFICATION_DEFAULTS


class GoogleEmulator(GoogleControl):
    """Google OAuth 2.0 + Calendar API v3 emulator; a WSGI app (`wsgi_app`, or the instance)."""

    def __init__(
        self,
        *,
        expansion_horizon_days: int = 365,
        channel_max_ttl_seconds: int = CHANNEL_MAX_TTL_SECONDS,
        sync_token_max_age_seconds: float | None = None,
        notification_delay_seconds: float = 0.0,
        notification_coalesce_seconds: float = 0.1,
        notification_timeout_seconds: float = 3.0,
        notification_retry_backoff: Sequence[float] = (1.0, 2.0, 4.0),
    ) -> None:
        self.expansion_horizon = timedelta(days=expansion_horizon_days)
        self.channel_max_ttl = channel_max_ttl_seconds
        self.sync_token_max_age = (
            timedelta(seconds=sync_token_max_age_seconds) if sync_token_max_age_seconds is not None else None
        )
        self._init_emulator(
            {
                "notification_delay_seconds": notification_delay_seconds,
                "notification_coalesce_seconds": notification_coalesce_seconds,
                "notification_timeout_seconds": notification_timeout_seconds,
                "notification_retry_backoff": notification_retry_backoff,
            }
        )
        self.reset()


__all__ = [
    "CHANNEL_MAX_TTL_SECONDS",
    "DEFAULT_SCOPES",
    "NOTIFICATION_DEFAULTS",
    "SCOPE_CALENDAR_READONLY",
    "SCOPE_EMAIL",
    "SCOPE_EVENTS_READONLY",
    "SCOPE_PROFILE",
    "EmulatorError",
    "GoogleEmulator",
]
