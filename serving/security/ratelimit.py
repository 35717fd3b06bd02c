"""Per-principal request limits and per-IP limits on failed authentications (in-process memory).

Past an address's failure budget, a credential from it is verified only if it authenticated
lately (from anywhere: a "device cookie" in OWASP's terms); any other attempt is refused
unverified. A guesser learns nothing more until the window moves on, while those already using
the API behind the same address (a NAT, a proxy) keep working.

A moving window (not a fixed one) so a client cannot double its budget across a window edge.
The counters live in each worker process: with N uvicorn workers a principal gets N times the
configured rate, which is acceptable for a guard against runaway clients.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
import weakref
from collections import OrderedDict

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


VOUCHED_SECONDS = 3600.0
"""How long a credential that authenticated stays able to pass an address's failure lockout."""
VOUCHED_MAX = 10_000
"""Fingerprints kept at most (the oldest go first), so no client can grow the table unbounded."""


def _fingerprint(credential: str) -> bytes:
    """A digest, so the table never holds a credential itself."""
    return hashlib.blake2b(credential.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class RateLimits:
    def __init__(self, per_principal: str, auth_failures: str) -> None:
        self._limiter = MovingWindowRateLimiter(_SweptMemoryStorage())
        self._per_principal = parse_many(per_principal) if per_principal else []
        self._auth_failures = parse_many(auth_failures) if auth_failures else []
        self._failing: dict[str, float] = {}
        """Clients with a failure lately, and when: the limiter is asked only about them."""
        self._window = max((item.get_expiry() for item in self._auth_failures), default=0)
        self._vouched: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def admit_attempt(self, client: str, credential: str) -> None:
        """Before verifying `credential`: past `client`'s failure budget, raise RateLimited
        unless the credential authenticated within the last hour."""
        failed_at = self._failing.get(client)
        if failed_at is None:
            return
        if time.monotonic() - failed_at > self._window:
            self._failing.pop(client, None)
            return
        for item in self._auth_failures:
            if not self._limiter.test(item, "auth-failure", client) and not self._vouched_for(
                credential
            ):
                raise RateLimited(
                    self._retry_after(item, "auth-failure", client),
                    f"too many failed authentications from this address: {item}",
                )

    def record_success(self, credential: str) -> None:
        """`credential` authenticated: it may pass a failure lockout for the next hour."""
        key = _fingerprint(credential)
        with self._lock:
            self._vouched[key] = time.monotonic() + VOUCHED_SECONDS
            self._vouched.move_to_end(key)
            while len(self._vouched) > VOUCHED_MAX:
                self._vouched.popitem(last=False)

    def _vouched_for(self, credential: str) -> bool:
        with self._lock:
            until = self._vouched.get(_fingerprint(credential))
        return until is not None and until > time.monotonic()

    def hit_principal(self, method: str, subject: str) -> None:
        """Spend one request of the principal's budget, or raise RateLimited."""
        for item in self._per_principal:
            if not self._limiter.hit(item, "principal", method, subject):
                raise RateLimited(
                    self._retry_after(item, "principal", method, subject),
                    f"rate limit exceeded for {subject!r}: {item}",
                )

    def record_failure(self, client: str) -> None:
        """Count a failed authentication from `client`; past its budget, raise RateLimited."""
        if self._auth_failures:
            self._failing[client] = time.monotonic()
        for item in self._auth_failures:
            if not self._limiter.hit(item, "auth-failure", client):
                raise RateLimited(
                    self._retry_after(item, "auth-failure", client),
                    f"too many failed authentications from this address: {item}",
                )

    def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        reset = self._limiter.get_window_stats(item, *identifiers).reset_time
        return max(1, math.ceil(reset - time.time()))
