"""The API's live state: the last few hours of 5-minute windows for every sensor, in memory.

Forecasts need the trailing hour of `traffic_core.features` input for all sensors the moment a
window closes, so the windows are kept as numpy arrays (a ring of window slots x sensors) that
a batch of readings updates without a Python loop per reading, and that `speeds()` turns into
the wide frame `make_features(..., at=t)` takes in a few hundred microseconds.

Rules, on the core's 5-minute grid (`traffic_core.windows`):
- one value per (window, sensor): the reading with the latest event time, a resend of the same
  event time replacing the earlier one (METR-LA has one reading per sensor and window);
- a null, NaN or 0.0 speed is a missing reading: the sensor has reported, with no speed;
- windows close in order, each at most once: when every sensor has reported for it, or when the
  watermark (largest event time seen minus `lateness`) reaches its end. Readings for a closed
  window still kept update it and count as late; readings older than the kept span are dropped.

With each kept reading goes where it came from (`ReadingOrigin`: the producer replay's ingest
id, the Kafka partition and offset), so a forecast can name the newest reading behind it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from traffic_core.windows import DEFAULT_THRESHOLDS, WINDOW, CongestionThresholds, to_utc

WINDOW_MS = WINDOW // pd.Timedelta("1ms")
_WINDOW_NS = WINDOW.value
_EMPTY = np.iinfo(np.int64).min  # no reading; also NaT once viewed as datetime64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ReadingOrigin:
    """Where each reading of a batch came from: its producer replay (ingest id, None if the
    message had none) and its Kafka partition and offset."""

    ingest_ids: pa.Array | Sequence[str | None]
    partitions: np.ndarray
    offsets: np.ndarray


@dataclass(frozen=True)
class LiveStats:
    """Counters since start (readings, by what happened to them) and the watermark."""

    readings: int
    missing: int
    unknown_sensor: int
    too_late: int
    late_updates: int
    duplicates: int
    windows_closed: int
    watermark: pd.Timestamp | None


@dataclass(frozen=True)
class WindowSnapshot:
    """One window for every sensor: speed_mph (NaN missing), congestion class and reading_time
    (event time of the reading kept, NaT if the sensor has not reported), indexed by sensor_id."""

    window_start: pd.Timestamp
    sensors: pd.DataFrame
    reported: int
    is_synthetic: bool
    closed_at: float | None
    """Wall-clock time.time() at which the window closed, for latency measurements."""


class LiveWindows:
    """Thread-safe store of the last `hours` of 5-minute windows (rules in the module doc)."""

    def __init__(
        self,
        sensor_ids: Sequence[str],
        hours: float = 3.0,
        thresholds: CongestionThresholds = DEFAULT_THRESHOLDS,
        lateness: pd.Timedelta | str = WINDOW,
    ) -> None:
        ids = [str(s) for s in sensor_ids]
        self._columns = pd.Index(ids, dtype=object, name="sensor_id")
        if not ids or self._columns.has_duplicates:
            raise ValueError("sensor_ids must be non-empty and unique")
        self._id_values = pa.array(ids, pa.string())
        self.hours = hours
        self.slots = math.ceil(round(hours * (pd.Timedelta("1h") / WINDOW), 9))
        self.lateness = pd.Timedelta(lateness)
        if self.slots < 1:
            raise ValueError(f"hours={hours} keeps no 5-minute window")
        if not pd.Timedelta(0) <= self.lateness <= (self.slots - 1) * WINDOW:
            raise ValueError(  # a window must close before it leaves the kept span
                f"lateness {self.lateness} must be between 0 and {(self.slots - 1) * WINDOW}"
            )
        self.thresholds = thresholds
        n = len(ids)
        self._lock = threading.Lock()
        self._speed = np.full((self.slots, n), np.nan)
        self._event_ms = np.full((self.slots, n), _EMPTY, dtype=np.int64)
        self._reported = np.zeros(self.slots, dtype=np.int64)
        self._synthetic = np.zeros(self.slots, dtype=bool)
        self._closed_at = np.full(self.slots, np.nan)
        # Origin of the reading kept per (slot, sensor); -1 where unknown.
        self._ingest = np.full((self.slots, n), -1, dtype=np.int32)
        self._partition = np.full((self.slots, n), -1, dtype=np.int32)
        self._offset = np.full((self.slots, n), -1, dtype=np.int64)
        self._ingest_names: list[str] = []  # code -> ingest id; a few per producer replay
        self._ingest_codes: dict[str, int] = {}
        self._head: int | None = None  # newest window index (epoch ms // WINDOW_MS) seen
        self._first: int | None = None  # oldest window with a reading since start
        self._closed_through: int | None = None  # every kept window up to this one is closed
        self._max_ms: int | None = None
        self._counts = dict.fromkeys(
            ("readings", "missing", "unknown_sensor", "too_late", "late_updates", "duplicates"), 0
        )
        self._windows_closed = 0

    @property
    def sensor_ids(self) -> list[str]:
        return self._columns.tolist()

    # Writing ---------------------------------------------------------------------------------

    def add(
        self,
        sensor_ids: np.ndarray | pa.Array | Sequence[str],
        event_times_ms: np.ndarray,
        speeds: np.ndarray,
        synthetic: np.ndarray | None = None,
        origin: ReadingOrigin | None = None,
        *,
        close: bool = True,
    ) -> list[pd.Timestamp]:
        """Insert a batch of readings; returns the window starts it closed, oldest first.

        `close=False` only stores (a rebuild reads partitions unevenly, so it closes once with
        `close_due()` after catching up instead of closing on partial windows).
        """
        cols = self._indexer(sensor_ids)
        ms = np.asarray(event_times_ms, dtype=np.int64)
        speed = np.asarray(speeds, dtype=np.float64)
        syn = np.zeros(len(ms), bool) if synthetic is None else np.asarray(synthetic, bool)
        where = _origin_arrays(origin, len(ms))
        if not len(cols) == len(ms) == len(speed) == len(syn) == len(where[1]):
            raise ValueError(
                "sensor_ids, event_times_ms, speeds, synthetic and origin differ in length"
            )
        with self._lock:
            self._counts["readings"] += len(ms)
            known = cols >= 0
            self._counts["unknown_sensor"] += len(ms) - int(known.sum())
            if known.any():
                codes = self._intern(where[0])
                self._store(
                    cols[known],
                    ms[known],
                    speed[known],
                    syn[known],
                    (codes[known], where[1][known], where[2][known]),
                )
            return self._close_due() if close else []

    def close_due(self) -> list[pd.Timestamp]:
        """Close every window the rules allow now; returns their starts, oldest first."""
        with self._lock:
            return self._close_due()

    def _indexer(self, sensor_ids: np.ndarray | pa.Array | Sequence[str]) -> np.ndarray:
        """Column of each reading's sensor, -1 for an unknown one."""
        if isinstance(sensor_ids, pa.ChunkedArray | pa.Array):
            found = pc.index_in(sensor_ids, value_set=self._id_values)
            return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        return self._columns.get_indexer(np.asarray(sensor_ids, dtype=object))

    def _intern(self, ingest_ids: pa.Array) -> np.ndarray:
        """Codes of a batch's ingest ids (-1 for null); the few distinct ids are looked up
        once per batch, not per reading."""
        encoded = pc.dictionary_encode(ingest_ids)
        names = encoded.dictionary.to_pylist()
        for name in names:
            if name not in self._ingest_codes:
                self._ingest_codes[name] = len(self._ingest_names)
                self._ingest_names.append(name)
        mapping = np.array([self._ingest_codes[n] for n in names] + [-1], dtype=np.int32)
        return mapping[encoded.indices.fill_null(len(names)).to_numpy(zero_copy_only=False)]

    def _store(
        self,
        cols: np.ndarray,
        ms: np.ndarray,
        speed: np.ndarray,
        syn: np.ndarray,
        origin: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> None:
        windows = ms // WINDOW_MS
        self._advance(int(windows.max()))
        assert self._head is not None
        kept = windows > self._head - self.slots
        self._counts["too_late"] += len(kept) - int(kept.sum())
        code, partition, offset = origin
        if not kept.all():
            cols, ms, speed, syn, windows, code, partition, offset = (
                a[kept] for a in (cols, ms, speed, syn, windows, code, partition, offset)
            )
        if not len(ms):
            return
        speed = np.where(speed == 0.0, np.nan, speed)
        self._counts["missing"] += int(np.isnan(speed).sum())
        if self._closed_through is not None:
            self._counts["late_updates"] += int((windows <= self._closed_through).sum())
        self._max_ms = int(ms.max()) if self._max_ms is None else max(self._max_ms, int(ms.max()))
        oldest = int(windows.min())
        self._first = oldest if self._first is None else min(self._first, oldest)
        # Per (window, sensor) the latest event time wins; lexsort is stable, so among equal
        # times the reading given last (a resend) wins.
        key = windows * len(self._columns) + cols
        order = np.lexsort((ms, key))
        ranked = key[order]
        last = order[np.append(ranked[1:] != ranked[:-1], True)]
        slot, col = windows[last] % self.slots, cols[last]
        before = self._event_ms[slot, col]
        self._counts["duplicates"] += len(ms) - int((before == _EMPTY).sum())
        newer = ms[last] >= before
        slot, col, last = slot[newer], col[newer], last[newer]
        self._speed[slot, col] = speed[last]
        self._event_ms[slot, col] = ms[last]
        self._ingest[slot, col] = code[last]
        self._partition[slot, col] = partition[last]
        self._offset[slot, col] = offset[last]
        self._reported += np.bincount(slot[before[newer] == _EMPTY], minlength=self.slots)
        self._synthetic[windows[syn] % self.slots] = True

    def _advance(self, newest: int) -> None:
        """Move the head to window `newest`, emptying the slots of windows that enter."""
        if self._head is not None and newest <= self._head:
            return
        if self._head is None or newest - self._head >= self.slots:
            entering = np.arange(self.slots)
        else:
            entering = np.arange(self._head + 1, newest + 1) % self.slots
        self._speed[entering] = np.nan
        self._event_ms[entering] = _EMPTY
        self._reported[entering] = 0
        self._synthetic[entering] = False
        self._closed_at[entering] = np.nan
        self._ingest[entering] = -1
        self._partition[entering] = -1
        self._offset[entering] = -1
        self._head = newest

    def _close_due(self) -> list[pd.Timestamp]:
        if self._head is None or self._max_ms is None or self._first is None:
            return []
        oldest_kept = self._head - self.slots + 1
        start = self._first if self._closed_through is None else self._closed_through + 1
        start = max(start, oldest_kept)
        candidates = np.arange(start, self._head + 1)
        watermark_ms = self._max_ms - self.lateness // pd.Timedelta("1ms")
        due = ((candidates + 1) * WINDOW_MS <= watermark_ms) | (
            self._reported[candidates % self.slots] == len(self._columns)
        )
        count = len(due) if due.all() else int(np.argmin(due))  # in order: up to the first not due
        if not count:
            return []
        closing = candidates[:count]
        self._closed_at[closing % self.slots] = time.time()
        self._closed_through = int(closing[-1])
        self._windows_closed += count
        return [_stamp(w) for w in closing.tolist()]

    # Reading ---------------------------------------------------------------------------------

    def latest_closed(self) -> pd.Timestamp | None:
        with self._lock:
            return None if self._closed_through is None else _stamp(self._closed_through)

    def held_from(self) -> pd.Timestamp | None:
        """The oldest window any reading was kept for since this state started (after a
        restart: the start of the span rebuilt from Kafka); None before the first reading.
        Before it the state knows nothing, so a forecast whose hour reaches back past it
        would be made from a context cut short by the restart, not by the sensors."""
        with self._lock:
            return None if self._first is None else _stamp(self._first)

    @property
    def is_synthetic(self) -> bool:
        """Whether any reading in the kept span came from the simulator."""
        with self._lock:
            return bool(self._synthetic.any())

    def speeds(self, end: pd.Timestamp | None = None, steps: int | None = None) -> pd.DataFrame:
        """Mean speed per 5-minute window (UTC index, full grid) and sensor (columns in the given
        order), NaN where missing or outside the kept span: the `steps` windows (default: the
        kept span) ending with `end` (default: the newest closed window; none closed -> empty)."""
        steps = self.slots if steps is None else steps
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        with self._lock:
            last = self._closed_through if end is None else _window_of(end)
            if last is None:
                steps = 0
                last = 0
            windows = np.arange(last - steps + 1, last + 1)
            values = np.full((steps, len(self._columns)), np.nan)
            if self._head is not None:
                kept = (windows > self._head - self.slots) & (windows <= self._head)
                values[kept] = self._speed[windows[kept] % self.slots]
        index = pd.DatetimeIndex(windows * _WINDOW_NS, name="timestamp").tz_localize("UTC")
        return pd.DataFrame(values, index=index, columns=self._columns, copy=False)

    def current(self, window: pd.Timestamp | None = None) -> WindowSnapshot | None:
        """Snapshot of one kept window (default: the newest closed one), None if there is none."""
        with self._lock:
            w = self._closed_through if window is None else _window_of(window)
            if w is None or self._head is None or not self._head - self.slots < w <= self._head:
                return None
            slot = w % self.slots
            speed = self._speed[slot].copy()
            event_ms = self._event_ms[slot].copy()
            reported = int(self._reported[slot])
            synthetic = bool(self._synthetic[slot])
            closed_at = float(self._closed_at[slot])
        sensors = pd.DataFrame(
            {
                "speed_mph": speed,
                "congestion": self.thresholds.classify(speed),
                "reading_time": pd.DatetimeIndex(event_ms.view("datetime64[ms]")).tz_localize(
                    "UTC"
                ),
            },
            index=self._columns,
        )
        closed = None if math.isnan(closed_at) else closed_at
        return WindowSnapshot(_stamp(w), sensors, reported, synthetic, closed)

    def window_ingest_ids(self, window: pd.Timestamp) -> Counter[str | None]:
        """Readings kept in one window per ingest id (None: readings without one); empty if
        the window is not kept."""
        with self._lock:
            w = _window_of(window)
            if self._head is None or not self._head - self.slots < w <= self._head:
                return Counter()
            slot = w % self.slots
            codes = self._ingest[slot][self._event_ms[slot] != _EMPTY]
            names = self._ingest_names
        counts = np.bincount(codes + 1, minlength=len(names) + 1)
        return Counter(
            {(names[c - 1] if c else None): int(counts[c]) for c in np.flatnonzero(counts)}
        )

    def sources(
        self, window: pd.Timestamp, sensor_ids: Sequence[str], topic: str, steps: int
    ) -> list[dict | None]:
        """Per sensor, where the newest reading of the `steps` windows up to `window` came
        from (ingest id, Kafka topic, partition, offset, event time); None without one."""
        cols = self._columns.get_indexer(list(sensor_ids))
        out: list[dict | None] = [None] * len(cols)
        known = np.flatnonzero(cols >= 0)
        with self._lock:
            if self._head is None:
                return out
            windows = np.arange(_window_of(window) - steps + 1, _window_of(window) + 1)
            slots = windows[(windows > self._head - self.slots) & (windows <= self._head)]
            slots %= self.slots
            if not len(slots) or not len(known):
                return out
            c = cols[known]
            event_ms = self._event_ms[slots][:, c]
            newest = event_ms.argmax(axis=0)  # windows (and times within them) ascend
            picked = slots[newest]
            rows = zip(
                known.tolist(),
                event_ms[newest, np.arange(len(c))].tolist(),
                self._ingest[picked, c].tolist(),
                self._partition[picked, c].tolist(),
                self._offset[picked, c].tolist(),
                strict=True,
            )
            names = list(self._ingest_names)
        for i, ms, code, partition, offset in rows:
            if ms != _EMPTY:
                out[i] = {
                    "ingest_id": names[code] if code >= 0 else None,
                    "kafka_topic": topic,
                    "kafka_partition": partition if partition >= 0 else None,
                    "kafka_offset": offset if offset >= 0 else None,
                    "reading_time": _datetime_ms(ms),
                }
        return out

    def stats(self) -> LiveStats:
        with self._lock:
            watermark = None
            if self._max_ms is not None:
                watermark = pd.Timestamp(self._max_ms, unit="ms", tz="UTC") - self.lateness
            return LiveStats(
                **self._counts, windows_closed=self._windows_closed, watermark=watermark
            )


def _origin_arrays(origin: ReadingOrigin | None, n: int) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(ingest ids, partitions, offsets) as arrays; unknown (nulls and -1) without an origin."""
    if origin is None:
        return pa.nulls(n, pa.string()), np.full(n, -1, np.int32), np.full(n, -1, np.int64)
    ids = origin.ingest_ids
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    elif not isinstance(ids, pa.Array):
        ids = pa.array(list(ids), pa.string())
    return (
        ids,
        np.asarray(origin.partitions, dtype=np.int32),
        np.asarray(origin.offsets, dtype=np.int64),
    )


def _datetime_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _stamp(window: int) -> pd.Timestamp:
    return pd.Timestamp(window * _WINDOW_NS, tz="UTC")


def _window_of(moment: pd.Timestamp | str) -> int:
    stamp = to_utc(pd.Timestamp(moment))
    if stamp != stamp.floor(WINDOW):
        raise ValueError(f"{moment} is not a 5-minute window start")
    return stamp.value // _WINDOW_NS
