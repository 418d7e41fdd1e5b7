"""The Google emulator's backend: its state and the Python control API that tests and the local
stack drive it with (the /_control routes call these). Call the `_` helpers with the lock held."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from local.emulators.core.clock import iso
from local.emulators.core.errors import EmulatorError
from local.emulators.core.helpers import UNSET, control_time, fields_of, localize
from local.emulators.google.events import (
    _check_recurrence,
    _conference_for,
    _etag,
    _instance_stamp,
    _meet_link,
    _parse_instance_id,
    _rfc3339_ms,
    _rule_set,
    _stamp_datetime,
    _time_json,
    _zone_name,
)
from local.emulators.google.models import (
    DEFAULT_SCOPES,
    GoogleAccount,
    GoogleApp,
    GoogleCalendar,
    GoogleEvent,
    GoogleFault,
    _AuthCode,
    _Channel,
    _new_access_token,
    _new_event_id,
    _new_refresh_token,
    _new_sub,
    _normalize_scopes,
    _PageState,
    _Query,
    _RefreshToken,
    _SyncState,
)
from local.emulators.google.notifications import GoogleNotifications


class GoogleBackend(GoogleNotifications):
    """Apps, accounts, calendars, events, tokens, channels and sync states, under one lock."""

    fault_type = GoogleFault
    new_access_token = staticmethod(_new_access_token)
    # Settings (GoogleEmulator's keyword arguments).
    expansion_horizon: timedelta
    channel_max_ttl: int
    sync_token_max_age: timedelta | None

    _apps: dict[str, GoogleApp]
    _accounts: dict[str, GoogleAccount]
    _refresh_tokens: dict[str, _RefreshToken]
    _auth_codes: dict[str, _AuthCode]

    def _reset_state(self) -> None:
        self._channels: dict[str, _Channel] = {}
        self._sync_tokens: dict[str, _SyncState] = {}
        self._pages: dict[str, _PageState] = {}

    def add_app(
        self,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        redirect_uris: list[str] | None = None,
        testing: bool = False,
    ) -> dict[str, Any]:
        """Register (or re-register, reviving) an OAuth client. `redirect_uris` empty = any accepted."""
        with self._lock:
            app = GoogleApp(
                client_id
                or f"{secrets.randbelow(10**12):012d}-{secrets.token_hex(16)}.apps.googleusercontent.com",
                client_secret or "GOCSPX-" + secrets.token_urlsafe(21),
                list(redirect_uris or []),
                testing=bool(testing),
            )
            self._apps[app.client_id] = app
            return {"client_id": app.client_id, "client_secret": app.client_secret}

    def apps(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "client_id": a.client_id,
                    "redirect_uris": list(a.redirect_uris),
                    "testing": a.testing,
                    "secret_expired": a.secret_expired,
                    "deleted": a.deleted,
                }
                for a in self._apps.values()
            ]

    def delete_app(self, client_id: str) -> None:
        """Delete the OAuth client: 401 invalid_client "The OAuth client was not found."."""
        with self._lock:
            self._app(client_id).deleted = True

    def add_account(
        self,
        email: str,
        *,
        name: str | None = None,
        time_zone: str = "UTC",
        client_id: str | None = None,
        scopes: str | None = None,
        consent: bool = True,
        sub: str | None = None,
        calendars: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Create a Google account with its primary calendar (id = the email).

        With `client_id` the account is registered with that app (the authorize page picks it) and,
        unless `consent=False`, has consented and gets a refresh token (in the answer). `calendars`:
        extra calendars (add_calendar arguments).
        """
        with self._lock:
            if not isinstance(email, str) or "@" not in email:
                raise EmulatorError("email must be an address")
            if self._find_account(email) is not None:
                raise EmulatorError(f"account {email!r} already exists", 409)
            zone = _zone_name(time_zone)
            full = name or email.split("@")[0].replace(".", " ").title()
            given, _, family = full.partition(" ")
            acc = GoogleAccount(
                id=sub or _new_sub(),
                email=email,
                name=full,
                given_name=given,
                family_name=family or "",
                time_zone=zone,
                picture=f"https://lh3.googleusercontent.com/a/{hashlib.sha256(email.encode()).hexdigest()[:24]}=s96-c",
            )
            if acc.id in self._accounts:
                raise EmulatorError(f"account sub {acc.id!r} already exists", 409)
            if client_id is not None:
                self._app(client_id)
            self._accounts[acc.id] = acc
            created = [self.add_calendar(acc.id, summary=email, calendar_id=email, primary=True)]
            created += [self.add_calendar(acc.id, **spec) for spec in calendars or []]
            result: dict[str, Any] = {"id": acc.id, "email": acc.email, "calendars": created}
            if client_id is not None:
                acc.apps.append(client_id)
                if consent:
                    result["refresh_token"] = self.issue_refresh_token(acc.id, client_id, scopes)
            return result

    def accounts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "id": a.id,
                    "email": a.email,
                    "name": a.name,
                    "time_zone": a.time_zone,
                    "apps": list(a.apps),
                    "consents": {c: " ".join(s) for c, s in a.consents.items()},
                    "calendars": [
                        {"id": c.id, "summary": c.summary, "primary": c.primary, "access_role": c.access_role}
                        for c in a.calendars.values()
                        if not c.deleted
                    ],
                }
                for a in self._accounts.values()
            ]

    def issue_refresh_token(self, account: str, client_id: str, scopes: str | None = None) -> str:
        """Consent `client_id` for the account (adding `scopes`) and return a new refresh token."""
        with self._lock:
            acc = self._account(account)
            self._app(client_id)
            if client_id not in acc.apps:
                acc.apps.append(client_id)
            granted = self._consent(acc, client_id, (scopes or DEFAULT_SCOPES).split())
            return self._new_refresh(acc.id, client_id, granted).token

    def revoke(self, account: str, client_id: str | None = None) -> int:
        """Revoke the account's refresh tokens (of one app if given) and that consent: invalid_grant."""
        with self._lock:
            acc = self._account(account)
            count = 0
            for rt in self._refresh_tokens.values():
                if rt.account_id == acc.id and not rt.revoked and client_id in (None, rt.client_id):
                    rt.revoked = True
                    count += 1
            for client in [client_id] if client_id else list(acc.consents):
                acc.consents.pop(client, None)
            return count

    def issued_tokens(self) -> dict[str, list[str]]:
        """Every refresh / access token ever issued and every channel token (leak tests grep for them)."""
        with self._lock:
            return {
                "refresh_tokens": list(self._refresh_tokens),
                "access_tokens": list(self._access_tokens),
                "channel_tokens": [c.token for c in self._channels.values() if c.token],
            }

    def add_calendar(
        self,
        account: str,
        *,
        summary: str,
        calendar_id: str | None = None,
        primary: bool = False,
        access_role: str = "owner",
        time_zone: str | None = None,
        background_color: str = "#9fe1e7",
    ) -> dict[str, Any]:
        """Add a calendar to the account's list (`access_role` reader for a subscribed one)."""
        with self._lock:
            acc = self._account(account)
            if access_role not in ("owner", "writer", "reader", "freeBusyReader"):
                raise EmulatorError("access_role must be owner, writer, reader or freeBusyReader")
            if primary and any(c.primary for c in acc.calendars.values()):
                raise EmulatorError("the account already has a primary calendar")
            cal_id = calendar_id or f"c_{secrets.token_hex(26)}@group.calendar.google.com"
            if cal_id in acc.calendars and not acc.calendars[cal_id].deleted:
                raise EmulatorError(f"calendar {cal_id!r} already exists", 409)
            acc.list_seq += 1
            cal = GoogleCalendar(
                id=cal_id,
                summary=summary,
                primary=primary,
                access_role=access_role,
                time_zone=_zone_name(time_zone or acc.time_zone),
                background_color=background_color,
                color_id=str(1 + len(acc.calendars) % 24),
                list_seq=acc.list_seq,
            )
            acc.calendars[cal.id] = cal
            return {"id": cal.id, "summary": cal.summary, "primary": cal.primary}

    def delete_calendar(self, account: str, calendar_id: str) -> None:
        """Remove a (secondary) calendar: its channels get a `not_exists` message, then stop."""
        with self._lock:
            acc = self._account(account)
            cal = acc.calendars.get(calendar_id)
            if cal is None or cal.deleted:
                raise EmulatorError(f"no calendar {calendar_id!r}", 404)
            if cal.primary:
                raise EmulatorError("the primary calendar cannot be deleted")
            cal.deleted = True
            acc.list_seq += 1
            cal.list_seq = acc.list_seq
            starters = self._queue_state(acc.id, cal.id, "not_exists")
        for start in starters:
            start()

    def add_event(
        self,
        account: str,
        calendar_id: str,
        *,
        start: str | datetime | date,
        end: str | datetime | date,
        summary: str = "",
        description: str = "",
        location: str | None = None,
        time_zone: str | None = None,
        all_day: bool = False,
        recurrence: list[str] | None = None,
        status: str = "confirmed",
        meet: bool | str = False,
        conference_data: dict[str, Any] | None = None,
        attendees: list[str | dict[str, Any]] | None = None,
        organizer: str | dict[str, str] | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """Create a single event, or a recurring master when `recurrence` lines are given.

        `start`/`end`: ISO 8601 with an offset (converted into `time_zone`) or naive (read in it);
        all-day events take dates (end exclusive). `time_zone` defaults to the calendar's.
        `meet=True` adds a Google Meet (hangoutLink + conferenceData), a string is its link.
        """
        with self._lock:
            acc = self._account(account)
            cal = self._calendar(acc, calendar_id)
            if event_id is not None:
                if not re.fullmatch(r"[a-v0-9]{5,1024}", event_id):
                    raise EmulatorError("event id must be 5-1024 characters of a-v and 0-9 (base32hex)")
                if self._find_stored(event_id) is not None:
                    raise EmulatorError(f"event id {event_id!r} already exists", 409)
            if status not in ("confirmed", "tentative"):
                raise EmulatorError("status must be confirmed or tentative (cancel_event cancels)")
            zone = _zone_name(time_zone or cal.time_zone)
            begin, finish = self._times(start, end, zone, bool(all_day))
            org_email, org_name = self._organizer(acc, cal, organizer)
            now = self.now()
            ev = GoogleEvent(
                id=event_id or _new_event_id(),
                calendar_id=cal.id,
                summary=str(summary or ""),
                description=str(description or ""),
                location=location or None,
                status=status,
                zone=zone,
                all_day=bool(all_day),
                start=begin,
                end=finish,
                created=now,
                updated=now,
                ical_uid="",
                organizer_email=org_email,
                organizer_name=org_name,
                attendees=self._attendees(acc, attendees),
            )
            ev.ical_uid = f"{ev.id}@google.com"
            self._set_conference(ev, meet, conference_data)
            if recurrence is not None:
                ev.recurrence = _check_recurrence(recurrence, ev)
            view, starters = self._store_changed(acc, cal, ev)
        for start_ in starters:
            start_()
        return view

    def update_event(
        self,
        event_id: str,
        *,
        summary: Any = UNSET,
        description: Any = UNSET,
        location: Any = UNSET,
        start: Any = UNSET,
        end: Any = UNSET,
        time_zone: Any = UNSET,
        recurrence: Any = UNSET,
        status: Any = UNSET,
        meet: Any = UNSET,
        conference_data: Any = UNSET,
        attendees: Any = UNSET,
    ) -> dict[str, Any]:
        """Change an event; only the arguments given change (None clears location / meeting).

        A master edit changes the series (instances that vanish because of a new time or recurrence
        are reported cancelled to sync clients). An instance id creates or updates an exception: new
        start/end move that instance. `start` alone keeps the duration.
        """
        with self._lock:
            acc, cal, ev = self._editable(event_id)
            if ev.recurring_event_id and recurrence is not UNSET:
                raise EmulatorError("an instance cannot get a recurrence of its own")
            if status is not UNSET and status not in ("confirmed", "tentative"):
                raise EmulatorError("status must be confirmed or tentative (cancel_event cancels)")
            before = dict(ev.__dict__)
            old_ids = self._series_ids(cal, ev) if ev.recurrence else set()
            try:
                timing = self._apply(
                    ev,
                    acc,
                    summary,
                    description,
                    location,
                    start,
                    end,
                    time_zone,
                    recurrence,
                    status,
                    meet,
                    conference_data,
                    attendees,
                )
            except (EmulatorError, TypeError, ValueError):
                ev.__dict__.update(before)  # all or nothing
                raise
            if timing:
                ev.sequence += 1
            self._bump(cal, ev)
            cal.events[ev.id] = ev  # a new exception is stored once its patch is accepted
            if old_ids and timing:  # also when the series became a single event
                self._retire_instances(cal, ev, old_ids - self._series_ids(cal, ev))
            view = self._control_view(ev)
            starters = self._queue_state(acc.id, cal.id, "exists")
        for start_ in starters:
            start_()
        return view

    def cancel_event(self, event_id: str) -> dict[str, Any]:
        """Cancel (= delete, for Google) a single event, a whole series, or one instance by its id.

        The item stays as a `status: "cancelled"` tombstone; cancelling twice changes nothing.
        """
        with self._lock:
            acc, cal, ev = self._editable(event_id, allow_cancelled=True)
            if ev.status == "cancelled" and ev.id in cal.events:
                return self._control_view(ev)
            ev.status = "cancelled"
            view, starters = self._store_changed(acc, cal, ev)
        for start_ in starters:
            start_()
        return view

    delete_event = cancel_event

    def _store_changed(
        self, acc: GoogleAccount, cal: GoogleCalendar, ev: GoogleEvent
    ) -> tuple[dict[str, Any], list[Callable[[], None]]]:
        """Store a changed event (lock held): its control view, and the starters of the `exists`
        messages to run once the lock is released."""
        self._bump(cal, ev)
        cal.events[ev.id] = ev
        return self._control_view(ev), self._queue_state(acc.id, cal.id, "exists")

    def event(self, event_id: str) -> dict[str, Any]:
        """Control view of a stored event or of an instance (by its instance id)."""
        with self._lock:
            _, _, ev = self._editable(event_id, allow_cancelled=True)
            return self._control_view(ev)

    def events(self, account: str) -> list[dict[str, Any]]:
        """Control views of every stored item of the account (masters, exceptions, tombstones)."""
        with self._lock:
            acc = self._account(account)
            return [
                self._control_view(ev)
                for cal in acc.calendars.values()
                if not cal.deleted
                for ev in cal.events.values()
            ]

    def instances(self, event_id: str, start: str | datetime, end: str | datetime) -> list[dict[str, Any]]:
        """The series' live instances (exceptions applied) overlapping [start, end) (naive = UTC)."""
        with self._lock:
            acc, cal, master = self._editable(event_id, allow_cancelled=True)
            if not master.recurrence:
                raise EmulatorError(f"{event_id!r} is not a recurring master")
            utc = ZoneInfo("UTC")
            query = _Query(
                True,
                control_time(start, utc, "start"),
                control_time(end, utc, "end"),
                False,
                "startTime",
                None,
            )
            items = self._full_items(acc, cal, query, only_series=master.id)
            return [
                {
                    "id": item["id"],
                    "summary": item.get("summary"),
                    "start": item["start"],
                    "end": item["end"],
                    "original_start": item["originalStartTime"],
                }
                for item in items
            ]

    def expire_sync_tokens(self, account: str) -> int:
        """Forget the account's sync and page tokens: their next use answers 410 fullSyncRequired."""
        with self._lock:
            acc = self._account(account)
            for token in [t for t, p in self._pages.items() if p.signature[0] == acc.id]:
                del self._pages[token]
            return self._forget_sync_states(acc.id)

    def channels(self, active_only: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            now = self.now()
            return [
                self._channel_view(c, now)
                for c in self._channels.values()
                if not active_only or (not c.stopped and c.expiration > now)
            ]

    def expire_channel(self, channel_id: str) -> dict[str, Any]:
        """Expire a channel now: it delivers nothing more and channels/stop answers 404."""
        with self._lock:
            channel = self._channels.get(channel_id)
            if channel is None:
                raise EmulatorError(f"no channel {channel_id!r}", 404)
            channel.expiration = min(channel.expiration, self.now())
            return self._channel_view(channel, self.now())

    @staticmethod
    def _calendar(acc: GoogleAccount, calendar_id: str) -> GoogleCalendar:
        if calendar_id == "primary":
            calendar_id = acc.email
        cal = acc.calendars.get(calendar_id)
        if cal is None or cal.deleted:
            raise EmulatorError(f"no calendar {calendar_id!r} in account {acc.email!r}", 404)
        return cal

    def _consent(self, acc: GoogleAccount, client_id: str, requested: Iterable[str]) -> list[str]:
        granted = acc.consents.setdefault(client_id, [])
        for scope in _normalize_scopes(requested):
            if scope not in granted:
                granted.append(scope)
        return list(granted)

    def _new_refresh(self, account_id: str, client_id: str, scopes: list[str]) -> _RefreshToken:
        rt = _RefreshToken(_new_refresh_token(), client_id, account_id, list(scopes), self.now())
        self._refresh_tokens[rt.token] = rt
        return rt

    def _find_stored(self, event_id: str) -> tuple[GoogleAccount, GoogleCalendar, GoogleEvent] | None:
        for acc in self._accounts.values():
            for cal in acc.calendars.values():
                ev = cal.events.get(event_id)
                if ev is not None and not cal.deleted:
                    return acc, cal, ev
        return None

    def _editable(
        self, event_id: str, *, allow_cancelled: bool = False
    ) -> tuple[GoogleAccount, GoogleCalendar, GoogleEvent]:
        """A stored item, or a new (unstored) exception for an instance id; 404 / 409 otherwise."""
        found = self._find_stored(event_id)
        if found is None:
            parsed = _parse_instance_id(event_id)
            master_found = self._find_stored(parsed[0]) if parsed else None
            if parsed is None or master_found is None or not master_found[2].recurrence:
                raise EmulatorError(f"no event {event_id!r}", 404)
            acc, cal, master = master_found
            exception = self._virtual_instance(master, parsed[1])
            if exception is None:
                raise EmulatorError(f"no event {event_id!r}", 404)
            found = acc, cal, exception
        acc, cal, ev = found
        if not allow_cancelled and ev.status == "cancelled":
            raise EmulatorError(f"event {event_id!r} is cancelled", 409)
        return acc, cal, ev

    def _virtual_instance(self, master: GoogleEvent, stamp: str) -> GoogleEvent | None:
        """The unedited instance of `master` whose id ends in `stamp`, as an exception-to-be."""
        original = _stamp_datetime(stamp, ZoneInfo(master.zone), master.all_day)
        if original is None:
            return None
        hits = _rule_set(master).between(
            original - timedelta(seconds=1), original + timedelta(seconds=1), inc=True
        )
        if not any(hit == original for hit in hits):
            return None
        duration = master.end - master.start
        return GoogleEvent(
            **{
                **master.__dict__,
                "id": f"{master.id}_{stamp}",
                "recurrence": None,
                "recurring_event_id": master.id,
                "original_start": original,
                "start": original,
                "end": original + duration,
                "attendees": [dict(a) for a in master.attendees],
            }
        )

    @staticmethod
    def _one_time(raw: Any, zone: str, all_day: bool, name: str) -> datetime:
        tz = ZoneInfo(zone)
        if all_day:
            if isinstance(raw, datetime) and raw.tzinfo is None:
                return datetime.combine(raw.date(), datetime.min.time())  # already a floating midnight
            return datetime.combine(control_time(raw, tz, name).date(), datetime.min.time())
        return control_time(raw, tz, name)

    def _times(self, start: Any, end: Any, zone: str, all_day: bool) -> tuple[datetime, datetime]:
        begin, finish = (
            self._one_time(start, zone, all_day, "start"),
            self._one_time(end, zone, all_day, "end"),
        )
        if finish <= begin:
            raise EmulatorError("end must be after start")
        return begin, finish

    @staticmethod
    def _organizer(
        acc: GoogleAccount, cal: GoogleCalendar, organizer: str | dict[str, str] | None
    ) -> tuple[str, str]:
        if organizer is None:
            return (acc.email, acc.name) if cal.primary else (cal.id, cal.summary)
        if isinstance(organizer, str) and "@" in organizer:
            return organizer, ""
        if isinstance(organizer, dict) and isinstance(organizer.get("email"), str):
            return organizer["email"], str(organizer.get("name") or "")
        raise EmulatorError('organizer must be an address or {"email": ..., "name": ...}')

    @staticmethod
    def _attendees(acc: GoogleAccount, raw: list[str | dict[str, Any]] | None) -> list[dict[str, Any]]:
        out = []
        for item in raw or []:
            if isinstance(item, str):
                item = {"email": item}
            if not isinstance(item, dict) or not isinstance(item.get("email"), str):
                raise EmulatorError('attendees must be addresses or {"email": ..., ...} objects')
            entry: dict[str, Any] = {"email": item["email"]}
            if item.get("name") or item.get("displayName"):
                entry["displayName"] = item.get("name") or item.get("displayName")
            entry["responseStatus"] = item.get("responseStatus", "needsAction")
            if item["email"].lower() == acc.email.lower():
                entry["self"] = True
            out.append(entry)
        return out

    @staticmethod
    def _set_conference(ev: GoogleEvent, meet: Any, conference_data: Any) -> None:
        """`conference_data` (a conferenceData object) wins; `meet` True / a link adds a Google Meet;
        an explicit None / False clears the conference; UNSET leaves it."""
        if isinstance(conference_data, dict):
            ev.conference = json.loads(json.dumps(conference_data))
            video: dict[str, Any] = next(
                (e for e in ev.conference.get("entryPoints", []) if e.get("entryPointType") == "video"), {}
            )
            is_meet = (ev.conference.get("conferenceSolution") or {}).get("key", {}).get(
                "type"
            ) == "hangoutsMeet"
            ev.hangout_link = video.get("uri") if is_meet else None
        elif conference_data not in (UNSET, None):
            raise EmulatorError("conference_data must be a Google conferenceData object")
        elif meet is True or isinstance(meet, str):
            link = meet if isinstance(meet, str) else _meet_link()
            if not link.startswith("https://meet.google.com/"):
                raise EmulatorError("meet must be true or a https://meet.google.com/... link")
            ev.hangout_link, ev.conference = link, _conference_for(link)
        elif meet in (None, False) or conference_data is None:
            ev.hangout_link, ev.conference = None, None

    def _apply(
        self,
        ev: GoogleEvent,
        acc: GoogleAccount,
        summary: Any,
        description: Any,
        location: Any,
        start: Any,
        end: Any,
        time_zone: Any,
        recurrence: Any,
        status: Any,
        meet: Any,
        conference_data: Any,
        attendees: Any,
    ) -> bool:
        """Apply update_event's arguments; True when the timing (or recurrence) changed."""
        old = (ev.start, ev.end, ev.zone, ev.recurrence)
        if summary is not UNSET:
            ev.summary = str(summary or "")
        if description is not UNSET:
            ev.description = str(description or "")
        if location is not UNSET:
            ev.location = location or None
        if status is not UNSET:
            ev.status = status
        if attendees is not UNSET:
            ev.attendees = self._attendees(acc, attendees)
        if meet is not UNSET or conference_data is not UNSET:
            self._set_conference(ev, meet, conference_data)
        if time_zone is not UNSET:
            ev.zone = _zone_name(time_zone)
            if not ev.all_day:
                tz = ZoneInfo(ev.zone)
                ev.start = localize(ev.start.replace(tzinfo=None), tz)
                ev.end = localize(ev.end.replace(tzinfo=None), tz)
        if start is not UNSET or end is not UNSET:
            duration = ev.end - ev.start
            raw_start = start if start is not UNSET else ev.start
            if start is not UNSET and end is UNSET:
                ev.start = self._one_time(raw_start, ev.zone, ev.all_day, "start")
                ev.end = ev.start + duration
            else:
                ev.start, ev.end = self._times(raw_start, end, ev.zone, ev.all_day)
        if recurrence is not UNSET:
            ev.recurrence = None if recurrence is None else _check_recurrence(recurrence, ev)
        elif ev.recurrence:
            _check_recurrence(ev.recurrence, ev)  # a new start must still expand
        return (ev.start, ev.end, ev.zone, ev.recurrence) != old

    def _bump(self, cal: GoogleCalendar, ev: GoogleEvent) -> None:
        cal.change_seq += 1
        ev.seq = cal.change_seq
        ev.updated = self.now()
        ev.etag = _etag(ev.updated, ev.seq)

    def _horizon(
        self, master: GoogleEvent, low: datetime | None, high: datetime | None
    ) -> tuple[datetime, datetime]:
        """The expansion window [low, high) of a series as aware UTC (defaults: series start, horizon)."""
        start = master.start if not master.all_day else localize(master.start, ZoneInfo(master.zone))
        return (low or start.astimezone(UTC), high or self.now() + self.expansion_horizon)

    def _expand(self, master: GoogleEvent, low: datetime, high: datetime) -> list[datetime]:
        """Original starts of the series' instances overlapping [low, high)."""
        duration = master.end - master.start
        if master.all_day:  # floating dates: compare wall times in the series' zone
            tz = ZoneInfo(master.zone)
            low, high = low.astimezone(tz).replace(tzinfo=None), high.astimezone(tz).replace(tzinfo=None)
        hits = _rule_set(master).between(low - duration, high, inc=True)
        return [hit for hit in hits if hit < high and hit + duration > low]

    def _series_ids(self, cal: GoogleCalendar, master: GoogleEvent) -> set[str]:
        if not master.recurrence:
            return set()
        low, high = self._horizon(master, None, None)
        return {f"{master.id}_{_instance_stamp(o, master.all_day)}" for o in self._expand(master, low, high)}

    def _retire_instances(self, cal: GoogleCalendar, master: GoogleEvent, gone: set[str]) -> None:
        """Instances a master edit removed become cancelled tombstones, so sync clients drop them."""
        tz = ZoneInfo(master.zone)
        for iid in sorted(gone):
            if iid in cal.events:
                continue  # an exception (moved / cancelled instance) outlives a change of its series
            stamp = iid.rpartition("_")[2]
            original = _stamp_datetime(stamp, tz, master.all_day)
            if original is None:
                continue
            tomb = GoogleEvent(
                **{
                    **master.__dict__,
                    "id": iid,
                    "recurrence": None,
                    "recurring_event_id": master.id,
                    "original_start": original,
                    "start": original,
                    "end": original + (master.end - master.start),
                    "status": "cancelled",
                }
            )
            self._bump(cal, tomb)
            cal.events[iid] = tomb

    def _control_view(self, ev: GoogleEvent) -> dict[str, Any]:
        return {
            **fields_of(ev, "id", "calendar_id", "summary", "description", "location", "status"),
            "time_zone": ev.zone,
            "all_day": ev.all_day,
            "start": ev.start.date().isoformat() if ev.all_day else ev.start.isoformat(),
            "end": ev.end.date().isoformat() if ev.all_day else ev.end.isoformat(),
            "recurrence": list(ev.recurrence) if ev.recurrence else None,
            "recurring_event_id": ev.recurring_event_id,
            "original_start": (
                None
                if ev.original_start is None
                else ev.original_start.date().isoformat()
                if ev.all_day
                else ev.original_start.isoformat()
            ),
            **fields_of(ev, "hangout_link", "ical_uid", "sequence", "etag"),
            "updated": iso(ev.updated),
        }

    def _channel_view(self, channel: _Channel, now: datetime) -> dict[str, Any]:
        fields = ("id", "resource_id", "resource_uri", "token", "address", "account_id", "client_id")
        return {
            **fields_of(channel, *fields, "calendar_id"),
            "expiration": iso(channel.expiration),
            "expired": channel.expiration <= now,
            "stopped": channel.stopped,
            "messages_sent": channel.message_number,
        }

    def _html_link(self, event_id: str, cal: GoogleCalendar) -> str:
        eid = base64.urlsafe_b64encode(f"{event_id} {cal.id}".encode()).decode().rstrip("=")
        return f"https://www.google.com/calendar/event?eid={eid}"

    def _person(self, acc: GoogleAccount, email: str, name: str) -> dict[str, Any]:
        person: dict[str, Any] = {"email": email}
        if name:
            person["displayName"] = name
        if email.lower() == acc.email.lower():
            person["self"] = True
        return person

    def _event_json(
        self,
        acc: GoogleAccount,
        cal: GoogleCalendar,
        src: GoogleEvent,
        *,
        event_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        original_start: datetime | None = None,
        recurring_event_id: str | None = None,
    ) -> dict[str, Any]:
        """Full event JSON of `src` (stored) or of an unedited instance of master `src`."""
        event_id = event_id or src.id
        recurring_event_id = recurring_event_id or src.recurring_event_id
        original_start = original_start or src.original_start
        body: dict[str, Any] = {
            "kind": "calendar#event",
            "etag": src.etag,
            "id": event_id,
            "status": src.status,
            "htmlLink": self._html_link(event_id, cal),
            "created": _rfc3339_ms(src.created),
            "updated": _rfc3339_ms(src.updated),
            "summary": src.summary,
        }
        if src.description:
            body["description"] = src.description
        if src.location:
            body["location"] = src.location
        body["creator"] = self._person(acc, src.organizer_email, src.organizer_name)
        body["organizer"] = self._person(acc, src.organizer_email, src.organizer_name)
        body["start"] = _time_json(start or src.start, src.zone, src.all_day)
        body["end"] = _time_json(end or src.end, src.zone, src.all_day)
        if src.recurrence and recurring_event_id is None:
            body["recurrence"] = list(src.recurrence)
        if recurring_event_id is not None and original_start is not None:
            body["recurringEventId"] = recurring_event_id
            body["originalStartTime"] = _time_json(original_start, src.zone, src.all_day)
        body["transparency"] = "transparent" if src.all_day else "opaque"
        body["iCalUID"] = src.ical_uid
        body["sequence"] = src.sequence
        if src.attendees:
            # The organizer's own row carries organizer: true (read-only, set by Google).
            body["attendees"] = [
                {**a, "organizer": True}
                if str(a.get("email", "")).lower() == src.organizer_email.lower()
                else dict(a)
                for a in src.attendees
            ]
        if src.hangout_link:
            body["hangoutLink"] = src.hangout_link
        if src.conference:
            body["conferenceData"] = json.loads(json.dumps(src.conference))
        body["reminders"] = {"useDefault": True}
        body["eventType"] = "default"
        return body

    @staticmethod
    def _bare(
        ev_id: str, etag: str, recurring_event_id: str | None = None, original: dict[str, str] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "calendar#event", "etag": etag, "id": ev_id, "status": "cancelled"}
        if recurring_event_id is not None and original is not None:
            body["recurringEventId"] = recurring_event_id
            body["originalStartTime"] = original
        return body

    def _bare_of(self, ev: GoogleEvent) -> dict[str, Any]:
        original = (
            _time_json(ev.original_start, ev.zone, ev.all_day) if ev.original_start is not None else None
        )
        return self._bare(ev.id, ev.etag, ev.recurring_event_id, original)

    def _instance_items(
        self,
        acc: GoogleAccount,
        cal: GoogleCalendar,
        master: GoogleEvent,
        low: datetime,
        high: datetime,
        *,
        cancelled: bool = False,
    ) -> list[dict[str, Any]]:
        """Unedited instances of `master` in the window (exception slots skipped); bare if `cancelled`."""
        duration = master.end - master.start
        out = []
        for original in self._expand(master, low, high):
            iid = f"{master.id}_{_instance_stamp(original, master.all_day)}"
            if iid in cal.events:
                continue
            if cancelled:
                out.append(
                    self._bare(iid, master.etag, master.id, _time_json(original, master.zone, master.all_day))
                )
            else:
                out.append(
                    self._event_json(
                        acc,
                        cal,
                        master,
                        event_id=iid,
                        start=original,
                        end=original + duration,
                        original_start=original,
                        recurring_event_id=master.id,
                    )
                )
        return out

    def _overlaps(self, ev: GoogleEvent, low: datetime | None, high: datetime | None) -> bool:
        start, end = ev.start, ev.end
        if ev.all_day:
            tz = ZoneInfo(ev.zone)
            start, end = localize(start, tz), localize(end, tz)
        return (low is None or end > low) and (high is None or start < high)

    def _full_items(
        self, acc: GoogleAccount, cal: GoogleCalendar, q: _Query, only_series: str | None = None
    ) -> list[dict[str, Any]]:
        """A full (non-incremental) listing, ordered as asked."""
        rows: list[tuple[GoogleEvent, dict[str, Any]]] = []
        for ev in list(cal.events.values()):
            if only_series is not None and only_series not in (ev.id, ev.recurring_event_id):
                continue
            if q.updated_min is not None and ev.updated < q.updated_min:
                continue
            show_deleted = q.show_deleted or q.updated_min is not None
            master = cal.events.get(ev.recurring_event_id) if ev.recurring_event_id else None
            cancelled = ev.status == "cancelled" or (master is not None and master.status == "cancelled")
            if cancelled:
                if show_deleted and only_series is None:
                    rows.append((ev, self._bare_of(ev)))
                continue
            if ev.recurrence:
                low, high = self._horizon(ev, q.time_min, q.time_max)
                if q.single_events:
                    rows += [(ev, item) for item in self._instance_items(acc, cal, ev, low, high)]
                elif self._expand(ev, low, high):
                    rows.append((ev, self._event_json(acc, cal, ev)))
            elif self._overlaps(ev, q.time_min, q.time_max):
                rows.append((ev, self._event_json(acc, cal, ev)))
        if q.order_by == "startTime":
            rows.sort(key=lambda row: (self._start_key(row[1], cal), row[1]["id"]))
        elif q.order_by == "updated":
            rows.sort(key=lambda row: (row[0].updated, row[1]["id"]))
        return [item for _, item in rows]

    @staticmethod
    def _start_key(item: dict[str, Any], cal: GoogleCalendar) -> datetime:
        start = item.get("start") or item.get("originalStartTime") or {}
        if "dateTime" in start:
            return datetime.fromisoformat(start["dateTime"].replace("Z", "+00:00")).astimezone(UTC)
        if "date" in start:
            return localize(datetime.fromisoformat(start["date"]), ZoneInfo(cal.time_zone)).astimezone(UTC)
        return datetime.max.replace(tzinfo=UTC)

    def _changed_items(
        self, acc: GoogleAccount, cal: GoogleCalendar, state: _SyncState, single_events: bool
    ) -> list[dict[str, Any]]:
        """What changed since `state`: current state of changed items, cancelled ones bare."""
        out: dict[str, dict[str, Any]] = {}
        for ev in [e for e in cal.events.values() if e.seq > state.seq]:
            master = cal.events.get(ev.recurring_event_id) if ev.recurring_event_id else None
            if ev.recurrence and single_events:
                low, high = self._horizon(ev, state.time_min, None)
                gone = ev.status == "cancelled"
                for item in self._instance_items(acc, cal, ev, low, high, cancelled=gone):
                    out[item["id"]] = item
                for exc in [e for e in cal.events.values() if e.recurring_event_id == ev.id]:
                    gone_exc = gone or exc.status == "cancelled"
                    out[exc.id] = self._bare_of(exc) if gone_exc else self._event_json(acc, cal, exc)
                if gone:
                    out[ev.id] = self._bare_of(ev)
            elif ev.status == "cancelled" or (master is not None and master.status == "cancelled"):
                out[ev.id] = self._bare_of(ev)
            else:
                out[ev.id] = self._event_json(acc, cal, ev)
        return list(out.values())
