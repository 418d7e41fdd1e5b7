"""Speed fixes for the local stack's moto (never imported by production code); behaviour unchanged.

moto 5's SQS `Queue.attributes` is a property that rebuilds every attribute on each read, including
ApproximateNumberOfMessages, ...Delayed and ...NotVisible: each a scan of every message in the queue
with a clock read per message. SendMessage reads `attributes.get("ContentBasedDeduplication")` three
times per message, so each send costs O(messages in the queue): 200 messages already made a FIFO
SendMessageBatch take 0.25 s instead of 10 ms, and a burst of 1,000 notifications slowed the whole
webhook -> queue -> worker path quadratically. Here the three counts are computed only when read
(GetQueueAttributes, or any read of those keys), every other attribute as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, ItemsView, Iterator, ValuesView
from typing import Any

_LAZY = {
    "ApproximateNumberOfMessages": "approximate_number_of_messages",
    "ApproximateNumberOfMessagesDelayed": "approximate_number_of_messages_delayed",
    "ApproximateNumberOfMessagesNotVisible": "approximate_number_of_messages_not_visible",
}


class LazyAttributes(dict[str, Any]):
    """A queue's attributes whose expensive values are computed on first read (then kept)."""

    def __init__(self, values: dict[str, Any], lazy: dict[str, Callable[[], Any]]) -> None:
        super().__init__(values)
        self._lazy = dict(lazy)
        for key in lazy:
            super().__setitem__(key, None)  # present, in order, until read

    def _resolve(self, key: str) -> None:
        compute = self._lazy.pop(key, None)
        if compute is not None:
            super().__setitem__(key, compute())

    def _resolve_all(self) -> None:
        for key in list(self._lazy):
            self._resolve(key)

    def __getitem__(self, key: str) -> Any:
        self._resolve(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401 (self.get is this method)

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        self._resolve_all()
        return super().items()

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        self._resolve_all()
        return super().values()

    def copy(self) -> dict[str, Any]:
        self._resolve_all()
        return dict(super().items())

    def __eq__(self, other: object) -> bool:
        self._resolve_all()
        return dict(super().items()) == other

    __hash__ = None

    def __iter__(self) -> Iterator[str]:
        return super().__iter__()

    def __repr__(self) -> str:
        self._resolve_all()
        return super().__repr__()


def _patch_sqs_attributes() -> None:
    from moto.core.utils import camelcase_to_underscores
    from moto.sqs.models import Queue

    if getattr(Queue, "_calbot_lazy_attributes", False):
        return
    original = Queue.attributes.fget  # type: ignore[attr-defined]
    names = {a: camelcase_to_underscores(a) for a in (*Queue.BASE_ATTRIBUTES, *Queue.FIFO_ATTRIBUTES)}
    names.update({a: camelcase_to_underscores(a) for a in getattr(Queue, "KMS_ATTRIBUTES", [])})

    def attributes(self: Any) -> dict[str, Any]:
        result: dict[str, Any] = {}
        lazy: dict[str, Callable[[], Any]] = {}
        wanted = [
            *Queue.BASE_ATTRIBUTES,
            *(Queue.FIFO_ATTRIBUTES if self.fifo_queue else []),
            *(getattr(Queue, "KMS_ATTRIBUTES", []) if self.kms_master_key_id else []),
        ]
        for attribute in wanted:
            if attribute in _LAZY:
                lazy[attribute] = functools.partial(getattr, self, _LAZY[attribute])
                result[attribute] = None
            else:
                result[attribute] = getattr(self, names[attribute])
        if self.policy:
            result["Policy"] = self.policy
        if self.redrive_policy:
            import json

            result["RedrivePolicy"] = json.dumps(self.redrive_policy)
        for key, value in result.items():
            if isinstance(value, bool):
                result[key] = str(value).lower()
        return LazyAttributes({k: v for k, v in result.items() if k not in lazy}, lazy)

    Queue.attributes = property(attributes)  # type: ignore[assignment,method-assign]
    Queue._calbot_original_attributes = original  # type: ignore[attr-defined]
    Queue._calbot_lazy_attributes = True  # type: ignore[attr-defined]


def install_speedups() -> None:
    """Idempotent, like local.aws_limits.install_limits."""
    _patch_sqs_attributes()
