"""The registry's store: one id per distinct schema, versions per subject, compatibility levels,
and everything back after a reopen; hostile schema text only ever raises InvalidSchema."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schema_registry.store import (
    Compatibility,
    IncompatibleSchema,
    InvalidSchema,
    NotFound,
    SchemaStore,
    normalized,
)

PRIMITIVES = ["int", "long", "double", "string", "boolean"]
NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
FIELD = st.tuples(NAMES, st.sampled_from(PRIMITIVES), st.booleans())
RECORDS = st.lists(FIELD, max_size=5, unique_by=lambda f: f[0]).map(
    lambda fields: {
        "type": "record",
        "name": "Reading",
        "fields": [
            {"name": n, "type": ["null", t], "default": None}
            if optional
            else {"name": n, "type": t}
            for n, t, optional in fields
        ],
    }
)
FAST = settings(derandomize=True, deadline=None, max_examples=60, database=None)


def record(*fields: dict) -> str:
    return json.dumps({"type": "record", "name": "Reading", "fields": list(fields)})


@FAST
@given(schemas=st.lists(st.tuples(st.sampled_from(["a-value", "b-value"]), RECORDS), max_size=8))
def test_ids_are_one_per_distinct_schema_and_survive_a_reopen(
    schemas: list[tuple[str, dict]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("store") / "schemas.json"
    store = SchemaStore.open(path)
    store.set_compatibility(None, Compatibility.NONE)
    ids = [store.register(subject, json.dumps(schema)) for subject, schema in schemas]

    distinct = {normalized(json.dumps(s)) for _, s in schemas}
    assert sorted(set(ids)) == list(range(1, len(distinct) + 1))
    for (subject, schema), schema_id in zip(schemas, ids, strict=True):
        assert store.register(subject, json.dumps(schema, indent=2)) == schema_id
        assert store.lookup(subject, json.dumps(schema)).schema_id == schema_id
        assert json.loads(store.schema(schema_id)) == schema

    reopened = SchemaStore.open(path)
    assert reopened.subjects() == store.subjects()
    for subject in store.subjects():
        assert [reopened.version(subject, v) for v in reopened.versions(subject)] == [
            store.version(subject, v) for v in store.versions(subject)
        ]
    assert reopened.compatibility("a-value") is Compatibility.NONE


@FAST
@given(schema=RECORDS, indent=st.sampled_from([None, 1, 4]), sort=st.booleans())
def test_normalized_text_ignores_layout_and_key_order(
    schema: dict, indent: int | None, sort: bool
) -> None:
    reordered = dict(reversed(list(schema.items())))
    assert normalized(json.dumps(reordered, indent=indent, sort_keys=sort)) == normalized(
        json.dumps(schema)
    )


@settings(derandomize=True, deadline=None, max_examples=300, database=None)
@given(
    text=st.one_of(
        st.text(max_size=40),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(
                        ["type", "name", "fields", "items", "symbols", "size", "default"]
                    ),
                    inner | st.sampled_from(["record", "fixed", "enum", "array", "int", "R"]),
                    max_size=4,
                )
            ),
            max_leaves=8,
        ).map(json.dumps),
    )
)
def test_hostile_schema_text_is_refused_or_accepted_never_a_crash(
    text: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    store = SchemaStore.open(tmp_path_factory.mktemp("store") / "schemas.json")
    store.register("r-value", record({"name": "speed", "type": "double"}))
    with contextlib.suppress(InvalidSchema, IncompatibleSchema):
        assert store.register("r-value", text) == 2  # a new version, checked against the first


def test_backward_refuses_a_required_new_field_and_takes_a_defaulted_one(tmp_path: Path) -> None:
    store = SchemaStore.open(tmp_path / "schemas.json")
    first = store.register("r-value", record({"name": "speed", "type": "double"}))
    required = record({"name": "speed", "type": "double"}, {"name": "lane", "type": "int"})
    with pytest.raises(IncompatibleSchema, match="BACKWARD"):
        store.register("r-value", required)
    assert store.versions("r-value") == [1]
    optional = record(
        {"name": "speed", "type": "double"},
        {"name": "lane", "type": ["null", "int"], "default": None},
    )
    assert store.is_compatible("r-value", optional, "latest")
    assert store.register("r-value", optional) == first + 1
    assert store.version("r-value", "latest").version == 2


def test_forward_and_full_check_the_other_direction_too(tmp_path: Path) -> None:
    store = SchemaStore.open(tmp_path / "schemas.json")
    store.register("r-value", record({"name": "speed", "type": "double"}))
    dropped = record()  # old readers need `speed`, which new data lacks
    store.set_compatibility("r-value", Compatibility.FORWARD)
    assert not store.is_compatible("r-value", dropped, 1)
    store.set_compatibility("r-value", Compatibility.BACKWARD)
    assert store.is_compatible("r-value", dropped, 1)
    store.set_compatibility("r-value", Compatibility.FULL)
    with pytest.raises(IncompatibleSchema, match="FULL"):
        store.register("r-value", dropped)


def test_unknown_subjects_versions_and_ids_have_confluents_codes(tmp_path: Path) -> None:
    store = SchemaStore.open(tmp_path / "schemas.json")
    store.register("r-value", record())
    for call, code in [
        (lambda: store.versions("nope"), 40401),
        (lambda: store.version("r-value", 2), 40402),
        (lambda: store.schema(99), 40403),
        (lambda: store.lookup("r-value", record({"name": "x", "type": "int"})), 40403),
    ]:
        with pytest.raises(NotFound) as missing:
            call()
        assert missing.value.code == code
