"""The production server's access log (platform/gunicorn.conf.py) never records query strings or
one-time tokens in paths: a misplaced `?key=`, verification links and invitation links included."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_gunicorn_access_log_has_no_query_strings_or_tokens(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update({"IMAGEGATE_VAR_DIR": str(tmp_path), "DEBUG": "1", "WEB_CONCURRENCY": "1", "WEB_THREADS": "2"})
    log = tmp_path / "access.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi",
            "--config",
            "platform/gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "--access-logfile",
            str(log),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        headers = {"Referer": "https://example.com/?ref_secret=REFSECRET"}
        httpx.get(f"{base}/v1/generations?key=ig_test_QUERYSECRET", headers=headers, timeout=10)
        httpx.get(f"{base}/verify-email/?token=VERIFYSECRET", timeout=10)
        httpx.get(f"{base}/invitations/INVITESECRET/", timeout=10)
        httpx.get(f"{base}/password-reset/MQ/RESETSECRET/", timeout=10)
        time.sleep(0.5)
        text = log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert "/v1/generations" in text and "/invitations/[redacted]" in text
    for secret in ("QUERYSECRET", "VERIFYSECRET", "INVITESECRET", "RESETSECRET", "REFSECRET", "?"):
        assert secret not in text, text
