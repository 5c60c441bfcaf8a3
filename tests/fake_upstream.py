"""pytest plugin: the fake Google upstream (generation/fake_upstream.py) over real HTTP.

One server per test session (per xdist worker), uvicorn in a daemon thread on a free 127.0.0.1
port; the function-scoped `fake_upstream` fixture resets it before each test and steers it through
its /_fake control API, exactly as a separate process would be steered.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fakes.upstream import FakeUpstream
from generation.engine.dimensions import dimensions_for_model
from generation.engine.providers.base import Credentials, ProviderRequest, ProviderResult, Target

API_KEY = "fake-upstream-key-7Qm2"
PROJECT = "imagegate-test"


class FakeUpstreamHandle:
    def __init__(self, url: str, api_key: str, private_key_pem: str) -> None:
        self.url = url
        self.api_key = api_key
        self._private_key_pem = private_key_pem
        self._accounts = itertools.count(1)
        self._control = httpx.Client(base_url=url, timeout=10)

    # control API

    def _post(self, path: str, payload: dict) -> dict:
        response = self._control.post(path, json=payload)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self._post("/_fake/reset", {})

    def script(self, model: str, responses: list[dict]) -> None:
        """Queue answers for the next calls to `model` ("*" = any model); see the fake's docstring."""
        self._post("/_fake/script", {"model": model, "responses": responses})

    def configure(self, **settings: object) -> None:
        """latency_ms, jitter_ms, error_rate, api_key (None = accept any key)."""
        self._post("/_fake/config", settings)

    def requests(self) -> list[dict]:
        """Recent requests, oldest first: method, path, headers (keys redacted), body, status."""
        return self._control.get("/_fake/requests").raise_for_status().json()

    def model_requests(self) -> list[dict]:
        return [r for r in self.requests() if r["path"] != "/token"]

    def stats(self) -> dict:
        return self._control.get("/_fake/stats").raise_for_status().json()

    # things to call it with

    def service_account_info(self) -> dict:
        """A service-account key whose token_uri is the fake. Each call is a new account (new
        client_email), so the process-wide token cache never carries a token between tests."""
        number = next(self._accounts)
        return {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": f"key{number:04d}",
            "private_key": self._private_key_pem,
            "client_email": f"imagegate-{number}@{PROJECT}.iam.gserviceaccount.com",
            "client_id": str(100000000000000000000 + number),
            "token_uri": f"{self.url}/token",
        }

    def target(
        self,
        *,
        kind: str = "gemini_api",
        protocol: str = "generate_content",
        model: str = "gemini-3.1-flash-image",
        auth: str | None = None,
        **overrides: object,
    ) -> Target:
        """A Target pointing at the fake. `auth`: "api_key" or "service_account" (default: the
        key for gemini_api, the service account for vertex_ai)."""
        auth = auth or ("service_account" if kind == "vertex_ai" else "api_key")
        if auth == "service_account":
            credentials = Credentials(service_account_info=self.service_account_info(), project=PROJECT)
        else:
            credentials = Credentials(api_key=self.api_key)
        fields: dict = {
            "kind": kind,
            "protocol": protocol,
            "base_url": self.url,
            "model": model,
            "credentials": credentials,
            "dimensions": dimensions_for_model(model),
            "timeout_seconds": 10.0,
        }
        fields.update(overrides)
        return Target(**fields)

    async def call(
        self,
        generate: Callable[[httpx.AsyncClient, Target, ProviderRequest], Awaitable[ProviderResult]],
        target: Target,
        request: ProviderRequest,
    ) -> ProviderResult:
        """Run a provider with a fresh client, as the worker would."""
        async with httpx.AsyncClient() as client:
            return await generate(client, target, request)

    def close(self) -> None:
        self._control.close()


def _private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="session")
def fake_upstream_server() -> Iterator[FakeUpstreamHandle]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # the kernel picks a free port; uvicorn serves this very socket
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(FakeUpstream(api_key=API_KEY), log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="fake-upstream", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the fake upstream did not start")
        time.sleep(0.01)
    handle = FakeUpstreamHandle(f"http://127.0.0.1:{port}", API_KEY, _private_key_pem())
    yield handle
    handle.close()
    server.should_exit = True
    server.force_exit = True  # do not wait for requests a timeout test abandoned mid-latency
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def fake_upstream(fake_upstream_server: FakeUpstreamHandle) -> FakeUpstreamHandle:
    fake_upstream_server.reset()
    return fake_upstream_server
