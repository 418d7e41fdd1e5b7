"""bench/day.py's projection arithmetic on hand-made counts (no stack, no timings): what is measured per
user scales to 100,000 users, a cron job stays one invocation a day, the renewal night is spread over
the renewal cycle, and concurrency follows the stated arrival model."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import day  # noqa: E402


def measured(**overrides: Any) -> dict[str, Any]:
    counts = {
        "connect": {"aws.ssm.PutParameter": 2, "lambda.n.CreateConnectionFunction": 2},
        "midnight": {
            "lambda.n.AutoScheduleJobFunction": 1,
            "lambda.billed_s.AutoScheduleJobFunction": 0.5,
            "lambda.n.AutoScheduleWorkerFunction": 2,
            "lambda.billed_s.AutoScheduleWorkerFunction": 4.0,
            "scheduler.cron": 1,
            "aws.scheduler.CreateSchedule": 40,
        },
        "renewal": {
            "lambda.n.RenewalJobFunction": 1,
            "lambda.billed_s.RenewalJobFunction": 1.0,
            "aws.ssm.GetParameter": 10,
            "scheduler.cron": 1,
        },
        "launch": {
            "lambda.n.BotLauncherFunction": 40,
            "lambda.billed_s.BotLauncherFunction": 40.0,
            "bots.create": 40,
            "scheduler.schedule": 40,
            "aws.ssm.GetParameter": 4,
        },
        "notify": {
            "lambda.n.WebhookFunction": 10,
            "lambda.billed_s.WebhookFunction": 0.1,
            "lambda.n.SyncWorkerFunction": 10,
            "lambda.billed_s.SyncWorkerFunction": 2.0,
            "apigw.POST /api/v1/admin/schedule/users/{user_id}/{provider}/{account_id}": 10,
            "aws.ssm.GetParameter": 20,
            "ddb.wru": 30,
        },
        "api": {"apigw.GET /api/v1/calendar/get_events": 20, "lambda.n.GetEventsFunction": 20, "ddb.rru": 50},
    }
    return {
        "users": 2,
        "accounts_per_user": 1,
        "meetings_per_account": 20,
        "connects": 2,
        "changes": 10,
        "crons": {"midnight": ["AutoScheduleJobFunction"], "renewal": ["RenewalJobFunction"]},
        "counts": counts,
        "parameters_per_user": 1.0,
        "table_bytes_per_user": 1000,
        **overrides,
    }


@pytest.fixture(scope="module")
def template() -> Any:
    from local.template import load_template

    return load_template(ROOT / "template.yaml")


def test_per_user_counts_scale_to_100000_users(template: Any) -> None:
    p = day.project(measured(), template)
    scale = 100_000 / 2
    assert p["lambda"]["BotLauncherFunction"]["invocations"] == round(40 * scale)
    assert p["requests_per_day"]["apigateway"] == round(30 * scale)
    assert p["dynamodb_units_per_day"] == {"write": round(30 * scale), "read": round(50 * scale)}


def test_a_cron_job_is_one_invocation_a_day_whose_duration_grows_with_the_users(template: Any) -> None:
    p = day.project(measured(), template)
    assert p["lambda"]["AutoScheduleJobFunction"]["invocations"] == 1
    job = p["peaks"]["midnight"]["functions"]["AutoScheduleJobFunction"]
    assert job["duration_s"] == 0.5 * 100_000 / 2
    assert job["over_timeout"] is True  # 25,000 s against the template's Timeout
    assert p["requests_per_day"]["scheduler (target invocations)"] == 40 * 100_000 / 2 + 2


def test_the_renewal_night_is_spread_over_the_renewal_cycle(template: Any) -> None:
    p = day.project(measured(), template)
    cycle = day.MODEL["renewal_cycle_days"]
    connect_share = day.MODEL["connects_per_account_per_day"]
    ssm_gets = (4 + 20) * 50_000 + 10 * 50_000 / cycle
    assert p["aws_operations_per_day"]["ssm.GetParameter"] == round(ssm_gets)
    assert p["aws_operations_per_day"]["ssm.PutParameter"] == round(2 * connect_share * 50_000)
    # The night itself is the worst case: every subscription at once.
    assert p["peaks"]["renewal"]["lambda_seconds"] == round(1.0 * 50_000)


def test_launch_concurrency_follows_the_stated_arrival_model(template: Any) -> None:
    p = day.project(measured(), template)
    launches = 40 * 50_000 * day.MODEL["peak_0900_share"]
    window = day.MODEL["launch_arrival_window_s"]
    peak = p["peaks"]["launches_0900"]
    assert peak["launches"] == round(launches)
    assert peak["concurrency_wanted"] == math.ceil(launches * 1.0 / window)
    # Their schedules fire over each bot's own lead plus Scheduler's minute (calbot.scheduler.lead),
    # not the launches' minute: 540 s, so 200,000 of them stay under Scheduler's 1,000 a second.
    from calbot.scheduler import LEAD_SPREAD

    fire_window = LEAD_SPREAD.total_seconds() + 60
    assert peak["schedule_fire_window_s"] == fire_window == 540
    assert peak["scheduler_invocations_per_second"] == round(launches / fire_window, 1) < 1_000


def test_a_crossed_quota_says_what_to_raise(template: Any) -> None:
    p = day.project(measured(), template)
    crossed = [q for q in p["quotas"] if q["crossed"]]
    assert any("SSM Parameter Store" in q["quota"] and q["where"] == "notification_burst" for q in crossed)
    assert all(q["raise"] and q["source"].startswith(("https://", "template.yaml")) for q in crossed)
    assert not any(q["raise"] for q in p["quotas"] if not q["crossed"])
    # A night job whose one invocation would run past its Timeout is named with what to change.
    assert any(q["quota"].startswith("AutoScheduleJobFunction Timeout") for q in crossed)


def test_the_launchers_reservation_is_held_against_the_account_quota_at_deploy() -> None:
    # Lambda keeps 100 unreserved: 250 needs a quota of 350 (a new account's 10 is crossed,
    # which README says to raise first); 950 reserved would cross even the default 1,000.
    from local.template import load_template

    for reserved, crossed in (("250", False), ("950", True)):
        t = load_template(
            ROOT / "template.yaml", parameter_overrides={"LauncherReservedConcurrency": reserved}
        )
        p = day.project(measured(), t)
        (row,) = [q for q in p["quotas"] if q["where"].startswith("deploy")]
        assert row["projected"] == int(reserved) + 100 and row["crossed"] is crossed
        assert ("L-B99A9384" in row["raise"]) is crossed


def test_the_schedules_standing_at_once_are_held_against_the_number_of_schedules(template: Any) -> None:
    # 21 a user at most (a day's bots): 2.1 M of 10 M at 100,000 users; deferred arming bounds them at
    # 36 hours of bots whatever is scheduled ahead (20 a day here: 30 a user). 120 a user crosses the
    # quota and says what to raise.
    p = day.project(measured(schedules_peak_per_user=21.0), template)
    (row,) = [q for q in p["quotas"] if "Number of schedules" in q["quota"]]
    assert (row["projected"], row["limit"], row["crossed"]) == (2_100_000, 10_000_000, False)
    assert row["raise"] == ""
    assert p["schedules"] == {
        "peak_per_user": 21.0,
        "projected_peak": 2_100_000,
        "quota": 10_000_000,
        "quota_per_user": 100.0,
        "arm_within_hours": 36.0,
        "bound_per_user": 30.0,
        "projected_bound": 3_000_000,
    }
    p = day.project(measured(schedules_peak_per_user=120.0), template)
    (row,) = [q for q in p["quotas"] if "Number of schedules" in q["quota"]]
    assert row["crossed"] and "Number of schedules" in row["raise"]
    # A run without the figure (an older day.json) checks nothing it cannot.
    assert day.project(measured(), template)["schedules"] is None


def test_an_hourly_job_is_its_measured_runs_a_day_never_scaled_by_users(template: Any) -> None:
    # The arming job runs every hour whatever the number of users (bench/day.py HOURLY_JOBS): its 24
    # runs and their calls are the day's as measured, where a per-user count is scaled x50,000 here.
    without = day.project(measured(), template)
    counts = measured()["counts"]
    counts["hourly"] = {
        "lambda.n.ArmingJobFunction": 24,
        "lambda.billed_s.ArmingJobFunction": 2.4,
        "aws.dynamodb.Query": 192,
        "scheduler.cron": 24,
    }
    p = day.project(measured(counts=counts), template)
    assert p["lambda"]["ArmingJobFunction"]["invocations"] == 24
    assert p["lambda"]["ArmingJobFunction"]["lambda_seconds"] == 2
    before = without["aws_operations_per_day"].get("dynamodb.Query", 0)
    assert p["aws_operations_per_day"]["dynamodb.Query"] - before == 192
    assert "ArmingJobFunction" in day.HOURLY_JOBS and "hourly" in day.PHASES
