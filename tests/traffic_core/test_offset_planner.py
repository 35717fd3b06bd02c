"""Splitting offset ranges by event day, without a broker (the boundaries are given)."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from traffic_core.ingestion.offset_planner import day_of_ms, day_start_ms, split_by_day
from traffic_core.lake import OffsetRange

D1, D2, D3 = date(2012, 3, 1), date(2012, 3, 2), date(2012, 3, 3)


def test_range_within_one_day_is_one_piece() -> None:
    assert split_by_day("t", 0, 10, 20, D1, D1, lambda _: None) == {D1: OffsetRange("t", 0, 10, 20)}


def test_range_is_cut_where_each_day_begins() -> None:
    starts = {D2: 15, D3: 18}
    pieces = split_by_day("t", 3, 10, 20, D1, D3, starts.get)
    assert pieces == {
        D1: OffsetRange("t", 3, 10, 14),
        D2: OffsetRange("t", 3, 15, 17),
        D3: OffsetRange("t", 3, 18, 20),
    }
    covered = sorted(o for piece in pieces.values() for o in range(piece.first, piece.last + 1))
    assert covered == list(range(10, 21))


def test_out_of_order_boundaries_never_lose_or_repeat_an_offset() -> None:
    # Late readings can make the time index point backwards; pieces stay contiguous.
    starts = {D2: 25, D3: 12}
    pieces = split_by_day("t", 0, 10, 20, D1, D3, starts.get)
    covered = sorted(o for piece in pieces.values() for o in range(piece.first, piece.last + 1))
    assert covered == list(range(10, 21))


def test_day_of_ms_and_day_start_agree() -> None:
    assert day_of_ms(day_start_ms(D2)) == D2
    assert day_of_ms(day_start_ms(D2) - 1) == D1


FAR_DAYS = st.sampled_from([date(1970, 1, 1), date(1999, 12, 31), date(2026, 12, 4)])
NEAR_DAYS = st.integers(0, 6).map(lambda n: D1 + timedelta(days=n))


@settings(derandomize=True, deadline=None, max_examples=300, database=None)
@given(days=st.lists(st.one_of(NEAR_DAYS, NEAR_DAYS, FAR_DAYS), min_size=1, max_size=40))
def test_skipping_empty_days_splits_alike_with_few_questions(days: list[date]) -> None:
    """Message days of one partition, hostile ones included (1970, years of gap, out of order):
    skipping days without messages gives the day-by-day walk's pieces, and the broker is asked
    about a number of days bounded by the days that hold messages, not by the calendar."""
    asked: list[date] = []

    def day_start_offset(day: date) -> int | None:  # the broker's time index
        asked.append(day)
        return next((o for o, d in enumerate(days) if d >= day), None)

    last = len(days) - 1
    first_day, last_day = days[0], max(days[-1], days[0])
    jumped = split_by_day("t", 0, 0, last, first_day, last_day, day_start_offset, days.__getitem__)
    covered = sorted(o for p in jumped.values() for o in range(p.first, p.last + 1))
    assert covered == list(range(len(days)))
    assert len(asked) <= 2 * len(set(days)) + 1
    if (last_day - first_day).days <= 60:
        assert jumped == split_by_day("t", 0, 0, last, first_day, last_day, day_start_offset)
