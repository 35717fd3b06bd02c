"""The API over HTTPS, as the stack starts it under TRAFFIC_SECURITY=tls: uvicorn with the API's
certificate from the stack's CA, HSTS and the other security headers on its answers, and no
plain-HTTP or untrusted-certificate way in."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from infra.stack.certs import CertificateAuthority
from infra.stack.web import WebService
from serving.security.headers import HSTS_SECONDS, SecurityHeadersMiddleware

FRAME_AND_SNIFF = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
}


def _headers_app() -> FastAPI:
    app = FastAPI()
    app.add_api_route("/x", lambda: {"ok": True})
    app.add_middleware(SecurityHeadersMiddleware)
    return app


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_security_headers_on_every_answer_and_hsts_only_over_https(scheme: str) -> None:
    with TestClient(_headers_app(), base_url=f"{scheme}://testserver") as client:
        for path in ("/x", "/missing"):
            headers = client.get(path).headers
            assert {k: headers.get(k) for k in FRAME_AND_SNIFF} == FRAME_AND_SNIFF
            hsts = headers.get("strict-transport-security")
            assert hsts == (f"max-age={HSTS_SECONDS}" if scheme == "https" else None)


@pytest.mark.integration
@pytest.mark.slow
def test_the_api_answers_over_verified_https_with_hsts(
    https_api: WebService, ca: CertificateAuthority
) -> None:
    assert https_api.url.startswith("https://")
    verified = ssl.create_default_context(cafile=ca.ca_cert)
    answer = httpx.get(f"{https_api.url}/v1/health", verify=verified)
    assert answer.status_code == 200
    assert answer.headers["strict-transport-security"] == f"max-age={HSTS_SECONDS}"
    assert {k: answer.headers.get(k) for k in FRAME_AND_SNIFF} == FRAME_AND_SNIFF


@pytest.mark.integration
@pytest.mark.slow
def test_plain_http_gets_no_answer(https_api: WebService) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{https_api.host}:{https_api.port}/v1/health")


@pytest.mark.integration
@pytest.mark.slow
def test_a_client_trusting_another_ca_refuses_the_api(
    https_api: WebService, tmp_path: Path
) -> None:
    stranger = CertificateAuthority(tmp_path)
    stranger.ensure()
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(
            f"{https_api.url}/v1/health",
            verify=ssl.create_default_context(cafile=stranger.ca_cert),
        )
