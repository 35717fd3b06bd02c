"""Per-principal request limits and per-IP limits on failed authentications (in-process memory).

A moving window (not a fixed one) so a client cannot double its budget across a window edge.
The counters live in each worker process: with N uvicorn workers a principal gets N times the
configured rate, which is acceptable for a guard against runaway clients.
"""

from __future__ import annotations

import math
import threading
import time
import weakref

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class _SweptMemoryStorage(MemoryStorage):
    """limits' MemoryStorage, minus its expiry timer on the request path.

    The stock storage starts a fresh threading.Timer (a new thread, and a wait for it to run)
    every 10 ms while requests arrive. Here one daemon thread sweeps expired entries each second
    instead; the limit checks compare timestamps themselves, so they do not rely on sweeping.
    """

    def __init__(self, sweep_seconds: float = 1.0) -> None:
        super().__init__()
        sweeper = threading.Thread(
            target=_sweep, args=(weakref.ref(self), sweep_seconds), name="rate-limit-sweep"
        )
        sweeper.daemon = True
        sweeper.start()

    def _MemoryStorage__schedule_expiry(self) -> None:  # the private hook the stock one uses
        pass


def _sweep(storage: weakref.ref[_SweptMemoryStorage], seconds: float) -> None:
    while True:
        time.sleep(seconds)
        live = storage()
        if live is None:
            return
        live._MemoryStorage__expire_events()  # type: ignore[attr-defined]
        del live


class RateLimited(Exception):
    """The caller spent its budget; retry_after is whole seconds until a slot frees."""

    def __init__(self, retry_after: int, detail: str) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.detail = detail


class RateLimits:
    def __init__(self, per_principal: str, auth_failures: str) -> None:
        self._limiter = MovingWindowRateLimiter(_SweptMemoryStorage())
        self._per_principal = parse_many(per_principal) if per_principal else []
        self._auth_failures = parse_many(auth_failures) if auth_failures else []

    def hit_principal(self, method: str, subject: str) -> None:
        """Spend one request of the principal's budget, or raise RateLimited."""
        for item in self._per_principal:
            if not self._limiter.hit(item, "principal", method, subject):
                raise RateLimited(
                    self._retry_after(item, "principal", method, subject),
                    f"rate limit exceeded for {subject!r}: {item}",
                )

    def record_failure(self, client: str) -> None:
        """Count a failed authentication from `client`; past its budget, raise RateLimited.

        Only failures are counted and only failures are refused: a valid credential is checked
        and admitted whatever others sent from the same address (a shared NAT, a proxy), while
        a guesser's failed attempts get 429s instead of 401s until the window moves on.
        """
        for item in self._auth_failures:
            if not self._limiter.hit(item, "auth-failure", client):
                raise RateLimited(
                    self._retry_after(item, "auth-failure", client),
                    f"too many failed authentications from this address: {item}",
                )

    def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        reset = self._limiter.get_window_stats(item, *identifiers).reset_time
        return max(1, math.ceil(reset - time.time()))
