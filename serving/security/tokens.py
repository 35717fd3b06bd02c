"""Print a signed API token for demos and tests, with the secret from TRAFFIC_API_JWT_SECRET.

python -m serving.security.tokens --subject demo --role planner [--role operator] [--ttl 3600]
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from serving.security.auth import issue_token
from serving.security.settings import Role, SecurityConfigError, SecuritySettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.security.tokens",
        description="Print a JWT for the prediction API (issuer, audience and secret from the "
        "TRAFFIC_API_* environment, as the API reads them).",
    )
    parser.add_argument("--subject", required=True, help="who the token is for")
    parser.add_argument(
        "--role",
        action="append",
        required=True,
        choices=[role.value for role in Role],
        help="a role to grant; repeat for several",
    )
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    args = parser.parse_args(argv)
    if args.ttl <= 0:
        parser.error("--ttl must be positive")
    try:
        token = issue_token(args.subject, args.role, SecuritySettings(), args.ttl)
    except (SecurityConfigError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
