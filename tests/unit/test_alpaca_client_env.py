"""The Alpaca client reads requests' environment settings once, not on every request."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from requests.utils import get_netrc_auth

from modelyard.brokers.alpaca_client import AlpacaClient, freeze_environment

URLS = ("https://paper-api.alpaca.markets", "http://127.0.0.1:8080", "http://localhost:1")


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3129")
    monkeypatch.setenv("NO_PROXY", "localhost")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    netrc = tmp_path / "netrc"
    netrc.write_text("machine paper-api.alpaca.markets login user password secret\n")
    monkeypatch.setenv("NETRC", str(netrc))


@pytest.mark.usefixtures("environment")
@pytest.mark.parametrize("base", URLS)
def test_a_frozen_session_sends_what_a_trusting_one_would(base: str) -> None:
    url = f"{base}/v2/orders?status=open"
    trusting = requests.Session()
    frozen = requests.Session()
    freeze_environment(frozen, base)
    assert not frozen.trust_env
    expected = trusting.merge_environment_settings(url, {}, None, None, None)
    got = frozen.merge_environment_settings(url, {}, None, None, None)
    assert got["verify"] == expected["verify"]
    assert {k: v for k, v in got["proxies"].items() if v} == expected["proxies"]
    request = requests.Request("GET", url)
    headers = frozen.prepare_request(request).headers
    assert headers.get("Authorization") == trusting.prepare_request(request).headers.get(
        "Authorization"
    )
    assert (frozen.auth is not None) == (get_netrc_auth(url) is not None)


def test_the_client_session_no_longer_reads_the_environment() -> None:
    client = AlpacaClient("key", "secret", url_override="http://127.0.0.1:1")
    try:
        assert client._client._session.trust_env is False
    finally:
        client.close()
