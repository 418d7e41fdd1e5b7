"""cron(0 3 * * ? *): renew subscriptions expiring within two days; recreate the ones that are gone."""

from typing import Any

from calbot.services.subscriptions import run_renewal


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return run_renewal()
