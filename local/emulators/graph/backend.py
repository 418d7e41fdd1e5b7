"""The Graph emulator's backend: its state and the Python control API that tests and the local stack
drive it with (the /_control routes call these). Call the `_` helpers with the lock held."""

from __future__ import annotations

import dataclasses
import json
import secrets
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from dateutil import rrule as _rr

from local.emulators.core.backend import AuthCode
from local.emulators.core.clock import iso
from local.emulators.core.errors import EmulatorError
from local.emulators.core.helpers import UNSET, control_time, fields_of, localize
from local.emulators.graph.events import (
    _EVENT_ID_RE,
    _attendees,
    _body_document,
    _body_preview,
    _location_json,
    _new_event_id,
    _new_ical_uid,
    _normalize_recurrence,
    _occurrence_ical_uid,
    _occurrence_id,
    _parse_occurrence_id,
    _series_rule,
    _SyncToken,
    _ViewItem,
    _zone,
)
from local.emulators.graph.models import (
    _HEX_COLORS,
    DEFAULT_SCOPES,
    REFRESH_TOKEN_LIFETIME,
    REVOKE_CODES,
    Account,
    App,
    Calendar,
    GraphFault,
    RefreshToken,
    StoredEvent,
    Subscription,
    _graph_dt,
    _graph_scope,
    _new_access_token,
    _new_calendar_id,
    _new_change_key,
    _new_refresh_token,
)
from local.emulators.graph.notifications import GraphNotifications

# What update_event changes (the /_control PATCH fields).
UPDATABLE = (
    "subject",
    "start",
    "end",
    "time_zone",
    "body_html",
    "location",
    "online_meeting_url",
    "recurrence",
)


class GraphBackend(GraphNotifications):
    """Apps, mailboxes, calendars, events, tokens and subscriptions, under one lock."""

    fault_type = GraphFault
    new_access_token = staticmethod(_new_access_token)
    _apps: dict[str, App]
    _accounts: dict[str, Account]
    _refresh_tokens: dict[str, RefreshToken]
    _auth_codes: dict[str, AuthCode]
    # Settings (GraphEmulator's keyword arguments).
    default_response_timezone: str | None
    page_size: int
    delta_page_size: int
    delta_token_max_age: timedelta | None
    subscription_max_minutes: int
    validation_timeout: float

    def _reset_state(self) -> None:
        self._subscriptions: dict[str, Subscription] = {}
        self._sync_tokens: dict[str, _SyncToken] = {}
        self._resync_required: set[str] = set()

    def add_app(self, client_id: str | None = None, client_secret: str | None = None) -> dict[str, Any]:
        """Register (or re-register, un-expiring the secret) an app registration."""
        with self._lock:
            app = App(client_id or str(uuid.uuid4()), client_secret or secrets.token_urlsafe(30))
            self._apps[app.client_id] = app
            return {"client_id": app.client_id, "client_secret": app.client_secret}

    def apps(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"client_id": a.client_id, "secret_expired": a.secret_expired} for a in self._apps.values()
            ]

    def add_account(
        self,
        *,
        client_id: str,
        user_principal_name: str,
        mail: str | None = None,
        display_name: str | None = None,
        calendars: list[dict[str, Any]] | None = None,
        scopes: str = DEFAULT_SCOPES,
        object_id: str | None = None,
        refresh_token: str | None = None,
    ) -> dict[str, Any]:
        """Create a mailbox that has consented to `client_id`; returns its id, a refresh token, calendars.

        `mail=None` models a personal account (Graph returns `mail: null`). `refresh_token` fixes the
        first token's string (e.g. for checked-in sample events); it still rotates on first use.
        """
        with self._lock:
            self._app(client_id)
            if any(a.matches(user_principal_name) for a in self._accounts.values()):
                raise EmulatorError(f"account {user_principal_name!r} already exists", 409)
            account = Account(
                id=object_id or str(uuid.uuid4()),
                display_name=display_name or user_principal_name.split("@")[0],
                mail=mail,
                user_principal_name=user_principal_name,
            )
            if account.id in self._accounts:
                raise EmulatorError(f"account id {account.id!r} already exists", 409)
            if refresh_token is not None and refresh_token in self._refresh_tokens:
                raise EmulatorError("that refresh token string is already in use", 409)
            self._accounts[account.id] = account
            specs = calendars or [{"name": "Calendar", "is_default": True}]
            if not any(spec.get("is_default") for spec in specs):
                specs = [{**specs[0], "is_default": True}, *specs[1:]]  # a mailbox always has one default
            created = [self.add_calendar(account.id, **spec) for spec in specs]
            token = self.issue_refresh_token(account.id, client_id, scopes, refresh_token=refresh_token)
            return {"id": account.id, "refresh_token": token, "calendars": created}

    def accounts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._account_dict(a) for a in self._accounts.values()]

    def add_calendar(
        self,
        account: str,
        *,
        name: str,
        is_default: bool = False,
        can_edit: bool = True,
        color: str = "auto",
        owner_name: str | None = None,
        owner_address: str | None = None,
        calendar_id: str | None = None,
    ) -> dict[str, Any]:
        """Add a calendar; a different owner address makes it a shared calendar (no share/remove)."""
        with self._lock:
            acc = self._account(account)
            if color not in _HEX_COLORS:
                raise EmulatorError(f"unknown color {color!r}; one of {', '.join(_HEX_COLORS)}")
            address = owner_address or acc.address
            cal = Calendar(
                id=calendar_id or _new_calendar_id(),
                name=name,
                color=color,
                is_default=is_default,
                can_edit=can_edit,
                owner_name=owner_name or acc.display_name,
                owner_address=address,
                owned=address.lower() == acc.address.lower(),
                change_key=_new_change_key(),
            )
            if is_default:
                for other in acc.calendars.values():
                    other.is_default = False
            acc.calendars[cal.id] = cal
            return {"id": cal.id, "name": cal.name}

    def calendar(self, account: str, calendar_id: str) -> Calendar:
        """The live calendar object (for extensions that add events)."""
        with self._lock:
            cal = self._account(account).calendars.get(calendar_id)
            if cal is None:
                raise EmulatorError(f"no calendar {calendar_id!r}", 404)
            return cal

    def issue_refresh_token(
        self, account: str, client_id: str, scopes: str | None = None, *, refresh_token: str | None = None
    ) -> str:
        """Consent `client_id` for the account (adding `scopes`) and return a new valid refresh token."""
        with self._lock:
            acc = self._account(account)
            self._app(client_id)
            if refresh_token is not None and refresh_token in self._refresh_tokens:
                raise EmulatorError("that refresh token string is already in use", 409)
            requested = (scopes or DEFAULT_SCOPES).split()
            self._consent(acc, client_id, requested)
            return self._new_refresh(acc.id, client_id, requested, refresh_token).token

    def revoke(self, account: str, code: int = 50173) -> int:
        """Invalidate all the account's refresh tokens; later use fails with invalid_grant AADSTS<code>."""
        if code not in REVOKE_CODES:
            raise EmulatorError(f"code must be one of {REVOKE_CODES}")
        with self._lock:
            acc = self._account(account)
            revoked = 0
            for rt in self._refresh_tokens.values():
                if rt.account_id == acc.id and rt.invalid_code is None:
                    rt.invalid_code = code
                    revoked += 1
            return revoked

    def issued_tokens(self) -> dict[str, list[str]]:
        """Every refresh and access token ever issued, valid or not (leak tests grep for them)."""
        with self._lock:
            return {"refresh_tokens": list(self._refresh_tokens), "access_tokens": list(self._access_tokens)}

    def refresh_tokens(self, account: str) -> list[dict[str, Any]]:
        """Currently valid refresh tokens of an account, oldest first."""
        with self._lock:
            acc = self._account(account)
            return [
                {
                    "refresh_token": rt.token,
                    "client_id": rt.client_id,
                    "scope": " ".join(rt.scopes),
                    "issued_at": iso(rt.issued_at),
                    "superseded": rt.superseded_at is not None,
                }
                for rt in self._refresh_tokens.values()
                if rt.account_id == acc.id and self._refresh_invalid_code(rt) is None
            ]

    def subscriptions(self, active_only: bool = False) -> list[dict[str, Any]]:
        """All subscriptions (expired ones too, flagged, unless active_only)."""
        with self._lock:
            now = self.now()
            listed = [s for s in self._subscriptions.values() if not active_only or s.expiration > now]
            return [self._subscription_control_dict(s, now) for s in listed]

    def delete_subscription(self, subscription_id: str) -> None:
        """Remove a subscription behind the client's back."""
        with self._lock:
            if self._subscriptions.pop(subscription_id, None) is None:
                raise EmulatorError(f"no subscription {subscription_id!r}", 404)

    def add_event(
        self,
        account: str,
        calendar_id: str,
        *,
        subject: str = "",
        start: str | datetime | date,
        end: str | datetime | date,
        time_zone: str = "UTC",
        is_all_day: bool = False,
        body_html: str = "",
        location: str | None = None,
        online_meeting_url: str | None = None,
        organizer: str | dict[str, str] | None = None,
        recurrence: dict[str, Any] | None = None,
        event_id: str | None = None,
        attendees: list[str | dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Create a single event, or a series master when `recurrence` (Graph patternedRecurrence) is
        given; returns its control view. `attendees`: addresses or {"address", "name", "type",
        "response"} (large meetings carry hundreds).

        `start`/`end`: ISO 8601 with an offset (converted into `time_zone`) or naive (read in it);
        all-day events take dates or midnights, end exclusive. `time_zone`: Windows or IANA name.
        `online_meeting_url` makes it a Teams meeting (onlineMeeting.joinUrl). `organizer`: an address
        or {"name", "address"}; default the calendar's owner.
        """
        with self._lock:
            acc = self._account(account)
            cal = acc.calendars.get(calendar_id)
            if cal is None:
                raise EmulatorError(f"no calendar {calendar_id!r} in account {account!r}", 404)
            if event_id is not None:
                if not isinstance(event_id, str) or not _EVENT_ID_RE.match(event_id):
                    raise EmulatorError("id must be URL-safe base64 characters (A-Z a-z 0-9 - _ =)")
                if self._find_stored(event_id) is not None:
                    raise EmulatorError(f"event id {event_id!r} already exists", 409)
            iana, zone_name = _zone(time_zone)
            tz = ZoneInfo(iana)
            begin, finish = control_time(start, tz, "start"), control_time(end, tz, "end")
            self._check_times(begin, finish, bool(is_all_day))
            org_name, org_address = self._organizer(cal, organizer)
            now = self.now()
            ev = StoredEvent(
                id=event_id or _new_event_id(),
                calendar_id=cal.id,
                type="seriesMaster" if recurrence is not None else "singleInstance",
                ical_uid=_new_ical_uid(),
                subject=str(subject or ""),
                body_html=str(body_html or ""),
                location=location or None,
                online_meeting_url=online_meeting_url or None,
                organizer_name=org_name,
                organizer_address=org_address,
                zone=iana,
                zone_name=zone_name,
                start=begin,
                end=finish,
                is_all_day=bool(is_all_day),
                created=now,
                modified=now,
                change_key=_new_change_key(),
                attendees=_attendees(attendees),
            )
            if recurrence is not None:
                ev.recurrence = _normalize_recurrence(recurrence, begin, zone_name)
            self._bump(cal, ev)
            cal.events[ev.id] = ev
            view = self._event_view(acc, cal, ev)
        self._on_change(acc.id, cal.id, [ev.id], "created")
        return view

    def update_event(self, event_id: str, **changes: Any) -> dict[str, Any]:
        """Change an event; only the arguments given change (None clears location / meeting URL).
        The arguments: subject, start, end, time_zone, body_html, location, online_meeting_url and
        recurrence (UPDATABLE).

        A master edit changes the series: subject/body/location/link also reach exceptions that had
        the old value; a time, zone or recurrence change drops all the series' exceptions and
        cancellations (as Outlook does). An occurrence id creates (or updates) an exception: new
        start/end move it. `start` alone keeps the duration; `time_zone` alone keeps the wall times.
        """
        unknown = sorted(set(changes) - set(UPDATABLE))
        if unknown:
            raise TypeError(f"update_event() got an unexpected keyword argument {unknown[0]!r}")
        patch = {name: changes.get(name, UNSET) for name in UPDATABLE}
        recurrence = patch["recurrence"]
        with self._lock:
            acc, cal, ev, occurrence = self._locate(event_id)
            backup = None
            if ev is None:
                if recurrence is not UNSET:
                    raise EmulatorError("an occurrence cannot get a recurrence of its own")
                master, on, begin, finish = occurrence  # type: ignore[misc]
                ev = self._new_override(cal, master, on, begin, finish)
            elif ev.is_cancelled:
                raise EmulatorError(f"event {event_id!r} is cancelled", 409)
            elif ev.type == "exception" and recurrence is not UNSET:
                raise EmulatorError("an occurrence cannot get a recurrence of its own")
            else:
                backup = dataclasses.replace(ev)
            try:
                changed = self._apply_patch(cal, ev, **patch)
            except (EmulatorError, TypeError, ValueError):
                if backup is not None:  # all or nothing: a rejected patch leaves the event as it was
                    vars(ev).update(vars(backup))
                raise
            cal.events[ev.id] = ev  # a new exception is stored only once its patch is accepted
            view = self._event_view(acc, cal, ev)
        self._on_change(acc.id, cal.id, changed, "updated")
        return view

    def cancel_event(self, event_id: str) -> dict[str, Any]:
        """Cancel a single event, a whole series (master id) or one occurrence (occurrence id).

        Cancelled items leave calendarView (delta reports them removed); GET still answers them with
        `isCancelled: true`. Cancelling twice changes nothing.
        """
        with self._lock:
            acc, cal, ev, occurrence = self._locate(event_id)
            if ev is None:
                master, on, begin, finish = occurrence  # type: ignore[misc]
                ev = self._new_override(cal, master, on, begin, finish)
                cal.events[ev.id] = ev
            elif ev.is_cancelled:
                return self._event_view(acc, cal, ev)
            ev.is_cancelled = True
            self._bump(cal, ev)
            view = self._event_view(acc, cal, ev)
        self._on_change(acc.id, cal.id, [ev.id], "updated")
        return view

    def respond_event(self, event_id: str, attendee: str, response: str) -> dict[str, Any]:
        """An invitee answers a meeting (what Graph's `POST /me/events/{id}/accept`,
        `tentativelyAccept` or `decline` do from their calendar client): their attendee row's status
        becomes `response` (accepted, tentativelyAccepted, declined, none), the event changes (a new
        changeKey, so delta reports it) and its subscriptions get an `updated` notification. The
        answer shows in that invitee's own copy as `responseStatus`."""
        (row,) = _attendees([{"address": attendee, "response": response}])
        with self._lock:
            acc, cal, ev, _ = self._locate(event_id)
            if ev is None or ev.is_cancelled:
                raise EmulatorError("only a stored, not cancelled event can be answered", 409)
            row["status"]["time"] = iso(self.now())
            mine = [str(a["emailAddress"]["address"]).lower() == attendee.lower() for a in ev.attendees]
            if any(mine):  # the invitee's own row changes, in its place
                ev.attendees = [
                    {**a, "status": row["status"]} if me else a
                    for a, me in zip(ev.attendees, mine, strict=True)
                ]
            else:
                ev.attendees = [*ev.attendees, row]
            self._bump(cal, ev)
            view = self._event_view(acc, cal, ev)
        self._on_change(acc.id, cal.id, [ev.id], "updated")
        return view

    def delete_event(self, event_id: str) -> None:
        """Delete a single event or a whole series (with its exceptions); for an occurrence or an
        exception, delete just that occurrence (it stays gone: a cancelled override is kept)."""
        with self._lock:
            acc, cal, ev, occurrence = self._locate(event_id)
            if ev is None or ev.type == "exception":
                if ev is None:
                    master, on, begin, finish = occurrence  # type: ignore[misc]
                    ev = self._new_override(cal, master, on, begin, finish)
                    cal.events[ev.id] = ev
                ev.is_cancelled = True
                self._bump(cal, ev)
                changed = [ev.id]
            else:
                changed = [ev.id] + [o.id for o in self._overrides(cal, ev.id)]
                for item_id in changed:
                    del cal.events[item_id]
                cal.change_seq += 1
        self._on_change(acc.id, cal.id, changed, "deleted")

    def event(self, event_id: str) -> dict[str, Any]:
        """Control view of a stored event, or of an occurrence by its occurrence id."""
        with self._lock:
            acc, cal, ev, occurrence = self._locate(event_id)
            if ev is not None:
                return self._event_view(acc, cal, ev)
            master, on, begin, finish = occurrence  # type: ignore[misc]
            return self._event_view(
                acc, cal, self._new_override(cal, master, on, begin, finish, virtual=True)
            )

    def events(self, account: str) -> list[dict[str, Any]]:
        """Control views of every stored item of the account (masters, exceptions, cancelled ones)."""
        with self._lock:
            acc = self._account(account)
            return [
                self._event_view(acc, cal, ev) for cal in acc.calendars.values() for ev in cal.events.values()
            ]

    def occurrences(
        self, event_id: str, start: str | datetime | date, end: str | datetime | date
    ) -> list[dict[str, Any]]:
        """The series' live occurrences and exceptions overlapping [start, end) (naive = UTC)."""
        with self._lock:
            acc, cal, ev, _ = self._locate(event_id)
            if ev is None or ev.type != "seriesMaster":
                raise EmulatorError(f"{event_id!r} is not a series master")
            utc = ZoneInfo("UTC")
            items = self._calendar_view(
                acc,
                cal,
                (control_time(start, utc, "start"), control_time(end, utc, "end")),
                series=ev.id,
            )
            return [
                {
                    "id": item.id,
                    "type": item.type,
                    "series_master_id": ev.id,
                    "subject": item.full["subject"],
                    "start": item.start.isoformat(),
                    "end": item.end.isoformat(),
                }
                for item in items
            ]

    def expire_delta_tokens(self, account: str) -> int:
        """Forget every delta/skip token of the account: their next use answers 410 syncStateNotFound."""
        with self._lock:
            return self._forget_sync_states(self._account(account).id)

    def require_resync(self, account: str) -> None:
        """Make the account's next calendarView delta call answer 410 resyncRequired (once)."""
        with self._lock:
            self._resync_required.add(self._account(account).id)

    def expire_subscription(self, subscription_id: str) -> dict[str, Any]:
        """Expire a subscription now: no more notifications, and Graph answers 404 for it."""
        with self._lock:
            sub = self._subscriptions.get(subscription_id)
            if sub is None:
                raise EmulatorError(f"no subscription {subscription_id!r}", 404)
            now = self.now()
            sub.expiration = min(sub.expiration, now)
            return self._subscription_control_dict(sub, now)

    def _account_dict(self, acc: Account) -> dict[str, Any]:
        return {
            **fields_of(acc, "id", "display_name", "mail", "user_principal_name"),
            "consents": {client: " ".join(scopes) for client, scopes in acc.consents.items()},
            "calendars": [
                {"id": c.id, "name": c.name, "is_default": c.is_default, "can_edit": c.can_edit}
                for c in acc.calendars.values()
            ],
        }

    def _consent(self, acc: Account, client_id: str, requested: Iterable[str]) -> None:
        granted = acc.consents.setdefault(client_id, [])
        for scope in requested:
            name = _graph_scope(scope)
            if name and name != ".default" and name.lower() not in {g.lower() for g in granted}:
                granted.append(name)

    def _new_refresh(
        self, account_id: str, client_id: str, scopes: list[str], token: str | None = None
    ) -> RefreshToken:
        now = self.now()
        rt = RefreshToken(token or _new_refresh_token(), client_id, account_id, list(scopes), now, now)
        self._refresh_tokens[rt.token] = rt
        return rt

    def _refresh_invalid_code(self, rt: RefreshToken) -> int | None:
        # Dead a fixed time after issue, however often it was used; rotation (superseded_at) alone does
        # not end it: the redeemed token stays valid until its own expiry.
        if rt.invalid_code is None and self.now() - rt.issued_at >= REFRESH_TOKEN_LIFETIME:
            rt.invalid_code = 700082
        return rt.invalid_code

    def _subscription_control_dict(self, sub: Subscription, now: datetime) -> dict[str, Any]:
        return {
            **fields_of(sub, "id", "account_id"),
            "application_id": sub.client_id,
            **fields_of(
                sub,
                "resource",
                "calendar_id",
                "change_type",
                "notification_url",
                "lifecycle_notification_url",
                "client_state",
            ),
            "expiration_date_time": _graph_dt(sub.expiration),
            "created_date_time": _graph_dt(sub.created_at),
            "expired": sub.expiration <= now,
            "reauthorization_required": sub.reauthorization_required_at is not None,
            "notifications_paused": self._paused_for_reauthorization(sub, now),
            **fields_of(sub, "consecutive_failures", "lost_notifications"),
        }

    def _find_stored(self, event_id: str) -> tuple[Account, Calendar, StoredEvent] | None:
        for acc in self._accounts.values():
            for cal in acc.calendars.values():
                ev = cal.events.get(event_id)
                if ev is not None:
                    return acc, cal, ev
        return None

    def _locate(
        self, event_id: str
    ) -> tuple[Account, Calendar, StoredEvent | None, tuple[StoredEvent, date, datetime, datetime] | None]:
        """A stored item, or (master, original date, start, end) of a plain occurrence; 404 otherwise."""
        found = self._find_stored(event_id)
        if found is not None:
            return found[0], found[1], found[2], None
        parsed = _parse_occurrence_id(event_id)
        if parsed is not None:
            stored = self._find_stored(parsed[0])
            if stored is not None and stored[2].type == "seriesMaster":
                acc, cal, master = stored
                times = self._occurrence_on(master, parsed[1])
                if times is not None:
                    return acc, cal, None, (master, parsed[1], *times)
        raise EmulatorError(f"no event {event_id!r}", 404)

    @staticmethod
    def _organizer(cal: Calendar, organizer: str | dict[str, str] | None) -> tuple[str, str]:
        if organizer is None:
            return cal.owner_name, cal.owner_address
        if isinstance(organizer, str) and "@" in organizer:
            return organizer.split("@")[0], organizer
        if isinstance(organizer, dict) and isinstance(organizer.get("address"), str):
            address = organizer["address"]
            return str(organizer.get("name") or address.split("@")[0]), address
        raise EmulatorError('organizer must be an address or {"name": ..., "address": ...}')

    @staticmethod
    def _check_times(start: datetime, end: datetime, is_all_day: bool) -> None:
        if end <= start:
            raise EmulatorError("end must be after start")
        if is_all_day and (start.time() != dt_time() or end.time() != dt_time()):
            raise EmulatorError("an all-day event starts and ends at midnight (end exclusive)")

    def _bump(self, cal: Calendar, ev: StoredEvent) -> None:
        cal.change_seq += 1
        ev.seq = cal.change_seq
        ev.modified = self.now()
        ev.change_key = _new_change_key()

    @staticmethod
    def _overrides(cal: Calendar, master_id: str) -> list[StoredEvent]:
        return [o for o in cal.events.values() if o.series_master_id == master_id]

    def _new_override(
        self,
        cal: Calendar,
        master: StoredEvent,
        on: date,
        start: datetime,
        end: datetime,
        *,
        virtual: bool = False,
    ) -> StoredEvent:
        """An override standing for the occurrence of `master` on `on` (not stored here)."""
        tz = ZoneInfo(master.zone)
        now = self.now()
        return StoredEvent(
            id=_occurrence_id(master.id, on),
            calendar_id=cal.id,
            type="occurrence" if virtual else "exception",
            ical_uid=_occurrence_ical_uid(master.ical_uid, on),
            subject=master.subject,
            body_html=master.body_html,
            location=master.location,
            online_meeting_url=master.online_meeting_url,
            organizer_name=master.organizer_name,
            organizer_address=master.organizer_address,
            zone=master.zone,
            zone_name=master.zone_name,
            start=start.astimezone(tz),
            end=end.astimezone(tz),
            is_all_day=master.is_all_day,
            created=master.created if virtual else now,
            modified=master.modified if virtual else now,
            change_key=master.change_key,
            seq=master.seq,
            series_master_id=master.id,
            original_date=on,
            original_start=start.astimezone(tz),
        )

    _PROPAGATED = ("subject", "body_html", "location", "online_meeting_url")

    def _apply_patch(self, cal: Calendar, ev: StoredEvent, **changes: Any) -> list[str]:
        """Apply update_event's arguments to a stored item; returns the ids of every changed item."""
        old = {name: getattr(ev, name) for name in self._PROPAGATED}
        old_start, old_end, old_zone = ev.start, ev.end, ev.zone
        if changes["time_zone"] is not UNSET:
            iana, ev.zone_name = _zone(str(changes["time_zone"]))
            ev.zone = iana
            new_tz = ZoneInfo(iana)
            ev.start = localize(ev.start.replace(tzinfo=None), new_tz)
            ev.end = localize(ev.end.replace(tzinfo=None), new_tz)
        tz = ZoneInfo(ev.zone)
        start, end = changes["start"], changes["end"]
        if start is not UNSET:
            duration = ev.end - ev.start
            ev.start = control_time(start, tz, "start")
            ev.end = control_time(end, tz, "end") if end is not UNSET else ev.start + duration
        elif end is not UNSET:
            ev.end = control_time(end, tz, "end")
        self._check_times(ev.start, ev.end, ev.is_all_day)
        for name in self._PROPAGATED:
            value = changes[name]
            if value is not UNSET:
                setattr(ev, name, (str(value) if name in ("subject", "body_html") else value) or None)
        ev.subject, ev.body_html = ev.subject or "", ev.body_html or ""
        was_master = ev.type == "seriesMaster"
        timing_changed = (ev.start, ev.end, ev.zone) != (old_start, old_end, old_zone)
        recurrence = changes["recurrence"]
        if recurrence is not UNSET:
            if recurrence is None:
                ev.type, ev.recurrence = "singleInstance", None
            else:
                ev.type = "seriesMaster"
                ev.recurrence = _normalize_recurrence(recurrence, ev.start, ev.zone_name)
        elif was_master and timing_changed and ev.recurrence is not None:
            # The series follows its master: same pattern and end, new first date / zone.
            rng = {**ev.recurrence["range"], "startDate": None, "recurrenceTimeZone": ev.zone_name}
            ev.recurrence = _normalize_recurrence({**ev.recurrence, "range": rng}, ev.start, ev.zone_name)
        if ev.type == "exception":
            ev.edited = True
        self._bump(cal, ev)
        changed = [ev.id]
        if was_master:
            overrides = self._overrides(cal, ev.id)
            if timing_changed or recurrence is not UNSET:
                for override in overrides:
                    del cal.events[override.id]
                    changed.append(override.id)
            else:
                for override in overrides:
                    touched = False
                    for name in self._PROPAGATED:
                        if getattr(ev, name) != old[name] and getattr(override, name) == old[name]:
                            setattr(override, name, getattr(ev, name))
                            touched = True
                    if touched:
                        self._bump(cal, override)
                        changed.append(override.id)
        return changed

    def _event_view(self, acc: Account, cal: Calendar, ev: StoredEvent) -> dict[str, Any]:
        shown_type = "occurrence" if ev.type == "exception" and not ev.edited else ev.type
        return {
            "id": ev.id,
            "account_id": acc.id,
            "calendar_id": cal.id,
            "type": shown_type,
            "subject": ev.subject,
            "start": ev.start.isoformat(),
            "end": ev.end.isoformat(),
            "time_zone": ev.zone_name,
            "iana_time_zone": ev.zone,
            "is_all_day": ev.is_all_day,
            "is_cancelled": ev.is_cancelled,
            "series_master_id": ev.series_master_id,
            "original_start": ev.original_start.isoformat() if ev.original_start else None,
            "recurrence": json.loads(json.dumps(ev.recurrence)) if ev.recurrence else None,
            "body_html": ev.body_html,
            "location": ev.location,
            "online_meeting_url": ev.online_meeting_url,
            "organizer": {"name": ev.organizer_name, "address": ev.organizer_address},
            "ical_uid": ev.ical_uid,
            "change_key": ev.change_key,
            "created": iso(ev.created),
            "last_modified": iso(ev.modified),
        }

    @staticmethod
    def _series_parts(master: StoredEvent) -> tuple[_rr.rrule, ZoneInfo, timedelta]:
        """(rule on naive local times, the zone it runs in, wall-clock duration) of a series."""
        assert master.recurrence is not None
        rng = master.recurrence["range"]
        # All-day series stay on their own dates; others expand in the recurrence time zone, so
        # 09:00 local stays 09:00 local across DST (the UTC instant shifts).
        tz = ZoneInfo(master.zone) if master.is_all_day else ZoneInfo(_zone(rng["recurrenceTimeZone"])[0])
        first = master.start.astimezone(tz).replace(tzinfo=None)
        duration = master.end.astimezone(tz).replace(tzinfo=None) - first
        dtstart = datetime.combine(date.fromisoformat(rng["startDate"]), first.time())
        return _series_rule(master.recurrence, dtstart), tz, duration

    def _expand(
        self, master: StoredEvent, window: tuple[datetime, datetime]
    ) -> list[tuple[date, datetime, datetime]]:
        """(original local date, start, end) of the series' occurrences overlapping the window."""
        rule, tz, duration = self._series_parts(master)
        window_start, window_end = window
        low = window_start.astimezone(tz).replace(tzinfo=None) - duration - timedelta(days=1)
        high = window_end.astimezone(tz).replace(tzinfo=None) + timedelta(days=1)
        found = []
        for naive in rule.between(low, high, inc=True):
            start, end = localize(naive, tz), localize(naive + duration, tz)
            if start < window_end and end > window_start:
                found.append((naive.date(), start, end))
        return found

    def _occurrence_on(self, master: StoredEvent, on: date) -> tuple[datetime, datetime] | None:
        rule, tz, duration = self._series_parts(master)
        hits = rule.between(datetime.combine(on, dt_time()), datetime.combine(on, dt_time.max), inc=True)
        if not hits:
            return None
        return localize(hits[0], tz), localize(hits[0] + duration, tz)

    def _calendar_view(
        self, acc: Account, cal: Calendar, window: tuple[datetime, datetime], series: str | None = None
    ) -> list[_ViewItem]:
        """Single events, occurrences and exceptions overlapping [start, end), ordered by start."""
        window_start, window_end = window
        items: list[_ViewItem] = []
        for ev in list(cal.events.values()):
            if ev.is_cancelled:
                continue
            if ev.type == "singleInstance":
                if series is None and ev.start < window_end and ev.end > window_start:
                    items.append(self._stored_item(acc, ev))
            elif ev.type == "seriesMaster":
                if series is not None and ev.id != series:
                    continue
                for on, start, end in self._expand(ev, window):
                    if _occurrence_id(ev.id, on) not in cal.events:
                        items.append(self._occurrence_item(acc, ev, on, start, end))
            else:
                master = cal.events.get(ev.series_master_id or "")
                if master is None or master.is_cancelled or (series is not None and master.id != series):
                    continue
                if ev.start < window_end and ev.end > window_start:
                    items.append(self._stored_item(acc, ev, master))
        items.sort(key=lambda item: (item.start.astimezone(UTC), item.id))
        return items

    def _resolve_item(self, acc: Account, event_id: str, cal: Calendar | None) -> _ViewItem | None:
        """What GET /me/events/{id} shows, cancelled items included; None if there is no such item."""
        calendars = [cal] if cal is not None else list(acc.calendars.values())
        for candidate in calendars:
            ev = candidate.events.get(event_id)
            if ev is not None:
                master = candidate.events.get(ev.series_master_id or "")
                item = self._stored_item(acc, ev, master)
                if master is not None and master.is_cancelled:
                    item.full["isCancelled"] = True
                return item
        parsed = _parse_occurrence_id(event_id)
        if parsed is None:
            return None
        for candidate in calendars:
            master = candidate.events.get(parsed[0])
            if master is not None and master.type == "seriesMaster":
                times = self._occurrence_on(master, parsed[1])
                if times is None:
                    return None
                item = self._occurrence_item(acc, master, parsed[1], *times)
                item.full["isCancelled"] = master.is_cancelled
                return item
        return None

    def _stored_item(self, acc: Account, ev: StoredEvent, master: StoredEvent | None = None) -> _ViewItem:
        shown_type = "occurrence" if ev.type == "exception" and not ev.edited else ev.type
        full = self._event_json(
            acc,
            ev,
            event_id=ev.id,
            event_type=shown_type,
            series_master_id=ev.series_master_id,
            original_start=ev.original_start,
            ical_uid=ev.ical_uid,
            cancelled=ev.is_cancelled,
            recurrence=ev.recurrence if ev.type == "seriesMaster" else None,
        )
        version = f"{ev.seq}/{master.seq}" if master is not None else str(ev.seq)
        return _ViewItem(ev.id, shown_type, ev.start, ev.end, ev.is_all_day, ev.zone_name, version, full)

    def _occurrence_item(
        self, acc: Account, master: StoredEvent, on: date, start: datetime, end: datetime
    ) -> _ViewItem:
        occurrence_id = _occurrence_id(master.id, on)
        tz = ZoneInfo(master.zone)
        start, end = start.astimezone(tz), end.astimezone(tz)
        full = self._event_json(
            acc,
            master,
            event_id=occurrence_id,
            event_type="occurrence",
            series_master_id=master.id,
            original_start=start,
            ical_uid=_occurrence_ical_uid(master.ical_uid, on),
            cancelled=False,
            recurrence=None,
        )
        version = f"o{master.seq}"
        return _ViewItem(
            occurrence_id, "occurrence", start, end, master.is_all_day, master.zone_name, version, full
        )

    @staticmethod
    def _event_json(
        acc: Account,
        src: StoredEvent,
        *,
        event_id: str,
        event_type: str,
        series_master_id: str | None,
        original_start: datetime | None,
        ical_uid: str,
        cancelled: bool,
        recurrence: dict[str, Any] | None,
    ) -> dict[str, Any]:
        url = src.online_meeting_url
        is_organizer = src.organizer_address.lower() == acc.address.lower()
        body: dict[str, Any] = {
            "@odata.etag": f'W/"{src.change_key}"',
            "id": event_id,
            "createdDateTime": _graph_dt(src.created),
            "lastModifiedDateTime": _graph_dt(src.modified),
            "changeKey": src.change_key,
            "categories": [],
            "transactionId": None,
            "originalStartTimeZone": src.zone_name,
            "originalEndTimeZone": src.zone_name,
            "iCalUId": ical_uid,
            "reminderMinutesBeforeStart": 15,
            "isReminderOn": True,
            "hasAttachments": False,
            "subject": src.subject,
            "bodyPreview": _body_preview(src.body_html),
            "importance": "normal",
            "sensitivity": "normal",
            "isAllDay": src.is_all_day,
            "isCancelled": cancelled,
            "isOrganizer": is_organizer,
            "responseRequested": True,
            "seriesMasterId": series_master_id,
            "showAs": "free" if src.is_all_day else "busy",
            "type": event_type,
            "webLink": (
                f"https://outlook.office365.com/owa/?itemid={quote(event_id, safe='')}"
                "&exvsurl=1&path=/calendar/item"
            ),
            "onlineMeetingUrl": None,
            "isOnlineMeeting": url is not None,
            "onlineMeetingProvider": "teamsForBusiness" if url else "unknown",
            "allowNewTimeProposals": True,
            "isDraft": False,
            "hideAttendees": False,
            "responseStatus": {
                "response": "organizer" if is_organizer else _own_response(src.attendees, acc.address),
                "time": "0001-01-01T00:00:00Z",
            },
            "body": {"contentType": "html", "content": _body_document(src.body_html)},
            "start": None,
            "end": None,
            "location": _location_json(src.location),
            "locations": [_location_json(src.location)] if src.location else [],
            "recurrence": json.loads(json.dumps(recurrence)) if recurrence else None,
            "attendees": [json.loads(json.dumps(a)) for a in src.attendees],
            "organizer": {"emailAddress": {"name": src.organizer_name, "address": src.organizer_address}},
            "onlineMeeting": {"joinUrl": url} if url else None,
        }
        if original_start is not None:
            body["originalStart"] = iso(original_start)
        return body


def _own_response(attendees: list[dict[str, Any]], address: str) -> str:
    """An invitee's copy of a meeting: responseStatus is the mailbox owner's own answer, the status of
    their row among the attendees; notResponded (the attendee's view of none) when they have not
    answered (Graph's responseStatus resource)."""
    for attendee in attendees:
        if str((attendee.get("emailAddress") or {}).get("address", "")).lower() == address.lower():
            response = str((attendee.get("status") or {}).get("response") or "none")
            return "notResponded" if response == "none" else response
    return "notResponded"
