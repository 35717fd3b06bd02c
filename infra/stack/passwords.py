"""Passwords the stack generates at set-up: random, kept in a 0600 file, never a default."""

from __future__ import annotations

import secrets
from pathlib import Path

from infra.stack.process import private_file, write_private


def ensure_password(path: Path) -> str:
    """The password in `path`, generated on first use (URL-safe, so it needs no quoting in a
    connection URL or a `kafka-storage --add-scram` argument)."""
    if not path.exists() or not path.read_text().strip():
        write_private(path, secrets.token_urlsafe(32))
    elif path.stat().st_mode & 0o077:
        private_file(path)  # an older, wider file is narrowed (a private one is only read)
    return path.read_text().strip()
