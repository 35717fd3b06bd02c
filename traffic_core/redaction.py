"""Credentials never reach a log line: query parameters that carry one, bearer tokens, JWTs
and URL passwords are replaced by REDACTED wherever a line shows them.

Parameter names are compared after percent-decoding (as the server decodes them before use),
so `?access%5Ftoken=...` is redacted like `?access_token=...`. A replaced value takes its escape
sequences whole (JSON never escapes `&` or `;`), so redacting a JSON-encoded line leaves it
valid JSON.
"""

from __future__ import annotations

import functools
import logging
import re
from urllib.parse import unquote_plus

REDACTED = "REDACTED"
SECRET_WORDS = frozenset(
    [
        "token",
        "secret",
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "pass",
        "key",
        "apikey",
        "jwt",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "signature",
        "sig",
        "session",
        "sessionid",
        "cookie",
        "otp",
    ]
)
"""A parameter carries a credential when one of the words of its name is one of these
(`access_token`, `X-Api-Key`, `accessToken`, `client.secret`) ..."""
SECRET_ENDINGS = tuple(
    [
        "token",
        "secret",
        "password",
        "passwd",
        "passphrase",
        "apikey",
        "jwt",
        "authorization",
        "credential",
        "credentials",
        "signature",
        "session",
        "sessionid",
        "cookie",
    ]
)
"""... or its name run together ends in one of these unambiguous ones (`accesstoken`), while
`monkey`, `keyboard`, `tokenizer` and `passage` stay readable."""
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_SEPARATOR = re.compile(r"[^a-z0-9]+")
_QUERY = re.compile(r"\?((?:[^\s\"\\]|\\.)+)")
"""A query up to whitespace or an unescaped quote: in a JSON-encoded line a quote or backslash
inside the query is escaped, so the match runs through it to the parameters after it."""
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(\bBearer\s+)[^\s\"',;\\]+", re.I)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@\"']*:)[^@\s\"'/]*@", re.I)
_CACHED_NAME_CHARS = 64
"""Clients repeat their parameter names, so checks of short names are cached (long ones are
not, so hostile names cannot fill memory)."""


def _decoded(name: str) -> str:
    """Percent-decode until stable (at most 3 rounds, for doubly encoded names), `+` as a
    space, as the server decodes a name before use."""
    for _ in range(3):
        plain = unquote_plus(name)
        if plain == name:
            break
        name = plain
    return name


def _is_secret(name: str) -> bool:
    """Words split at separators (any case: `kEy`) and at camel humps (`accessToken`)."""
    plain = _decoded(name).split("[", 1)[0]
    words = {word.lower() for word in _WORD.findall(plain)}
    words.update(_SEPARATOR.split(plain.lower()))
    joined = "".join(_SEPARATOR.split(plain.lower()))
    return not SECRET_WORDS.isdisjoint(words) or joined.endswith(SECRET_ENDINGS)


_is_secret_cached = functools.lru_cache(maxsize=4096)(_is_secret)


def secret_name(name: str) -> bool:
    """Whether the query parameter called `name` (as sent, maybe percent-encoded) carries a
    credential."""
    return (_is_secret_cached if len(name) <= _CACHED_NAME_CHARS else _is_secret)(name)


def redact_query(query: str) -> str:
    """The query string with the values of credential-carrying parameters replaced; names are
    kept as sent, so an attempt to sneak one past stays visible."""
    if "=" not in query:
        return query
    pairs = []
    for pair in re.split(r"([&;])", query):
        name, sep, _value = pair.partition("=")
        if sep and secret_name(name):
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
