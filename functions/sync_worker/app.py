"""SQS FIFO consumer (one message group per account): sync the account, then bots follow its changes."""

from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

from calbot.deadline import Deadline, active
from calbot.services.notifications import consume


def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    with active(Deadline.from_context(context)):
        return consume(event)
