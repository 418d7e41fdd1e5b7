"""Emulator of the Microsoft identity platform (v2.0 token/authorize) and Microsoft Graph v1.0.

One WSGI app serves both, so the local stack points `MS_LOGIN_BASE_URL=<url>` and
`GRAPH_BASE_URL=<url>/v1.0` at the same server. It follows /work/shared/PROTOCOLS.md, including
the unpleasant parts real clients trip over: a refresh returns a new refresh token only when that
request's `scope` asks for `offline_access`; every refresh token dies `REFRESH_TOKEN_LIFETIME` (90
days) of emulator time after it was issued, however often it was used, so a client that stops
rotating loses the account; rotation does not revoke the redeemed token (two refreshes racing with
one token both succeed); the granted `scope` is not an echo of the request and never lists
`offline_access`; tokens are as large as real ones (access ~2.3 KB, refresh ~1.6 KB) and their strings
carry `!*$+/=`; calendar ids are long
base64-like strings ending in `=`, nextLinks are absolute, subscriptions are only created after a
real validation handshake against the notification URL, and errors have the exact AADSTS / Graph
shapes. What official SDKs send works too: MSAL reads `/{tenant}/v2.0/.well-known/openid-configuration`
and `/{tenant}/discovery/v2.0/keys` (the public URLs follow `X-Forwarded-Proto`, as behind TLS), a token
request asking for `openid` gets an RS256 `id_token` and one with `client_info=1` a `client_info`, and
Graph SDKs' `delta()` / `microsoft.graph.delta` are the same delta function. Tests and the local
stack drive it through `/_control` (HTTP) or the Python methods.

Events: single events, series masters (Graph patternedRecurrence, expanded with dateutil in the
series' zone, so 09:00 local stays 09:00 across DST) and occurrence overrides (exceptions,
cancellations). `GET /me[/calendars/{id}]/calendarView/delta` fixes its window on the first call,
keeps server-side sync states behind opaque tokens (410 syncStateNotFound once gone), never lists
masters, and gives occurrences/exceptions only id/seriesMasterId/type/start/end, so clients must
fetch `GET /me/events/{id}`. Times come back in UTC unless `Prefer: outlook.timezone` asks otherwise;
zones are Windows names (`windows_zones`).

Change notifications: every control change to events POSTs Graph-shaped notifications
(`{"value": [{subscriptionId, subscriptionExpirationDateTime, changeType, resource:
"Users/{oid}/Events/{id}", resourceData, clientState, tenantId}]}`) to each live subscription covering
the calendar (`/me/events` = the default calendar only), on background threads, never under the lock.
Knobs (NOTIFICATION_DEFAULTS) add a delay, duplicates and a batching window; an answer later than
3 s or not 2xx is a failed attempt, retried with backoff, and a subscription whose endpoint keeps
not answering (timeouts, refused connections; an error answer in time is only retried, as Graph
does) is removed with a `subscriptionRemoved` lifecycle notification. `/_control/notifications`
logs every attempt; `flush` waits for deliveries instead of sleeping; `pause`/`resume` hold them.
Lifecycle notifications (reauthorizationRequired, subscriptionRemoved, missed) are sent on demand.

Never import the production package (`calbot`) from here, and never the other way round.

The package follows moto's shape: `models` (state records), `events` (event values and recurrence),
`backend` (state + the Python control API), `notifications` (Graph's notification rules on the
shared delivery engine), `identity` and `responses` (the wire protocols), `control` (the Graph-only
/_control routes); what both emulators share is local/emulators/core.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from local.emulators.core.delivery import LOOPBACK_HOSTS
from local.emulators.core.errors import EmulatorError
from local.emulators.core.helpers import UNSET
from local.emulators.graph.control import GraphControl
from local.emulators.graph.events import _zone
from local.emulators.graph.models import (
    DEFAULT_SCOPES,
    GRAPH_JSON,
    TENANT_ID,
    _new_access_token,
    _new_msa_access_token,
    _new_refresh_token,
)
from local.emulators.graph.notifications import NOTIFICATION_DEFAULTS


class GraphEmulator(GraphControl):
    """Microsoft identity platform + Graph v1.0 emulator; a WSGI app (`wsgi_app`, or the instance)."""

    def __init__(
        self,
        *,
        page_size: int = 10,
        subscription_max_minutes: int = 10080,
        validation_timeout: float = 10.0,
        default_response_timezone: str | None = None,
        delta_page_size: int = 10,
        delta_token_max_age_seconds: float | None = None,
        notification_delay_seconds: float = 0.0,
        notification_duplicates: int = 1,
        notification_batch_window_seconds: float = 0.0,
        notification_timeout_seconds: float = 3.0,
        notification_retry_backoff: Sequence[float] = (1.0, 2.0, 4.0),
        notification_max_consecutive_failures: int = 10,
        notification_reauthorization_grace_seconds: float | None = 600.0,
    ) -> None:
        """`default_response_timezone`: the zone of event times when a request has no
        `Prefer: outlook.timezone` header: None = UTC (what Graph does), "original" = each event's own
        zone, or a Windows / IANA name. `delta_page_size`: calendarView delta page size without
        `Prefer: odata.maxpagesize`. `delta_token_max_age_seconds`: skip/delta tokens older than this
        (emulator clock) answer 410 syncStateNotFound; None = never by age.

        `notification_*`: change-notification delivery knobs (see NOTIFICATION_DEFAULTS); they can be
        changed at runtime with `configure_notifications`, and `reset()` restores these values.
        """
        if default_response_timezone not in (None, "original"):
            _zone(default_response_timezone)  # EmulatorError (a ValueError) if unknown
        if delta_page_size < 1:
            raise EmulatorError("delta_page_size must be at least 1")
        self.default_response_timezone = default_response_timezone
        self.delta_page_size = delta_page_size
        self.delta_token_max_age = (
            timedelta(seconds=delta_token_max_age_seconds)
            if delta_token_max_age_seconds is not None
            else None
        )
        self.page_size = page_size
        self.subscription_max_minutes = subscription_max_minutes
        self.validation_timeout = validation_timeout
        self._init_emulator(
            {
                "notification_delay_seconds": notification_delay_seconds,
                "notification_duplicates": notification_duplicates,
                "notification_batch_window_seconds": notification_batch_window_seconds,
                "notification_timeout_seconds": notification_timeout_seconds,
                "notification_retry_backoff": notification_retry_backoff,
                "notification_max_consecutive_failures": notification_max_consecutive_failures,
                "notification_reauthorization_grace_seconds": notification_reauthorization_grace_seconds,
            }
        )
        self.reset()


__all__ = [
    "DEFAULT_SCOPES",
    "GRAPH_JSON",
    "LOOPBACK_HOSTS",
    "NOTIFICATION_DEFAULTS",
    "TENANT_ID",
    "UNSET",
    "EmulatorError",
    "GraphEmulator",
    "_new_access_token",
    "_new_msa_access_token",
    "_new_refresh_token",
]
