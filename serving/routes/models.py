"""Model versions, the one being served, their lineage, and a forced reload."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path, Request

from serving.routes.access import ADMIN, LINEAGE, READ, allow
from serving.routes.common import service
from serving.schemas import Lineage, ModelList, ModelSummary, Problem
from serving.service import NotReady
from traffic_core.registry import ManifestError

router = APIRouter(prefix="/v1", tags=["models"])
VersionPath = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
LINEAGE_KEYS = tuple(Lineage.model_fields)


def _manifest(request: Request, version: str) -> dict:
    registry = service(request).holder.registry
    if version not in registry.list_versions():
        raise HTTPException(404, f"unknown model version {version!r}; GET /v1/models lists them")
    try:
        return registry.load_manifest(version)
    except (OSError, ManifestError) as error:
        raise HTTPException(
            409, f"model version {version} has an unreadable manifest: {error}"
        ) from None


def _summary(manifest: dict, current: str | None) -> dict:
    return {
        "version": manifest["version"],
        "created_at": manifest["created_at"],
        "current": manifest["version"] == current,
        "metrics": manifest["metrics"],
    }


def _served(request: Request) -> str | None:
    bundle = service(request).holder.current
    return bundle.version if bundle else None


@router.get("/models", response_model=ModelList, dependencies=allow(*READ))
def models(request: Request) -> dict:
    """Every complete version in the registry, newest first, and the one served."""
    current = _served(request)
    registry = service(request).holder.registry
    summaries = []
    for version in reversed(registry.list_versions()):
        try:
            summaries.append(_summary(registry.load_manifest(version), current))
        except (OSError, ManifestError):
            continue
    return {"current": current, "models": summaries}


@router.get(
    "/models/current",
    response_model=ModelSummary,
    dependencies=allow(*READ),
    responses={503: {"model": Problem}},
)
def current(request: Request) -> dict:
    bundle = service(request).holder.current
    if bundle is None:
        raise NotReady(service(request).holder.reason() or "no model")
    return _summary(bundle.manifest, bundle.version)


@router.get(
    "/models/{version}/lineage",
    response_model=Lineage,
    dependencies=allow(*LINEAGE),
    responses={404: {"model": Problem}},
)
def lineage(request: Request, version: str = VersionPath) -> dict:
    """Training data version, lake partitions, Kafka offset ranges, code and feature versions
    and artifact hashes of a model version: enough to rebuild it and to audit a forecast."""
    manifest = _manifest(request, version)
    return {key: manifest[key] for key in LINEAGE_KEYS}


@router.post("/admin/reload-model", response_model=ModelSummary, dependencies=allow(*ADMIN))
def reload_model(request: Request) -> dict:
    """Load the registry's `latest` now (retrying a version that failed before)."""
    holder = service(request).holder
    holder.refresh(force=True)
    if holder.current is None:
        raise NotReady(holder.reason() or "no model")
    return _summary(holder.current.manifest, holder.current.version)
