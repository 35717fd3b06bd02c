"""One rule for which query parameters carry a credential, shared by log lines and audit rows."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traffic_core.redaction import REDACTED, redact, redact_query, secret_name

SECRET = ["access_token", "accessToken", "accesstoken", "ACCESS-TOKEN", "X-Api-Key", "apikey"]
SECRET += ["client.secret", "password[]", "kEy", "acc%65ss_token", "acc%2565ss_token", "sig"]
PLAIN = ["sensor_id", "horizon", "monkey", "keyboard", "tokenizer", "passage", "limit", "from"]


@pytest.mark.parametrize("name", SECRET)
def test_credential_names_are_secret_however_written(name: str) -> None:
    assert secret_name(name)
    assert redact_query(f"a=1&{name}=s3cr3t;b=2") == f"a=1&{name}={REDACTED};b=2"


@pytest.mark.parametrize("name", PLAIN)
def test_ordinary_names_stay_readable(name: str) -> None:
    assert not secret_name(name)
    assert redact_query(f"{name}=42") == f"{name}=42"


def test_a_log_line_loses_tokens_wherever_they_show() -> None:
    line = (
        'GET /v1/ws?accessToken=abc HTTP/1.1 "Bearer xyz" postgresql://u:pw@db/x '
        "eyJhbGciOi.eyJzdWIi.c2ln"
    )
    clean = redact(line)
    for secret in ("abc", "xyz", ":pw@", "eyJzdWIi"):
        assert secret not in clean


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(before=st.text(max_size=40), after=st.text(max_size=20))
def test_quotes_or_backslashes_in_the_query_hide_no_credential_from_a_json_line(
    before: str, after: str
) -> None:
    """In a JSON-encoded log line a quote or backslash in the query is escaped; the redaction
    reads through it to the parameters after it, and the line stays valid JSON."""
    before = before.replace("&", "").replace(";", "").replace(" ", "")
    message = f"GET /v1/stream?x={before}\"\\<'&api_key=S3CR3T&after={after} HTTP/1.1"
    line = redact(json.dumps({"message": message}))
    assert "S3CR3T" not in line
    assert json.loads(line)["message"].startswith("GET /v1/stream?x=")
