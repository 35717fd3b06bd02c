"""Page 5: which model makes the forecasts, how accurate it was, and what it was trained on."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.client import Forbidden, NotAuthenticated, NotReady
from dashboard.context import api
from dashboard.metrics_tables import leaves, metrics_tables
from dashboard.states import guarded
from serving.schemas import Lineage, ModelSummary


def render() -> None:
    st.title("Model quality")
    try:
        model = api().current_model()
    except NotReady as exc:
        st.warning(
            f"No model published yet ({exc.detail}). The pipeline trains and publishes the first "
            "one after `make demo` has ingested enough data; reload this page then."
        )
        return
    serving = "serving forecasts now" if model.current else "not serving"
    st.markdown(
        f"**Current model** `{model.version}`, published {model.created_at:%Y-%m-%d %H:%M} UTC, "
        f"{serving}."
    )
    _metrics(model)
    _lineage(model.version)
    _history()


def _metrics(model: ModelSummary) -> None:
    st.subheader("Accuracy per horizon")
    tables = metrics_tables(model.metrics)
    if tables.scores.empty and tables.other.empty:
        st.info("This model's manifest records no metrics.")
        return
    st.caption(
        "Mean absolute errors (mph) from time-series cross-validation per model family; "
        "`selected` is the family serving that horizon. Lower is better."
    )
    st.dataframe(tables.scores, key="metrics_table")
    if not tables.other.empty:
        st.dataframe(tables.other, hide_index=True)
    if not tables.params.empty:
        with st.expander("Hyper-parameters of the selected models"):
            st.dataframe(tables.params)


@guarded
def _lineage(version: str) -> None:
    st.subheader("Lineage")
    try:
        lineage = api().lineage(version)
    except (Forbidden, NotAuthenticated) as exc:
        st.info(
            f"Lineage is for auditors and operators ({exc.detail}). To show it here, give the "
            "dashboard an auditor token in TRAFFIC_DASHBOARD_AUDIT_TOKEN and restart it."
        )
        return
    st.markdown(
        f"**Training data**: `{lineage.training_data_version}` &middot; **code**: "
        f"`{lineage.code_version}` &middot; **features**: `{lineage.feature_version}` "
        f"({len(lineage.feature_names)} features)"
    )
    _lineage_tables(lineage)


def _lineage_tables(lineage: Lineage) -> None:
    offsets = pd.DataFrame([o.model_dump() for o in lineage.kafka_offsets])
    st.markdown(f"**Kafka offsets** ({len(offsets)} topic partitions)")
    if offsets.empty:
        st.caption("None recorded (trained from files, not from the stream).")
    else:
        offsets["messages"] = offsets["last"] - offsets["first"] + 1
        st.dataframe(offsets, hide_index=True)
    with st.expander(f"Lake partitions ({len(lineage.lake_partitions)})"):
        st.dataframe(pd.DataFrame({"partition": lineage.lake_partitions}), hide_index=True)
    with st.expander(f"Features ({len(lineage.feature_names)})"):
        st.write(", ".join(lineage.feature_names) or "none recorded")
    artifacts = [
        {"artifact": name, "field": " / ".join(path), "value": str(value)}
        for name, detail in lineage.artifacts.items()
        for path, value in leaves(detail)
    ]
    with st.expander(f"Artifacts ({len(lineage.artifacts)})"):
        st.dataframe(pd.DataFrame(artifacts), hide_index=True)


@guarded
def _history() -> None:
    st.subheader("All published models")
    listing = api().models()
    rows = [
        {
            "version": m.version,
            "published (UTC)": m.created_at,
            "current": m.version == listing.current,
            **{
                f"{h} min MAE": _selected_mae(m.metrics.get(h))
                for h in sorted((k for k in m.metrics if k.isdigit()), key=int)
            },
        }
        for m in listing.models
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True)


def _selected_mae(entry: object) -> float | None:
    """The cross-validated error of the family selected for a horizon, when recorded."""
    if not isinstance(entry, dict):
        return None
    scores = entry.get("cv_mae")
    if not isinstance(scores, dict):
        return None
    value = scores.get(entry.get("selected"))
    return float(value) if isinstance(value, int | float) else None
