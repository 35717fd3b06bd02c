"""Credentials never reach a log line: query parameters that carry one, bearer tokens, JWTs
and URL passwords are replaced by REDACTED wherever a line shows them.

Parameter names are compared after percent-decoding (as the server decodes them before use),
so `?access%5Ftoken=...` is redacted like `?access_token=...`. Nothing matched includes a
backslash, so redacting a JSON-encoded line leaves it valid JSON.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

REDACTED = "REDACTED"
SECRET_NAME = re.compile(r"token|secret|passw|pwd|key|auth|sig|jwt|session|cookie", re.I)
"""A query parameter whose decoded name matches this carries a credential."""
_QUERY = re.compile(r"\?([^\s\"'#<>\\]+)")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(\bBearer\s+)[^\s\"',;\\]+", re.I)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@\"']*:)[^@\s\"'/]*@", re.I)


def _decoded(name: str) -> str:
    """Percent-decode until stable (at most 3 rounds, for doubly encoded names)."""
    for _ in range(3):
        plain = unquote_plus(name)
        if plain == name:
            break
        name = plain
    return name


def redact_query(query: str) -> str:
    """The query string with the values of credential-carrying parameters replaced."""
    pairs = []
    for pair in re.split(r"([&;])", query):
        name, sep, _value = pair.partition("=")
        if sep and SECRET_NAME.search(_decoded(name)):
            pair = f"{name}={REDACTED}"
        pairs.append(pair)
    return "".join(pairs)


def redact(text: str) -> str:
    """`text` with every credential it shows replaced by REDACTED."""
    if "?" in text:
        text = _QUERY.sub(lambda m: "?" + redact_query(m.group(1)), text)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
    return _BEARER.sub(rf"\1{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Renders a record's message and redacts it: for loggers whose lines may hold a URL
    with a token (uvicorn's WebSocket handshake lines print the full query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg = clean
            record.args = None
        return True


SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets", "websockets.server")


def redact_server_loggers() -> None:
    """Put a RedactingFilter on the HTTP server's loggers (once), whatever handlers they use."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
