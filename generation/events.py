"""Moments in a job's life that other parts of the product act on, as explicit hook lists.

The producer calls the hook; each consumer subscribes in `GenerationConfig.ready()`
(generation/apps.py), so a producer never imports its consumers and `apps.py` lists every one of
them in one place. Preferred to Django signals: the subscribers are easy to find, and each hook
says in which transaction it runs.

- `job_queued(public_id=)`: after the transaction that inserted (or re-queued) the job commits.
  The worker rings its doorbell.
- `job_finished(job=, document=)`: inside the transaction that moved the job to a terminal status;
  a consumer that must act only once that commits registers its own `transaction.on_commit`.
  The waiting request is told, the webhook delivery is recorded, the batch is topped up.
- `batch_finished(batch=, document=)`: inside the batch's terminal transaction.
- `webhook_delivery_due(public_id=)`: after the transaction that made a delivery due commits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Subscriber = Callable[..., object]  # what a subscriber returns is ignored


class Hook:
    """A named list of subscribers, called in subscription order with keyword arguments. An
    exception propagates to the producer (a job_finished consumer can roll the job back)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Subscriber:
        if subscriber not in self._subscribers:  # ready() may run more than once
            self._subscribers.append(subscriber)
        return subscriber

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        return tuple(self._subscribers)

    def __call__(self, **kwargs: Any) -> None:
        for subscriber in tuple(self._subscribers):
            subscriber(**kwargs)

    def __repr__(self) -> str:
        return f"<Hook {self.name}: {len(self._subscribers)} subscriber(s)>"


job_queued = Hook("job_queued")
job_finished = Hook("job_finished")
batch_finished = Hook("batch_finished")
webhook_delivery_due = Hook("webhook_delivery_due")
