"""Who may call what: the role matrix of the API in one place (tests walk it)."""

from __future__ import annotations

from fastapi import Depends

from serving.security import Role, require

READ = (Role.PLANNER, Role.OPERATOR, Role.AUDITOR, Role.SERVICE)
"""Forecasts, sensors, network status, alerts, model list: everyone with a credential."""
FORECAST_OWN_DATA = (Role.PLANNER, Role.OPERATOR, Role.SERVICE)
STREAM = (Role.PLANNER, Role.OPERATOR, Role.SERVICE)
LINEAGE = (Role.AUDITOR, Role.OPERATOR)
ADMIN = (Role.OPERATOR,)


def allow(*roles: Role) -> list:
    """Route dependencies admitting `roles` (authentication and rate limit included)."""
    return [Depends(require(*roles))]
