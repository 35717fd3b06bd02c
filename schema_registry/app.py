"""The Confluent Schema Registry REST API (the Avro part clients use) over a `SchemaStore`.

Enough for Confluent's serializers, deserializers and `SchemaRegistryClient`: register and look
up schemas, fetch them by id, list subjects and versions, compatibility levels and checks.
Errors carry Confluent's `error_code` so clients raise the same exceptions as against Confluent.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, generate_latest
from pydantic import BaseModel, Field

from schema_registry.store import (
    Compatibility,
    IncompatibleSchema,
    InvalidSchema,
    NotFound,
    SchemaStore,
    Version,
)

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"


class SchemaBody(BaseModel):
    text: str = Field(alias="schema")  # Confluent's name, which would shadow BaseModel.schema
    schemaType: str = "AVRO"  # Confluent's field name


class ConfigBody(BaseModel):
    compatibility: Compatibility


def _json(content: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(content, status_code=status, media_type=MEDIA_TYPE)


def _version(found: Version) -> dict[str, Any]:
    return {
        "subject": found.subject,
        "version": found.version,
        "id": found.schema_id,
        "schema": found.schema,
    }


def _avro_only(body: SchemaBody) -> None:
    if body.schemaType.upper() != "AVRO":
        raise InvalidSchema(f"schema type {body.schemaType} is not supported, only AVRO")


def create_app(store: SchemaStore) -> FastAPI:
    app = FastAPI(title="Schema registry (Confluent API)", docs_url="/docs")
    metrics = CollectorRegistry()
    requests = Counter(
        "schema_registry_requests",
        "HTTP requests (scrapes of /metrics aside), by method and route",
        ["method", "route"],
        registry=metrics,
    )

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        if route != "/metrics":
            requests.labels(request.method, route).inc()
        return response

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _json({"error_code": exc.code, "message": str(exc)}, 404)

    @app.exception_handler(InvalidSchema)
    async def invalid(_: Request, exc: InvalidSchema) -> JSONResponse:
        return _json({"error_code": 42201, "message": str(exc)}, 422)

    @app.exception_handler(RequestValidationError)
    async def malformed(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _json({"error_code": 422, "message": f"malformed request: {exc.errors()}"}, 422)

    @app.exception_handler(IncompatibleSchema)
    async def incompatible(_: Request, exc: IncompatibleSchema) -> JSONResponse:
        return _json({"error_code": 409, "message": str(exc)}, 409)

    @app.get("/")
    def root() -> JSONResponse:
        return _json({})

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics), media_type="text/plain; version=0.0.4")

    @app.get("/subjects")
    def subjects() -> JSONResponse:
        return _json(store.subjects())

    @app.post("/subjects/{subject}/versions")
    def register(subject: str, body: SchemaBody) -> JSONResponse:
        _avro_only(body)
        return _json({"id": store.register(subject, body.text)})

    @app.post("/subjects/{subject}")
    def lookup(subject: str, body: SchemaBody) -> JSONResponse:
        _avro_only(body)
        return _json(_version(store.lookup(subject, body.text)))

    @app.get("/subjects/{subject}/versions")
    def versions(subject: str) -> JSONResponse:
        return _json(store.versions(subject))

    @app.get("/subjects/{subject}/versions/{version}")
    def version(subject: str, version: str) -> JSONResponse:
        return _json(_version(store.version(subject, _version_number(version))))

    @app.get("/subjects/{subject}/versions/{version}/schema")
    def version_schema(subject: str, version: str) -> Response:
        found = store.version(subject, _version_number(version))
        return Response(found.schema, media_type=MEDIA_TYPE)

    @app.get("/schemas/ids/{schema_id}")
    def schema(schema_id: int) -> JSONResponse:
        return _json({"schema": store.schema(schema_id)})

    @app.get("/schemas/ids/{schema_id}/versions")
    def schema_versions(schema_id: int) -> JSONResponse:
        return _json(
            [{"subject": v.subject, "version": v.version} for v in store.subjects_of(schema_id)]
        )

    @app.get("/config")
    def global_config() -> JSONResponse:
        return _json({"compatibilityLevel": store.compatibility()})

    @app.put("/config")
    def set_global_config(body: ConfigBody) -> JSONResponse:
        store.set_compatibility(None, body.compatibility)
        return _json({"compatibility": body.compatibility})

    @app.get("/config/{subject}")
    def subject_config(subject: str) -> JSONResponse:
        return _json({"compatibilityLevel": store.compatibility(subject)})

    @app.put("/config/{subject}")
    def set_subject_config(subject: str, body: ConfigBody) -> JSONResponse:
        store.set_compatibility(subject, body.compatibility)
        return _json({"compatibility": body.compatibility})

    @app.post("/compatibility/subjects/{subject}/versions/{version}")
    def compatible(subject: str, version: str, body: SchemaBody) -> JSONResponse:
        _avro_only(body)
        number = _version_number(version)
        return _json({"is_compatible": store.is_compatible(subject, body.text, number)})

    return app


def _version_number(text: str) -> str | int:
    """`latest`, -1 or a positive version number, as Confluent accepts them."""
    if text == "latest":
        return text
    try:
        number = int(text)
    except ValueError:
        raise NotFound(40402, f"version {text!r} is not a number or 'latest'") from None
    if number == -1 or number > 0:
        return number
    raise NotFound(40402, f"version {number} is not valid")
