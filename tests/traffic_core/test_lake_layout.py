"""The lake's folder layout has one owner (traffic_core.lake): every zone's paths come from it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from traffic_core.lake import (
    aggregates_file,
    aggregates_files,
    day_folder,
    folder_day,
    raw_day_dir,
    raw_day_dirs,
)


@given(st.dates())
def test_a_day_folder_names_its_day_and_back(day: date) -> None:
    assert folder_day(Path(day_folder(day))) == day
    assert day_folder(day.isoformat()) == day_folder(day)


@given(st.text())
def test_any_other_folder_is_no_day(name: str) -> None:
    parsed = folder_day(Path("x") / (name or "."))
    assert parsed is None or day_folder(parsed) == f"date={parsed.isoformat()}"


def test_aggregates_files_lists_dated_days_oldest_first_and_filters(tmp_path: Path) -> None:
    days = [date(2012, 3, 2), date(2012, 3, 1), date(2012, 3, 6)]
    for day in days:
        path = aggregates_file(tmp_path, day)
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    stray = aggregates_file(tmp_path, days[0]).parent.with_name("date=not-a-day")
    stray.mkdir()
    (stray / "part.parquet").write_bytes(b"")
    assert list(aggregates_files(tmp_path)) == sorted(days)
    assert list(aggregates_files(tmp_path, ["2012-03-06", "2012-03-01"])) == [
        date(2012, 3, 1),
        date(2012, 3, 6),
    ]
    assert aggregates_files(tmp_path / "empty") == {}


def test_raw_day_dirs_skip_stray_folders(tmp_path: Path) -> None:
    raw_day_dir(tmp_path, date(2012, 3, 1)).mkdir(parents=True)
    raw_day_dir(tmp_path, date(2012, 3, 1)).with_name("date=junk").mkdir()
    assert raw_day_dirs(tmp_path) == {date(2012, 3, 1): raw_day_dir(tmp_path, date(2012, 3, 1))}
