"""Where a fetched Kafka message sits, as plain ints.

confluent_kafka types `Message.partition()` and `Message.offset()` as `int | None`: None stands for
a message not (yet) in a partition, such as one handed to a producer's delivery callback before
assignment. A message returned by `consume()`/`poll()` always has both, so readers narrow here once.
"""

from __future__ import annotations

from confluent_kafka import Message


class NotFetchedError(ValueError):
    """A message without a partition or offset reached code that reads fetched messages."""


def partition_of(message: Message) -> int:
    """The partition a fetched message was read from."""
    partition = message.partition()
    if partition is None:
        raise NotFetchedError(f"message of {message.topic()} has no partition")
    return partition


def offset_of(message: Message) -> int:
    """The offset of a fetched message (or the position an end-of-partition event reports)."""
    offset = message.offset()
    if offset is None:
        raise NotFetchedError(f"message of {message.topic()} has no offset")
    return offset
