"""Splitting offset ranges by event day, without a broker (the boundaries are given)."""

from __future__ import annotations

from datetime import date

from traffic_core.lake import OffsetRange
from traffic_core.offset_planner import day_of_ms, day_start_ms, split_by_day

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
