"""The hourly arming job: bots that were too far ahead to arm when they were made get armed once their
join time comes within calbot.scheduler.ARM_WITHIN.

Why some bots wait (calbot.scheduler): every bot armed by a one-time schedule holds it until it fires,
and Scheduler's "Number of schedules" quota counts them all; a series scheduled with all its occurrences
would hold up to 366. A deferred bot is in the sparse arming index instead (calbot.store.bots). This
job only reads that index (keys only) and sends one launch message per due bot, ten to a
SendMessageBatch call, to the launch queue with no delay; the launcher sees the bot is deferred and
arms it for its join time under the next generation (calbot.services.launcher). A bot moved, re-armed
or ended since the index was read is skipped there (its message names the old join time and
generation). A message that could not be sent leaves its bot in the index: the next run sends it again,
and a due bot whose message is delivered twice is armed once (the second names a stale generation).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from calbot import fanout, scheduler, store
from calbot.log import logger
from calbot.models import LaunchMessage
from calbot.timeutil import now


def _messages() -> Iterator[str]:
    for due in store.deferred_armings_before(now() + scheduler.ARM_WITHIN):
        yield LaunchMessage(
            user_id=due.user_id,
            bot_id=due.bot_id,
            join_time=due.join_time,
            generation=due.generation,
            launch_at=due.join_time,
        ).model_dump_json()


def run_arming(launch_queue_url: str) -> dict[str, Any]:
    """The job: every deferred bot due within ARM_WITHIN, one launch message each (see the module
    docstring). Returns how many were sent and how many could not be."""
    sent, lost = fanout.send_all(launch_queue_url, _messages())
    if lost:  # still in the index: the next hourly run sends them again
        logger.error("arming job could not enqueue some bots", extra={"failed": len(lost)})
    return {"bots_enqueued": sent, "failed": len(lost)}
