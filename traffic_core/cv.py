"""Forward-chaining cross-validation over time, with a gap so no label crosses into validation.

A training row at time t carries targets up to t + the largest horizon. Dropping training rows
within `gap_steps` windows of the validation start keeps every training label strictly before
the first validation timestamp; validation rows still see the past, as the live API does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import TimeSeriesSplit

from traffic_core.features import HORIZONS
from traffic_core.windows import WINDOW


@dataclass(frozen=True)
class FoldWindow:
    """One fold in time: train on rows before `train_before`, validate on
    `val_start`..`val_end` (inclusive). Engines that filter rows by timestamp (Spark) use it
    directly; `forward_chaining_splits` turns it into row positions."""

    train_before: pd.Timestamp
    val_start: pd.Timestamp
    val_end: pd.Timestamp


def fold_windows(
    timestamps: pd.Series | pd.DatetimeIndex | np.ndarray,
    n_splits: int = 5,
    gap_steps: int = max(HORIZONS.values()),
) -> list[FoldWindow]:
    """The distinct timestamps cut into n_splits + 1 chronological blocks; fold k validates
    on block k + 1 and trains on everything earlier than `gap_steps` 5-minute windows before
    that block starts."""
    unique = pd.DatetimeIndex(timestamps).unique().sort_values()
    gap = gap_steps * WINDOW
    folds = []
    for train_blocks, val_block in TimeSeriesSplit(n_splits=n_splits).split(unique):
        val_start = unique[val_block[0]]
        cutoff = val_start - gap
        if unique[train_blocks[0]] >= cutoff:
            raise ValueError(
                f"fold validating from {val_start} has no training data before the gap of "
                f"{gap_steps} steps; use fewer splits or more data"
            )
        folds.append(FoldWindow(cutoff, val_start, unique[val_block[-1]]))
    return folds


def forward_chaining_splits(
    timestamps: pd.Series | pd.DatetimeIndex | np.ndarray,
    n_splits: int = 5,
    gap_steps: int = max(HORIZONS.values()),
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) row positions into `timestamps` (rows may share a timestamp, as in
    the long feature frame), one pair per `fold_windows` fold."""
    stamps = pd.DatetimeIndex(timestamps)
    return [
        (
            np.flatnonzero(stamps < fold.train_before),
            np.flatnonzero((stamps >= fold.val_start) & (stamps <= fold.val_end)),
        )
        for fold in fold_windows(stamps, n_splits, gap_steps)
    ]
