"""Stream against batch: does each window the stream processor closed equal the lake's?

Both sides apply `traffic_core.windows` to the same readings, so a closed window must agree in
its reading count and mean speed. The one legitimate difference is a reading that reached the
stream after its window had closed (sent to the DLQ as LATE_READING) while the batch asset still
counted it in its day. Windows after the stream's newest closed window of their sensor are still
open in the stream and are only counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pandas as pd
from confluent_kafka import Consumer

from traffic_core.events import AGGREGATE, READING, DecodeError, EventCodec, Reason
from traffic_core.kafka.read_back import from_beginning, read_to_end
from traffic_core.windows import WINDOW

KEY = ["sensor_id", "window_start"]
MEAN_TOLERANCE = 1e-9
SHOWN = 10
"""Unexplained windows listed by key in the result; the rest are counted."""


@dataclass(frozen=True)
class Reconciliation:
    compared: int
    agreeing: int
    explained_by_late: int
    unexplained: int
    missing_in_stream: int
    only_in_stream: int
    pending: int
    examples: list[str]

    @property
    def passed(self) -> bool:
        return self.compared > 0 and not (
            self.unexplained or self.missing_in_stream or self.only_in_stream
        )


def reconcile(
    batch: pd.DataFrame,
    stream: pd.DataFrame,
    newest: pd.Series,
    late: pd.DataFrame,
) -> Reconciliation:
    """`batch` and `stream`: one day's windows (sensor_id, window_start, reading_count,
    speed_mean); `newest`: the stream's newest closed window_start per sensor, over the whole
    topic; `late`: (sensor_id, window_start) of the stream's LATE_READING rejects."""
    columns = [*KEY, "reading_count", "speed_mean"]
    merged = batch[columns].merge(
        stream[columns], on=KEY, how="outer", suffixes=("_batch", "_stream"), indicator=True
    )
    batch_only = merged[merged["_merge"] == "left_only"]
    closed = batch_only["window_start"] <= batch_only["sensor_id"].map(newest)
    both = merged[merged["_merge"] == "both"]
    mean_b, mean_s = both["speed_mean_batch"], both["speed_mean_stream"]
    same_mean = ((mean_b - mean_s).abs() <= MEAN_TOLERANCE) | (mean_b.isna() & mean_s.isna())
    agree = (both["reading_count_batch"] == both["reading_count_stream"]) & same_mean
    differing = both.loc[~agree, KEY]
    late_keys = set(late[KEY].itertuples(index=False, name=None))
    explained = [k in late_keys for k in differing.itertuples(index=False, name=None)]
    unexplained = differing[[not e for e in explained]]
    return Reconciliation(
        compared=len(both),
        agreeing=int(agree.sum()),
        explained_by_late=sum(explained),
        unexplained=len(unexplained),
        missing_in_stream=int(closed.sum()),
        only_in_stream=int((merged["_merge"] == "right_only").sum()),
        pending=int((~closed).sum()),
        examples=[f"{s}@{w.isoformat()}" for s, w in unexplained.head(SHOWN).to_numpy()],
    )


def stream_windows(
    consumer: Consumer, topic: str, day: date, timeout: float = 300.0
) -> tuple[pd.DataFrame, pd.Series]:
    """The day's closed windows on the aggregates topic, and the newest window per sensor."""
    codec = EventCodec(AGGREGATE)
    rows = []
    for message in read_to_end(consumer, topic, from_beginning, timeout):
        try:
            record = codec.decode(message.value() or b"")
        except DecodeError:
            continue
        rows.append(
            (
                record["sensor_id"],
                record["window_start"],
                record["reading_count"],
                record["speed_mean"],
            )
        )
    frame = pd.DataFrame(rows, columns=[*KEY, "reading_count", "speed_mean"])
    frame["window_start"] = pd.to_datetime(frame["window_start"], utc=True)
    frame["speed_mean"] = frame["speed_mean"].astype("float64")
    newest = frame.groupby("sensor_id")["window_start"].max()
    on_day = frame["window_start"].dt.date == day
    return frame[on_day].drop_duplicates(KEY, keep="last").reset_index(drop=True), newest


def late_windows(
    consumer: Consumer, dlq_topic: str, group_id: str, timeout: float = 300.0
) -> pd.DataFrame:
    """(sensor_id, window_start) of the readings the stream processor (its group's header)
    sent to the DLQ as LATE_READING."""
    codec = EventCodec(READING)
    rows = []
    for message in read_to_end(consumer, dlq_topic, from_beginning, timeout):
        headers = dict(message.headers() or [])
        if headers.get("dlq.reason") != Reason.LATE_READING.value.encode():
            continue
        if headers.get("dlq.consumer.group") != group_id.encode():
            continue
        try:
            reading = codec.decode(message.value() or b"")
        except DecodeError:
            continue
        rows.append((reading["sensor_id"], reading["event_time"]))
    frame = pd.DataFrame(rows, columns=["sensor_id", "event_time"])
    frame["window_start"] = pd.to_datetime(frame["event_time"], utc=True).dt.floor(WINDOW)
    return frame[KEY]
