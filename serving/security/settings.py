"""Security settings of the prediction API, from TRAFFIC_API_* environment variables.

Secrets come only from the environment (or explicit arguments in tests); nothing here has a
usable default secret, so a deployment that forgets one fails at startup instead of running open.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from limits import parse_many
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from traffic_core.settings import LOCAL_STATE_DIR

MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
"""RFC 7518 §3.2: an HMAC key at least as long as the hash output."""

MIN_API_KEY_CHARS = 16
DEFAULT_AUDIT_URL = f"sqlite:///{LOCAL_STATE_DIR / 'api' / 'audit.sqlite3'}"
DEFAULT_AUDIT_SPILL_DIR = LOCAL_STATE_DIR / "api" / "audit-spill"


class SecurityConfigError(RuntimeError):
    """The security settings cannot run the API safely (raised at startup, not per request)."""


class Role(StrEnum):
    """What a caller may do; API keys and the JWT `roles` claim name these values."""

    PLANNER = "planner"
    OPERATOR = "operator"
    AUDITOR = "auditor"
    SERVICE = "service"


class ApiKey(BaseModel):
    """One service key; only its SHA-256 digest is kept in memory."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    digest: bytes = Field(min_length=32, max_length=32, repr=False)
    roles: frozenset[Role] = frozenset({Role.SERVICE})

    @classmethod
    def from_spec(cls, name: str, key: str, roles: Any = None) -> ApiKey:
        """key is the plaintext key or `sha256=<64 hex digits>` (so env files need no plaintext)."""
        if key.startswith("sha256="):
            try:
                digest = bytes.fromhex(key.removeprefix("sha256="))
            except ValueError:
                raise ValueError(f"API key {name!r}: sha256= needs 64 hex digits") from None
        elif len(key) < MIN_API_KEY_CHARS:
            raise ValueError(f"API key {name!r} is shorter than {MIN_API_KEY_CHARS} characters")
        else:
            digest = hashlib.sha256(key.encode()).digest()
        return cls(name=name, digest=digest, roles=roles or frozenset({Role.SERVICE}))


def parse_api_keys(value: str) -> list[ApiKey]:
    """JSON `[{"name", "key" | "sha256", "roles"}]` or compact `name:key[:role1+role2],...`."""
    value = value.strip()
    if not value:
        return []
    if value.startswith("["):
        entries = json.loads(value)
        return [
            ApiKey.from_spec(
                entry["name"],
                entry["key"] if "key" in entry else f"sha256={entry['sha256']}",
                entry.get("roles"),
            )
            for entry in entries
        ]
    keys = []
    for entry in filter(None, (part.strip() for part in value.split(","))):
        parts = entry.split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise ValueError("API keys are `name:key[:role1+role2]` separated by commas")
        roles = parts[2].split("+") if len(parts) == 3 and parts[2] else None
        keys.append(ApiKey.from_spec(parts[0], parts[1], roles))
    return keys


class SecuritySettings(BaseSettings):
    """Authentication, rate limits, CORS and audit for the prediction API."""

    model_config = SettingsConfigDict(
        env_prefix="TRAFFIC_API_", extra="ignore", populate_by_name=True
    )

    jwt_secret: SecretStr | None = None
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str | None = "metr-traffic"
    jwt_audience: str | None = "metr-traffic-api"
    jwt_leeway_seconds: int = Field(default=10, ge=0)
    api_keys: Annotated[tuple[ApiKey, ...], NoDecode] = Field(
        default=(), validation_alias="TRAFFIC_API_KEYS"
    )
    rate_limit: str = Field(default="600/second", description="Per principal; '' disables.")
    auth_failure_limit: str = Field(
        default="60/minute", description="Failed authentications per client IP; '' disables."
    )
    cors_origins: Annotated[list[str], NoDecode] = [
        "http://127.0.0.1:8501",
        "http://localhost:8501",
    ]
    audit_enabled: bool = True
    audit_url: str = Field(default=DEFAULT_AUDIT_URL, repr=False)
    audit_spill_dir: Path = Field(
        default=DEFAULT_AUDIT_SPILL_DIR,
        description="Audit rows kept on disk: spilled at shutdown or outage, and quarantined.",
    )
    audit_flush_seconds: float = Field(
        default=0.25, gt=0, description="How often the audit backlog is written."
    )
    audit_drain_seconds: float = Field(
        default=10.0, gt=0, description="At shutdown, writing the backlog stops after this."
    )

    @field_validator("jwt_issuer", "jwt_audience", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return value or None

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: Any) -> Any:
        return parse_api_keys(value) if isinstance(value, str) else value

    @field_validator("api_keys")
    @classmethod
    def _unique_names(cls, value: tuple[ApiKey, ...]) -> tuple[ApiKey, ...]:
        names = [key.name for key in value]
        if len(names) != len(set(names)):
            raise ValueError("API key names must be unique")
        return value

    @field_validator("rate_limit", "auth_failure_limit")
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        if value.strip():
            parse_many(value)  # raises ValueError naming the bad limit string
        return value.strip()

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                return json.loads(value)
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _explicit_origins(cls, value: list[str]) -> list[str]:
        if "*" in value:
            raise ValueError("list the allowed origins explicitly; '*' is not accepted")
        return [origin.rstrip("/") for origin in value]

    @model_validator(mode="after")
    def _strong_secret(self) -> SecuritySettings:
        if self.jwt_secret is not None:
            needed = MIN_SECRET_BYTES[self.jwt_algorithm]
            if len(self.jwt_secret.get_secret_value().encode()) < needed:
                raise ValueError(
                    f"TRAFFIC_API_JWT_SECRET must be at least {needed} bytes for "
                    f"{self.jwt_algorithm}"
                )
        return self

    def require_jwt_secret(self) -> str:
        if self.jwt_secret is None:
            raise SecurityConfigError(
                "TRAFFIC_API_JWT_SECRET is not set; the API will not start without a token "
                "signing secret. Generate one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        return self.jwt_secret.get_secret_value()
