"""local/moto_speed.py: the local SQS sends without counting the queue's messages each time, and
GetQueueAttributes still answers the counts (and every other attribute) as moto did."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.sqs.models import Queue


@pytest.fixture
def sqs(sped_up_moto_env: None) -> Iterator[Any]:
    mock = mock_aws()
    mock.start(reset=False)
    try:
        yield boto3.client("sqs", region_name="us-east-1")
    finally:
        mock.stop(remove_data=False)


def test_a_send_does_not_count_the_queue(sqs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url = sqs.create_queue(
        QueueName="speed-test.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    )["QueueUrl"]
    counted = []
    original = Queue.approximate_number_of_messages.fget  # type: ignore[attr-defined]
    monkeypatch.setattr(
        Queue, "approximate_number_of_messages", property(lambda q: counted.append(1) or original(q))
    )
    for b in range(5):
        entries = [
            {
                "Id": str(i),
                "MessageBody": "m",
                "MessageGroupId": f"g{i}",
                "MessageDeduplicationId": f"{b}-{i}",
            }
            for i in range(10)
        ]
        assert len(sqs.send_message_batch(QueueUrl=url, Entries=entries)["Successful"]) == 10
    assert counted == []  # moto used to scan every queued message once per attribute read per send
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "50" and attrs["FifoQueue"] == "true"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    one = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert one == {"ApproximateNumberOfMessages": "50"}
    # the same queue again with the same attributes is no conflict; other attributes are
    sqs.create_queue(
        QueueName="speed-test.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    )
    with pytest.raises(sqs.exceptions.QueueNameExists):
        sqs.create_queue(
            QueueName="speed-test.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
        )
