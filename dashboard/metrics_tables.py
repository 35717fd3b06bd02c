"""Model metrics (the registry manifest's nested dict) as tables, whatever entries it holds.

Today a horizon entry looks like {"selected": family, "cv_mae": {family: mae}, "params": {...},
"interval": {...}}; baselines and test scores may be added, nested under the horizon or above
it. Rather than know each name, every leaf is placed by its path: the path component that names
a horizon ("15", "30", "60") picks the row, the rest of the path names the column. Leaves
without a horizon go to a key/value table, and hyper-parameters to their own table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

PARAMS_KEY = "params"
SEPARATOR = " / "


@dataclass(frozen=True)
class MetricsTables:
    scores: pd.DataFrame
    """One row per horizon: selected family, CV errors, interval, baselines, test scores."""
    params: pd.DataFrame
    """One row per horizon: the selected model's hyper-parameters."""
    other: pd.DataFrame
    """Entries not tied to a horizon, as (metric, value)."""


def leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, value) for every non-dict value in a nested dict."""
    if isinstance(value, Mapping):
        for key, child in value.items():
            yield from leaves(child, (*path, str(key)))
    else:
        yield path, value


def _is_horizon(key: str) -> bool:
    return key.isdigit()


def _cell(value: Any) -> Any:
    """Numbers and text stay as they are; lists and the like become readable text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def metrics_tables(metrics: Mapping[str, Any] | None) -> MetricsTables:
    scores: dict[int, dict[str, Any]] = {}
    params: dict[int, dict[str, Any]] = {}
    other: list[dict[str, Any]] = []
    for path, value in leaves(metrics or {}):
        horizon = next((k for k in path if _is_horizon(k)), None)
        if horizon is None:
            other.append({"metric": SEPARATOR.join(path), "value": str(value)})
            continue
        rest = [k for k in path if k != horizon]
        target = params if PARAMS_KEY in rest else scores
        column = SEPARATOR.join(k for k in rest if k != PARAMS_KEY) or "value"
        target.setdefault(int(horizon), {})[column] = _cell(value)
    return MetricsTables(
        scores=_by_horizon(scores),
        params=_by_horizon(params),
        other=pd.DataFrame(other, columns=["metric", "value"]),
    )


def _by_horizon(rows: dict[int, dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(rows, orient="index").sort_index()
    frame.index = [f"{h} min" for h in frame.index]
    frame.index.name = "horizon"
    return frame
