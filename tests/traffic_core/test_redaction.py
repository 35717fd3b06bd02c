"""One rule for which query parameters carry a credential, shared by log lines and audit rows."""

from __future__ import annotations

import pytest

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
