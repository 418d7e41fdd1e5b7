"""A bot's whole life (calbot.services.bots) run against in-memory fakes of its two seams, the bot
records (store.bots.BotRecords) and the launch schedules: no moto, no stack. Any call that slipped
past the seams to AWS fails the test.

The fake keeps the rules the real store enforces with DynamoDB conditions (one guard per occurrence,
writes only from the expected status and claim, a guard released only by its own bot), so these tests
pin what the lifecycle asks of any store; tests/service/test_schedule.py runs the same life on the real
one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from calbot import aws, scheduler
from calbot.models import Event, ScheduledBot
from calbot.services import bots as lifecycle
from calbot.store.bots import AlreadyScheduled, BotChanged
from calbot.timeutil import now


@dataclass
class FakeBotRecords:
    bots: dict[tuple[str, str], ScheduledBot] = field(default_factory=dict)
    guards: dict[tuple[str, str], str] = field(default_factory=dict)  # (user, dedup key) -> bot id

    def dedup_owner(self, user_id: str, dedup_key: str) -> str | None:
        return self.guards.get((user_id, dedup_key))

    def get_bot(self, user_id: str, bot_id: str) -> ScheduledBot | None:
        return self.bots.get((user_id, bot_id))

    def create_bot(self, bot: ScheduledBot) -> None:
        guard = (bot.user_id, bot.dedup_key)
        if guard in self.guards or (bot.user_id, bot.bot_id) in self.bots:
            raise AlreadyScheduled(self.guards.get(guard))
        self.guards[guard] = bot.bot_id
        self.bots[(bot.user_id, bot.bot_id)] = bot

    def save_bot(
        self,
        bot: ScheduledBot,
        *,
        expect_status: str | tuple[str, ...],
        expect_claim: str | None = None,
        release_guard: bool = False,
        expect_generation: int | None = None,
    ) -> None:
        self._expect(bot, expect_status, expect_claim)
        current = self.bots[(bot.user_id, bot.bot_id)]
        if expect_generation is not None and current.launch_generation != expect_generation:
            raise BotChanged
        if release_guard:
            self._release(bot, bot.dedup_key)
        self.bots[(bot.user_id, bot.bot_id)] = bot

    def move_bot(self, bot: ScheduledBot, old_dedup_key: str, *, expect_status: str) -> None:
        if bot.dedup_key == old_dedup_key:
            self.save_bot(bot, expect_status=expect_status)
            return
        self._expect(bot, expect_status, None)
        if (bot.user_id, bot.dedup_key) in self.guards:
            raise AlreadyScheduled(self.guards[(bot.user_id, bot.dedup_key)])
        self._release(bot, old_dedup_key)
        self.guards[(bot.user_id, bot.dedup_key)] = bot.bot_id
        self.bots[(bot.user_id, bot.bot_id)] = bot

    def _expect(self, bot: ScheduledBot, status: str | tuple[str, ...], claim: str | None) -> None:
        current = self.bots.get((bot.user_id, bot.bot_id))
        statuses = (status,) if isinstance(status, str) else status
        if current is None or current.status not in statuses:
            raise BotChanged
        if claim is not None and current.launch_claim != claim:
            raise BotChanged

    def _release(self, bot: ScheduledBot, dedup_key: str) -> None:
        if self.guards.get((bot.user_id, dedup_key), bot.bot_id) != bot.bot_id:
            raise BotChanged  # another bot's guard is never released
        self.guards.pop((bot.user_id, dedup_key), None)


@dataclass
class FakeLaunches:
    schedules: dict[str, datetime | None] = field(default_factory=dict)

    def defers(self, bot: ScheduledBot, *, when: datetime | None = None) -> bool:
        return scheduler.defers(bot, when=when)

    def put_launch(self, bot: ScheduledBot, *, when: datetime | None = None) -> str | None:
        name = self.launch_schedule_name(bot.bot_id, bot.launch_generation)
        self.schedules[name] = when or bot.scheduled_join_time
        return name

    def delete(self, name: str) -> bool:
        return self.schedules.pop(name, None) is not None

    def launch_schedule_name(self, bot_id: str, generation: int = 0) -> str:
        return scheduler.launch_schedule_name(bot_id, generation)

    def reschedule_schedule_name(self, bot_id: str) -> str:
        return scheduler.reschedule_schedule_name(bot_id)


@pytest.fixture
def records(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBotRecords]:
    fake = FakeBotRecords()
    monkeypatch.setattr(lifecycle, "records", fake)
    for client in ("dynamodb", "scheduler"):  # nothing may reach AWS past the seams

        def refuse(*_: Any, _client: str = client) -> Any:
            raise AssertionError(f"{_client} called past the fakes")

        monkeypatch.setattr(aws, client, refuse)
    yield fake


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> FakeLaunches:
    fake = FakeLaunches()
    monkeypatch.setattr(lifecycle, "launches", fake)
    return fake


def _event(event_id: str = "evt_1", *, url: str = "https://acme.zoom.us/j/1", hours: int = 5) -> Event:
    start = now().replace(microsecond=0) + timedelta(hours=hours)
    return Event(
        event_id=event_id,
        user_id="usr_1",
        provider="outlook",
        account_id="a@example.com",
        calendar_id="cal",
        platform_id=event_id,
        start_time=start,
        end_time=start + timedelta(hours=1),
        meeting_url=url,
        created_at=now(),
        updated_at=now(),
    )


def _bot(event: Event) -> ScheduledBot:
    return lifecycle.make_bot(
        event, {"bot_name": "Notes"}, offset_seconds=60, source="manual", recurring=False
    )


def test_one_bot_per_occurrence_and_a_cancel_gives_the_occurrence_back(
    records: FakeBotRecords, launches: FakeLaunches
) -> None:
    event = _event()
    first = lifecycle.place(_bot(event))
    assert records.dedup_owner("usr_1", first.dedup_key) == first.bot_id
    assert launches.schedules[f"launch-{first.bot_id}"] == first.scheduled_join_time

    # The same meeting seen through another calendar, its link spelled differently: the same occurrence.
    twin = _bot(_event("evt_2", url="https://ACME.zoom.us/j/1/"))
    assert twin.dedup_key == first.dedup_key
    with pytest.raises(AlreadyScheduled) as err:
        lifecycle.place(twin)
    assert err.value.bot_id == first.bot_id
    assert f"launch-{twin.bot_id}" not in launches.schedules  # refused before its schedule was written

    assert lifecycle.cancel(first, "user_cancelled")
    assert records.bots[("usr_1", first.bot_id)].status == "Cancelled"
    assert records.dedup_owner("usr_1", first.dedup_key) is None
    assert launches.schedules == {}
    assert not lifecycle.cancel(first, "user_cancelled")  # it left Scheduled: nothing happens twice
    assert lifecycle.place(twin) is twin  # the occurrence may have a bot again


def test_a_bot_moves_with_its_meeting_and_its_guard_moves_with_it(
    records: FakeBotRecords, launches: FakeLaunches
) -> None:
    bot = lifecycle.place(_bot(_event()))
    later = _event(hours=8)
    moved = lifecycle.move(bot, later)
    assert moved.occurrence_start == later.start_time
    assert moved.scheduled_join_time == later.start_time - timedelta(seconds=60)
    assert records.dedup_owner("usr_1", moved.dedup_key) == bot.bot_id
    assert records.dedup_owner("usr_1", bot.dedup_key) is None  # the old slot is free
    # re-armed under the next generation's name; the old schedule is gone
    assert launches.schedules == {f"launch-{bot.bot_id}-g1": moved.scheduled_join_time}

    # Onto a slot another live bot holds: refused, and this bot keeps its own guard.
    other = lifecycle.place(_bot(_event("evt_9", hours=11)))
    with pytest.raises(AlreadyScheduled):
        lifecycle.move(moved, _event(hours=11))
    assert records.dedup_owner("usr_1", moved.dedup_key) == bot.bot_id
    assert records.dedup_owner("usr_1", other.dedup_key) == other.bot_id


def test_a_launch_is_claimed_once_and_only_a_failed_one_gives_the_occurrence_back(
    records: FakeBotRecords, launches: FakeLaunches
) -> None:
    bot = lifecycle.place(_bot(_event()))
    launching = lifecycle.claim_launch(bot)
    assert launching is not None and launching.status == "Launching" and launching.launch_claim
    assert lifecycle.claim_launch(bot) is None  # a duplicate delivery of the schedule
    assert not lifecycle.cancel(bot, "user_cancelled")  # a bot launching is never touched
    assert not lifecycle.change(bot.model_copy(update={"bot_config": {}}))

    # The Create Bot API was down: back to Scheduled, later, still holding its occurrence.
    retry_at = now() + timedelta(minutes=1)
    again = lifecycle.launch_later(launching, retry_at)
    assert records.get_bot("usr_1", bot.bot_id) == again and again.launch_claim is None
    # re-armed under a new name (the running arming's own could be deleted after it completes)
    assert again.launch_generation == 1 and launches.schedules == {f"launch-{bot.bot_id}-g1": retry_at}
    assert records.dedup_owner("usr_1", bot.dedup_key) == bot.bot_id
    with pytest.raises(BotChanged):  # the old claim ended with it
        lifecycle.finish_launch(launching, "Launched")

    claimed = lifecycle.claim_launch(again)
    assert claimed is not None
    launched = lifecycle.finish_launch(claimed, "Launched", remote_bot_id="r1")
    assert records.bots[("usr_1", bot.bot_id)] == launched and launched.status == "Launched"
    assert records.dedup_owner("usr_1", bot.dedup_key) == bot.bot_id  # a joined meeting is never joined again

    other = lifecycle.place(_bot(_event("evt_3", hours=6)))
    claimed = lifecycle.claim_launch(other)
    assert claimed is not None
    failed = lifecycle.finish_launch(claimed, "Failed", reason="rejected")
    assert records.bots[("usr_1", other.bot_id)] == failed and failed.status == "Failed"
    assert records.dedup_owner("usr_1", other.dedup_key) is None


def test_a_claim_made_from_a_read_before_a_move_loses_to_the_move(
    records: FakeBotRecords, launches: FakeLaunches
) -> None:
    bot = lifecycle.place(_bot(_event()))
    moved = lifecycle.move(bot, _event(hours=8))  # the user moved it while a launch had read it
    assert lifecycle.claim_launch(bot) is None  # ONE_CURRENT_ARMING: an older arming cannot claim
    assert records.get_bot("usr_1", bot.bot_id) == moved
    assert lifecycle.claim_launch(moved) is not None


def test_a_bot_whose_meeting_ended_fails_unlaunched_and_gives_its_occurrence_back(
    records: FakeBotRecords, launches: FakeLaunches
) -> None:
    bot = lifecycle.place(_bot(_event()))
    assert lifecycle.expire(bot, "meeting_ended")
    stored = records.get_bot("usr_1", bot.bot_id)
    assert stored is not None and (stored.status, stored.reason) == ("Failed", "meeting_ended")
    assert records.dedup_owner("usr_1", bot.dedup_key) is None and launches.schedules == {}
    assert not lifecycle.expire(bot, "meeting_ended")  # only from Scheduled
