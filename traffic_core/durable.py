"""Durable writes on local disk."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file or a folder entry to disk (a rename is durable once its folder is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(source: Path, path: Path) -> None:
    """fsync a finished file, rename it over path, and fsync the folder that now names it."""
    fsync_path(source)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, path)
    fsync_path(path.parent)
