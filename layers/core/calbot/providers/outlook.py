"""Microsoft identity platform + Microsoft Graph v1.0 (Outlook calendars)."""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests

from calbot import links
from calbot.config import Settings, get_settings
from calbot.models import CalendarInfo, Credentials, Handle
from calbot.providers.base import (
    AccountProfile,
    Attendance,
    CalendarChanges,
    CalendarProvider,
    NormalizedEvent,
    NotificationUrlRefused,
    ProviderAuthError,
    ProviderRequestError,
    ProviderSubscription,
    ProviderUnavailable,
    SyncTokenExpired,
    TokenSet,
    cap_raw,
    domains_of,
)
from calbot.providers.http import ProviderHttp, for_settings, refresh_grant
from calbot.providers.http import json_object as _json
from calbot.timeutil import iso_z, now, parse_iso

# What we request, on connect and on every refresh: `offline_access` is what makes Microsoft rotate the
# refresh token, and the token response never echoes it, so the next request's scope is never built
# from a response (a token that stops rotating dies 90 days after issue).
SCOPES = "offline_access User.Read Calendars.Read"
# AADSTS codes that say "try again" whatever `error` they come with (Microsoft's error code reference:
# 90006 ExternalServerRetryableError, 90024 RequestBudgetExceededError, 90033 MsodsServiceUnavailable,
# 90090 GraphRetryableError).
TRANSIENT_AADSTS = {"AADSTS90006", "AADSTS90024", "AADSTS90033", "AADSTS90090"}
# The only token-endpoint answers that mean the credentials are dead (PROTOCOLS).
AUTH_FAILURES = {"invalid_grant", "invalid_client"}
SYNC_RESET_CODES = {"syncStateNotFound", "resyncRequired", "syncStateInvalid"}
DELTA_PAGE_SIZE = 100
# What we read of a master or exception (GET /me/events/{id} takes $select; calendarView/delta does
# not: "You cannot use $select to get only a subset of those properties"). The attendees are read for
# the auto-schedule rules (their count and domains are kept, never the list: normalize_graph_event).
EVENT_SELECT = ",".join(
    (
        "id,iCalUId,subject,body,bodyPreview,start,end,isAllDay,isCancelled,location,locations",
        "organizer,onlineMeeting,onlineMeetingUrl,isOnlineMeeting,onlineMeetingProvider,type",
        "seriesMasterId,recurrence,originalStart,originalStartTimeZone,lastModifiedDateTime",
        "attendees,isOrganizer,responseStatus",
    )
)
# responseStatus.response (the user's own answer on this copy) as we store it; notResponded is the
# attendee's view of none (Graph's responseStatus resource).
GRAPH_RESPONSES = {
    "organizer": "organizer",
    "accepted": "accepted",
    "tentativelyAccepted": "tentative",
    "declined": "declined",
    "none": "none",
    "notResponded": "none",
}
_AADSTS = re.compile(r"(AADSTS\d+):\s*([^\r\n.]*)")


def _safe_description(body: dict[str, Any]) -> tuple[str | None, str]:
    """The AADSTS code and its first sentence: enough to act on, nothing secret, no trace ids."""
    match = _AADSTS.search(str(body.get("error_description") or ""))
    if match:
        return match.group(1), f"{match.group(1)}: {match.group(2).strip()}"
    return None, str(body.get("error") or "unknown error")


class OutlookProvider(CalendarProvider):
    name = "outlook"
    display_name = "Microsoft"
    scopes = SCOPES

    def __init__(self, settings: Settings | None = None, http: ProviderHttp | None = None) -> None:
        self.settings = settings or get_settings()
        self.http = http or for_settings(self.settings)
        self.graph = self.settings.graph_base_url.rstrip("/")

    # ---------------------------------------------------------------------------------------------
    # identity

    def refresh(self, creds: Credentials) -> TokenSet:
        url = (
            f"{self.settings.ms_login_base_url.rstrip('/')}/{quote(creds.tenant, safe='')}/oauth2/v2.0/token"
        )
        # Always the scopes we requested, never the granted ones (`creds.scopes` of connections made
        # before this fix hold a response's scope, without offline_access).
        resp, body, tokens = refresh_grant(self.http, url, creds, scope=SCOPES)
        if tokens is not None:
            return tokens
        error = str(body.get("error") or "")
        code, detail = _safe_description(body)
        if error in AUTH_FAILURES and code not in TRANSIENT_AADSTS:
            if error == "invalid_client":
                raise ProviderAuthError(
                    f"Microsoft rejected the client id or client secret ({detail}).",
                    kind="invalid_client",
                    code=code,
                )
            raise ProviderAuthError(
                f"Microsoft rejected the refresh token ({detail}).", kind="invalid_grant", code=code
            )
        # Anything else (temporarily_unavailable, server_error, AADSTS90033, 429, 5xx, ...) is transient
        # whatever its status: only a revoked grant or a bad client marks the account needs_reauth.
        raise ProviderUnavailable(
            f"Microsoft's token endpoint answered {resp.status_code} ({error or 'no error code'}"
            f"{', ' + code if code else ''}).",
            status=resp.status_code,
            error=error or None,
        )

    # ---------------------------------------------------------------------------------------------
    # graph

    def _call(self, method: str, url: str, token: str, **kwargs: Any) -> requests.Response:
        """A Graph call mapped to the provider errors; nextLinks are followed only on our Graph host."""
        refusal = "Refusing to follow a link outside Microsoft Graph."
        resp = self.http.bearer(method, url, token, host=self.graph, refusal=refusal, **kwargs)
        if resp.status_code < 400:
            return resp
        err = _json(resp).get("error") or {}
        code = err.get("code") if isinstance(err, dict) else None
        message = err.get("message") if isinstance(err, dict) else None
        if resp.status_code == 410 or code in SYNC_RESET_CODES:
            raise SyncTokenExpired(
                f"Microsoft Graph says the sync state is gone ({code or resp.status_code})."
            )
        if resp.status_code == 401:
            raise ProviderAuthError(
                "Microsoft Graph refused the access token.", kind="unauthorized", code=code
            )
        if resp.status_code == 429 or resp.status_code >= 500:
            raise ProviderUnavailable(
                f"Microsoft Graph answered {resp.status_code} ({code or 'no code'}).", status=resp.status_code
            )
        raise ProviderRequestError(
            f"Microsoft Graph answered {resp.status_code}: {code or ''} {message or ''}".strip(),
            status=resp.status_code,
            code=code,
        )

    def profile(self, access_token: str) -> AccountProfile:
        body = _json(
            self._call(
                "GET",
                f"{self.graph}/me",
                access_token,
                params={"$select": "id,displayName,mail,userPrincipalName"},
            )
        )
        # Personal accounts often have mail: null; userPrincipalName is then the address.
        account = body.get("mail") or body.get("userPrincipalName")
        if not account:
            raise ProviderRequestError("Microsoft Graph returned no email for this account.", status=502)
        return AccountProfile(
            account_id=account,
            email=account,
            name=body.get("displayName"),
            provider_user_id=str(body.get("id", "")),
        )

    # ---------------------------------------------------------------------------------------------
    # events

    def sync_calendar(
        self, access_token: str, calendar_id: str, *, cursor: str | None, window: tuple[datetime, datetime]
    ) -> CalendarChanges:
        """calendarView delta: page with nextLink until a deltaLink, which is the cursor to keep.

        Occurrence and exception items carry only id/type/start/end, so each series master is fetched
        once per sync (not once per occurrence) and each exception once for its own details.
        """
        if cursor:
            url: str | None = cursor
            params: dict[str, str] | None = None
        else:
            url = f"{self.graph}/me/calendars/{quote(calendar_id, safe='')}/calendarView/delta"
            params = {"startDateTime": iso_z(window[0]), "endDateTime": iso_z(window[1])}
        headers = {"Prefer": f"odata.maxpagesize={DELTA_PAGE_SIZE}"}
        changes = CalendarChanges(upserts=[], removed=[], cursor="", full=cursor is None)
        masters: dict[str, dict[str, Any] | None] = {}
        while url:
            body = _json(self._call("GET", url, access_token, params=params, headers=headers))
            changes.pages += 1
            params = None
            for item in body.get("value", []):
                self._collect(access_token, calendar_id, item, masters, changes)
            if body.get("@odata.deltaLink"):
                changes.cursor = body["@odata.deltaLink"]
                break
            url = body.get("@odata.nextLink")
        if not changes.cursor:
            raise ProviderRequestError("Microsoft Graph ended a delta round without a deltaLink.", status=502)
        return changes

    def _event(self, token: str, event_id: str, changes: CalendarChanges) -> dict[str, Any] | None:
        changes.detail_fetches += 1
        try:
            return _json(
                self._call(
                    "GET",
                    f"{self.graph}/me/events/{quote(event_id, safe='')}",
                    token,
                    params={"$select": EVENT_SELECT},
                )
            )
        except ProviderRequestError as err:
            if err.status == 404:  # deleted between the delta page and this fetch
                return None
            raise

    def _collect(
        self,
        token: str,
        calendar_id: str,
        item: dict[str, Any],
        masters: dict[str, dict[str, Any] | None],
        changes: CalendarChanges,
    ) -> None:
        if "@removed" in item:
            changes.removed.append(item["id"])
            return
        kind = item.get("type", "singleInstance")
        if kind == "seriesMaster":
            return  # calendarView delta reports occurrences; masters are fetched for them
        if kind in ("occurrence", "exception"):
            master_id = item.get("seriesMasterId")
            if master_id and master_id not in masters:
                masters[master_id] = self._event(token, master_id, changes)
            master = masters.get(master_id or "")
            detail = self._event(token, item["id"], changes) if kind == "exception" else None
            if master is None and detail is None:
                changes.removed.append(item["id"])
                return
            changes.upserts.append(normalize_graph_event(calendar_id, item, master=master, detail=detail))
            return
        changes.upserts.append(normalize_graph_event(calendar_id, item))

    def list_calendars(self, access_token: str) -> list[CalendarInfo]:
        calendars: list[CalendarInfo] = []
        url: str | None = f"{self.graph}/me/calendars"
        params: dict[str, str] | None = {"$top": "50"}
        while url:
            body = _json(self._call("GET", url, access_token, params=params))
            for cal in body.get("value", []):
                owner = cal.get("owner") or {}
                calendars.append(
                    CalendarInfo(
                        id=cal["id"],
                        name=cal.get("name") or "",
                        is_primary=bool(cal.get("isDefaultCalendar")),
                        can_edit=bool(cal.get("canEdit")),
                        owner_email=owner.get("address"),
                        color=cal.get("hexColor") or cal.get("color"),
                    )
                )
            url, params = body.get("@odata.nextLink"), None
        return calendars

    def _subscription(self, body: dict[str, Any], calendar_id: str | None = None) -> ProviderSubscription:
        resource = str(body.get("resource", ""))
        match = re.search(r"calendars/([^/]+)/events", resource)
        return ProviderSubscription(
            id=body["id"],
            calendar_id=calendar_id or (match.group(1) if match else ""),
            expires_at=parse_iso(body["expirationDateTime"]),
        )

    def _expiry(self) -> str:
        return iso_z(
            now().replace(microsecond=0) + timedelta(minutes=self.settings.subscription_lifetime_minutes)
        )

    def create_subscription(
        self, access_token: str, *, calendar_id: str, notification_url: str, client_state: str
    ) -> ProviderSubscription:
        body = {
            "changeType": "created,updated,deleted",
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": notification_url,
            "resource": f"/me/calendars/{calendar_id}/events",
            "expirationDateTime": self._expiry(),
            "clientState": client_state,
        }
        try:
            resp = self._call("POST", f"{self.graph}/subscriptions", access_token, json=body)
        except ProviderRequestError as err:
            if err.code == "ValidationError":  # Graph's validation request to the URL failed
                raise NotificationUrlRefused(err.message, status=err.status, code=err.code) from None
            raise
        return self._subscription(_json(resp), calendar_id)

    def get_subscription(self, access_token: str, known: ProviderSubscription) -> ProviderSubscription | None:
        try:
            resp = self._call("GET", f"{self.graph}/subscriptions/{quote(known.id, safe='')}", access_token)
        except ProviderRequestError as err:
            if err.status == 404:
                return None
            raise
        return self._subscription(_json(resp))

    def renew_subscription(self, access_token: str, subscription_id: str) -> ProviderSubscription | None:
        try:
            resp = self._call(
                "PATCH",
                f"{self.graph}/subscriptions/{quote(subscription_id, safe='')}",
                access_token,
                json={"expirationDateTime": self._expiry()},
            )
        except ProviderRequestError as err:
            if err.status == 404:
                return None
            raise
        return self._subscription(_json(resp))

    def delete_subscription(self, access_token: str, subscription_id: str, *, handle: Handle) -> bool:
        try:
            self._call(
                "DELETE", f"{self.graph}/subscriptions/{quote(subscription_id, safe='')}", access_token
            )
        except ProviderRequestError as err:
            if err.status == 404:
                return False
            raise
        return True


def graph_attendance(payloads: list[dict[str, Any]]) -> Attendance:
    """Organizer, the user's own response, and the invitees' count and domains (rooms left out), each
    read from the first of `payloads` (most specific first) that carries it."""

    def first(key: str) -> Any:
        return next((p[key] for p in payloads if p.get(key) is not None), None)

    organizer = (first("organizer") or {}).get("emailAddress") or {}
    address = organizer.get("address") if isinstance(organizer.get("address"), str) else None
    is_organizer = first("isOrganizer") is True
    answer = (first("responseStatus") or {}).get("response")
    people = [a for a in first("attendees") or [] if isinstance(a, dict) and a.get("type") != "resource"]
    emails = [(a.get("emailAddress") or {}).get("address") for a in people]
    return Attendance(
        organizer_email=address,
        organizer_name=organizer.get("name") or None,
        response_status="organizer" if is_organizer else GRAPH_RESPONSES.get(str(answer), "none"),
        is_organizer=is_organizer,
        attendees_count=len(people),
        attendee_domains=domains_of([address, *emails]),
    )


def normalize_graph_event(
    calendar_id: str,
    item: dict[str, Any],
    *,
    master: dict[str, Any] | None = None,
    detail: dict[str, Any] | None = None,
) -> NormalizedEvent:
    """A delta item (plus its series master / exception details) as a provider-neutral event.

    Times come from the item itself (an occurrence's own start/end), everything else from the most
    specific full payload: the exception's own details, else the master, else the item.
    """
    from calbot import recurrence, timezones

    full = detail or master or item
    start = timezones.graph_datetime_to_utc(item["start"])
    end = timezones.graph_datetime_to_utc(item["end"])
    kind = item.get("type", "singleInstance")
    event_type = {"occurrence": "occurrence", "exception": "exception"}.get(kind, "single")
    rule = None
    pattern = (master or {}).get("recurrence") if event_type != "single" else None
    if pattern and master:
        try:
            rule = recurrence.from_graph(
                pattern,
                start=master["start"],
                end=master["end"],
                original_start_tz=master.get("originalStartTimeZone"),
                is_all_day=bool(master.get("isAllDay")),
            ).rrule_text
        except (ValueError, KeyError):
            rule = None
    original = full.get("originalStart") if event_type == "exception" else None
    link = links.from_graph_event(full)
    location = (full.get("location") or {}).get("displayName") or None
    # An occurrence's own answer (declining one occurrence) is on the item; the series' on the master.
    attendance = graph_attendance([p for p in (detail, item, master) if p])
    return NormalizedEvent(
        platform_id=item["id"],
        calendar_id=calendar_id,
        start=start,
        end=end,
        event_type=event_type,
        title=full.get("subject"),
        ical_uid=full.get("iCalUId"),
        is_all_day=bool(full.get("isAllDay")),
        timezone=timezones.iana_name(full.get("originalStartTimeZone") or item["start"].get("timeZone")),
        **asdict(attendance),
        location=location,
        meeting_url=link.url if link else None,
        meeting_platform=link.platform if link else None,
        is_cancelled=bool(item.get("isCancelled") or (detail or {}).get("isCancelled")),
        series_platform_id=item.get("seriesMasterId"),
        original_start=parse_iso(original)
        if isinstance(original, str)
        else (start if event_type != "single" else None),
        recurrence_rule=rule,
        recurrence=pattern,
        raw=cap_raw(item if event_type != "single" else full, body="body"),
    )
