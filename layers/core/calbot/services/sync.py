"""Event sync: per account and per calendar, a full sync then incremental ones with the stored cursor.

- The cursor (Graph deltaLink / Google sync token) is stored per calendar with the fixed window it
  was opened with; an expired one triggers a full resync (never swallowed).
- Only events whose content changed are written; a re-sync with no changes writes nothing (the old
  cursor stays valid and is reused, so not even the cursor is rewritten).
- Two syncs of one calendar may overlap (GET /calendar/events and the queue worker): the sync state
  carries a version, taken (store.claim_sync) by a sync that has something to write once the provider
  has answered; events are written field by field, conditional on that version, and the cursor only by
  the sync still holding it. A cursor never moves back, an older view never overwrites a newer one,
  and the user's own fields (recurring_enabled) are never overwritten by a sync.
- Every stored field is bounded (providers.base.cap_raw, NormalizedEvent.capped): no event is too
  big to store, and one huge event never fails an account's sync.
- Accounts sync concurrently with a bound; one failing account lands in `partial_errors`; an auth
  failure marks that connection `needs_reauth` (throttling, 5xx, token-endpoint errors other than
  invalid_grant / invalid_client, and a 401 right after a refresh never do); such an account is
  retried once an hour, and a good refresh restores it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from calbot import deadline as deadlines
from calbot import ids, store, tokens
from calbot.config import get_settings
from calbot.deadline import Deadline
from calbot.log import logger
from calbot.models import ChangeMessage, Connection, Event, SyncState, account_key
from calbot.providers import get_provider
from calbot.providers.base import (
    CalendarChanges,
    NormalizedEvent,
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
    ProviderUnavailable,
    SyncTokenExpired,
)
from calbot.services.connections import mark_needs_reauth
from calbot.timeutil import now

WINDOW_PAST = timedelta(days=30)
WINDOW_FUTURE = timedelta(days=400)
# Open a new window (full sync) once the fixed one has drifted this far: keeps a year ahead in view.
WINDOW_RENEW_AFTER = timedelta(days=30)
CURSOR_REFRESH_AFTER = timedelta(hours=12)  # rewrite an unchanged cursor at most this often
MAX_ACCOUNT_WORKERS = 8
# An account is not started with less than this left: a token and a first delta page take about this.
ACCOUNT_START_SECONDS = 1.0
# How long a needs_reauth account is only reported before a sync tries one refresh again.
REAUTH_RETRY = timedelta(hours=1)


@dataclass
class AccountResult:
    provider: str
    account_id: str
    written: int = 0
    changed: list[Event] = field(default_factory=list)  # what was written: bots follow these
    reconciled: dict[str, int] = field(default_factory=dict)  # what the account's bots did
    calendars: int = 0
    full_syncs: int = 0
    error: dict[str, str] | None = None


@dataclass
class SyncReport:
    accounts: list[AccountResult] = field(default_factory=list)

    @property
    def partial_errors(self) -> dict[str, dict[str, str]]:
        return {f"{a.provider}::{a.account_id}": a.error for a in self.accounts if a.error}

    @property
    def written(self) -> int:
        return sum(a.written for a in self.accounts)


def _hash(event: NormalizedEvent) -> str:
    fields = [
        event.calendar_id,
        event.start.isoformat(),
        event.end.isoformat(),
        event.event_type,
        event.title,
        event.ical_uid,
        event.is_all_day,
        event.timezone,
        event.organizer_email,
        event.location,
        event.meeting_url,
        event.meeting_platform,
        event.series_platform_id,
        event.original_start.isoformat() if event.original_start else None,
        event.recurrence_rule,
        json.dumps(event.recurrence, sort_keys=True) if event.recurrence else None,
        # attendance: a decline or a new external guest is a change the auto-schedule rules act on
        event.organizer_name,
        event.response_status,
        event.is_organizer,
        event.attendees_count,
        event.attendee_domains,
    ]
    return hashlib.sha256(json.dumps(fields, default=str).encode()).hexdigest()[:32]


def _record(
    conn: Connection,
    change: NormalizedEvent,
    existing: Event | None,
    at: datetime,
    *,
    series_on: bool = False,
) -> Event:
    return Event(
        event_id=ids.event_id(conn.user_id, conn.provider, conn.account_id, change.platform_id),
        user_id=conn.user_id,
        provider=conn.provider,
        account_id=conn.account_id,
        calendar_id=change.calendar_id,
        platform_id=change.platform_id,
        ical_uid=change.ical_uid,
        title=change.title,
        start_time=change.start,
        end_time=change.end,
        is_all_day=change.is_all_day,
        timezone=change.timezone,
        organizer_email=change.organizer_email,
        organizer_name=change.organizer_name,
        response_status=change.response_status,
        is_organizer=change.is_organizer,
        attendees_count=change.attendees_count,
        attendee_domains=change.attendee_domains,
        location=change.location,
        meeting_platform=change.meeting_platform,
        meeting_url=change.meeting_url,
        event_type=change.event_type,
        is_recurring=change.event_type != "single",
        recurrence_rule=change.recurrence_rule,
        recurrence=change.recurrence,
        series_id=(
            ids.event_id(conn.user_id, conn.provider, conn.account_id, change.series_platform_id)
            if change.series_platform_id
            else None
        ),
        series_platform_id=change.series_platform_id,
        occurrence_start=change.original_start,
        # user-owned: kept as it is (the store never overwrites it); a new occurrence of a series the
        # user turned recurrence on for gets it too, so the chain does not stop at it
        recurring_enabled=existing.recurring_enabled if existing else series_on,
        is_deleted=False,
        content_hash=_hash(change),
        created_at=existing.created_at if existing else at,
        updated_at=at,
        raw=change.raw,
    )


_UNREAD = object()  # no sync state handed in: read it


def sync_calendar(
    conn: Connection, calendar_id: str, access_token: str, *, state: SyncState | None | object = _UNREAD
) -> tuple[list[Event], bool]:
    """Sync one calendar; returns (the events written, whether it was a full sync). `state` is its sync
    state as the caller has just read it (None: it has none), which saves reading it again; a stale one
    only loses the claim below.

    Two syncs of one calendar may run at once (the user's GET /calendar/events and the queue worker):
    the one that loses the claim on the sync state starts again from what the winner left, once, then
    gives up cleanly (the winner, which saw the provider later, has the newer view)."""
    try:
        return _sync_calendar_once(conn, calendar_id, access_token, state)
    except store.SyncConflict:
        logger.info("calendar synced concurrently; syncing again from its new state")
    try:
        return _sync_calendar_once(conn, calendar_id, access_token, _UNREAD)
    except store.SyncConflict:
        logger.info("calendar synced concurrently again; leaving it to the other sync")
        return [], False


def _sync_calendar_once(
    conn: Connection, calendar_id: str, access_token: str, known: SyncState | None | object
) -> tuple[list[Event], bool]:
    provider = get_provider(conn.provider)
    at = now()
    state = (
        known
        if known is None or isinstance(known, SyncState)
        else store.get_sync_state(conn.user_id, conn.provider, conn.account_id, calendar_id)
    )
    read_version = state.version if state else 0
    cursor = (
        state.cursor
        if state
        and state.cursor
        and state.window_start
        and at - state.window_start < WINDOW_PAST + WINDOW_RENEW_AFTER
        else None
    )
    window = (
        (state.window_start, state.window_end)
        if cursor and state and state.window_start and state.window_end
        else (at - WINDOW_PAST, at + WINDOW_FUTURE)
    )
    try:
        changes = provider.sync_calendar(access_token, calendar_id, cursor=cursor, window=window)
    except SyncTokenExpired:
        logger.info("sync token expired; full resync", extra={"provider": conn.provider})
        window = (at - WINDOW_PAST, at + WINDOW_FUTURE)
        changes = provider.sync_calendar(access_token, calendar_id, cursor=None, window=window)
    puts = _changed_events(conn, calendar_id, changes, window, at)
    if not (
        puts
        or changes.full
        or state is None
        or state.cursor is None
        or state.cursor != changes.cursor
        and state.updated_at is not None
        and at - state.updated_at > CURSOR_REFRESH_AFTER
    ):
        return [], changes.full  # nothing new: not one write, not even the cursor
    version = read_version
    written: list[Event] = []
    if puts:
        # Claim the next version before writing: events carry it, and a later sync's events (a higher
        # version) are never overwritten by ours. Raises SyncConflict when another sync came first.
        version = store.claim_sync(_state(conn, calendar_id, None, window, at, 0), expected=read_version)
        written = store.write_synced_events(puts, version=version)
    try:
        store.commit_sync_state(
            _state(conn, calendar_id, changes.cursor, window, at, version if puts else read_version + 1),
            expected=version,
        )
    except store.SyncConflict:
        if not puts:
            raise  # nothing written yet: start again from the winner's state
        # A later sync claimed the state after our events were written: it saw the provider later and
        # commits its own cursor; ours must never move it back.
        logger.info("a later sync of this calendar commits the cursor")
    return written, changes.full


def _state(
    conn: Connection,
    calendar_id: str,
    cursor: str | None,
    window: tuple[datetime, datetime],
    at: datetime,
    version: int,
) -> SyncState:
    return SyncState(
        user_id=conn.user_id,
        provider=conn.provider,
        account_id=conn.account_id,
        calendar_id=calendar_id,
        cursor=cursor,
        window_start=window[0],
        window_end=window[1],
        updated_at=at,
        version=version,
    )


def _changed_events(
    conn: Connection,
    calendar_id: str,
    changes: CalendarChanges,
    window: tuple[datetime, datetime],
    at: datetime,
) -> list[Event]:
    """What changed: new or different events, and deletions. Unchanged events cost no write."""
    # A later item for the same id wins; every stored field is bounded (a huge event syncs, trimmed).
    by_platform_id = {c.platform_id: c.capped() for c in changes.upserts}
    if changes.full:
        existing = {
            e.platform_id: e
            for e in store.events_of_calendar(conn.user_id, conn.provider, conn.account_id, calendar_id)
        }
    else:
        wanted = [
            ids.event_id(conn.user_id, conn.provider, conn.account_id, p)
            for p in [*by_platform_id, *changes.removed]
        ]
        existing = {e.platform_id: e for e in store.get_events(conn.user_id, wanted).values()}
    flagged = {
        e.series_platform_id for e in existing.values() if e.series_platform_id and e.recurring_enabled
    }
    puts: list[Event] = []
    for platform_id, change in by_platform_id.items():
        old = existing.get(platform_id)
        if change.is_cancelled:
            if old and not old.is_deleted:
                puts.append(old.model_copy(update={"is_deleted": True, "updated_at": at}))
            continue
        record = _record(
            conn,
            change,
            old,
            at,
            series_on=bool(change.series_platform_id) and change.series_platform_id in flagged,
        )
        if old is None or old.is_deleted or old.content_hash != record.content_hash:
            puts.append(record)
    gone: Iterable[str] = changes.removed
    if changes.full:
        # A full sync sees everything in its window: what we hold there and it did not return is gone.
        gone = [
            p
            for p, e in existing.items()
            if p not in by_platform_id and window[0] <= e.start_time < window[1]
        ]
    for platform_id in gone:
        old = existing.get(platform_id)
        if old and not old.is_deleted and platform_id not in by_platform_id:
            puts.append(old.model_copy(update={"is_deleted": True, "updated_at": at}))
    unmatched = {p for p in changes.removed if p not in existing and p not in by_platform_id}
    if unmatched and not changes.full:
        # A removed id we never stored may be a series master (we store instances only). Google reports
        # a deleted series' instances as cancelled only over a limited horizon, so its stored instances
        # go with the master.
        skip = {e.platform_id for e in puts} | set(by_platform_id)
        for e in _stored_instances(conn, calendar_id, unmatched):
            if not e.is_deleted and e.platform_id not in skip:
                puts.append(e.model_copy(update={"is_deleted": True, "updated_at": at}))
    return puts


# Removed ids we never stored (a Google round reports every change outside the window as removed) are
# looked up as series one by one, through the series index, up to this many; past it, one read of the
# account's events (a range of the user's partition) costs less.
SERIES_LOOKUPS = 10


def _stored_instances(conn: Connection, calendar_id: str, masters: set[str]) -> list[Event]:
    """The stored instances, in this calendar, of the series whose masters these platform ids are (a
    series id is the event id its master would have)."""
    if len(masters) > SERIES_LOOKUPS:
        stored = store.events_of_calendar(conn.user_id, conn.provider, conn.account_id, calendar_id)
        return [e for e in stored if e.series_platform_id in masters]
    found: list[Event] = []
    for master in sorted(masters):
        series_id = ids.event_id(conn.user_id, conn.provider, conn.account_id, master)
        found += [
            e
            for e in store.events_of_series(conn.user_id, conn.provider, conn.account_id, series_id)
            if e.calendar_id == calendar_id and e.series_platform_id == master
        ]
    return found


def sync_connection(
    conn: Connection,
    *,
    follow: bool = True,
    deadline: Deadline | None = None,
    states: dict[str, SyncState | None] | None = None,
) -> AccountResult:
    """Sync one account; with `follow` its bots follow too (sync_user does that once for all accounts).

    Provider calls stop at `deadline` (default: the one active in this thread): an account that runs
    out of time ends with a `provider_unavailable` error and keeps its stored cursor, so nothing is
    half-synced and the next sync resumes from the same place. `states`: sync states by calendar id
    the caller has just read (the sync worker's coalescing check), each used once instead of a read."""
    with deadlines.active(deadline):
        return _sync_connection(conn, follow=follow, states=dict(states or {}))


def _sync_connection(conn: Connection, *, follow: bool, states: dict[str, SyncState | None]) -> AccountResult:
    result = AccountResult(provider=conn.provider, account_id=conn.account_id)
    try:
        token = tokens.access_token(conn)
        for cal in conn.calendars:
            try:
                changed, full = sync_calendar(conn, cal.id, token, state=states.pop(cal.id, _UNREAD))
            except ProviderAuthError as err:
                if err.revoked:
                    raise
                tokens.forget_access_token(conn)  # a 401 on a cached token: refresh once and retry
                token = tokens.access_token(conn)
                changed, full = sync_calendar(conn, cal.id, token)
            except ProviderRequestError as err:
                if err.status in (403, 404):  # a calendar we may no longer read; the rest still syncs
                    logger.warning("calendar skipped", extra={"status": err.status})
                    continue
                raise
            result.calendars += 1
            result.written += len(changed)
            result.changed += changed
            result.full_syncs += int(full)
        if follow:
            # Bots follow whatever synced the account: a read that synced a cancellation must not leave
            # a bot for the next sync to miss (it will see no change).
            from calbot.services.reconcile import reconcile_accounts

            result.reconciled = reconcile_accounts(
                conn.user_id, [(conn.provider, conn.account_id)], result.changed
            )
    except ProviderAuthError as err:
        if not err.revoked:
            # Refused right after a refresh the token endpoint granted: not proof of revocation.
            logger.warning("access token refused after a refresh; retried later")
            result.error = {"error": "provider_unavailable", "message": err.message}
        else:
            mark_needs_reauth(conn, err.message)
            result.error = {"error": "needs_reauth", "message": err.message}
    except ProviderUnavailable as err:
        result.error = {"error": "provider_unavailable", "message": err.message}
    except ProviderError as err:
        result.error = {"error": "provider_error", "message": err.message}
    except Exception:
        logger.exception("account sync failed")
        result.error = {"error": "sync_failed", "message": "Syncing this account failed unexpectedly."}
    return result


def defer_unfinished(user_id: str, report: SyncReport) -> int:
    """Accounts this call could not finish (throttled past what it may wait, or out of time) go to the
    sync worker, which has minutes rather than seconds; the answer says so. Returns how many. They go
    ten a SendMessageBatch call: 200 accounts are 20 calls, not 200, inside the caller's budget."""
    if not get_settings().sync_queue_url:
        return 0
    from calbot.services.notifications import enqueue_many

    bucket = int(now().timestamp() // 60)  # one deferral per account per minute, however often asked
    unfinished = [a for a in report.accounts if a.error and a.error.get("error") == "provider_unavailable"]
    messages = []
    for account in unfinished:
        message = ChangeMessage(user_id=user_id, provider=account.provider, account_id=account.account_id)
        dedup = f"defer|{user_id}|{account.provider}|{account_key(account.account_id)}|{bucket}"
        messages.append((message, hashlib.sha256(dedup.encode()).hexdigest()))
    try:
        queued = enqueue_many(messages)
    except Exception:
        logger.exception("could not hand unfinished accounts to the sync worker")
        return 0
    for account, ok in zip(unfinished, queued, strict=True):
        if ok and account.error:
            account.error = {
                **account.error,
                "message": f"{account.error['message']} It will finish syncing in the background.",
            }
    return sum(queued)


def in_scope(user_id: str, provider: str | None = None, account_id: str | None = None) -> list[Connection]:
    """The user's accounts in scope that are in service (one being disconnected is left alone)."""
    conns = [c for c in store.list_connections(user_id, provider) if c.live]
    if account_id:
        conns = [c for c in conns if c.key == account_id.strip().lower()]
    return conns


def sync_user(
    user_id: str,
    *,
    provider: str | None = None,
    account_id: str | None = None,
    connections: list[Connection] | None = None,
    deadline: Deadline | None = None,
    schedule_auto: bool = True,
) -> SyncReport:
    """Sync every in-scope account concurrently (bounded); never raises for one account's failure.
    Every account's provider calls stop at `deadline` (default: the one active in this thread).
    `schedule_auto=False`: the auto-schedule rules only cancel, the caller (the auto-schedule run)
    gives the matching meetings their bots and counts them itself."""
    budget = deadline if deadline is not None else deadlines.current()
    conns = connections if connections is not None else in_scope(user_id, provider, account_id)
    report = SyncReport()
    live = []
    for conn in conns:
        if conn.status == "needs_reauth" and now() - conn.updated_at < REAUTH_RETRY:
            # Do not hammer dead credentials; say so instead. Once REAUTH_RETRY has passed since the
            # mark, one refresh is tried: a good one restores the account (a wrong mark never strands
            # it), a refused one marks it again and restarts the wait.
            report.accounts.append(
                AccountResult(
                    conn.provider,
                    conn.account_id,
                    error={
                        "error": "needs_reauth",
                        "message": "Reconnect this account: its credentials were rejected.",
                    },
                )
            )
        else:
            live.append(conn)
    if live:

        def one(conn: Connection) -> AccountResult:
            if not budget.allows(ACCOUNT_START_SECONDS):
                # Queued behind slower accounts until too little time was left: not started at all
                # (no token, no provider call), so that the call still answers in time.
                return AccountResult(
                    conn.provider,
                    conn.account_id,
                    error={
                        "error": "provider_unavailable",
                        "message": "Not synced: this call ran out of time.",
                    },
                )
            return sync_connection(conn, follow=False, deadline=budget)

        with ThreadPoolExecutor(max_workers=min(MAX_ACCOUNT_WORKERS, len(live))) as pool:
            synced = list(pool.map(deadlines.carried(one), live))
        report.accounts += synced
        _follow_all(user_id, [r for r in synced if r.error is None], schedule_auto=schedule_auto)
    return report


def _follow_all(user_id: str, results: list[AccountResult], *, schedule_auto: bool) -> None:
    """The synced accounts' bots follow their events, with one read of the user's live bots."""
    from calbot.services.reconcile import reconcile_accounts

    try:
        reconcile_accounts(
            user_id,
            [(r.provider, r.account_id) for r in results],
            [e for r in results for e in r.changed],
            schedule_auto=schedule_auto,
        )
    except Exception:  # the events are stored; the next sync of these accounts makes the bots follow
        logger.exception("bots could not follow the synced events")
