"""The dashboard over HTTPS in headless Chromium, calling the API over HTTPS with CA
verification, as the stack runs them under TRAFFIC_SECURITY=tls; a dashboard that does not
trust the API's CA cannot reach it."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_fixtures import JWT_SECRET
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, sync_playwright

from dashboard.navigation import url_path
from infra.stack.browser import CHROMIUM, CHROMIUM_ARGS, EXCEPTION, open_page, running_dashboard
from infra.stack.certs import CertificateAuthority
from infra.stack.web import WebService
from serving.security import SecuritySettings, issue_token

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _spki_pin(cert: Path) -> str:
    """Chromium's pin of a certificate's key: it trusts exactly this key, nothing broader."""
    key = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="module")
def browser(ca: CertificateAuthority) -> Iterator[Browser]:
    pin = f"--ignore-certificate-errors-spki-list={_spki_pin(ca.cert('dashboard'))}"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, pin], headless=True
        )
        yield chromium
        chromium.close()


def _env(api: WebService, trusted: Path) -> dict[str, str]:
    token = issue_token("dashboard", ["planner"], SecuritySettings(jwt_secret=JWT_SECRET))
    return {
        "TRAFFIC_API_URL": api.url,
        "TRAFFIC_DASHBOARD_TOKEN": token,
        "SSL_CERT_FILE": str(trusted),
    }


def test_the_dashboard_over_https_reaches_the_api_it_verifies(
    browser: Browser, https_api: WebService, ca: CertificateAuthority, tmp_path: Path
) -> None:
    with running_dashboard(tmp_path, _env(https_api, ca.ca_cert), tls=ca) as dashboard:
        assert dashboard.url.startswith("https://")
        page = open_page(browser, f"{dashboard.url}/{url_path('model')}", "text=No model")
        assert page.locator(EXCEPTION).count() == 0
        assert page.get_by_text("is not reachable").count() == 0
        page.close()


def test_a_dashboard_trusting_another_ca_cannot_reach_the_api(
    browser: Browser, https_api: WebService, ca: CertificateAuthority, tmp_path: Path
) -> None:
    stranger = CertificateAuthority(tmp_path / "stranger")
    stranger.ensure()
    env = _env(https_api, stranger.ca_cert)
    with running_dashboard(tmp_path / "dashboard", env, tls=ca) as dashboard:
        page = open_page(browser, f"{dashboard.url}/{url_path('model')}", "text=is not reachable")
        page.close()
