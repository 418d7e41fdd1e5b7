"""Bot launches at the top of the hour: N bots all joining at 09:00, in-process against moto.

The real code paths: each bot is armed (calbot.scheduler.put_launch: a one-time schedule at join - its lead),
EventBridge Scheduler's firing is modelled as a uniform point within the minute after at() (its 60 s
precision), where the launcher's `arm` sends the delayed launch message; SQS's DelaySeconds runs on the
bench's clock (local.clock.sqs.follow_clock_delays), and the launch queue is consumed in batches of 10
(the event source mapping's BatchSize) by the launcher's `consume`, which launches a batch's bots in
parallel against a Create Bot stand-in that records when it was called.

Time: a virtual clock that runs at real speed while code runs (so measured work counts as lateness)
and jumps between events. Every batch starts when its messages become visible, as if the mapping had
the concurrency to run them all at once (the concurrency figure below says how much that takes).
Lambda time per launch is the measured wall time of `arm` + its share of `consume` (moto in-process
stands in for DynamoDB/SQS/Scheduler, so AWS calls cost what moto costs here, ~ms), plus the assumed
Create Bot latency's share of its batch. Old design, for comparison: the launcher slept from the
schedule's firing (join - 60 s + up to 59 s) to the join time.

    python bench/launch.py [--bots 2000] [--create-bot-latency-ms 300] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET_LATE_S = 2.0  # Create Bot within 2 s of scheduled_join_time
AT_09 = 10_000  # the launches the projection asks about


class BenchClock:
    """Virtual time that runs at real speed between jumps (and counts virtual sleeps)."""

    def __init__(self, start: datetime) -> None:
        self._base = start
        self._anchor = time.perf_counter()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self._base + timedelta(seconds=time.perf_counter() - self._anchor)

    def jump(self, to: datetime) -> None:
        with self._lock:
            self._base, self._anchor = to, time.perf_counter()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._base += timedelta(seconds=seconds)
        slept.append(seconds)


slept: list[float] = []


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bots", type=int, default=2000)
    parser.add_argument("--create-bot-latency-ms", type=float, default=300.0, help="assumed, not measured")
    parser.add_argument("--seed", type=int, default=18)
    from bench.harness import add_json_out, in_process_stack, skip_moto_table_backup, write_json

    add_json_out(parser)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    skip_moto_table_backup()  # moto copies the whole table per transaction; no claim here fails

    with in_process_stack("BotLauncherFunction"):
        from calbot import aws, botapi, scheduler, store, timeutil
        from calbot.models import ScheduledBot, ScheduleInput
        from calbot.services import launcher
        from local.clock.sqs import follow_clock_delays

        follow_clock_delays()
        day = (datetime.now(UTC) + timedelta(days=1)).date()
        join = datetime(day.year, day.month, day.day, 9, 0, tzinfo=UTC)
        clock = BenchClock(join - timedelta(hours=12))
        timeutil.set_clock(clock.now, clock.sleep)
        calls: dict[str, datetime] = {}
        calls_lock = threading.Lock()

        def create_bot(body: dict[str, Any], *, idempotency_key: str, attempts: int = 3) -> dict[str, Any]:
            with calls_lock:
                calls[idempotency_key] = timeutil.now()
            return {"bot_id": f"remote-{idempotency_key}"}

        botapi.create_bot = create_bot  # type: ignore[assignment]
        launcher.is_live = lambda *_: True  # type: ignore[assignment]  # one GetItem each, not measured

        bots = []
        for i in range(args.bots):
            at = clock.now()
            bot = ScheduledBot(
                bot_id=f"sb_bench{i:06d}",
                user_id=f"usr_{i % 500}",
                event_id=f"evt_{i}",
                series_key=f"evt_{i}",
                provider="outlook",
                account_id=f"a{i}@bench.example",
                meeting_url=f"https://acme.zoom.us/j/{i}",
                occurrence_start=join + timedelta(seconds=60),
                meeting_end=join + timedelta(hours=1),
                scheduled_join_time=join,
                dedup_key=f"d{i}",
                created_at=at,
                updated_at=at,
            )
            store.create_bot(bot)
            assert scheduler.put_launch(bot) is not None  # 21 h ahead: a schedule
            bots.append(bot)

        # Scheduler fires each within the minute after its at() (join - the bot's lead): arm, in firing
        # order. `jitter` is where in that minute it fired.
        jitter = {b.bot_id: rng.uniform(0, 60) for b in bots}
        fires = sorted(
            (join - scheduler.lead(b.bot_id) + timedelta(seconds=jitter[b.bot_id]), b) for b in bots
        )
        arm_s = []
        for fired_at, bot in fires:
            clock.jump(fired_at)
            t0 = time.perf_counter()
            out = launcher.arm(
                ScheduleInput(
                    action="launch",
                    user_id=bot.user_id,
                    bot_id=bot.bot_id,
                    join_time=bot.scheduled_join_time,
                    generation=bot.launch_generation,
                )
            )
            arm_s.append(time.perf_counter() - t0)
            assert "armed" in out, out

        # The launch queue: everything becomes visible at the join time (DelaySeconds rounded up).
        sqs = aws.sqs()
        queue_url = scheduler.get_settings().require("launch_queue_url")
        clock.jump(join - timedelta(seconds=1))
        early = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        batch_s, batches, first_visible = [], 0, None
        visible_at = join
        while True:
            clock.jump(visible_at)
            page = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=180)
            messages = page.get("Messages", [])
            if not messages:
                if visible_at > join + timedelta(seconds=3):
                    break
                visible_at += timedelta(seconds=1)  # the rounding may put some a second later
                continue
            first_visible = first_visible or visible_at
            records = [{"messageId": m["MessageId"], "body": m["Body"]} for m in messages]
            clock.jump(visible_at)  # each batch on its own instance, started when visible
            t0 = time.perf_counter()
            result = launcher.consume({"Records": records})
            batch_s.append(time.perf_counter() - t0)
            batches += 1
            assert result == {"batchItemFailures": []}, result
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
        timeutil.set_clock(None)

    late = [(calls[b.bot_id] - join).total_seconds() for b in bots if b.bot_id in calls]
    launched = len(late)
    latency = args.create_bot_latency_ms / 1000
    per_launch = (sum(arm_s) + sum(batch_s) + batches * latency) / max(1, launched)
    batch_mean = statistics.mean(batch_s) + latency if batch_s else 0.0
    # 10,000 at 09:00 in batches of 10: each instance runs floor(2 s / batch time) batches in the window.
    per_instance = max(1, math.floor(TARGET_LATE_S / batch_mean)) if batch_mean else 1
    concurrency = math.ceil(math.ceil(AT_09 / 10) / per_instance)
    # The old schedule was at join - 60 s and fired u s later; its launcher slept the remaining 60 - u s.
    old_sleep = [60 - jitter[b.bot_id] for _, b in fires]
    # Scheduler target invocations: the busiest second of these fires, and scaled to the 09:00 peak.
    fire_seconds = Counter(int(fired_at.timestamp()) for fired_at, _ in fires)
    fire_window_s = max(fire_seconds) - min(fire_seconds) + 1
    figures = {
        "bots": args.bots,
        "launched": launched,
        "early_visible": len(early),
        "create_bot_latency_assumed_ms": args.create_bot_latency_ms,
        "arm_ms_median": round(statistics.median(arm_s) * 1000, 1),
        "batch_ms_median": round(statistics.median(batch_s) * 1000, 1) if batch_s else None,
        "batches": batches,
        "lambda_s_per_launch": round(per_launch, 3),
        "lambda_s_per_launch_target": 1.0,
        "late_p50_s": round(pct(late, 0.5), 3),
        "late_p95_s": round(pct(late, 0.95), 3),
        "late_max_s": round(max(late), 3),
        "late_target_s": TARGET_LATE_S,
        "max_virtual_sleep_s": round(max(slept, default=0.0), 3),
        "concurrency_for_10000_at_0900": concurrency,
        "old_design_sleep_s_per_launch": round(statistics.mean(old_sleep), 1),
        "schedule_fire_window_s": fire_window_s,
        "schedule_fires_busiest_second": max(fire_seconds.values()),
    }
    print(json.dumps(figures, indent=2))
    write_json(figures, args.json_out)
    return 0 if launched == args.bots else 1


if __name__ == "__main__":
    raise SystemExit(main())
