"""Where the lake lives: a local folder (the default) or HDFS, named by one path or URL.

`lake_path` turns the configured root (a path, a `file://` URL or `hdfs://host:port/path`)
into a pathlib-style path over fsspec (universal_pathlib): a local root stays a plain
`pathlib.Path`, an `hdfs://` root lists, opens and renames through hdfs-native, a native
client of the HDFS RPC and data-transfer protocols (no JVM, no libhdfs in the process). The
layout code joins, globs and opens these paths the same way whatever the file system; the three
things that differ live here: how pyarrow reads and writes a path, how a finished file is
published (one atomic rename over the old version), and the URL Spark is handed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlparse
from urllib.request import url2pathname

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from upath import UPath

from traffic_core.durable import replace_durably

LakePath: TypeAlias = Path | UPath
"""A path in the lake: a `pathlib.Path` (local) or a universal_pathlib path (remote)."""

REMOTE_SCHEMES = ("hdfs",)
"""Remote file systems whose rename replaces atomically, so the lake's publish holds there."""


def lake_path(root: str | os.PathLike[str]) -> LakePath:
    """The lake root `root` names: a plain path or `file:` URL (`file:///x`, or `file:/x` as
    pathlib leaves it) gives a local path; `hdfs://host:port/path` a path on that cluster."""
    if isinstance(root, UPath):
        return root
    text = os.fspath(root)
    parsed = urlparse(text)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"lake root {text!r}: a file URL must name a local path")
        return UPath(url2pathname(parsed.path))
    if parsed.scheme in REMOTE_SCHEMES:
        if not parsed.hostname or not parsed.port:
            raise ValueError(f"lake root {text!r}: name the NameNode, hdfs://host:port/path")
        return UPath(text)
    if parsed.scheme:
        raise ValueError(
            f"lake root {text!r}: a local folder (a path or a file:// URL) or an "
            f"{' or '.join(f'{s}://' for s in REMOTE_SCHEMES)} URL"
        )
    return UPath(text)


def local_only(path: LakePath) -> Path:
    """`path` for code that still works on local files only: a remote lake is refused with
    a message rather than half-written."""
    if not isinstance(path, Path):
        raise ValueError(
            f"this step reads and writes the lake as local files; the lake at {lake_url(path)} "
            "serves the raw-zone writers and readers (ingestion) only"
        )
    return path


def lake_url(path: LakePath) -> str:
    """The full URL of a lake path (`file:///...` or `hdfs://host:port/...`), as Spark and
    messages need it (a remote path's `str` drops the host and port)."""
    if isinstance(path, Path):
        # Not percent-encoded (unlike `Path.as_uri`): Hadoop takes a path string literally,
        # so `date%3D...` would name another folder.
        return f"file://{path.absolute()}"
    options = path.storage_options
    return f"{path.protocol}://{options['host']}:{options['port']}{path.path}"


def arrow_location(path: LakePath) -> tuple[str, pafs.FileSystem]:
    """(path, file system) as pyarrow's readers and writers take them."""
    if isinstance(path, Path):
        return str(path), pafs.LocalFileSystem()
    return path.path, pafs.PyFileSystem(pafs.FSSpecHandler(path.fs))


def read_parquet(path: LakePath, **options: Any) -> pa.Table:
    """`pq.read_table` of one lake file (or folder of parts)."""
    where, filesystem = arrow_location(path)
    return pq.read_table(where, filesystem=filesystem, **options)


def parquet_file(path: LakePath) -> pq.ParquetFile:
    """A lake file's Parquet metadata and row groups, read lazily."""
    where, filesystem = arrow_location(path)
    return pq.ParquetFile(where, filesystem=filesystem)


def write_parquet(table: pa.Table, path: LakePath, **options: Any) -> None:
    """`pq.write_table` to a lake path (the caller publishes it)."""
    where, filesystem = arrow_location(path)
    pq.write_table(table, where, filesystem=filesystem, **options)


def publish(source: LakePath, target: LakePath) -> None:
    """Make a finished file visible under `target` in one step, replacing any previous
    version: locally fsync, rename and fsync the folder; on HDFS one NameNode rename with
    overwrite (atomic, and the blocks were acknowledged by every replica when the file
    closed)."""
    if isinstance(target, Path) and isinstance(source, Path):
        replace_durably(source, target)
        return
    assert isinstance(source, UPath) and isinstance(target, UPath), "one file system"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.fs.mv(source.path, target.path, overwrite=True)
