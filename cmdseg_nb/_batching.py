"""Serialized messages -> batches within Segment's limits, and the exact body of each attempt.

::

    (row, messageId, bytes) ... ──Batcher.add──▶ Batch (<= max_bytes on the exact body, <= max_messages)
    Batch ──Envelope.body(sentAt)──▶ {"batch":[...],"sentAt":"...","integrations":{...}}

A message is added only if the body *with it* stays within ``max_bytes``: the size is measured
before adding, on the exact bytes that are sent (the official library checks after appending and
sends ~508 KB batches, spec "official Python library"). ``sentAt`` always has the same length, so
the budget is exact for every attempt.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

import orjson

SENT_AT_LEN = len("2024-03-10T09:00:00.000Z")


def now_iso() -> str:
    """The current time as ISO-8601 UTC with milliseconds and ``Z`` (Segment's ``sentAt``)."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclasses.dataclass
class Batch:
    """One planned batch: input positions, messageIds and message bytes, in input order."""

    number: int
    rows: list[int]
    ids: list[str]
    bodies: list[bytes]

    @property
    def size(self) -> int:
        """Bytes of the messages joined with commas (the envelope excluded)."""
        return sum(map(len, self.bodies)) + max(0, len(self.bodies) - 1)

    def part(self, start: int, stop: int) -> Batch:
        """A slice of this batch (used to split a batch answered 400)."""
        return Batch(self.number, self.rows[start:stop], self.ids[start:stop],
                     self.bodies[start:stop])


class Envelope:
    """Builds ``{"batch":[...],"sentAt":"...","integrations":{...}}`` from message bytes."""

    def __init__(self, integrations: dict | None):
        self.tail = b"" if not integrations else b',"integrations":' + orjson.dumps(integrations)
        # Size of the envelope with an empty batch; sentAt has a fixed length.
        self.overhead = len(self.body([], "x" * SENT_AT_LEN))

    def body(self, messages: list[bytes], sent_at: str) -> bytes:
        return b"".join(
            (b'{"batch":[', b",".join(messages), b'],"sentAt":"', sent_at.encode(), b'"',
             self.tail, b"}")
        )


class Batcher:
    """Fills batches in input order; a message too big for any batch is returned apart."""

    def __init__(self, envelope: Envelope, max_bytes: int, max_messages: int):
        self.overhead = envelope.overhead
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.count = 0
        self._new()

    def _new(self) -> None:
        self.rows: list[int] = []
        self.ids: list[str] = []
        self.bodies: list[bytes] = []
        self.size = self.overhead

    def fits_alone(self, body: bytes) -> bool:
        return self.overhead + len(body) <= self.max_bytes

    def add(self, row: int, mid: str, body: bytes) -> Batch | None:
        """Add one message (which must fit alone); returns the batch it closed, if any."""
        done = None
        extra = len(body) + (1 if self.bodies else 0)  # the comma
        if self.bodies and (self.size + extra > self.max_bytes
                            or len(self.bodies) >= self.max_messages):
            done = self.flush()
            extra = len(body)
        self.rows.append(row)
        self.ids.append(mid)
        self.bodies.append(body)
        self.size += extra
        return done

    def add_many(self, rows: list[int], ids: list[str], bodies: list[bytes]) -> list[Batch]:
        """Add messages that each fit alone, in order; returns the batches they closed."""
        done: list[Batch] = []
        max_bytes, max_messages = self.max_bytes, self.max_messages
        size, count = self.size, len(self.bodies)
        start = 0
        for j, body in enumerate(bodies):
            n = len(body)
            extra = n + 1 if count else n
            if count and (size + extra > max_bytes or count >= max_messages):
                self.rows += rows[start:j]
                self.ids += ids[start:j]
                self.bodies += bodies[start:j]
                closed = self.flush()
                if closed is not None:
                    done.append(closed)
                start, size, count, extra = j, self.overhead, 0, n
            size += extra
            count += 1
        self.rows += rows[start:]
        self.ids += ids[start:]
        self.bodies += bodies[start:]
        self.size = size
        return done

    def flush(self) -> Batch | None:
        """The batch being filled, if it has messages; starts a new one."""
        if not self.bodies:
            return None
        batch = Batch(self.count, self.rows, self.ids, self.bodies)
        self.count += 1
        self._new()
        return batch


def plan_batches(sizes: list[int], overhead: int, max_bytes: int,
                 max_messages: int) -> tuple[list[list[int]], list[int]]:
    """Positions per batch for messages of ``sizes`` bytes, and positions too big for any."""

    class _Fixed:
        pass

    env = _Fixed()
    env.overhead = overhead  # type: ignore[attr-defined]
    batcher = Batcher(env, max_bytes, max_messages)  # type: ignore[arg-type]
    batches: list[list[int]] = []
    too_big: list[int] = []
    for pos, n in enumerate(sizes):
        body = b"x" * n
        if not batcher.fits_alone(body):
            too_big.append(pos)
            continue
        done = batcher.add(pos, "", body)
        if done is not None:
            batches.append(done.rows)
    last = batcher.flush()
    if last is not None:
        batches.append(last.rows)
    return batches, too_big
