"""Credentials never reach the audit log: secret query parameters lose their values.

A parameter is secret when its name, percent-decoded (`acc%65ss_token` is `access_token` to the
application, so it is to the redaction too), `+` read as a space, trailing `[]` dropped and
compared case-insensitively, is a credential word (`token`, `password`, `secret`, `key`, ...)
or ends in one after `_`, `-`, `.` or a space (`access_token`, `api_key`, `client_secret`). The
name is kept as sent, so an evasion attempt stays visible; only the value becomes `REDACTED`.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import unquote_to_bytes

REDACTED = b"REDACTED"
SECRET_WORDS = (
    "token|secret|password|passwd|passphrase|pwd|pass|key|apikey|jwt|auth|authorization"
    "|credential|credentials|signature|sig|session|sessionid|cookie|otp"
)
_SECRET_NAME = re.compile(rf"(?:^|.*[_\-.\s])(?:{SECRET_WORDS})", re.IGNORECASE | re.DOTALL)


def secret_name(raw_name: bytes) -> bool:
    """Whether the parameter called `raw_name` (as sent) carries a credential."""
    name = unquote_to_bytes(raw_name.replace(b"+", b" ")).decode("utf-8", "replace")
    name = name.strip().split("[", 1)[0]
    return _SECRET_NAME.fullmatch(name) is not None


_known_name = functools.lru_cache(maxsize=4096)(secret_name)
"""Clients repeat their parameter names: a dict hit each (short names only, so hostile ones
cannot fill memory)."""


def redact_query(raw: bytes) -> str:
    """The query string with secret values replaced, decoded as UTF-8 (`surrogateescape`
    keeps invalid bytes, which the audit sanitizer then spells out)."""
    if raw:
        parts = raw.split(b"&")
        redacted = False
        for index, part in enumerate(parts):
            name, equals, _value = part.partition(b"=")
            if equals and (_known_name(name) if len(name) <= 64 else secret_name(name)):
                parts[index] = name + b"=" + REDACTED
                redacted = True
        if redacted:
            raw = b"&".join(parts)
    return raw.decode("utf-8", "surrogateescape")
