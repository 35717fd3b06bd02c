"""Make any text storable in an audit column, reversibly where it fits.

PostgreSQL refuses NUL, every driver refuses text that is not valid UTF-8 (a lone surrogate, as
`surrogateescape` makes of a raw byte), and an attacker controls the path and query. So before a
value is stored:

- a backslash becomes `\\\\`, a control character (C0, DEL, C1) `\\xNN`, a lone surrogate `\\uDCNN`
  (`surrogateescape` holds the raw byte 0xNN there); everything else is kept as is, so ordinary
  paths read unchanged and `restore` gives back the exact original;
- a value longer than its column is cut on an escape boundary and ends with a marker holding the
  original length and the start of its SHA-256 (`...[truncated 102400 chars sha256:3f2a...]`),
  enough to match it against a proxy's log; columns too narrow for that end with `...` alone.
"""

from __future__ import annotations

import hashlib
import re

TEXT_LIMIT = 4096
"""Characters kept of an unbounded (TEXT) column such as the path or the query."""

_SPECIAL = re.compile(r"[\\\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4})")
_SHORT_MARKER = "..."
_MIN_HASHED_LIMIT = 96
"""Below this many characters a column keeps only `...` as its truncation marker."""


def _escape_char(char: str) -> str:
    if char == "\\":
        return "\\\\"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """`text` with backslashes, control characters and lone surrogates spelled out."""
    return _SPECIAL.sub(lambda match: _escape_char(match.group()), text)


def restore(stored: str) -> str:
    """The original of an untruncated `escape`d value (lone surrogates included)."""

    def one(match: re.Match[str]) -> str:
        body = match.group(1)
        return "\\" if body == "\\" else chr(int(body[1:], 16))

    return _ESCAPE.sub(one, stored)


def restore_bytes(stored: str) -> bytes:
    """The original bytes of a value decoded with `surrogateescape` (a path or a query)."""
    return restore(stored).encode("utf-8", "surrogateescape")


def _marker(text: str, limit: int) -> str:
    if limit < _MIN_HASHED_LIMIT:
        return _SHORT_MARKER
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"...[truncated {len(text)} chars sha256:{digest}]"


def sanitize(value: str | None, limit: int = TEXT_LIMIT) -> str | None:
    """`value` escaped and cut to at most `limit` characters (None stays None)."""
    if value is None:
        return None
    if len(value) <= limit and _SPECIAL.search(value) is None:
        return value  # the common case: nothing to do
    escaped = escape(value[: limit + 1])  # escaping never shortens, so this prefix is enough
    if len(escaped) <= limit and len(value) <= limit:
        return escaped
    marker = _marker(value, limit)
    budget = max(limit - len(marker), 0)
    kept: list[str] = []
    for char in value[:budget]:
        piece = _escape_char(char) if _SPECIAL.match(char) else char
        if budget < len(piece):
            break
        budget -= len(piece)
        kept.append(piece)
    return "".join(kept) + marker[:limit]
