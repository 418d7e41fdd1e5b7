"""The local stand-in for AWS's time-driven machinery, over moto and the gateway's in-process handlers.

moto stores EventBridge Scheduler schedules but never fires them, and has no EventBridge rules or
Lambda event source mappings. ``LocalClock`` does their work, reading everything from template.yaml.
One module a job, each readable alone; what they share (the time, the invoker, the log) is handed to
each explicitly:

* ``timesource``: the time. Real UTC time plus an offset that only grows; installed as
  ``calbot.timeutil``'s time source. Virtual: sleeps move it instead of sleeping.
* ``schedules``: EventBridge Scheduler's one-time ``at(...)`` schedules in the template's schedule
  groups, fired when due (time zones, ``DISABLED``, updates, ``ActionAfterCompletion: DELETE``,
  the schedule role's permissions).
* ``retries``: failures as AWS splits them. A handler's error is Lambda's to retry (async invoke
  retries, then the function's OnFailure destination / DeadLetterQueue); a delivery failure is
  Scheduler's (the schedule's RetryPolicy, then its DeadLetterConfig).
* ``cron``: the functions' ``Schedule``/``ScheduleV2`` events, fired whenever the clock crosses one
  of their times (``expressions`` reads AWS's cron/rate/at).
* ``sqs``: the functions' ``SQS`` event source mappings: batches as Lambda delivers them, partial
  batch failures, redelivery after the visibility timeout in clock time, FIFO order.
* ``local_clock``: ``LocalClock``, which composes them and runs their due work in order:
  ``advance``/``fire_due``/``drain`` synchronously, ``start`` in the background.
* ``common``: the report of what fired (``FireReport``), the log, the invoker, ``ScheduleInfo``.
"""

from local.clock.common import Fired, FireReport, ScheduleInfo, iso_z, parse_time
from local.clock.cron import CronJob
from local.clock.expressions import Cron, ScheduleExpression, ScheduleExpressionError
from local.clock.local_clock import LocalClock
from local.clock.sqs import SqsConsumer

__all__ = [
    "Cron",
    "CronJob",
    "FireReport",
    "Fired",
    "LocalClock",
    "ScheduleExpression",
    "ScheduleExpressionError",
    "ScheduleInfo",
    "SqsConsumer",
    "iso_z",
    "parse_time",
]
