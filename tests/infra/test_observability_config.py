"""Prometheus and Grafana cannot run here (no Docker engine); keep their files in step with the
metrics the code really exposes and the services docker-compose.yml really runs."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from api_fixtures import JWT_SECRET, free_port
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app
from serving.security import SecuritySettings
from serving.settings import ApiSettings
from traffic_core.ingestion.group_metrics import IngestMetrics
from traffic_core.settings import REPO_ROOT
from traffic_core.streams.metrics import StreamMetrics

COMPOSE: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PROMETHEUS = yaml.safe_load((REPO_ROOT / "infra/prometheus/prometheus.yml").read_text())
JOBS: dict[str, Any] = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
GRAFANA = REPO_ROOT / "infra" / "grafana"
DATASOURCES = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
PROVIDERS = yaml.safe_load((GRAFANA / "provisioning/dashboards/metr-traffic.yml").read_text())
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
DASHBOARDS = {path.name: json.loads(path.read_text()) for path in DASHBOARD_FILES}
PANELS = [
    (name, panel)
    for name, board in DASHBOARDS.items()
    for panel in board["panels"]
    if panel["type"] != "row"
]
TARGETS = [
    (f"{name}: {panel['title']}", target) for name, panel in PANELS for target in panel["targets"]
]
SERIES_PROMETHEUS_ADDS = {"up"}
"""Series Prometheus writes itself for every target, found in no exposition."""


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: what is left once strings, label matchers,
    range selectors, grouping clauses and function calls are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = re.finditer(r"([A-Za-z_:][\w:]*)\s*(\()?", expr)
    return {word[1] for word in words if word[2] is None and word[1] not in {"bool", "offset"}}


def sample_names(exposition: str) -> set[str]:
    """Names as Prometheus stores them (with _bucket, _count, _total, _info ...)."""
    return {
        sample.name
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


@pytest.fixture(scope="module")
def api_exposition(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The app's own /metrics after one request, with the live consumer created (its lag gauge
    exists only then) but pointed at a port nothing listens on: no broker needed."""
    settings = ApiSettings(
        model_dir=tmp_path_factory.mktemp("no-model"),
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        live=True,
        publish=False,
    )
    app = create_app(settings, SecuritySettings(jwt_secret=JWT_SECRET, audit_enabled=False))
    with TestClient(app) as client:
        assert client.get("/v1/health").status_code == 200
        answer = client.get(JOBS["api"]["metrics_path"])
    assert answer.status_code == 200
    return answer.text


@pytest.fixture(scope="module")
def ingest_exposition() -> str:
    """A worker's registry after one of each thing it records."""
    metrics = IngestMetrics()
    metrics.events.labels("traffic-events").inc(10)
    metrics.rejected.labels("traffic-events", "NAN_SPEED").inc()
    metrics.skipped.labels("traffic-events").inc()
    metrics.files.labels("traffic-events").inc()
    metrics.lag.labels("traffic-events", "0").set(5)
    metrics.rebalances.labels("assigned").inc()
    metrics.commits.labels("committed").inc()
    metrics.last_commit.set_to_current_time()
    metrics.flush_seconds.observe(0.2)
    return generate_latest(metrics.registry).decode()


@pytest.fixture(scope="module")
def stream_exposition() -> str:
    """A stream processor's registry after one of each thing it records."""
    metrics = StreamMetrics()
    metrics.readings.inc(10)
    metrics.windows.inc(3)
    metrics.late.inc()
    metrics.rejected.labels("LATE_READING").inc()
    metrics.last_window_end.set(1_330_560_300)
    metrics.lag.labels("0").set(5)
    metrics.state_bytes.set(4096)
    metrics.commit_seconds.observe(0.05)
    return generate_latest(metrics.registry).decode()


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (route, le) (rate(a_bucket{s=~"5.."}[$__rate_interval])))'
    )
    assert metric_names(expr) == {"a_bucket"}
    assert metric_names("time() - (b_seconds > 0) + on (job) c") == {"b_seconds", "c"}


def test_the_dashboard_is_there_and_every_panel_queries() -> None:
    assert DASHBOARDS, "no dashboard JSON in infra/grafana/dashboards"
    for name, panel in PANELS:
        assert panel["targets"], f"{name}: {panel['title']} has no query"
        assert all(target.get("expr") for target in panel["targets"]), panel["title"]


@pytest.mark.parametrize(("panel", "target"), TARGETS, ids=[title for title, _ in TARGETS])
def test_every_metric_queried_is_exposed(
    panel: str,
    target: dict[str, Any],
    api_exposition: str,
    ingest_exposition: str,
    stream_exposition: str,
) -> None:
    exposed = (
        sample_names(api_exposition)
        | sample_names(ingest_exposition)
        | sample_names(stream_exposition)
    )
    names = metric_names(target["expr"])
    assert names, f"{panel}: no metric in {target['expr']!r}"
    assert names <= exposed | SERIES_PROMETHEUS_ADDS, (panel, sorted(names - exposed))


def test_panels_use_the_provisioned_datasource() -> None:
    (datasource,) = DATASOURCES["datasources"]
    expected = {"type": datasource["type"], "uid": datasource["uid"]}
    for name, panel in PANELS:
        for part in (panel, *panel["targets"]):
            assert part["datasource"] == expected, f"{name}: {panel['title']}"


def test_panels_do_not_overlap() -> None:
    for name, board in DASHBOARDS.items():
        cells: dict[tuple[int, int], str] = {}
        for panel in board["panels"]:
            box = panel["gridPos"]
            assert box["x"] + box["w"] <= 24, panel["title"]
            for cell in itertools.product(
                range(box["x"], box["x"] + box["w"]), range(box["y"], box["y"] + box["h"])
            ):
                assert cell not in cells, f"{name}: {panel['title']} over {cells[cell]}"
                cells[cell] = panel["title"]


def command_binds(spec: dict[str, Any]) -> tuple[set[int], set[str]]:
    """Ports and host addresses the service's command listens on (its flags)."""
    command = [str(word) for word in spec.get("command", [])]
    ports: set[int] = set()
    hosts: set[str] = set()
    for flag, value in itertools.pairwise(command):
        if flag in ("--port", "--metrics-port"):
            ports.add(int(value))
        if flag in ("--host", "--metrics-host"):
            hosts.add(value)
    for word in command:
        if word.startswith("--web.listen-address="):
            host, port = word.split("=", 1)[1].rsplit(":", 1)
            ports.add(int(port))
            hosts.add(host or "0.0.0.0")
    return ports, hosts


def assert_reachable_in_compose(host: str, port: int) -> None:
    """`host` is a compose service whose process listens on `port` on every interface and
    says so (`ports` or `expose`)."""
    assert host in SERVICES, f"{host} is no service of docker-compose.yml"
    spec = SERVICES[host]
    declared = {int(str(p).rsplit(":", 1)[-1]) for p in spec.get("ports", [])}
    declared |= {int(p) for p in spec.get("expose", [])}
    bound, hosts = command_binds(spec)
    assert port in declared, f"{host} declares ports {sorted(declared)}, not {port}"
    assert port in bound, f"{host}'s command listens on {sorted(bound)}, not {port}"
    assert hosts <= {"0.0.0.0", "::"}, f"{host} listens on {hosts}: unreachable from others"


def scrape_addresses(job: dict[str, Any]) -> list[tuple[str, int]]:
    static = [
        (host, int(port))
        for config in job.get("static_configs", [])
        for host, port in (target.rsplit(":", 1) for target in config["targets"])
    ]
    dns = [
        (name, int(config["port"]))
        for config in job.get("dns_sd_configs", [])
        for name in config["names"]
    ]
    return static + dns


@pytest.mark.parametrize("job", sorted(JOBS))
def test_scrape_targets_are_compose_services_on_their_ports(job: str) -> None:
    addresses = scrape_addresses(JOBS[job])
    assert addresses, job
    for host, port in addresses:
        assert_reachable_in_compose(host, port)


def test_the_api_the_ingest_workers_and_the_stream_processor_are_scraped() -> None:
    scraped = {host for job in JOBS.values() for host, _ in scrape_addresses(job)}
    ingest = [
        name
        for name, spec in SERVICES.items()
        if "traffic_core.ingestion.group_worker" in spec.get("command", [])
    ]
    streams = [
        name for name, spec in SERVICES.items() if "traffic_core.streams" in spec.get("command", [])
    ]
    assert ingest, "no scale-out ingestion service in docker-compose.yml"
    assert streams, "no stream processor service in docker-compose.yml"
    assert {"api", *ingest, *streams} <= scraped


def mounts(service: str) -> dict[str, tuple[Path, str]]:
    """Container path -> (host path, options) of the service's bind mounts."""
    found = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target, *options = volume.split(":")
        if source.startswith("./"):
            found[target] = (REPO_ROOT / source, options[0] if options else "rw")
    return found


def test_prometheus_and_grafana_mount_these_files_read_only() -> None:
    prometheus, grafana = mounts("prometheus"), mounts("grafana")
    command = SERVICES["prometheus"]["command"]
    config = next(word.split("=", 1)[1] for word in command if word.startswith("--config.file="))
    assert prometheus[config] == (REPO_ROOT / "infra/prometheus/prometheus.yml", "ro")
    assert grafana["/etc/grafana/provisioning"] == (GRAFANA / "provisioning", "ro")
    (provider,) = PROVIDERS["providers"]
    assert grafana[provider["options"]["path"]] == (GRAFANA / "dashboards", "ro")
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).name in DASHBOARDS


def test_grafana_reaches_prometheus_and_keeps_its_password_out_of_the_file() -> None:
    (datasource,) = DATASOURCES["datasources"]
    url = urlsplit(datasource["url"])
    assert url.hostname is not None and url.port is not None
    assert_reachable_in_compose(url.hostname, url.port)
    env = SERVICES["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${"), "admin password hard-coded"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


@pytest.mark.parametrize("service", ["prometheus", "grafana"])
def test_images_are_pinned(service: str) -> None:
    image = SERVICES[service]["image"]
    assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), image
