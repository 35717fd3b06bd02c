"""The dashboard in headless Chromium, served by `streamlit run dashboard/app.py` as deployed:
with the API down, with the real API before any model, and with the real API serving a real
model over live Kafka readings. Every page must load without a Streamlit exception and show
what a planner needs or what to do next. Screenshots: .local/artifacts/dashboard/."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pandas as pd
import pytest
from api_fixtures import ApiServer, api_env
from confluent_kafka.admin import AdminClient
from context_helpers import incident_report, produce, until
from dashboard_helpers import write_real_lake
from kafka_helpers import fresh_topics
from playwright.sync_api import Browser, Page, expect, sync_playwright
from pypdf import PdfReader

from dashboard.navigation import PAGES, url_path
from dashboard.reports.pdf import TITLE
from infra.stack.browser import (
    DECK_MAP,
    EXCEPTION,
    SVG_MAP,
    free_port,
    launch_chromium,
    open_page,
    running_dashboard,
    screenshot,
    settle,
)
from infra.stack.kafka import KafkaBroker
from traffic_core.kafka.topics import TopicSpec, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LAKE_DAY = date(2012, 3, 5)
PAGE_TIMEOUT_S = 90.0
"""The first page of a fresh server imports pandas, pydeck and Altair: slow on a busy box."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def lake(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real day of aggregates for all 207 sensors."""
    return write_real_lake(tmp_path_factory.mktemp("lake"), shared_data, [LAKE_DAY])


def visit(browser: Browser, base_url: str, key: str, ready: str) -> Page:
    """Open a page, wait until `ready` shows and the run ends, check it raised nothing."""
    page = open_page(browser, f"{base_url}/{url_path(key)}", ready, PAGE_TIMEOUT_S)
    assert page.locator(EXCEPTION).count() == 0, f"{key}: Streamlit exception on the page"
    return page


def done(page: Page, shot: str) -> None:
    """Checked: keep a screenshot of the page as the planner sees it, and close it."""
    assert page.locator(EXCEPTION).count() == 0
    screenshot(page, shot)
    page.close()


EMPTY_LAKE = {"network": "no 5-minute aggregates yet", "reports": "holds no aggregates yet"}


def test_with_the_api_down_every_page_says_how_to_start_it(
    browser: Browser, tmp_path: Path
) -> None:
    env = {
        "TRAFFIC_API_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "TRAFFIC_DASHBOARD_TOKEN": "unused",
        "TRAFFIC_LAKE_DIR": str(tmp_path / "empty-lake"),
    }
    with running_dashboard(tmp_path, env) as dashboard:
        for key in PAGES:
            page = visit(browser, dashboard.url, key, "text=is not reachable")
            expect(page.get_by_text("make demo").first).to_be_visible()
            if key in EMPTY_LAKE:  # the lake part of the page still answers
                expect(page.get_by_text(EMPTY_LAKE[key]).first).to_be_visible()
            done(page, f"api-down-{key}")


class ApiWithoutModel(ApiServer):
    """The real API over an empty registry and topic: up, never ready."""

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"API without a model did not start: {self.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def api_without_model(
    kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    topic, dlq = fresh_topics(kafka_broker)
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    ensure_topics(admin, [TopicSpec(f"{topic}-{kind}", 2) for kind in ("predictions", "alerts")])
    registry = tmp_path_factory.mktemp("empty-registry")
    server = ApiWithoutModel(api_env(registry, kafka_broker, topic), topic, dlq)
    server.start(tmp_path_factory.mktemp("api-without-model-logs"))
    yield server
    server.stop()


NO_MODEL_MESSAGES = {
    "map": "No forecasts yet",
    "sensor": "No forecasts yet",
    "network": "No network history yet",
    "alerts": "No alerts match these filters",
    "model": "No model published yet",
    "reports": "Prepare report",
}


def test_before_the_first_model_every_page_says_what_is_missing(
    browser: Browser, api_without_model: ApiServer, lake: Path, tmp_path: Path
) -> None:
    env = {
        "TRAFFIC_API_URL": api_without_model.url,
        "TRAFFIC_DASHBOARD_TOKEN": api_without_model.token("planner"),
        "TRAFFIC_LAKE_DIR": str(lake),
    }
    with running_dashboard(tmp_path, env) as dashboard:
        for key, message in NO_MODEL_MESSAGES.items():
            done(visit(browser, dashboard.url, key, f"text={message}"), f"no-model-{key}")


@pytest.fixture(scope="module")
def live_dashboard(
    api_server: ApiServer, lake: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The dashboard over the real API (planner token, auditor token for lineage)."""
    env = {
        "TRAFFIC_API_URL": api_server.url,
        "TRAFFIC_DASHBOARD_TOKEN": api_server.token("planner"),
        "TRAFFIC_DASHBOARD_AUDIT_TOKEN": api_server.token("auditor"),
        "TRAFFIC_LAKE_DIR": str(lake),
    }
    with running_dashboard(tmp_path_factory.mktemp("dashboard"), env) as dashboard:
        yield dashboard.url


def test_live_map_shows_all_207_sensors_on_a_drawn_map(
    browser: Browser, live_dashboard: str, api_server: ApiServer
) -> None:
    incidents = api_server.env["TRAFFIC_API_INCIDENTS_TOPIC"]
    produce(api_server, incidents, [incident_report("773869", None)])
    listed = until(
        lambda: httpx.get(f"{api_server.url}/v1/incidents", headers=api_server.headers()).json(),
        lambda body: bool(body["incidents"]),
    )
    assert listed["incidents"], "the API did not take the incident in"
    page = visit(browser, live_dashboard, "map", SVG_MAP)
    count = page.locator('[data-testid="stMetric"]:has-text("Sensors on map")')
    expect(count.locator('[data-testid="stMetricValue"]')).to_have_text("207")
    expect(page.locator(SVG_MAP)).to_have_count(207)
    expect(page.locator(".sensor-map svg .incidents path")).to_have_count(1)
    expect(page.get_by_text("Forecasts by model").first).to_be_visible()
    screenshot(page, "live-map-now")
    page.get_by_text("In 30 min").click()  # the forecast view redraws without an error
    settle(page, SVG_MAP, PAGE_TIMEOUT_S)
    expect(page.locator(SVG_MAP)).to_have_count(207)
    page.get_by_text("Heat layer (slow traffic)").click()  # the heat layer is deck.gl's
    settle(page, DECK_MAP, PAGE_TIMEOUT_S)
    done(page, "live-map-in-30-min-heat")


def test_hovering_a_sensor_tells_its_speeds_and_clicking_opens_its_page(
    browser: Browser, live_dashboard: str
) -> None:
    page = visit(browser, live_dashboard, "map", SVG_MAP)
    circle = page.locator(SVG_MAP).last  # drawn last: no neighbour on top of it
    sensor_id = circle.get_attribute("data-id")
    circle.hover()
    tip = page.locator(".sensor-map .tip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text(f"Sensor {sensor_id}")
    expect(tip).to_contain_text("In 15 min:")
    expect(tip).to_contain_text(" mph")
    screenshot(page, "live-map-tooltip")
    circle.click()
    link = page.get_by_role("link", name=f"Open sensor {sensor_id}")
    expect(link).to_be_visible()
    link.click()
    expect(page).to_have_url(re.compile(rf"/sensor\?sensor={sensor_id}$"))
    settle(page, '[data-testid="stVegaLiteChart"]', PAGE_TIMEOUT_S)
    # The picked sensor is the selectbox's value (an input's value, not its text).
    expect(page.get_by_role("combobox", name="Sensor").first).to_have_value(str(sensor_id))
    done(page, "sensor-detail-from-map")


def test_the_planners_zoom_survives_a_redraw_until_a_double_click(
    browser: Browser, live_dashboard: str
) -> None:
    page = visit(browser, live_dashboard, "map", SVG_MAP)
    svg = page.locator(".sensor-map svg")
    whole = svg.get_attribute("viewBox")
    frame = svg.bounding_box()
    assert whole and frame
    page.mouse.move(frame["x"] + frame["width"] / 2, frame["y"] + frame["height"] / 2)
    for _ in range(3):
        page.mouse.wheel(0, -120)
    expect(svg).not_to_have_attribute("viewBox", whole)
    zoomed = svg.get_attribute("viewBox")
    assert zoomed and float(zoomed.split()[2]) < float(whole.split()[2]) / 1.5
    page.get_by_text("In 60 min").click()  # new data, same network: the zoom stays
    expect(svg).to_have_attribute("data-view-title", "In 60 min")
    settle(page, SVG_MAP, PAGE_TIMEOUT_S)
    expect(svg).to_have_attribute("viewBox", zoomed)
    svg.dblclick(position={"x": 3, "y": 3})
    expect(svg).to_have_attribute("viewBox", whole)
    done(page, "live-map-zoom-reset")


def test_sensor_detail_draws_speeds_against_forecasts(
    browser: Browser, live_dashboard: str
) -> None:
    page = visit(browser, live_dashboard, "sensor", '[data-testid="stVegaLiteChart"]')
    expect(page.get_by_text("Solid: observed.")).to_be_visible()
    expect(page.locator('[data-testid="stMetric"]:has-text("In 60 min")')).to_be_visible()
    expect(page.get_by_text("chance of congestion in 60 minutes")).to_be_visible()
    expect(page.get_by_text("Recent alerts")).to_be_visible()
    done(page, "sensor-detail")


def test_network_analytics_has_history_corridors_and_the_weekly_heatmap(
    browser: Browser, live_dashboard: str
) -> None:
    page = visit(browser, live_dashboard, "network", "text=Worst corridors now")
    expect(page.locator('[data-testid="stVegaLiteChart"]')).to_have_count(3)
    expect(page.get_by_text("1 days of aggregates from 2012-03-05")).to_be_visible()
    done(page, "network")


def test_alerts_feed_loads_with_its_filters(browser: Browser, live_dashboard: str) -> None:
    page = visit(browser, live_dashboard, "alerts", "text=Alerts shown")
    expect(page.locator('[data-testid="stSelectbox"]')).to_have_count(4)
    done(page, "alerts")


def test_model_page_shows_metrics_per_horizon_and_lineage(
    browser: Browser, live_dashboard: str
) -> None:
    page = visit(browser, live_dashboard, "model", "text=Accuracy per horizon")
    table = page.locator('[data-testid="stDataFrame"]').first
    expect(table).to_be_visible()
    expect(table.get_by_text("15 min")).to_be_attached()
    expect(page.get_by_text("Kafka offsets")).to_be_visible()
    expect(page.get_by_text("All published models")).to_be_visible()
    done(page, "model")


def test_report_downloads_parse(browser: Browser, live_dashboard: str, tmp_path: Path) -> None:
    page = visit(browser, live_dashboard, "reports", "text=Prepare report")
    page.get_by_role("button", name="Prepare report").click()
    settle(page, "text=Report ready", PAGE_TIMEOUT_S)
    downloads = {}
    for label in ("Download CSV", "Download PDF"):
        with page.expect_download(timeout=PAGE_TIMEOUT_S * 1000) as info:
            page.get_by_role("button", name=label).click()
        target = tmp_path / info.value.suggested_filename
        info.value.save_as(target)
        downloads[target.suffix] = target
    rows = pd.read_csv(downloads[".csv"], dtype={"sensor_id": str})
    assert len(rows) == 207 * 288
    assert rows["window_start"].str.startswith(str(LAKE_DAY)).all()
    text = "".join(
        p.extract_text() for p in PdfReader(io.BytesIO(downloads[".pdf"].read_bytes())).pages
    )
    assert TITLE in text and "207 sensors" in text and "Slowest sensors" in text
    done(page, "reports-ready")
