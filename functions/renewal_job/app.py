"""cron(0 3 * * ? *): renew subscriptions expiring within two days; recreate the ones that are gone."""

from typing import Any

from calbot.deadline import Deadline, active
from calbot.services.subscriptions import run_renewal


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with active(Deadline.from_context(context)):
        return run_renewal()
