"""The REST surface: Confluent's paths, media type and error codes (what its clients parse)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from schema_registry.app import MEDIA_TYPE, create_app
from schema_registry.store import SchemaStore

READING = json.dumps(
    {"type": "record", "name": "Reading", "fields": [{"name": "speed", "type": "double"}]}
)


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    client = TestClient(create_app(SchemaStore.open(tmp_path / "schemas.json")))
    assert client.post("/subjects/r-value/versions", json={"schema": READING}).json() == {"id": 1}
    return client


def test_the_calls_confluent_clients_make(client: TestClient) -> None:
    headers = {"Content-Type": MEDIA_TYPE}
    found = client.post(
        "/subjects/r-value", content=json.dumps({"schema": READING}), headers=headers
    )
    assert found.headers["content-type"] == MEDIA_TYPE
    assert found.json() | {"schema": None} == {
        "subject": "r-value",
        "version": 1,
        "id": 1,
        "schema": None,
    }
    assert json.loads(client.get("/schemas/ids/1").json()["schema"]) == json.loads(READING)
    assert client.get("/schemas/ids/1/versions").json() == [{"subject": "r-value", "version": 1}]
    assert client.get("/subjects").json() == ["r-value"]
    assert client.get("/subjects/r-value/versions").json() == [1]
    assert client.get("/subjects/r-value/versions/latest").json()["id"] == 1
    assert client.put("/config/r-value", json={"compatibility": "FULL"}).json() == {
        "compatibility": "FULL"
    }
    assert client.get("/config/r-value").json() == {"compatibilityLevel": "FULL"}
    assert client.get("/config").json() == {"compatibilityLevel": "BACKWARD"}


def test_errors_carry_confluents_codes(client: TestClient) -> None:
    breaking = json.dumps(
        {"type": "record", "name": "Reading", "fields": [{"name": "lane", "type": "int"}]}
    )
    cases = [
        (client.post("/subjects/r-value/versions", json={"schema": breaking}), 409, 409),
        (client.post("/subjects/r-value/versions", json={"schema": "{"}), 422, 42201),
        (
            client.post(
                "/subjects/r-value/versions", json={"schema": READING, "schemaType": "PROTOBUF"}
            ),
            422,
            42201,
        ),
        (client.post("/subjects/r-value/versions", json={"definition": READING}), 422, 422),
        (client.get("/subjects/nope/versions"), 404, 40401),
        (client.get("/subjects/r-value/versions/2"), 404, 40402),
        (client.get("/schemas/ids/7"), 404, 40403),
    ]
    for response, status, code in cases:
        assert (response.status_code, response.json()["error_code"]) == (status, code)


@settings(derandomize=True, deadline=None, max_examples=100, database=None)
@given(version=st.one_of(st.integers(-5, 5).map(str), st.text(min_size=1, max_size=12)))
def test_any_version_in_the_path_is_found_or_40402(
    version: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    client = TestClient(create_app(SchemaStore.open(tmp_path_factory.mktemp("s") / "s.json")))
    client.post("/subjects/r-value/versions", json={"schema": READING})
    response = client.get(f"/subjects/r-value/versions/{quote(version, safe='')}")
    if response.status_code == 200:
        assert response.json()["version"] == 1
    else:
        assert (response.status_code, response.json()["error_code"]) == (404, 40402)


@pytest.mark.parametrize(
    ("version", "status"),
    [("latest", 200), ("1", 200), ("-1", 200), ("0", 404), ("2", 404), ("-2", 404), ("one", 404)],
)
def test_versions_confluent_accepts(client: TestClient, version: str, status: int) -> None:
    assert client.get(f"/subjects/r-value/versions/{version}").status_code == status
