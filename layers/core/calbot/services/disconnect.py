"""Disconnecting one account: DELETE /calendar/connections/{provider}/{account_id} and the legacy
POST/DELETE /calendar/disconnect.

A large account (thousands of events and bots) may not be torn down within one invocation, and an
invocation can be cut off at any point. So the work is a sequence of idempotent steps, each safe to
repeat, and a retry simply runs them all again:

1. mark the connection `disconnect` (once; a retry keeps the first attempt's purge choice and counts).
   From here on the account is out of service: sync, notifications, renewal, auto-schedule, manual
   scheduling and the launcher all treat it as gone, so no new bot or subscription appears for it
   and any bot schedule that still fires is cancelled by the launcher instead of joining;
2. stop the subscriptions/channels at the provider (best effort: an error is a warning), delete their
   items (the webhook then drops whatever still arrives) and forget them on the record;
3. cancel every Scheduled bot (`calendar_disconnected`, schedules deleted) and delete the end-of-meeting
   schedules of recurring bots that already ran (they would book the next occurrence);
4. purge the events (unless purge_events=false), in batches of 25;
5. forget the delta links / sync tokens (a reconnected account starts with a full sync);
6. delete the SSM parameter (last use of the credentials was step 2);
7. delete the record and release its place under the connection limit, in one transaction.

The record exists, marked, until the last step, so a retry always finds where to resume; after it, a
second call is a 404.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any
from urllib.parse import quote

from calbot import deadline as deadlines
from calbot import scheduler, store, tokens, vault, webhook_events
from calbot.deadline import Deadline
from calbot.errors import Conflict, Invalid, NotFound, Unavailable
from calbot.log import logger
from calbot.models import (
    Connection,
    DisconnectedAccount,
    DisconnectResult,
    DisconnectState,
    LegacyDisconnectRequest,
    ScheduledBot,
    account_key,
)
from calbot.providers import get_provider
from calbot.providers.base import ProviderError
from calbot.services import bots as lifecycle
from calbot.timeutil import iso_z, now

BATCH = 25  # one BatchWriteItem; also the unit of work between two looks at the clock
# Time kept for the last batch taken before the deadline (one batch's writes and schedule deletes).
BATCH_SECONDS = 5.0
# The most one call spends taking new batches, whatever its deadline (an API invocation has 29 s);
# after that the caller calls again.
TIME_BUDGET_SECONDS = 20.0
LOCK_TTL_SECONDS = 35  # longer than one invocation can run, so a cut-off attempt frees it soon
REASON = "calendar_disconnected"
# An end-of-meeting schedule deletes itself once it has run (Scheduler retries for up to an hour), so
# only bots whose meeting ended recently, or has not ended, can still have one.
RESCHEDULE_SLACK = timedelta(days=1)


class _OutOfTime(Exception):
    pass


@dataclass
class _Budget:
    deadline: Deadline

    def check(self) -> None:
        if self.deadline.expired:
            raise _OutOfTime


def _budget(deadline: Deadline | None) -> _Budget:
    """Stop taking batches while a last one still fits before the invocation's deadline, and after
    TIME_BUDGET_SECONDS in any case."""
    given = deadline if deadline is not None else deadlines.current()
    return _Budget(given.shortened(BATCH_SECONDS).within(TIME_BUDGET_SECONDS))


def _batches[T](items: Iterator[T]) -> Iterator[list[T]]:
    while batch := list(islice(items, BATCH)):
        yield batch


def lock_name(user_id: str, provider: str, account_id: str) -> str:
    """The same mutex as connecting the account: a connect/replace and a disconnect never interleave."""
    return f"CONNECT#{user_id}#{provider}#{account_key(account_id)}"


def _not_found(provider: str, account_id: str) -> NotFound:
    return NotFound(
        "connection_not_found",
        f"No {provider} connection for {account_id}.",
        provider=provider,
        account_id=account_id,
    )


@webhook_events.endpoints_read_once()  # one read of the endpoints for all its events
def disconnect(
    user_id: str,
    provider: str,
    account_id: str,
    *,
    purge_events: bool = True,
    deadline: Deadline | None = None,
) -> DisconnectResult:
    conn = store.get_connection(user_id, provider, account_id)
    if conn is None:
        raise _not_found(provider, account_id)
    name = lock_name(user_id, conn.provider, conn.account_id)
    try:
        lock = store.acquire_lock(name, ttl_seconds=LOCK_TTL_SECONDS)
    except store.LockBusy:
        raise Conflict(
            "disconnect_in_progress",
            "This account is being connected or disconnected right now; retry in a moment.",
            provider=conn.provider,
            account_id=conn.account_id,
        ) from None
    try:
        current = store.get_connection(user_id, conn.provider, conn.account_id)  # as of holding the lock
        if current is None:
            raise _not_found(provider, account_id)
        return _run(current, purge_events, _budget(deadline))
    except _OutOfTime:
        logger.info("disconnect continues on the next call", extra={"provider": conn.provider})
        raise Unavailable(
            "service_unavailable",
            "This account has a lot to clean up and the disconnect is not finished yet; call the same "
            "endpoint again to continue it (nothing is redone).",
            retry_after=1,
            provider=conn.provider,
            account_id=conn.account_id,
        ) from None
    finally:
        store.release_lock(name, lock)


def _run(conn: Connection, purge_events: bool, budget: _Budget) -> DisconnectResult:
    marked = _mark(conn, purge_events)
    if marked is None:  # a concurrent call finished it between our read and our mark
        raise _not_found(conn.provider, conn.account_id)
    conn = marked
    state = conn.disconnect
    assert state is not None
    if _stop_subscriptions(conn):
        budget.check()
    bots_cancelled = _cancel_bots(conn, state.started_at, budget)
    if state.purge_events:
        _purge_events(conn, budget)
    store.delete_sync_states(conn.user_id, conn.provider, conn.account_id)
    vault.delete(conn.credential_path)
    final = store.get_connection(conn.user_id, conn.provider, conn.account_id) or conn
    try:
        store.delete_connection(conn)
    except store.ConnectionGone:
        pass  # a concurrent retry deleted it a moment ago: the account is disconnected all the same
    else:  # this call deleted it: told once, with the record as it was in service
        webhook_events.emit_connection(
            final.model_copy(update={"disconnect": None}), webhook_events.CONNECTION_DISCONNECTED
        )
    done = final.disconnect or state
    logger.info(
        "account disconnected",
        extra={"provider": conn.provider, "bots_cancelled": bots_cancelled, "warnings": len(done.warnings)},
    )
    return DisconnectResult(
        disconnected=DisconnectedAccount(provider=conn.provider, account_id=conn.account_id),
        events_deleted=done.events_total if done.purge_events else 0,
        bots_cancelled=bots_cancelled,
        subscriptions_stopped=done.subscriptions_stopped,
        warnings=done.warnings,
    )


def _mark(conn: Connection, purge_events: bool) -> Connection | None:
    if conn.disconnect is not None:
        return conn  # a retry: the first attempt's choices stand
    # Counted before anything is deleted (sync no longer writes once the mark is set); a retry after a
    # partial purge still reports what the account had.
    total = store.count_account_events(conn.user_id, conn.provider, conn.account_id)
    state = DisconnectState(started_at=now(), purge_events=purge_events, events_total=total)
    return store.mark_disconnecting(conn.user_id, conn.provider, conn.account_id, state)


def _stop_subscriptions(conn: Connection) -> bool:
    """Stop every subscription/channel at the provider. Failures become warnings: whatever the provider
    still sends is dropped by the webhook once the items are gone, and the provider expires it."""
    if not conn.subscriptions:
        return False
    provider = get_provider(conn.provider)
    warnings: list[dict[str, str]] = []
    stopped = 0
    try:
        token: str | None = tokens.access_token(conn)
    except ProviderError as err:
        token = None
        expiry = max(r.expires_at for r in conn.subscriptions)
        warnings.append(
            {
                "error": "subscriptions_not_stopped",
                "message": f"{provider.display_name} could not be reached with this account's credentials "
                f"({err.message}), so its {len(conn.subscriptions)} subscription(s) were not stopped there; "
                f"they expire by {iso_z(expiry)} and whatever they send meanwhile is ignored.",
            }
        )
    if token is not None:
        failed = 0
        last_error = ""
        for ref in conn.subscriptions:
            handle = ref.handle
            if not handle and (item := store.get_subscription(ref.id)) is not None:
                handle = item.handle  # a record written before refs carried it
            try:
                provider.delete_subscription(token, ref.id, handle=handle)
                stopped += 1  # stopped now, or already gone at the provider: either way not running
            except ProviderError as err:
                failed += 1
                last_error = err.message
        if failed:
            warnings.append(
                {
                    "error": "subscriptions_not_stopped",
                    "message": f"{provider.display_name} refused to stop {failed} subscription(s) "
                    f"({last_error}); they expire on their own and whatever they send meanwhile is ignored.",
                }
            )
    store.delete_subscriptions(r.id for r in conn.subscriptions)
    store.record_subscriptions_stopped(conn.user_id, conn.provider, conn.account_id, stopped, warnings)
    return True


def _cancel_bots(conn: Connection, started_at: datetime, budget: _Budget) -> int:
    """Cancel the account's Scheduled bots; a bot that ran is never touched, except that a recurring
    one loses its pending end-of-meeting schedule (it would book the next occurrence for a gone account).

    Counts the bots this disconnect cancelled, including those an earlier, cut-off attempt did.
    """
    cancelled = 0
    for batch in _batches(store.account_bots(conn.user_id, conn.provider, conn.account_id)):
        worked = False
        for bot in batch:
            counted, did = _settle_bot(bot, started_at)
            cancelled += counted
            worked = worked or did
        if worked:  # a batch a previous attempt already did costs one read: never a reason to stop
            budget.check()
    return cancelled


def _settle_bot(bot: ScheduledBot, started_at: datetime) -> tuple[int, bool]:
    """(1 if this disconnect cancelled it, whether anything was written now)."""
    if bot.status == "Scheduled":
        # Schedules first, then the status: an attempt cut off in between leaves a Scheduled bot without
        # schedules, which the retry cancels; never a Cancelled bot whose schedule is still there.
        if lifecycle.cancel(bot, REASON, schedules_first=True):
            return 1, True
        bot = store.get_bot(bot.user_id, bot.bot_id) or bot  # it left Scheduled meanwhile
    if bot.status == "Cancelled":
        return int(bot.reason == REASON and bot.updated_at >= started_at), False  # by this disconnect?
    if bot.recurring_event and bot.meeting_end > started_at - RESCHEDULE_SLACK:
        # its end-of-meeting schedule can only be pending after a recent (or future) end
        return 0, scheduler.delete(scheduler.reschedule_schedule_name(bot.bot_id))
    return 0, False


def _purge_events(conn: Connection, budget: _Budget) -> None:
    for batch in _batches(store.account_event_keys(conn.user_id, conn.provider, conn.account_id)):
        store.delete_keys(batch)
        budget.check()


# --------------------------------------------------------------------------------------------------
# the legacy endpoint


def legacy_disconnect(
    user_id: str, req: LegacyDisconnectRequest, *, deadline: Deadline | None = None
) -> DisconnectResult:
    """With exactly one connection in scope, disconnect it; refuse to guess between several."""
    conns = store.list_connections(user_id, req.provider)
    if req.account_id:
        conns = [c for c in conns if c.key == account_key(req.account_id)]
    if not conns:
        if req.account_id and req.provider:
            raise _not_found(req.provider, req.account_id)
        scope = f" {req.provider}" if req.provider else ""
        raise NotFound("connection_not_found", f"There is no{scope} calendar connection to disconnect.")
    if len(conns) > 1:
        conns.sort(key=lambda c: (c.provider, c.created_at, c.key))
        first = conns[0]
        raise Invalid(
            "ambiguous_disconnect",
            f"This user has {len(conns)} calendar connections; say which one to disconnect (this endpoint "
            "never disconnects several at once).",
            connection_count=len(conns),
            connections=[{"provider": c.provider, "account_id": c.account_id} for c in conns],
            next_steps=_next_steps(first, req.purge_events),
        )
    conn = conns[0]
    return disconnect(
        user_id, conn.provider, conn.account_id, purge_events=req.purge_events, deadline=deadline
    )


def _next_steps(example: Connection, purge_events: bool) -> dict[str, Any]:
    query = "" if purge_events else "?purge_events=false"
    return {
        "per_account_endpoint": "DELETE /api/v1/calendar/connections/{provider}/{account_id}",
        "per_account_example": f"DELETE /api/v1/calendar/connections/{example.provider}/"
        f"{quote(example.account_id, safe='')}{query}",
        "legacy_body": {
            "provider": example.provider,
            "account_id": example.account_id,
            "purge_events": purge_events,
        },
        "message": "Call the per-account DELETE for the connection to remove, or call this endpoint again "
        "with a body that names one account.",
    }
