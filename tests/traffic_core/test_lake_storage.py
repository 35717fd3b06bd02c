"""The lake root named by a path or URL: local folders stay plain paths, hdfs:// URLs keep their
NameNode, anything else is refused; code still on local files refuses a remote root."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traffic_core.lake_storage import lake_path, lake_url, local_only
from traffic_core.settings import PlatformSettings

segments = st.lists(
    st.text(alphabet="abcxyz019-_=.", min_size=1, max_size=8).filter(
        lambda s: s not in {".", ".."}
    ),
    min_size=1,
    max_size=4,
)


@settings(derandomize=True, deadline=None, max_examples=40, database=None)
@given(parts=segments, port=st.integers(1, 65535))
def test_hdfs_url_round_trips_with_its_namenode(parts: list[str], port: int) -> None:
    url = f"hdfs://127.0.0.1:{port}/{'/'.join(parts)}"
    path = lake_path(url)
    assert not isinstance(path, Path)
    assert lake_url(path) == url
    assert lake_url(path / "raw" / "date=2012-03-01") == f"{url}/raw/date=2012-03-01"


@settings(derandomize=True, deadline=None, max_examples=40, database=None)
@given(parts=segments)
def test_local_root_is_a_plain_path_and_its_url_is_literal(parts: list[str]) -> None:
    folder = Path("/data", *parts)
    for root in (str(folder), f"file://{folder}", folder.as_uri()):
        assert lake_path(root) == folder
        assert isinstance(lake_path(root), Path)
    # Not percent-encoded: Hadoop would read `date%3D...` as another folder.
    assert lake_url(lake_path(folder / "date=2012-03-01")) == f"file://{folder}/date=2012-03-01"


@pytest.mark.parametrize(
    "root", ["s3a://bucket/lake", "file://otherhost/lake", "hdfs:///lake", "hdfs://namenode/lake"]
)
def test_other_roots_are_refused(root: str) -> None:
    with pytest.raises(ValueError, match="lake root"):
        lake_path(root)


def test_local_only_code_refuses_a_remote_lake() -> None:
    assert local_only(lake_path("/data/lake")) == Path("/data/lake")
    with pytest.raises(ValueError, match=r"hdfs://127\.0\.0\.1:8020/metr/lake"):
        local_only(lake_path("hdfs://127.0.0.1:8020/metr/lake"))


def test_settings_read_an_hdfs_lake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAFFIC_LAKE_DIR", "hdfs://127.0.0.1:8020/metr/lake")
    assert lake_url(PlatformSettings().lake_dir) == "hdfs://127.0.0.1:8020/metr/lake"
    monkeypatch.setenv("TRAFFIC_LAKE_DIR", "/srv/lake")
    assert PlatformSettings().lake_dir == Path("/srv/lake")
