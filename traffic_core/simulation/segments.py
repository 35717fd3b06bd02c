"""Time spans per sensor (outages, network gaps, incident effects) and the steps they cover."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segments:
    """Per-sensor time spans [start, stop) sorted by start (sensor -1 = every sensor), with
    optional per-span values (`extra` rows)."""

    sensor: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    extra: np.ndarray
    longest: int

    @classmethod
    def of(
        cls,
        sensor: np.ndarray,
        start: np.ndarray,
        stop: np.ndarray,
        extra: np.ndarray | None = None,
    ) -> Segments:
        order = np.argsort(start, kind="stable")
        extra = np.empty((len(start), 0)) if extra is None else extra
        longest = int((stop - start).max()) if start.size else 0
        return cls(sensor[order].astype(np.int64), start[order], stop[order], extra[order], longest)

    def cells(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(segment index, step) of every covered step in [lo, hi)."""
        lo_idx = np.searchsorted(self.start, lo - self.longest)
        idx = np.arange(lo_idx, np.searchsorted(self.start, hi))
        s, e = np.maximum(self.start[idx], lo), np.minimum(self.stop[idx], hi)
        keep = e > s
        idx, s, n = idx[keep], s[keep], (e - s)[keep]
        first = np.cumsum(n) - n
        return np.repeat(idx, n), np.arange(n.sum()) - np.repeat(first - s, n)


def covered_share(seg: Segments, steps: int) -> float:
    mask = np.zeros(steps, bool)
    _, t = seg.cells(0, steps)
    mask[t] = True
    return float(mask.mean())
