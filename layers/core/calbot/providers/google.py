"""Google OAuth 2.0 + Google Calendar API v3.

Differences from Outlook that shape this module (PROTOCOLS.md, Google):
- refresh tokens do not rotate, so `refresh` never returns a new one;
- events are listed with `singleEvents=true`, so series come expanded into instances that carry their
  own details; the master is fetched once per series per sync only for its recurrence lines;
- the cursor is a `nextSyncToken`; a 410 means a full sync (SyncTokenExpired);
- change notifications are watch channels: created per calendar with a per-channel token, cannot be
  extended (a renewal is a new channel, then the old one is stopped), stopped by (id, resourceId);
- throttling is 403 rateLimitExceeded/userRateLimitExceeded as well as 429: both are retried with
  exponential backoff.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests

from calbot import links, recurrence, timezones
from calbot.config import Settings, get_settings
from calbot.models import CalendarInfo, Credentials, Handle
from calbot.providers.base import (
    AccountProfile,
    Attendance,
    CalendarChanges,
    CalendarProvider,
    NormalizedEvent,
    ProviderAuthError,
    ProviderRequestError,
    ProviderSubscription,
    ProviderUnavailable,
    SyncTokenExpired,
    TokenSet,
    cap_raw,
    domains_of,
)
from calbot.providers.http import RETRY_STATUSES, ProviderHttp, for_settings, refresh_grant
from calbot.providers.http import json_object as _json
from calbot.timeutil import iso_z, now

SCOPES = " ".join(
    f"https://www.googleapis.com/auth/{s}"
    for s in ("calendar.readonly", "calendar.events.readonly", "userinfo.email", "userinfo.profile")
)
PAGE_SIZE = 500  # Google allows up to 2,500; 500 keeps a page well under a Lambda's response budget
# Past this many attendees Google returns only the user's own row (attendeesOmitted: true): a meeting
# of thousands costs neither transfer nor storage.
MAX_ATTENDEES = 50
RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
_ERROR_TEXT_LIMIT = 200
_GONE: dict[str, Any] = {}  # a series master Google answered 410 Gone for (compared by identity)


def _reasons(resp: requests.Response) -> set[str]:
    error = _json(resp).get("error")
    if not isinstance(error, dict):
        return set()
    errors = error.get("errors")
    items = errors if isinstance(errors, list) else []
    return {str(i.get("reason")) for i in items if isinstance(i, dict) and i.get("reason")}


def _retryable(resp: requests.Response) -> bool:
    if resp.status_code in RETRY_STATUSES:
        return True
    return resp.status_code == 403 and bool(_reasons(resp) & RATE_LIMIT_REASONS)


class GoogleProvider(CalendarProvider):
    name = "google"
    display_name = "Google"
    scopes = SCOPES

    def __init__(self, settings: Settings | None = None, http: ProviderHttp | None = None) -> None:
        self.settings = settings or get_settings()
        self.http = http or for_settings(self.settings, max_attempts=5, retryable=_retryable)
        self.api = self.settings.google_calendar_base_url.rstrip("/")

    # ---------------------------------------------------------------------------------------------
    # identity

    def refresh(self, creds: Credentials) -> TokenSet:
        url = f"{self.settings.google_oauth_base_url.rstrip('/')}/token"
        resp, body, tokens = refresh_grant(self.http, url, creds)
        if tokens is not None:
            # Google refresh tokens do not rotate; an answer without `scope` keeps the granted ones.
            return replace(tokens, refresh_token=None, scope=tokens.scope or str(creds.scopes))
        error = str(body.get("error") or "")[:_ERROR_TEXT_LIMIT]
        detail = str(body.get("error_description") or error)[:_ERROR_TEXT_LIMIT]
        if error == "invalid_client":
            raise ProviderAuthError(
                f"Google rejected the client id or client secret ({detail}).", kind="invalid_client"
            )
        if error == "invalid_grant":
            raise ProviderAuthError(
                f"Google rejected the refresh token: revoked, expired or the password changed ({detail}).",
                kind="invalid_grant",
            )
        # Anything else is transient whatever its status: only a revoked grant or a bad client marks
        # the account needs_reauth.
        raise ProviderUnavailable(
            f"Google's token endpoint answered {resp.status_code} ({error or 'no error code'}).",
            status=resp.status_code,
            error=error or None,
        )

    def profile(self, access_token: str) -> AccountProfile:
        body = _json(self._call("GET", self.settings.google_userinfo_url, access_token, own_host=False))
        email = body.get("email")
        if not email:
            raise ProviderRequestError(
                "Google returned no email for this account (the userinfo.email scope is missing).",
                status=400,
                code="missing_email",
            )
        return AccountProfile(
            account_id=str(email),
            email=str(email),
            name=body.get("name"),
            provider_user_id=str(body.get("sub", "")),
        )

    # ---------------------------------------------------------------------------------------------
    # calendar API

    def _call(
        self, method: str, url: str, token: str, *, own_host: bool = True, **kwargs: Any
    ) -> requests.Response:
        """A Calendar API call (`own_host=False`: the userinfo endpoint) mapped to the provider errors."""
        host = self.api if own_host else self.settings.google_userinfo_url.rsplit("/", 1)[0]
        refusal = "Refusing to send a token outside the Google Calendar API."
        resp = self.http.bearer(method, url, token, host=host, refusal=refusal, **kwargs)
        if resp.status_code < 400:
            return resp
        reasons = _reasons(resp)
        error = _json(resp).get("error")
        message = str(error.get("message") or "") if isinstance(error, dict) else ""
        reason = sorted(reasons)[0] if reasons else None
        if resp.status_code == 410:
            raise SyncTokenExpired(f"Google says a full sync is required ({reason or 'gone'}).")
        if resp.status_code == 401:
            raise ProviderAuthError("Google refused the access token.", kind="unauthorized", code=reason)
        if resp.status_code == 429 or resp.status_code >= 500 or reasons & RATE_LIMIT_REASONS:
            raise ProviderUnavailable(
                f"Google answered {resp.status_code} ({reason or 'no reason'}).", status=resp.status_code
            )
        raise ProviderRequestError(
            f"Google answered {resp.status_code}: {reason or ''} {message[:_ERROR_TEXT_LIMIT]}".strip(),
            status=resp.status_code,
            code=reason,
        )

    def list_calendars(self, access_token: str) -> list[CalendarInfo]:
        calendars: list[CalendarInfo] = []
        params: dict[str, str] = {"maxResults": "250"}
        while True:
            body = _json(self._call("GET", f"{self.api}/users/me/calendarList", access_token, params=params))
            for cal in body.get("items", []):
                if not isinstance(cal, dict) or not cal.get("id") or cal.get("deleted"):
                    continue
                role = str(cal.get("accessRole") or "")
                calendars.append(
                    CalendarInfo(
                        id=str(cal["id"]),
                        name=str(cal.get("summaryOverride") or cal.get("summary") or ""),
                        is_primary=bool(cal.get("primary")),
                        can_edit=role in ("owner", "writer"),
                        # Google names no owner; a user's own calendars are owned by them (id = email)
                        owner_email=str(cal["id"]) if cal.get("primary") else None,
                        color=cal.get("backgroundColor"),
                    )
                )
            token = body.get("nextPageToken")
            if not token:
                return calendars
            params = {"maxResults": "250", "pageToken": str(token)}

    def sync_calendar(
        self, access_token: str, calendar_id: str, *, cursor: str | None, window: tuple[datetime, datetime]
    ) -> CalendarChanges:
        """events.list with singleEvents=true; the last page's nextSyncToken is the cursor.

        A sync-token call must not carry timeMin/timeMax/orderBy, so an incremental round returns
        changes anywhere in time: what falls outside the stored window is reported as removed (as Graph's
        calendarView delta does), so an event moved far away stops being a meeting we hold.
        """
        url = f"{self.api}/calendars/{quote(calendar_id, safe='')}/events"
        base: dict[str, str] = {
            "singleEvents": "true",
            "maxResults": str(PAGE_SIZE),
            "maxAttendees": str(MAX_ATTENDEES),
        }
        if cursor:
            base["syncToken"] = cursor
        else:
            base.update({"timeMin": iso_z(window[0]), "timeMax": iso_z(window[1])})
        changes = CalendarChanges(upserts=[], removed=[], cursor="", full=cursor is None)
        masters: dict[str, dict[str, Any] | None] = {}
        params = dict(base)
        while True:
            body = _json(self._call("GET", url, access_token, params=params))
            changes.pages += 1
            zone = body.get("timeZone")
            for item in body.get("items", []):
                if isinstance(item, dict) and item.get("id"):
                    self._collect(access_token, url, calendar_id, item, masters, changes, window, zone)
            if body.get("nextPageToken"):
                params = {**base, "pageToken": str(body["nextPageToken"])}
                continue
            if not body.get("nextSyncToken"):
                raise ProviderRequestError(
                    "Google ended an events listing without a nextSyncToken.", status=502
                )
            changes.cursor = str(body["nextSyncToken"])
            return changes

    def _master(
        self, token: str, events_url: str, master_id: str, changes: CalendarChanges
    ) -> dict[str, Any] | None:
        """The series master (for its recurrence lines), or None when it cannot be read (404).

        A 410 here is about this one resource (the master was deleted), not about our sync token: it
        is answered here, by _GONE, and never raised as SyncTokenExpired, which would throw the whole
        calendar into a full resync that meets the same 410 again, every sync."""
        changes.detail_fetches += 1
        try:
            return _json(
                self._call(
                    "GET",
                    f"{events_url}/{quote(master_id, safe='')}",
                    token,
                    params={"maxAttendees": str(MAX_ATTENDEES)},
                )
            )
        except SyncTokenExpired:
            return _GONE
        except ProviderRequestError as err:
            if err.status == 404:  # not readable between the listing and this fetch: keep the instance
                return None
            raise

    def _collect(
        self,
        token: str,
        events_url: str,
        calendar_id: str,
        item: dict[str, Any],
        masters: dict[str, dict[str, Any] | None],
        changes: CalendarChanges,
        window: tuple[datetime, datetime],
        calendar_zone: str | None,
    ) -> None:
        # Cancelled items may be bare {id, status}: never expect more fields on them.
        if item.get("status") == "cancelled" or not item.get("start") or not item.get("end"):
            changes.removed.append(str(item["id"]))
            return
        master_id = item.get("recurringEventId")
        master = None
        if master_id:
            if master_id not in masters:
                masters[master_id] = self._master(token, events_url, str(master_id), changes)
                if masters[master_id] is _GONE:  # the series is deleted: so are all its instances
                    changes.removed.append(str(master_id))
            master = masters[master_id]
            if master is _GONE:
                changes.removed.append(str(item["id"]))
                return
        event = normalize_google_event(calendar_id, item, master=master, calendar_zone=calendar_zone)
        if not changes.full and not (window[0] <= event.start < window[1]):
            changes.removed.append(event.platform_id)
            return
        changes.upserts.append(event)

    # ---------------------------------------------------------------------------------------------
    # watch channels

    def create_subscription(
        self, access_token: str, *, calendar_id: str, notification_url: str, client_state: str
    ) -> ProviderSubscription:
        channel_id = str(uuid.uuid4())
        body = {
            "id": channel_id,
            "type": "web_hook",
            "address": notification_url,
            "token": client_state,  # echoed in X-Goog-Channel-Token on every notification
            "params": {"ttl": str(self.settings.google_channel_ttl_seconds)},
        }
        resp = _json(
            self._call(
                "POST",
                f"{self.api}/calendars/{quote(calendar_id, safe='')}/events/watch",
                access_token,
                json=body,
            )
        )
        return ProviderSubscription(
            id=str(resp.get("id") or channel_id),
            calendar_id=calendar_id,
            expires_at=_expiration(resp.get("expiration")),
            handle={"resource_id": str(resp["resourceId"])} if resp.get("resourceId") else {},
        )

    def get_subscription(self, access_token: str, known: ProviderSubscription) -> ProviderSubscription | None:
        """Google has no API to read a channel back: the stored channel, whose expiry the caller has
        checked, is the truth (a channel stopped behind our back simply stops notifying)."""
        return known

    def renew_subscription(self, access_token: str, subscription_id: str) -> ProviderSubscription | None:
        """Channels cannot be extended: None makes the caller create a new channel and stop this one."""
        return None

    def delete_subscription(self, access_token: str, subscription_id: str, *, handle: Handle) -> bool:
        resource_id = handle.get("resource_id")  # what watch answered: a channel is stopped by it
        if not resource_id:
            return False  # nothing to address it by; it expires on its own and the webhook drops it
        try:
            self._call(
                "POST",
                f"{self.api}/channels/stop",
                access_token,
                json={"id": subscription_id, "resourceId": resource_id},
            )
        except ProviderRequestError as err:
            if err.status == 404:
                return False
            raise
        return True


def _expiration(raw: Any) -> datetime:
    """`expiration` is milliseconds since the epoch, as a string."""
    try:
        return datetime.fromtimestamp(int(str(raw)) // 1000, tz=UTC)  # whole seconds, like every time we show
    except (TypeError, ValueError):
        return now() + timedelta(days=7)


# An attendee's responseStatus as we store it (needsAction: not answered yet).
GOOGLE_RESPONSES = {"accepted": "accepted", "tentative": "tentative", "declined": "declined"}


def google_attendance(item: dict[str, Any]) -> Attendance:
    """Organizer, the user's own response (the `self` row), and the invitees' count and domains: rooms
    (`resource`) and the organizer's own row are not counted. Past maxAttendees Google returns only the
    user's row (`attendeesOmitted`): the count is then known only to exceed MAX_ATTENDEES."""
    organizer = item.get("organizer")
    organizer = organizer if isinstance(organizer, dict) else {}
    rows = [a for a in item.get("attendees") or [] if isinstance(a, dict) and not a.get("resource")]
    own = next((a for a in rows if a.get("self")), None)
    is_organizer = organizer.get("self") is True or bool(own and own.get("organizer"))
    if is_organizer:
        answer = "organizer"
    else:
        answer = GOOGLE_RESPONSES.get(str((own or {}).get("responseStatus")), "none")
    people = [a for a in rows if not a.get("organizer")]
    count = len(people)
    if item.get("attendeesOmitted"):
        count = max(count, MAX_ATTENDEES + 1)
    address = organizer.get("email") if isinstance(organizer.get("email"), str) else None
    return Attendance(
        organizer_email=address,
        organizer_name=organizer.get("displayName") or None,
        response_status=answer,
        is_organizer=is_organizer,
        attendees_count=count,
        attendee_domains=domains_of([address, *(a.get("email") for a in rows)]),
    )


def normalize_google_event(
    calendar_id: str,
    item: dict[str, Any],
    *,
    master: dict[str, Any] | None = None,
    calendar_zone: str | None = None,
) -> NormalizedEvent:
    """One Google event (a single event or an expanded instance) as a provider-neutral event."""
    start, all_day = timezones.google_datetime_to_utc(item["start"])
    end, _ = timezones.google_datetime_to_utc(item["end"])
    master_id = item.get("recurringEventId")
    original = None
    event_type = "single"
    if master_id:
        original_raw = item.get("originalStartTime")
        original = (
            timezones.google_datetime_to_utc(original_raw)[0] if isinstance(original_raw, dict) else start
        )
        event_type = "exception" if original != start else "occurrence"
    rule = None
    lines = (master or {}).get("recurrence") if master_id else None
    if isinstance(lines, list) and master:
        try:
            rule = (
                recurrence.from_google(
                    [str(x) for x in lines],
                    start=master["start"],
                    end=master["end"],
                    calendar_tz=calendar_zone,
                ).rrule_text
                or None
            )
        except (ValueError, KeyError):
            rule = None
    link = links.from_google_event(item)
    zone = item["start"].get("timeZone") or calendar_zone
    return NormalizedEvent(
        platform_id=str(item["id"]),
        calendar_id=calendar_id,
        start=start,
        end=end,
        event_type=event_type,
        title=item.get("summary"),
        ical_uid=item.get("iCalUID"),
        is_all_day=all_day,
        timezone=timezones.iana_name(zone) if zone else None,
        **asdict(google_attendance(item)),
        location=item.get("location") or None,
        meeting_url=link.url if link else None,
        meeting_platform=link.platform if link else None,
        is_cancelled=False,
        series_platform_id=str(master_id) if master_id else None,
        original_start=original,
        recurrence_rule=rule,
        recurrence={"google": [str(x) for x in lines]} if isinstance(lines, list) else None,
        raw=cap_raw(item, body="description"),
    )
