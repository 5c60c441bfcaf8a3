"""End to end: the README's `make run` starts the product on a fresh database, serves the
dashboard login page and the API with the printed test key, and stops cleanly on Ctrl-C."""

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_make_run_serves_dashboard_and_api_then_stops_on_ctrl_c(tmp_path):
    port = _free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "PYTEST_XDIST_WORKER"}
    }
    env.update({"IMAGEGATE_VAR_DIR": str(tmp_path / "var"), "DEBUG": "1"})
    proc = subprocess.Popen(
        ["make", "run", f"WEB_PORT={port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so we can Ctrl-C it like a terminal would
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    try:
        key = _wait_for(
            lambda: next(
                (m.group(1) for line in lines if (m := re.search(r"Test API key:\s+(ig_test_\S+)", line))),
                None,
            ),
            180,
            "the printed test key",
        )

        def login_page():
            try:
                return httpx.get(f"{base}/login/", timeout=2)
            except httpx.HTTPError:
                return None

        page = _wait_for(login_page, 60, "the login page")
        assert page.status_code == 200
        assert "Log in to Imagegate" in page.text

        response = httpx.get(f"{base}/v1/organization", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert response.status_code == 200, response.text
        assert response.json()["name"] == "Demo Company"
        assert response.headers["X-Request-Id"]
        assert httpx.get(f"{base}/v1/organization", timeout=5).status_code == 401
        _wait_for(lambda: any("Cluster" in line and "running" in line for line in lines), 60, "the worker")

        # An image, end to end: web → django-q2 (ORM broker) → worker → sandbox → signed URL.
        generated = httpx.post(
            f"{base}/v1/generations?wait=30",
            json={"prompt": "a lighthouse at dusk", "aspect_ratio": "16:9"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=40,
        )
        assert generated.status_code == 200, generated.text
        job = generated.json()
        assert job["status"] == "succeeded" and job["route"].startswith("sandbox/")
        image = httpx.get(job["images"][0]["url"], timeout=5)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert (job["images"][0]["width"], job["images"][0]["height"]) == (1376, 768)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(
                "make run did not stop within 30 s of Ctrl-C:\n" + "".join(lines[-40:])
            ) from None
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # nothing of the group is left running
